"""The market-data service over its real Unix socket, with a real redis-server.

Sources are real too: the synthetic walk, and CSV files written into the suite's data directory
(generated from the synthetic walk, so these tests need no outside data), plus the shared ASX
files for the replay test when they are present.
"""

import asyncio
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from services.base.rpc import DependencyUnavailable, InvalidParams, NotFound
from services.domain.asx_calendar import is_early_close, is_trading_day
from services.domain.intraday import resample, session_minutes
from services.domain.intraday_history import intraday_csv_file_name
from services.domain.price_history import csv_file_name, synthetic_bars, trading_sessions
from services.domain.synthetic_intraday import synthetic_intraday_bars
from tests.support import EventWatcher, ServiceProcess, async_wait_until, rpc_call_sync

HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"
BANKS = ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")


def write_csv(directory: Path, symbol: str, until: date) -> None:
    sessions = trading_sessions(date(2023, 1, 3), until, is_trading_day)
    lines = [
        f"{b.date},{b.open},{b.high},{b.low},{b.close},{b.adj_close},{b.volume}"
        for b in synthetic_bars(symbol, sessions)
    ]
    (directory / csv_file_name(symbol)).write_text(HEADER + "\n".join(lines))


def csv_suite(processes, suite, symbols, until=date(2024, 6, 14), **env) -> ServiceProcess:
    market_dir = suite.data_dir / "market"
    market_dir.mkdir(parents=True, exist_ok=True)
    for symbol in symbols:
        write_csv(market_dir, symbol, until)
    extra = {
        "TRADING_MARKET_DATA_SOURCE": "csv",
        "TRADING_MARKET_DATA_DIR": str(market_dir),
        "TRADING_CLOCK_START": "2024-06-17T12:00:00+10:00",  # Monday noon: Friday's bar is the latest
        **env,
    }
    return processes.service("market-data", suite, extra_env=extra)


# A Saturday: no session, so no quote refresh publishes events while a test counts them.
WEEKEND = {"TRADING_CLOCK_START": "2024-06-15T12:00:00+10:00"}


@pytest.fixture
def synthetic_service(suite, processes):
    service = processes.start("market-data", suite, extra_env=WEEKEND)
    yield service
    assert service.stop() == 0  # a clean exit (the processes fixture would only make sure)


def health(service: ServiceProcess) -> dict:
    return rpc_call_sync(service.socket, "health")


async def test_market_data_package_and_cache_hit(synthetic_service, client):
    first = await client.call_service("market-data", "get_market_data", symbol="cba.ax")
    second = await client.call_service("market-data", "get_market_data", symbol="CBA.AX")
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["symbol"] == "CBA.AX" and first["source"] == "synthetic" and first["stale"] is False
    assert second["price"] == first["price"] == first["bars"][-1]["close"]
    assert first["change"] == pytest.approx(first["bars"][-1]["close"] - first["bars"][-2]["close"])
    assert first["change_pct"] == pytest.approx(first["change"] / first["bars"][-2]["close"] * 100)
    assert len(first["bars"]) == 30 and first["as_of"].startswith(first["bars"][-1]["date"] + "T16:10:00+1")
    technical = first["technical"]
    assert 0 <= technical["rsi"] <= 100 and technical["insufficient_history"] == {}
    assert set(technical["sma"]) == {"20", "50", "200"} and technical["volume"]["trend"] in (
        "rising",
        "falling",
        "flat",
    )
    assert first["market_context"]["context"] in ("bull", "bear", "sideways")
    assert first["market_context"]["index_symbol"] == "^AXJO"
    assert first["quality"]["score"] == 1.0  # synthetic bars are complete and current
    status = health(synthetic_service)
    assert status["source"] == "synthetic" and status["cache_hits"] >= 1
    assert any("not real prices" in w for w in status["warnings"])


async def test_concurrent_requests_share_one_fetch(synthetic_service, client):
    await client.call_service("market-data", "get_market_context")  # the index is cached first
    before = health(synthetic_service)["fetches"]
    results = await asyncio.gather(
        *(client.call_service("market-data", "get_technical_analysis", symbol="WBC.AX") for _ in range(20))
    )
    assert health(synthetic_service)["fetches"] - before == 1
    assert len({r["rsi"] for r in results}) == 1
    assert sum(not r["cached"] for r in results) >= 1


