"""The market-data service over its real Unix socket, with a real redis-server.

Sources are real too: the synthetic walk, and CSV files written into the suite's data directory
(generated from the synthetic walk, so these tests need no outside data), plus the shared ASX
files for the replay test when they are present.
"""

import asyncio
import shutil
from datetime import date
from pathlib import Path

import pytest

from services.base.rpc import DependencyUnavailable, InvalidParams, NotFound
from services.domain.asx_calendar import is_trading_day
from services.domain.price_history import csv_file_name, synthetic_bars, trading_sessions
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


@pytest.fixture
def synthetic_service(suite, processes):
    service = processes.start("market-data", suite)
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
    env = {"TRADING_MARKET_DATA_SOURCE": "yfinance", "TRADING_MARKET_DATA_YF_ATTEMPTS": "2", **OFFLINE}
    service = processes.start("market-data", suite, extra_env=env)
    assert health(service)["source"] == "yfinance"
    with pytest.raises(DependencyUnavailable) as failed:
        await client.call_service("market-data", "get_market_data", symbol="CBA.AX")
    assert failed.value.code == -32001
    assert "Yahoo request for CBA.AX failed" in failed.value.message
    assert failed.value.data["source"] == "yfinance"
    assert health(service)["fetch_errors"] == 1  # one fetch (with its retries), then the retry window
    assert service.stop() == 0
