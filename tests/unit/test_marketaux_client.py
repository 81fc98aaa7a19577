"""MarketAux client against a local server speaking MarketAux's response and error formats."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from services.sentiment.marketaux_client import (
    MarketauxBadResponse,
    MarketauxClient,
    MarketauxError,
    MarketauxNotConfigured,
    MarketauxRateLimited,
    MarketauxRequestRejected,
    MarketauxServerError,
    MarketauxTokenInvalid,
    MarketauxUnreachable,
    MarketauxUsageLimitReached,
    backoff_delays,
    format_published_after,
    parse_news,
    redact,
)
from tests.unit._sentiment_helpers import TOKEN, FakeMarketaux, Scripted, article

NOW = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
BIG4 = ["CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX"]


@pytest.fixture
def server() -> Iterator[FakeMarketaux]:
    articles = [
        article("a1", "CBA beats forecasts", "CBA.AX", NOW - timedelta(hours=1), sentiment=0.6),
        article("a2", "Westpac hit by outage", "WBC.AX", NOW - timedelta(hours=2), sentiment=-0.5),
        article(
            "a3", "ANZ and NAB flat", "ANZ.AX", NOW - timedelta(hours=3), extra_entities=("NAB.AX", "BHP.AX")
        ),
        article("old", "CBA old news", "CBA.AX", NOW - timedelta(days=3)),
        article("fr", "CBA en français", "CBA.AX", NOW - timedelta(hours=1), language="fr"),
    ]
    with FakeMarketaux(articles) as fake:
        yield fake


class Sleeps:
    """Records backoff waits instead of sleeping (unit tests never sleep)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client_for(
    server: FakeMarketaux, token: str | None = TOKEN, **kw: object
) -> tuple[MarketauxClient, Sleeps]:
    sleeps = Sleeps()
    return MarketauxClient(token, server.url, sleep=sleeps, **kw), sleeps  # type: ignore[arg-type]


async def test_batches_symbols_in_one_request_with_documented_params(server: FakeMarketaux) -> None:
    client, _ = client_for(server)
    async with client:
        page = await client.fetch_news(
            BIG4, published_after=NOW - timedelta(days=1), published_before=NOW, limit=10
        )
    assert len(server.news_requests) == 1
    params = server.news_requests[0]["params"]
    assert params == {
        "symbols": "CBA.AX,WBC.AX,ANZ.AX,NAB.AX",
        "filter_entities": "true",
        "language": "en",
        "limit": "10",
        "published_after": "2026-11-23T01:00:00",
        "published_before": "2026-11-24T01:00:00",
        "api_token": TOKEN,
    }
    assert [a.uuid for a in page.articles] == ["a1", "a2", "a3"]  # old and French ones filtered out
    assert (page.found, page.returned, page.limit, page.page, page.skipped) == (3, 3, 10, 1, 0)
    a1 = page.articles[0]
    assert a1.published_at == NOW - timedelta(hours=1)
    assert a1.source == "afr.com" and a1.url.endswith("/a1")
    cba = a1.entity_for("CBA.AX")
    assert cba is not None and cba.sentiment_score == 0.6 and cba.match_score == 20.0
    # filter_entities=true: BHP (not asked for) is dropped, NAB (asked for) kept
    assert [e.symbol for e in page.articles[2].entities] == ["ANZ.AX", "NAB.AX"]


async def test_symbols_are_normalised_and_deduplicated(server: FakeMarketaux) -> None:
    client, _ = client_for(server)
    async with client:
        await client.fetch_news([" cba.ax", "CBA.AX", "wbc.ax"])
    assert server.news_requests[0]["params"]["symbols"] == "CBA.AX,WBC.AX"