async def test_refresh_publishes_one_event_per_symbol(synthetic_service, client, suite):
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "market_data_updated") as watcher:
        result = await client.call_service("market-data", "refresh_all_data")
        assert result["succeeded"] == 5 and result["failed"] == 0
        for symbol in (*BANKS, "^AXJO"):
            event = await watcher.wait_for(
                "market_data_updated", lambda e, s=symbol: e["data"]["symbol"] == s
            )
            assert event["source"] == "market-data"
            assert event["data"]["source"] == "synthetic"
            assert event["data"]["price"] == result["results"][symbol]["price"]
            assert {"change", "change_pct", "as_of"} <= set(event["data"])
    assert sorted(e["data"]["symbol"] for e in watcher.of_type("market_data_updated")) == sorted(
        (*BANKS, "^AXJO")
    )


async def test_price_history_for_the_index_and_the_params_checks(synthetic_service, client):
    history = await client.call_service("market-data", "get_price_history", symbol="^AXJO", days=260)
    assert len(history["bars"]) == 260 and history["source"] == "synthetic"
    dates = [b["date"] for b in history["bars"]]
    assert dates == sorted(dates)
    with pytest.raises(InvalidParams) as unknown:
        await client.call_service("market-data", "get_market_data", symbol="XYZ.AX")
    assert unknown.value.code == -32602 and "not in TRADING_SYMBOLS" in unknown.value.message
    with pytest.raises(InvalidParams):
        await client.call_service("market-data", "get_market_data", symbol="../etc/passwd")
    with pytest.raises(InvalidParams) as days:
        await client.call_service("market-data", "get_price_history", symbol="CBA.AX", days=0)
    assert days.value.param == "days"


def heavy_libraries_mapped(pid: int) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return [lib for lib in ("pandas", "numpy") if lib in maps]


def test_pandas_and_yfinance_are_not_loaded_for_synthetic(synthetic_service):
    rpc_call_sync(synthetic_service.socket, "get_market_data", {"symbol": "NAB.AX"})
    maps = Path(f"/proc/{synthetic_service.pid}/maps")
    if not maps.exists():
        pytest.skip("needs /proc to inspect the service's loaded libraries")
    loaded = maps.read_text()
    assert "pandas" not in loaded and "numpy" not in loaded


async def test_refresh_with_one_symbol_failing(suite, processes, client):
    service = csv_suite(processes, suite, ("CBA.AX", "WBC.AX", "ANZ.AX", "^AXJO")).start()  # no NAB.AX
    result = await client.call_service("market-data", "refresh_all_data")
    assert result["source"] == "csv"
    assert result["succeeded"] == 4 and result["failed"] == 1
    assert result["results"]["NAB.AX"]["ok"] is False and result["results"]["NAB.AX"]["code"] == -32006
    assert "NAB.AX.csv" in result["results"]["NAB.AX"]["error"]
    assert result["results"]["CBA.AX"]["date"] == "2024-06-14"
    fetches = health(service)["fetches"]
    for _ in range(3):
        with pytest.raises(NotFound):
            await client.call_service("market-data", "get_market_data", symbol="NAB.AX")
    # Within the retry window a symbol with no data is not fetched again on every request.
    assert health(service)["fetches"] == fetches
    assert health(service)["source"] == "csv"
    assert service.stop() == 0


async def test_failed_refresh_serves_last_good_data_marked_stale(suite, processes, client):
    service = csv_suite(processes, suite, ("CBA.AX", "^AXJO"), TRADING_MARKET_DATA_CACHE_S="0.3").start()
    good = await client.call_service("market-data", "get_market_data", symbol="CBA.AX")
    assert good["stale"] is False
    (suite.data_dir / "market" / "CBA.AX.csv").write_text("Date,Price\n2024-06-14,1\n")

    async def stale_reply():
        reply = await client.call_service("market-data", "get_market_data", symbol="CBA.AX")
        return reply if reply["stale"] else None

    stale = await async_wait_until(stale_reply, 30, 0.1, what="a stale reply after the cache expired")
    assert stale["price"] == good["price"] and stale["bars"] == good["bars"]
    assert "missing column" in stale["stale_reason"]
    assert any("last refresh failed" in r for r in stale["quality"]["reasons"])
    status = health(service)
    assert status["status"] == "degraded" and status["stale_symbols"] == ["CBA.AX"]
    write_csv(suite.data_dir / "market", "CBA.AX", date(2024, 6, 14))  # the source recovers

    async def fresh_reply():
        reply = await client.call_service("market-data", "get_market_data", symbol="CBA.AX")
        return reply if not reply["stale"] else None

    assert (await async_wait_until(fresh_reply, 30, 0.1, what="recovery"))["price"] == good["price"]
    assert health(service)["stale_symbols"] == []
    assert service.stop() == 0


