"""market-data with IG Markets as its quote source, against the local fake IG (tests/unit/_ig_helpers).

IG serves the present only (its source refuses any other clock as "not_live"), so these tests run
on the wall clock and are written not to care what time it is: the fake's updateTime is a second
before now, and its bars are those of the last sessions before today (all visible at any hour).
The fallback is the synthetic source (`auto` with Yahoo made unreachable), whose quotes exist only
once today's session has a bar: where that matters the test says so and accepts either outcome,
as long as IG's failure is named.
"""

from datetime import UTC, date, datetime, timedelta

import pytest

from services.base.rpc import NotFound
from services.domain.asx_calendar import is_early_close, is_trading_day, to_sydney
from services.domain.intraday import resample, session_minutes
from services.domain.price_history import synthetic_bars, trading_sessions
from services.domain.synthetic_intraday import synthetic_intraday_bars
from tests.support import rpc_call_sync
from tests.unit._ig_helpers import API_KEY, PASSWORD, USERNAME, FakeIg, market_snapshot, price_point

OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
CBA_EPIC = "AA.D.CBA.CASH.IP"
INDEX_EPIC = "IX.D.ASX.IFT.IP"
BANK_EPICS = ("AA.D.CBA.CASH.IP", "AA.D.WBC.CASH.IP", "AA.D.ANZ.CASH.IP", "AA.D.NAB.CASH.IP")


def ig_env(ig: FakeIg, **extra: str) -> dict:
    return {
        "TRADING_MARKET_DATA_SOURCE": "auto",  # Yahoo unreachable: synthetic daily bars and fallback
        "TRADING_MARKET_DATA_PROBE_TIMEOUT_S": "1",
        **OFFLINE,
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
        "IG_API_KEY": API_KEY,
        "IG_USERNAME": USERNAME,
        "IG_PASSWORD": PASSWORD,
        "IG_BASE_URL": ig.url,
        **extra,
    }


def serve_cba(ig: FakeIg) -> list[dict]:
    """The banks' snapshots updated a second ago, and CBA's 5m bars of the two sessions before today."""
    updated = to_sydney(datetime.now(UTC) - timedelta(seconds=1))
    for epic in BANK_EPICS:
        ig.state.markets[epic] = market_snapshot(
            bid=100.0, offer=100.02, update_time=updated.strftime("%H:%M:%S"), delay_time=0
        )
    today = to_sydney(datetime.now(UTC)).date()
    days = [d for d in trading_sessions(today - timedelta(days=10), today, is_trading_day) if d < today][-2:]
    daily = {
        b.date: b
        for b in synthetic_bars("CBA.AX", trading_sessions(date(2015, 1, 2), days[-1], is_trading_day))
    }
    bars = [
        bar
        for day in days
        for bar in resample(
            synthetic_intraday_bars("CBA.AX", daily[day], session_minutes(day, is_early_close(day))), "5m"
        )
    ]
    ig.state.price_points[(CBA_EPIC, "MINUTE_5")] = [
        price_point(b.start, b.open, b.high, b.low, b.close, volume=b.volume) for b in bars
    ]
    return [b.to_dict() for b in bars]


def ig_health(service) -> dict:
    return rpc_call_sync(service.socket, "health")["ig"]


async def test_quotes_and_bars_come_from_ig(suite, processes, client):
    with FakeIg() as ig:
        bars = serve_cba(ig)
        ig.state.markets[CBA_EPIC]["delayTime"] = 0
        service = processes.start("market-data", suite, extra_env=ig_env(ig))
        quote = await client.call_service("market-data", "get_quote", symbol="CBA.AX")
        assert (quote["source"], quote["bid"], quote["ask"], quote["price"]) == ("ig", 100.0, 100.02, 100.01)
        assert quote["delay_s"] == 0 and quote["fallback_reason"] is None and quote["stale"] is False
        assert datetime.fromisoformat(quote["quote_time"]) <= datetime.now(UTC)

        reply = await client.call_service("market-data", "get_intraday_bars", symbol="CBA.AX", limit=10)
        assert (reply["source"], reply["fallback_reason"], reply["delay_s"]) == ("ig", None, 0)
        assert [b["start"] for b in reply["bars"]] == [b["start"] for b in bars[-10:]]
        assert [b["close"] for b in reply["bars"]] == pytest.approx(
            [b["close"] for b in bars[-10:]], abs=1e-3
        )

        health = ig_health(service)
        assert health["used"] is True and health["fallback"] == "synthetic" and health["last_failure"] is None
        assert health["no_epic"] == ["^AXJO"]  # the index has no default epic
        index = await client.call_service("market-data", "get_intraday_bars", symbol="^AXJO", limit=3)
        assert (index["source"], index["fallback_reason"]) == ("synthetic", "ig no_epic")
        assert health["allowance"]["remaining"] == ig.state.allowance_remaining
        assert health["allowance"]["total"] == 10_000 and health["allowance"]["resets_in_s"] > 500_000
        # ANZ's epic is no longer served by the fake: IG refuses it, and the synthetic bars stand in, labelled.
        del ig.state.markets["AA.D.ANZ.CASH.IP"]
        anz = await client.call_service("market-data", "get_intraday_bars", symbol="ANZ.AX", limit=5)
        assert (anz["source"], anz["fallback_reason"]) == ("synthetic", "ig request_refused")
        assert ig_health(service)["last_failure"]["symbol"] == "ANZ.AX"
        assert service.stop() == 0