@pytest.mark.parametrize(
    ("answers", "error", "requests", "waits"),
    [
        # not retryable: the same request would fail the same way
        ([Scripted(401)], MarketauxTokenInvalid, 1, []),
        ([Scripted(402, headers={"X-UsageLimit-Limit": "100"})], MarketauxUsageLimitReached, 1, []),
        ([Scripted(400)], MarketauxRequestRejected, 1, []),
        ([Scripted(403)], MarketauxRequestRejected, 1, []),
        ([Scripted(404)], MarketauxRequestRejected, 1, []),
        # retryable, exhausted after 3 attempts with exponential waits
        ([Scripted(429)] * 3, MarketauxRateLimited, 3, [0.5, 1.0]),
        ([Scripted(500)] * 3, MarketauxServerError, 3, [0.5, 1.0]),
        ([Scripted(503), Scripted(500), Scripted(503)], MarketauxServerError, 3, [0.5, 1.0]),
        ([Scripted(action="drop")] * 3, MarketauxUnreachable, 3, [0.5, 1.0]),
        # a 200 that is not MarketAux's shape is a bug somewhere, not a blip
        ([Scripted(200, body=b"<html>captive portal</html>")], MarketauxBadResponse, 1, []),
        ([Scripted(200, body=b'{"meta": {}}')], MarketauxBadResponse, 1, []),
        # an error status with a non-MarketAux body (e.g. from a proxy) is still typed
        ([Scripted(502, body=b"Bad Gateway")] * 3, MarketauxServerError, 3, [0.5, 1.0]),
    ],
)
async def test_errors_are_typed_and_retried_only_when_useful(
    server: FakeMarketaux,
    answers: list[Scripted],
    error: type[MarketauxError],
    requests: int,
    waits: list[float],
) -> None:
    server.push(*answers)
    client, sleeps = client_for(server)
    async with client:
        with pytest.raises(error) as info:
            await client.fetch_news(["CBA.AX"])
    assert len(server.requests) == requests == client.requests_made
    assert sleeps.waits == waits
    # A logged traceback shows the chained httpx error too, whose request URL holds the token.
    assert TOKEN not in "".join(traceback.format_exception(info.value)) and TOKEN not in repr(info.value)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "invalid_api_token"),
        (402, "usage_limit_reached"),
        (429, "rate_limit_reached"),
        (503, "maintenance_mode"),
    ],
)
async def test_error_code_and_message_come_from_the_body(
    server: FakeMarketaux, status: int, code: str
) -> None:
    server.push(*[Scripted(status)] * 3)
    client, _ = client_for(server)
    async with client:
        with pytest.raises(MarketauxError) as info:
            await client.fetch_news(["CBA.AX"])
    assert (info.value.status, info.value.code) == (status, code)
    assert code in str(info.value)


async def test_transient_failures_recover(server: FakeMarketaux) -> None:
    server.push(Scripted(429), Scripted(action="drop"))
    client, sleeps = client_for(server)
    async with client:
        page = await client.fetch_news(["CBA.AX"])
    assert [a.uuid for a in page.articles] == ["a1", "old"]  # newest first
    assert sleeps.waits == [0.5, 1.0] and client.requests_made == 3


async def test_retry_after_is_honoured_but_capped(server: FakeMarketaux) -> None:
    server.push(Scripted(429, headers={"Retry-After": "3"}), Scripted(429, headers={"Retry-After": "3600"}))
    client, sleeps = client_for(server)
    async with client:
        await client.fetch_news(["CBA.AX"])
    assert sleeps.waits == [3.0, 8.0]


async def test_real_wrong_token_answers_401_without_retry(server: FakeMarketaux) -> None:
    client, sleeps = client_for(server, token="wrong-token-123")
    async with client:
        with pytest.raises(MarketauxTokenInvalid, match="invalid_api_token"):
            await client.fetch_news(["CBA.AX"])
    assert sleeps.waits == [] and len(server.requests) == 1


async def test_quota_exhaustion_is_402(server: FakeMarketaux) -> None:
    server.daily_limit = 1
    client, _ = client_for(server)
    async with client:
        await client.fetch_news(["CBA.AX"])
        with pytest.raises(MarketauxUsageLimitReached):
            await client.fetch_news(["CBA.AX"])


async def test_timeout_is_unreachable_and_retried(server: FakeMarketaux) -> None:
    server.push(Scripted(action="hang"), Scripted(action="hang"))
    client, sleeps = client_for(server, timeout_s=0.2, attempts=2)
    async with client:
        with pytest.raises(MarketauxUnreachable) as info:
            await client.fetch_news(["CBA.AX"])
    assert info.value.code == "timeout" and sleeps.waits == [0.5]


async def test_connection_refused_is_unreachable() -> None:
    with socket.socket() as s:  # a port nobody listens on: bind, read the number, close
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    async with MarketauxClient(TOKEN, f"http://127.0.0.1:{port}", sleep=sleeps) as client:
        with pytest.raises(MarketauxUnreachable) as info:
            await client.fetch_news(["CBA.AX"])
    assert info.value.code == "network" and TOKEN not in str(info.value)
    assert client.requests_made == 3