async def test_replay_inside_the_real_csv_range_serves_no_future_bars(suite, processes, client, shared_asx):
    market_dir = suite.data_dir / "market"
    market_dir.mkdir(parents=True, exist_ok=True)
    for name in ("CBA.AX.csv", "AXJO.csv"):
        shutil.copy(shared_asx / name, market_dir / name)  # into the test's temp dir only
    env = {
        "TRADING_MARKET_DATA_SOURCE": "csv",
        "TRADING_MARKET_DATA_DIR": str(market_dir),
        "TRADING_CLOCK_START": "2019-06-14T16:05:00+10:00",  # five minutes before Friday's bar is final
        "TRADING_CLOCK_SPEED": "60",  # one suite minute per real second
    }
    service = processes.start("market-data", suite, extra_env=env)
    before = await client.call_service("market-data", "get_price_history", symbol="CBA.AX", days=5)
    assert before["bars"][-1]["date"] == "2019-06-13"

    async def friday_visible():
        reply = await client.call_service("market-data", "get_price_history", symbol="CBA.AX", days=5)
        return reply if reply["bars"][-1]["date"] == "2019-06-14" else None

    # The cache must not hold Thursday past 16:10 suite time, even within its 300 s TTL.
    after = await async_wait_until(friday_visible, 60, 0.2, what="Friday's bar at 16:10 suite time")
    assert after["cached"] is False
    context = await client.call_service("market-data", "get_market_context")
    assert context["source"] == "csv" and context["as_of"] <= "2019-06-14T16:10:00+10:00"
    assert service.stop() == 0


# Yahoo made unreachable on purpose: urllib (the reachability check) and curl (under yfinance) honour
# the proxy variables, and nothing listens on port 9, so the probe fails at once on any network.
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


@pytest.mark.parametrize(("with_files", "chosen"), [(True, "csv"), (False, "synthetic")])
async def test_auto_falls_back_and_says_which_source(suite, processes, client, with_files, chosen):
    symbols = (*BANKS, "^AXJO") if with_files else ()
    service = csv_suite(processes, suite, symbols, TRADING_MARKET_DATA_SOURCE="auto", **OFFLINE).start()
    status = health(service)
    assert status["source"] == chosen
    assert status["source_reason"].startswith("auto: yfinance probe failed")
    reply = await client.call_service("market-data", "get_market_data", symbol="ANZ.AX")
    assert reply["source"] == chosen
    log_text = (suite.log_dir / "market-data.log").read_text()
    assert f"market data source: {chosen}" in log_text
    # Offline, `auto` learns it without loading yfinance: pandas and numpy stay out of memory.
    assert not heavy_libraries_mapped(service.pid)
    assert service.stop() == 0


async def test_yfinance_unreachable_is_a_dependency_error(suite, processes, client):
    # On a weekend, so no quote refresh runs first: after two failed time-zone look-ups in one
    # process, yfinance stops asking and reports "possibly delisted" (YFTzMissingError), which
    # the daily source reads as an unknown symbol (-32006) rather than Yahoo being down.
    env = {
        "TRADING_MARKET_DATA_SOURCE": "yfinance",
        "TRADING_MARKET_DATA_YF_ATTEMPTS": "2",
        **OFFLINE,
        **WEEKEND,
    }
    service = processes.start("market-data", suite, extra_env=env)
    assert health(service)["source"] == "yfinance"
    with pytest.raises(DependencyUnavailable) as failed:
        await client.call_service("market-data", "get_market_data", symbol="CBA.AX")
    assert failed.value.code == -32001
    assert "Yahoo request for CBA.AX failed" in failed.value.message
    assert failed.value.data["source"] == "yfinance"
    assert health(service)["fetch_errors"] == 1  # one fetch (with its retries), then the retry window
    assert service.stop() == 0


