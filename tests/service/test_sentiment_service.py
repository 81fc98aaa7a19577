"""The sentiment service over its real Unix socket, with a real redis-server, a real SQLite file
and a local HTTP server speaking MarketAux's formats in place of api.marketaux.com."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.base.base_service import BaseService
from services.base.rpc import InvalidParams
from services.sentiment.marketaux_client import (
    MarketauxNotConfigured,
    MarketauxRateLimited,
    MarketauxRequestRejected,
    MarketauxServerError,
    MarketauxTokenInvalid,
    MarketauxUnreachable,
    MarketauxUsageLimitReached,
    parse_news,
)
from services.sentiment.sentiment_service import aggregate, body_of, fallback_reason
from tests.support import EventWatcher, Processes, ServiceProcess, SuiteDirs, async_wait_until
from tests.unit._sentiment_helpers import TOKEN, FakeMarketaux, Scripted, article

BIG4 = ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")
NOT_CONFIGURED = "not configured: MARKETAUX_API_TOKEN is not set"


def news(now: datetime) -> list[dict]:
    h = lambda n: now - timedelta(hours=n)  # noqa: E731
    return [
        article("c1", "CBA beats profit forecast and lifts dividend", "CBA.AX", h(1), sentiment=0.7),
        article("w1", "Westpac hit by nationwide banking outage", "WBC.AX", h(2), sentiment=-0.6),
        article(
            "a1", "ANZ shares rise after upgrade", "ANZ.AX", h(3), sentiment=0.3, extra_entities=("NAB.AX",)
        ),
        article("n1", "NAB fined by ASIC over fees", "NAB.AX", h(4), sentiment=-0.5, source="abc.net.au"),
        article("m1", "ASX 200 rallies as miners surge", "BHP.AX", h(1), sentiment=0.5),
        article("us", "Wall Street slumps", "SPY", h(1), sentiment=-0.8, country="us"),
    ]


@pytest.fixture
def fake() -> Iterator[FakeMarketaux]:
    with FakeMarketaux(news(datetime.now(UTC))) as server:
        yield server


def service(
    processes: Processes, suite: SuiteDirs, fake: FakeMarketaux, token: str | None = TOKEN, **env: str
) -> ServiceProcess:
    """The sentiment service pointed at the fake MarketAux (to start; stopped at teardown)."""
    extra = {
        "MARKETAUX_BASE_URL": fake.url,
        "TRADING_SENTIMENT_NEWS_LIMIT": "20",
        "TRADING_SENTIMENT_RETRY_BACKOFF_S": "0.01",
        **env,
    }
    if token:
        extra["MARKETAUX_API_TOKEN"] = token
    return processes.service("sentiment", suite, extra_env=extra)


async def call(client: BaseService, method: str, **params: object) -> dict:
    return await client.call_service("sentiment", method, timeout=15.0, **params)


async def test_batched_fetch_cache_aggregates_and_events(
    suite: SuiteDirs, processes: Processes, fake: FakeMarketaux, client
) -> None:
    service(processes, suite, fake).start()
    fake.latency_s = 0.3  # the four calls below overlap while the first fetch is in flight
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "sentiment_updated") as watcher:
        first = await asyncio.gather(*(call(client, "analyze_sentiment", symbol=s.lower()) for s in BIG4))
        await async_wait_until(
            lambda: watcher.events, what="one sentiment_updated per bank", until=lambda ev: len(ev) >= 4
        )
    fake.latency_s = 0.0
    assert {e["data"]["symbol"] for e in watcher.events} == set(BIG4) and len(watcher.events) == 4
    assert [r["source"] for r in first] == ["marketaux"] * 4  # all served by the one shared fetch
    cba = first[0]
    assert cba["symbol"] == "CBA.AX" and cba["source"] == "marketaux" and "reason" not in cba
    assert 0.5 < cba["score"] <= 1 and 0 < cba["confidence"] < 1 and cba["news_count"] == 1
    assert cba["articles"][0]["uuid"] == "c1" and cba["articles"][0]["entity_sentiment"] == 0.7
    assert datetime.fromisoformat(cba["as_of"]).tzinfo is not None
    # one request for the whole universe, with the documented parameters
    assert len(fake.news_requests) == 1
    params = fake.news_requests[0]["params"]
    assert params["symbols"] == ",".join(BIG4) and params["filter_entities"] == "true"
    assert params["language"] == "en" and params["limit"] == "20"
    window = datetime.fromisoformat(params["published_before"] + "+00:00") - datetime.fromisoformat(
        params["published_after"] + "+00:00"
    )
    assert window == timedelta(hours=72)  # TRADING_SENTIMENT_LOOKBACK_H's default

    again = await call(client, "analyze_sentiment", symbol="CBA.AX")
    assert again["source"] == "cache" and again["score"] == cba["score"]
    big4 = await call(client, "get_big4_sentiment")
    assert len(fake.news_requests) == 1  # all four came from that one request
    assert big4["source"] == "cache" and set(big4["banks"]) == set(BIG4)
    assert big4["banks"]["WBC.AX"]["score"] < 0 < big4["banks"]["ANZ.AX"]["score"]
    assert big4["banks"]["NAB.AX"]["news_count"] == 2  # its own article and ANZ's, which names NAB
    assert -1 <= big4["score"] <= 1 and big4["news_count"] == 5

    market = await call(client, "get_market_sentiment")
    assert len(fake.news_requests) == 2
    assert fake.news_requests[1]["params"]["countries"] == "au"
    assert "symbols" not in fake.news_requests[1]["params"]
    assert market["source"] == "marketaux" and market["score"] > 0  # the US slump is not AU news
    assert {a["uuid"] for a in market["articles"]} == {"c1", "w1", "a1", "n1", "m1"}
    assert market["big4"]["score"] == big4["score"]

    health = await call(client, "health")
    assert health["marketaux"] == "configured" and health["status"] == "healthy"
    assert health["cache_size"] == 5 and health["marketaux_requests"] == 2
    with pytest.raises(InvalidParams) as info:
        await call(client, "analyze_sentiment", symbol="not a symbol!")
    assert info.value.data["param"] == "symbol"


async def test_failed_refresh_keeps_last_good_value_aged(
    suite: SuiteDirs, processes: Processes, fake: FakeMarketaux, client
) -> None:
    service(
        processes,
        suite,
        fake,
        TRADING_SENTIMENT_CACHE_S="1",
        TRADING_SENTIMENT_FAILURE_RETRY_S="3600",
        TRADING_SENTIMENT_FALLBACK_HALF_LIFE_H="0.001",  # 3.6 s, so ageing shows within the test
    ).start()
    good = await call(client, "analyze_sentiment", symbol="WBC.AX")
    assert good["source"] == "marketaux" and good["score"] < 0
    fake.push(*[Scripted(503)] * 3)

    async def expired() -> dict | None:
        result = await call(client, "analyze_sentiment", symbol="WBC.AX")
        return result if result["source"] != "cache" else None

    fallback = await async_wait_until(expired, 30, 0.1, what="the cache to expire")
    assert fallback["source"] == "fallback"
    assert fallback["reason"] == "MarketAux unavailable: HTTP 503 maintenance_mode"
    assert fallback["last_good_at"] == good["as_of"]
    factor = 0.5 ** (fallback["age_s"] / 3.6)
    assert fallback["score"] == pytest.approx(good["score"] * factor, abs=2e-3)
    assert good["score"] < fallback["score"] < 0  # decayed toward neutral, same sign
    assert 0 < fallback["confidence"] < good["confidence"]
    assert len(fake.news_requests) == 1 + 3  # the good fetch, then 3 attempts at 503

    # within the failure retry window MarketAux is left alone
    again = await call(client, "analyze_sentiment", symbol="CBA.AX")
    assert again["source"] == "fallback" and len(fake.news_requests) == 4
    health = await call(client, "health")
    assert health["status"] == "degraded" and "503" in health["last_error"]

    # a forced refresh goes through once MarketAux is back
    refreshed = await call(client, "refresh_sentiment_cache")
    assert set(refreshed["refreshed"]) == {*BIG4, "market"} and refreshed["failed"] == {}
    assert (await call(client, "health"))["status"] == "healthy"


async def test_fallback_survives_restart(
    suite: SuiteDirs, processes: Processes, fake: FakeMarketaux, client
) -> None:
    # Fresh long enough for a restart on busy cores (3 s was not), stale soon after.
    env = {"TRADING_SENTIMENT_CACHE_S": "15"}
    first = service(processes, suite, fake, **env).start()
    good = await call(client, "analyze_sentiment", symbol="CBA.AX")
    first.stop()
    assert (suite.data_dir / "sentiment.db").exists()
    await client.close_clients()  # the old connection died with the process
    fake.daily_limit = len(fake.requests)  # the next request spends the quota: 402
    service(processes, suite, fake, **env).start()
    # the persisted reading is still fresh: served as cache, no request spent
    cached = await call(client, "analyze_sentiment", symbol="CBA.AX")
    assert cached["source"] == "cache" and cached["score"] == good["score"]
    assert len(fake.news_requests) == 1

    async def expired() -> dict | None:
        result = await call(client, "analyze_sentiment", symbol="CBA.AX")
        return result if result["source"] != "cache" else None

    result = await async_wait_until(expired, 90, 0.2, what="the persisted reading to go stale")
    assert result["source"] == "fallback"
    assert result["reason"] == "usage limit reached: the MarketAux daily quota is spent"
    assert result["last_good_at"] == good["as_of"]
    assert 0 < result["score"] <= good["score"]  # persisted, aged, not invented
    assert result["articles"][0]["uuid"] == "c1"
    assert len(fake.news_requests) == 2  # 402 is not retried


async def test_replay_clock_never_sees_later_news(
    suite: SuiteDirs, processes: Processes, fake: FakeMarketaux, client
) -> None:
    start = datetime.now(UTC) - timedelta(days=2)  # every article of the fake is "in the future"
    service(processes, suite, fake, TRADING_CLOCK_START=start.isoformat()).start()
    result = await call(client, "analyze_sentiment", symbol="CBA.AX")
    assert result["source"] == "marketaux"
    assert (result["score"], result["confidence"], result["news_count"]) == (0.0, 0.0, 0)
    before = datetime.fromisoformat(fake.news_requests[0]["params"]["published_before"] + "+00:00")
    assert abs((before - start).total_seconds()) < 60
    assert abs((datetime.fromisoformat(result["as_of"]) - start).total_seconds()) < 60


async def test_without_token_answers_neutral_fallback(
    suite: SuiteDirs, processes: Processes, fake: FakeMarketaux, client
) -> None:
    service(processes, suite, fake, token=None).start()
    health = await call(client, "health")
    assert health["marketaux"] == "not configured" and health["status"] == "healthy"
    result = await call(client, "analyze_sentiment", symbol="NAB.AX")
    assert (result["source"], result["reason"]) == ("fallback", NOT_CONFIGURED)
    assert (result["score"], result["confidence"], result["news_count"]) == (0.0, 0.0, 0)
    assert result["last_good_at"] is None and result["articles"] == []
    big4 = await call(client, "get_big4_sentiment")
    assert big4["source"] == "fallback" and big4["reason"] == NOT_CONFIGURED and big4["score"] == 0.0
    refreshed = await call(client, "refresh_sentiment_cache")
    assert refreshed["refreshed"] == [] and set(refreshed["failed"].values()) == {NOT_CONFIGURED}
    assert fake.requests == []


async def test_token_never_appears_in_logs_or_answers(
    suite: SuiteDirs, processes: Processes, fake: FakeMarketaux, client
) -> None:
    proc = service(processes, suite, fake).start()
    answers = []
    fake.push(Scripted(500), Scripted(action="drop"), Scripted(401))
    answers.append(await call(client, "analyze_sentiment", symbol="ANZ.AX"))
    assert answers[-1]["reason"] == "invalid API token: MarketAux rejected MARKETAUX_API_TOKEN"
    answers.append(await call(client, "refresh_sentiment_cache"))
    for method in ("get_market_sentiment", "health", "metrics", "list_methods"):
        answers.append(await call(client, method))
    proc.stop()
    log_text = (suite.log_dir / "sentiment.log").read_text()
    # the failures were logged (so the check below looked at real lines), without the token
    assert "retrying" in log_text and "MarketAux refresh failed" in log_text
    for text in (log_text, proc.output(), orjson.dumps(answers).decode()):
        assert TOKEN not in text
    # and the requests really carried it, so there was something to leak
    assert all(r["params"]["api_token"] == TOKEN for r in fake.requests)


# --- the service module's pure helpers (no process needed) ---------------------------------------


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (MarketauxNotConfigured("x"), NOT_CONFIGURED),
        (MarketauxUsageLimitReached("x", status=402), "usage limit reached: the MarketAux daily quota is spent"),
        (MarketauxTokenInvalid("x", status=401), "invalid API token: MarketAux rejected MARKETAUX_API_TOKEN"),
        (MarketauxRateLimited("x", status=429), "rate limited: too many MarketAux requests in the last minute"),
        (MarketauxServerError("x", status=500, code="server_error"), "MarketAux unavailable: HTTP 500 server_error"),
        (MarketauxUnreachable("x", code="timeout"), "MarketAux unreachable: timeout"),
        (MarketauxRequestRejected("x", status=403, code="endpoint_access_restricted"),
         "MarketAux rejected the request: HTTP 403 endpoint_access_restricted"),
    ],
)  # fmt: skip
def test_fallback_reason(error: Exception, reason: str) -> None:
    assert fallback_reason(error) == reason


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        (["marketaux", "marketaux"], "marketaux"),
        (["marketaux", "cache"], "cache"),
        (["cache", "fallback"], "fallback"),  # one bank on fallback makes the aggregate a fallback
    ],
)
def test_aggregate_reports_its_weakest_source(sources: list[str], expected: str) -> None:
    parts = {
        f"S{i}": {
            "score": 0.2,
            "confidence": 0.5,
            "news_count": 1,
            "source": src,
            "as_of": f"2026-11-2{i}T00:00:00+00:00",
        }
        | ({"reason": "usage limit reached"} if src == "fallback" else {})
        for i, src in enumerate(sources)
    }
    result = aggregate(parts)
    assert result["source"] == expected and result["news_count"] == len(sources)
    assert result["as_of"] == "2026-11-20T00:00:00+00:00"  # as old as its oldest part
    assert ("reason" in result) is (expected == "fallback")


@pytest.mark.parametrize(
    ("description", "snippet", "body"),
    [
        ("CBA lifts dividend.", "CBA lifts dividend", "CBA lifts dividend."),  # snippet repeats it
        ("", "Shares fell", "Shares fell"),
        ("Short", "Short and longer text", "Short and longer text"),
        ("Profit up", "Costs down", "Profit up Costs down"),
    ],
)
def test_body_does_not_count_repeated_text_twice(description: str, snippet: str, body: str) -> None:
    raw = article("x", "t", "CBA.AX", datetime.now(UTC), description=description)
    raw["snippet"] = snippet
    assert body_of(parse_news({"data": [raw]}).articles[0]) == body