async def test_without_token_no_request_is_made(server: FakeMarketaux) -> None:
    client, _ = client_for(server, token=None)
    assert not client.configured
    async with client:
        with pytest.raises(MarketauxNotConfigured, match="MARKETAUX_API_TOKEN is not set"):
            await client.fetch_news(["CBA.AX"])
    assert server.requests == []


async def test_token_never_reaches_logs_or_repr(
    server: FakeMarketaux, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, httpx's "HTTP Request: GET <url>" included
    for logger in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=logger)  # restored after the test
    server.push(Scripted(500), Scripted(action="drop"), Scripted(401))
    client, _ = client_for(server)
    async with client:
        assert TOKEN not in repr(client)
        with pytest.raises(MarketauxTokenInvalid):
            await client.fetch_news(["CBA.AX"])
        await client.fetch_news(["CBA.AX"])
    messages = [r.getMessage() for r in caplog.records]
    assert any("HTTP Request" in m and "api_token=***" in m for m in messages)  # the line exists, redacted
    assert any("retrying" in m for m in messages)
    text = "\n".join([*messages, caplog.text])
    assert TOKEN not in text


def test_parse_tolerates_nulls_and_skips_malformed_articles() -> None:
    good = article("g", "CBA beats", "CBA.AX", NOW, sentiment=None, match_score=None)
    good["entities"][0].update({"name": None, "industry": None, "country": None})
    body = {
        "meta": {"found": 4, "returned": 4, "limit": 4, "page": 1},
        "data": [
            good,
            {**good, "uuid": "bad-date", "published_at": "yesterday"},
            {**good, "uuid": None},
            "not an object",
        ],
    }
    page = parse_news(body)
    assert [a.uuid for a in page.articles] == ["g"] and page.skipped == 3
    entity = page.articles[0].entities[0]
    assert (entity.sentiment_score, entity.match_score, entity.name) == (None, None, None)


@pytest.mark.parametrize(
    ("entity_symbol", "country", "query", "found"),
    [
        ("CBA.AX", "au", "CBA.AX", True),
        ("cba.ax", "au", "CBA.AX", True),
        ("CBA", "au", "CBA.AX", True),  # bare ASX code listed under an Australian entity
        ("CBA", "us", "CBA.AX", False),  # same letters, another market: not our bank
        ("NAB.AX", "au", "CBA.AX", False),
    ],
)
def test_entity_for(entity_symbol: str, country: str, query: str, found: bool) -> None:
    raw = article("x", "t", entity_symbol, NOW)
    raw["entities"][0]["country"] = country
    assert (parse_news({"data": [raw]}).articles[0].entity_for(query) is not None) is found


@pytest.mark.parametrize(
    ("text", "token", "expected"),
    [
        ("GET https://h/v1/news/all?symbols=CBA.AX&api_token=abc123&limit=3", None,
         "GET https://h/v1/news/all?symbols=CBA.AX&api_token=***&limit=3"),
        ("GET https://h/v1/news/all?api_token=abc123", None, "GET https://h/v1/news/all?api_token=***"),
        ("token abc123 leaked in a message", "abc123", "token *** leaked in a message"),
        ("nothing secret here", "abc123", "nothing secret here"),
    ],
)  # fmt: skip
def test_redact(text: str, token: str | None, expected: str) -> None:
    assert redact(text, token) == expected


@pytest.mark.parametrize(
    ("attempts", "base", "expected"),
    [(1, 0.5, []), (3, 0.5, [0.5, 1.0]), (6, 1.0, [1.0, 2.0, 4.0, 8.0, 8.0])],  # capped at 8 s
)
def test_backoff_delays(attempts: int, base: float, expected: list[float]) -> None:
    assert backoff_delays(attempts, base) == expected


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (datetime(2026, 11, 24, 9, 30, tzinfo=UTC), "2026-11-24T09:30:00"),
        (datetime.fromisoformat("2026-11-24T09:30:00+11:00"), "2026-11-23T22:30:00"),  # Sydney -> UTC
    ],
)
def test_published_after_is_utc(instant: datetime, expected: str) -> None:
    assert format_published_after(instant) == expected