# ---- quotes and intraday bars -------------------------------------------------------------------

QUOTE_FIELDS = {
    "symbol", "price", "bid", "ask", "day_open", "day_high", "day_low", "volume", "previous_close",
    "change", "change_pct", "quote_time", "delay_s", "source", "stale", "stale_reason", "stale_cause", "fallback_reason", "basis",
    "bar",
}  # fmt: skip
BAR_FIELDS = {"start", "open", "high", "low", "close", "volume"}


def write_intraday_csv(directory: Path, symbol: str, days: list[date], interval: str = "5m") -> list[dict]:
    """`<SYMBOL>_<interval>.csv` with the synthetic path of `days`; the bars written, as dicts."""
    sessions = trading_sessions(date(2015, 1, 2), days[-1], is_trading_day)
    daily = {b.date: b for b in synthetic_bars(symbol, sessions)}
    bars = []
    for day in days:
        minutes = synthetic_intraday_bars(symbol, daily[day], session_minutes(day, is_early_close(day)))
        bars += resample(minutes, interval)
    rows = [f"{b.start.isoformat()},{b.open},{b.high},{b.low},{b.close},{b.volume}" for b in bars]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / intraday_csv_file_name(symbol, interval)).write_text(
        "Datetime,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n"
    )
    return [b.to_dict() for b in bars]


def in_session(start: str, speed: float = 1, **env: str) -> dict:
    return {"TRADING_CLOCK_START": start, "TRADING_CLOCK_SPEED": str(speed), **env}


async def test_quote_and_intraday_bars_shapes_and_params(suite, processes, client):
    service = processes.start("market-data", suite, extra_env=in_session("2024-06-14T11:02:30+10:00"))
    quote = await client.call_service("market-data", "get_quote", symbol="cba.ax")
    assert set(quote) == QUOTE_FIELDS
    assert quote["symbol"] == "CBA.AX" and quote["source"] == "synthetic" and quote["delay_s"] == 0
    assert quote["bid"] is None and quote["ask"] is None and quote["stale"] is False
    assert quote["quote_time"] == "2024-06-14T11:02:00+10:00"  # the 11:01 minute ended; 11:02 has not
    assert quote["day_low"] <= quote["price"] <= quote["day_high"] and quote["volume"] > 0
    assert quote["change"] == pytest.approx(quote["price"] - quote["previous_close"], abs=1e-4)
    # The minute behind the price, whose range the paper trader checks stops against.
    assert quote["bar"]["interval"] == "1m" and quote["bar"]["close"] == quote["price"]
    assert (quote["bar"]["start"], quote["bar"]["end"]) == ("2024-06-14T11:01:00+10:00", quote["quote_time"])
    assert quote["day_low"] <= quote["bar"]["low"] <= quote["bar"]["high"] <= quote["day_high"]

    reply = await client.call_service("market-data", "get_intraday_bars", symbol="^AXJO")
    assert (reply["symbol"], reply["interval"], reply["source"], reply["delay_s"]) == (
        "^AXJO",
        "5m",
        "synthetic",
        0,
    )
    bars = reply["bars"]
    assert len(bars) == 78 and all(set(b) == BAR_FIELDS for b in bars)
    assert [b["start"] for b in bars] == sorted(b["start"] for b in bars)  # oldest first
    assert bars[-1]["start"] == "2024-06-14T10:55:00+10:00" and bars[0]["start"].startswith("2024-06-13")
    hourly = await client.call_service(
        "market-data", "get_intraday_bars", symbol="CBA.AX", interval="60m", limit=3
    )
    assert [b["start"][11:16] for b in hourly["bars"]] == [
        "14:00",
        "15:00",
        "10:00",
    ]  # Thursday's, then today's

    bad = [
        ("get_quote", {"symbol": "XYZ.AX"}, "symbol"),
        ("get_intraday_bars", {"symbol": "XYZ.AX"}, "symbol"),
        ("get_intraday_bars", {"symbol": "CBA.AX", "interval": "2m"}, "interval"),
        ("get_intraday_bars", {"symbol": "CBA.AX", "interval": "1d"}, "interval"),
        ("get_intraday_bars", {"symbol": "CBA.AX", "limit": 0}, "limit"),
        ("get_intraday_bars", {"symbol": "CBA.AX", "limit": 1001}, "limit"),
    ]
    for method, params, param in bad:
        with pytest.raises(InvalidParams) as refused:
            await client.call_service("market-data", method, **params)
        assert refused.value.code == -32602 and refused.value.param == param, (method, params)
    status = health(service)
    assert status["quote_source"] == "synthetic" and status["quote_refresh_s"] == 60
    assert status["quotes_discarded"] == {"future_time": 0, "non_positive_price": 0}
    assert status["last_quote_refresh"].startswith("2024-06-14T")