async def test_an_exhausted_allowance_falls_back_for_bars_and_shows_in_health(suite, processes, client):
    with FakeIg() as ig:
        serve_cba(ig)
        # The index gets an epic too: in a session the quote loop prices the universe, and an index
        # without one would fall back (counted) whenever the loop ran, so the count would depend on
        # the hour the test runs at (it failed in CI at 10:20 Sydney).
        ig.state.markets[INDEX_EPIC] = dict(ig.state.markets[CBA_EPIC])
        service = processes.start(
            "market-data", suite, extra_env=ig_env(ig, TRADING_PAPER_TRADING_IG_EPICS=f"^AXJO={INDEX_EPIC}")
        )
        first = await client.call_service("market-data", "get_intraday_bars", symbol="CBA.AX", limit=5)
        assert first["source"] == "ig"
        ig.state.allowance_remaining = 0  # IG now answers exceeded-account-historical-data-allowance
        reply = await client.call_service("market-data", "get_intraday_bars", symbol="CBA.AX", limit=5)
        assert (reply["source"], reply["fallback_reason"], len(reply["bars"])) == (
            "synthetic",
            "ig allowance_exhausted",
            5,
        )
        health = ig_health(service)
        assert health["allowance"]["remaining"] == 0 and health["allowance"]["resets_in_s"] > 500_000
        assert health["last_failure"]["label"] == "ig allowance_exhausted"
        assert health["held_back_s"] == 0  # the quote (a snapshot) costs no allowance: IG is still asked
        quote = await client.call_service("market-data", "get_quote", symbol="CBA.AX")
        assert quote["source"] == "ig" and quote["fallback_reason"] is None
        assert health["ig_fallbacks"] == 1
        assert service.stop() == 0


async def test_ig_5xx_falls_back_labelled_and_holds_ig_back(suite, processes, client):
    with FakeIg() as ig:
        serve_cba(ig)
        ig.state.server_errors = 1_000
        service = processes.start(
            "market-data", suite, extra_env=ig_env(ig, TRADING_MARKET_DATA_IG_RETRY_S="600")
        )
        try:
            quote = await client.call_service("market-data", "get_quote", symbol="CBA.AX")
        except NotFound as exc:
            # Before today's first synthetic bar (nights, weekends, holidays) the fallback has no
            # quote either: the error names both.
            assert "ig server_error" in exc.message
        else:
            assert (quote["source"], quote["fallback_reason"]) == ("synthetic", "ig server_error")
            assert quote["bid"] is None and quote["ask"] is None
        reply = await client.call_service("market-data", "get_intraday_bars", symbol="CBA.AX", limit=5)
        assert (reply["source"], reply["fallback_reason"]) == ("synthetic", "ig server_error")
        health = ig_health(service)
        assert health["last_failure"]["label"] == "ig server_error" and health["held_back_s"] > 500
        asked = len([p for p in ig.paths() if p.startswith("GET /markets") or p.startswith("GET /prices")])
        await client.call_service("market-data", "get_intraday_bars", symbol="CBA.AX", limit=5)
        after = len([p for p in ig.paths() if p.startswith("GET /markets") or p.startswith("GET /prices")])
        assert after == asked  # held back: IG is not asked again until IG_RETRY_S has passed
        assert service.stop() == 0


async def test_ig_is_skipped_cleanly_on_a_replayed_clock_and_not_used_for_synthetic(suite, processes, client):
    with FakeIg() as ig:
        serve_cba(ig)
        replay = ig_env(
            ig,
            TRADING_CLOCK_START="2024-06-12T11:00:00+10:00",
            TRADING_PAPER_TRADING_IG_EPICS="^AXJO=IX.D.ASX.IFT.IP",  # the shared mapping, read here too
        )
        service = processes.start("market-data", suite, extra_env=replay)
        quote = await client.call_service("market-data", "get_quote", symbol="CBA.AX")
        assert (quote["source"], quote["fallback_reason"]) == ("synthetic", None)
        health = ig_health(service)
        assert health["used"] is True and health["last_failure"] is None and health["ig_not_live_skips"] >= 1
        assert health["no_epic"] == []  # the index has its epic from TRADING_PAPER_TRADING_IG_EPICS
        assert not [p for p in ig.paths() if not p.startswith("POST /session")]
        assert service.stop() == 0

        synthetic = ig_env(ig, TRADING_MARKET_DATA_SOURCE="synthetic")
        service = processes.start("market-data", suite, extra_env=synthetic)
        assert ig_health(service) == {"used": False, "why_not": "TRADING_MARKET_DATA_SOURCE is synthetic"}
        assert service.stop() == 0

        bad = processes.service(
            "market-data", suite, extra_env=ig_env(ig, TRADING_PAPER_TRADING_IG_EPICS="CBA.AX")
        )
        assert bad.start(wait=False).wait_exit() == 2
        assert "TRADING_PAPER_TRADING_IG_EPICS: 'CBA.AX' is not SYMBOL=EPIC" in bad.output()