async def test_no_look_ahead_at_a_bar_boundary(suite, processes, client):
    """A 5m bar 10:00-10:05 is served from 10:05:00 by the suite clock, never a moment before."""
    market_dir = suite.data_dir / "market"
    written = write_intraday_csv(market_dir, "CBA.AX", [date(2024, 6, 13), date(2024, 6, 14)])
    first_today = next(b for b in written if b["start"] == "2024-06-14T10:00:00+10:00")
    env = in_session(
        "2024-06-14T10:04:00+10:00",  # one suite minute (6 real seconds) before the bar ends
        speed=10,
        TRADING_MARKET_DATA_SOURCE="csv",
        TRADING_MARKET_DATA_DIR=str(market_dir),
        TRADING_MARKET_DATA_QUOTE_S="1",
    )
    processes.start("market-data", suite, extra_env=env)
    seen = []

    async def latest():
        reply = await client.call_service("market-data", "get_intraday_bars", symbol="CBA.AX", limit=2)
        seen.append((reply["as_of"], reply["bars"][-1]["start"]))
        return reply

    bar_end = datetime.fromisoformat("2024-06-14T10:05:00+10:00")
    reply = await latest()
    assert datetime.fromisoformat(reply["as_of"]) < bar_end, "the service took too long to start"
    assert reply["bars"][-1]["start"] == "2024-06-13T15:55:00+10:00"  # Thursday's last
    with pytest.raises(NotFound) as none:  # no quote of today yet, and never one before
        await client.call_service("market-data", "get_quote", symbol="CBA.AX")
    assert "is visible yet" in none.value.message and none.value.code == -32006
    after = await async_wait_until(
        latest,
        60,
        0.05,
        what="the 10:00 bar",
        until=lambda r: r["bars"][-1]["start"].startswith("2024-06-14"),
    )
    assert after["bars"][-1] == first_today
    # Every reply on either side of the boundary: the bar shows exactly when it has ended.
    for as_of, last in seen:
        assert (last == "2024-06-14T10:00:00+10:00") == (datetime.fromisoformat(as_of) >= bar_end), (
            as_of,
            last,
        )

    async def quote_now():  # refreshed at most TRADING_MARKET_DATA_QUOTE_S (1 suite s) after the bar
        return await client.call_service("market-data", "get_quote", symbol="CBA.AX")

    quote = await async_wait_until(quote_now, 30, 0.05, what="today's first quote", ignoring=(NotFound,))
    assert quote["source"] == "csv" and datetime.fromisoformat(quote["quote_time"]) >= bar_end
    ends = {(datetime.fromisoformat(b["start"]) + timedelta(minutes=5)).isoformat(): b for b in written}
    assert quote["price"] == ends[quote["quote_time"]]["close"]  # the close of the bar that ended then
    assert quote["previous_close"] == ends["2024-06-13T16:00:00+10:00"]["close"]


async def test_a_quote_goes_stale_with_its_reason_and_never_was_is_32006(suite, processes, client):
    market_dir = suite.data_dir / "market"
    write_intraday_csv(market_dir, "CBA.AX", [date(2024, 6, 14)])
    write_intraday_csv(market_dir, "^AXJO", [date(2024, 6, 14)])
    service = csv_suite(
        processes,
        suite,
        (*BANKS, "^AXJO"),
        TRADING_CLOCK_START="2024-06-14T12:00:00+10:00",
        TRADING_MARKET_DATA_QUOTE_S="1",  # a call a suite second after the last refresh refreshes
    )
    write_csv(market_dir, "WBC.AX", date(2024, 6, 13))  # daily only, and no bar for today yet
    service.start()
    good = await client.call_service("market-data", "get_quote", symbol="CBA.AX")
    assert good["stale"] is False and good["quote_time"] == "2024-06-14T12:00:00+10:00"
    assert good["basis"] == "intraday"
    with pytest.raises(NotFound) as never:  # no intraday file and no daily bar today: never synthetic
        await client.call_service("market-data", "get_quote", symbol="WBC.AX")
    assert never.value.code == -32006 and "no bar for 2024-06-14" in never.value.message
    # Daily file only, with today's bar: the day's open, known from 10:00 (its range is not).
    sessions = trading_sessions(date(2023, 1, 3), date(2024, 6, 14), is_trading_day)  # as write_csv
    daily = {b.date: b for b in synthetic_bars("NAB.AX", sessions)}
    today, before = daily[date(2024, 6, 14)], daily[date(2024, 6, 13)]
    opened = await client.call_service("market-data", "get_quote", symbol="NAB.AX")
    assert (opened["basis"], opened["source"], opened["stale"]) == ("daily_open", "csv", False)
    assert opened["price"] == opened["day_high"] == opened["day_low"] == today.open and opened["volume"] == 0
    assert opened["quote_time"] == "2024-06-14T10:00:00+10:00" and opened["previous_close"] == before.close
    with pytest.raises(NotFound):  # no intraday bars are made up from the daily ones
        await client.call_service("market-data", "get_intraday_bars", symbol="NAB.AX")
    plain = await client.call_service("market-data", "get_market_data", symbol="NAB.AX")
    assert plain["quote"]["basis"] == "daily_open" and plain["price_basis"] == "quote"
    # Several quotes in one call: each as get_quote gives it, the one without a quote as its error.
    batch = await client.call_service("market-data", "get_quotes", symbols=["cba.ax", "WBC.AX", "NAB.AX"])
    assert set(batch["quotes"]) == {"CBA.AX", "NAB.AX"} and set(batch["errors"]) == {"WBC.AX"}
    assert batch["quotes"]["CBA.AX"] == await client.call_service("market-data", "get_quote", symbol="CBA.AX")
    assert batch["quotes"]["NAB.AX"] == opened
    assert batch["errors"]["WBC.AX"]["code"] == -32006
    assert "no bar for 2024-06-14" in batch["errors"]["WBC.AX"]["message"]
    for symbols in ([], ["XYZ.AX"], "CBA.AX"):
        with pytest.raises(InvalidParams):
            await client.call_service("market-data", "get_quotes", symbols=symbols)
    # The market data with its price history in one reply: the history as get_price_history's.
    both = await client.call_service("market-data", "get_market_data", symbol="NAB.AX", history_days=5)
    history = await client.call_service("market-data", "get_price_history", symbol="NAB.AX", days=5)
    assert both["history"]["bars"] == history["bars"] and both["history"]["as_of"] == history["as_of"]
    same = ("symbol", "as_of", "price", "price_basis", "quote", "bars", "technical", "quality")
    assert {k: both[k] for k in same} == {k: plain[k] for k in same} and "history" not in plain
    with pytest.raises(InvalidParams) as refused:
        await client.call_service("market-data", "get_market_data", symbol="NAB.AX", history_days=0)
    assert refused.value.param == "history_days"
    assert plain["price"] == today.open and plain["date"] == "2024-06-13"  # the bars stop at yesterday

    write_intraday_csv(market_dir, "CBA.AX", [date(2024, 6, 13)])  # the source loses today's bars

    async def stale_quote():
        return await client.call_service("market-data", "get_quote", symbol="CBA.AX")

    stale = await async_wait_until(stale_quote, 30, 0.1, what="a stale quote", until=lambda q: q["stale"])
    assert stale["price"] == good["price"] and stale["quote_time"] == good["quote_time"]
    assert "no 5m bars for CBA.AX on 2024-06-14" in stale["stale_reason"]
    assert stale["stale_cause"] == "no_data"  # the source answered: no newer bar for it
    data = await client.call_service("market-data", "get_market_data", symbol="CBA.AX")
    assert (
        data["quote"]["stale"] is True and data["price_basis"] == "quote" and data["price"] == good["price"]
    )
    status = health(service)
    assert "CBA.AX" in status["stale_quotes"] and status["quote_source"] == "csv"
    assert service.stop() == 0


@pytest.mark.parametrize(
    ("clock", "basis"),
    [("2024-06-14T11:00:00+10:00", "quote"), ("2024-06-14T17:00:00+10:00", "close")],
)
async def test_market_data_price_basis_and_synthetic_consistency(suite, processes, client, clock, basis):
    processes.start("market-data", suite, extra_env=in_session(clock))
    data = await client.call_service("market-data", "get_market_data", symbol="WBC.AX")
    quote = data["quote"]
    assert data["price_basis"] == basis and set(quote) == QUOTE_FIELDS
    assert data["technical"]["rsi"] is not None and data["as_of"].endswith("T16:10:00+10:00")
    if basis == "quote":  # in the session: the quote's price and change; the bars stop at yesterday
        assert (data["price"], data["change"], data["change_pct"]) == (
            quote["price"],
            quote["change"],
            quote["change_pct"],
        )
        assert data["date"] == "2024-06-13" and quote["previous_close"] == data["bars"][-1]["close"]
    else:  # after hours: the close; today's path ended exactly on today's daily bar
        last = data["bars"][-1]
        assert data["date"] == "2024-06-14" and data["price"] == last["close"]
        assert quote["quote_time"] == "2024-06-14T16:00:00+10:00" and quote["price"] == last["close"]
        assert (quote["day_open"], quote["day_high"], quote["day_low"], quote["volume"]) == (
            last["open"],
            last["high"],
            last["low"],
            last["volume"],
        )


async def test_quote_changes_publish_market_data_updated_at_speed(suite, processes, client):
    env = in_session("2024-06-14T11:00:00+10:00", speed=60, TRADING_MARKET_DATA_QUOTE_S="60")
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "market_data_updated") as watcher:
        service = processes.start("market-data", suite, extra_env=env)

        def quote_times(symbol: str) -> list[str]:
            events = [e for e in watcher.of_type("market_data_updated") if e["data"]["symbol"] == symbol]
            return [e["data"]["quote"]["quote_time"] for e in events if e["data"].get("quote")]

        # A refresh a real second (a suite minute): every one brings a new minute's quote.
        await async_wait_until(
            lambda: quote_times("CBA.AX"), 60, 0.1, what="3 quote events", until=lambda t: len(t) >= 3
        )
        await watcher.settle()
    for symbol in (*BANKS, "^AXJO"):
        times = quote_times(symbol)
        assert len(times) >= 2 and len(set(times)) == len(times), (symbol, times)  # once per change
    for event in watcher.of_type("market_data_updated"):
        data = event["data"]
        assert event["source"] == "market-data" and data["price_basis"] == "quote"
        assert data["price"] == data["quote"]["price"] and data["source"] == "synthetic"
        assert {"symbol", "price", "change", "change_pct", "as_of"} <= set(data)
    status = health(service)
    assert status["quote_refreshes"] >= 3 and status["last_quote_refresh"] > "2024-06-14T11:02"
    assert service.stop() == 0


async def test_refresh_all_data_refreshes_quotes_with_one_event_per_symbol(suite, processes, client):
    env = in_session("2024-06-14T11:00:20+10:00", TRADING_MARKET_DATA_QUOTE_S="3600")
    service = processes.start("market-data", suite, extra_env=env)
    await async_wait_until(
        lambda: health(service)["last_quote_refresh"], 30, 0.1, what="the loop's first refresh"
    )
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "market_data_updated") as watcher:
        result = await client.call_service("market-data", "refresh_all_data")
        await watcher.settle()
    assert result["succeeded"] == 5 and result["quote_source"] == "synthetic"
    assert all(q["ok"] and q["quote_time"] == "2024-06-14T11:00:00+10:00" for q in result["quotes"].values())
    events = watcher.of_type("market_data_updated")
    assert sorted(e["data"]["symbol"] for e in events) == sorted((*BANKS, "^AXJO"))
    for event in events:
        data = event["data"]
        assert data["price_basis"] == "quote" and data["quote"]["quote_time"] == "2024-06-14T11:00:00+10:00"
        assert data["price"] == result["results"][data["symbol"]]["price"] == data["quote"]["price"]
        assert data["date"] == "2024-06-13"  # with the daily fields too
    assert service.stop() == 0
