"""The paper-trading service over its real Unix socket, with a real redis-server, the real
market-data service (CSV source with prices this test writes) and a local IG stand-in.

The suite clock starts on Monday 17 June 2024 at 11:00 Sydney (the market is open; Friday's
close and Monday's 5m bars so far, 100.00 for every bank, give the quote orders fill at). Price
moves arrive the way market-data sends them: as `market_data_updated` events on the bus, with
their `quote`; predictions as durable `prediction_generated` events, as the prediction service
publishes them.
"""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import orjson
import pytest

from services.base.clock import SuiteClock
from services.base.rpc import (
    DependencyUnavailable,
    InvalidParams,
    MarketClosed,
    NotConfigured,
    NotFound,
    RiskRejected,
)
from services.domain.asx_calendar import SYDNEY, is_trading_day
from services.domain.price_history import csv_file_name, trading_sessions
from services.paper_trading.trade_store import TradeStore
from tests.support import (
    EventWatcher,
    Processes,
    ServiceProcess,
    SuiteDirs,
    async_wait_until,
    rpc_call_sync,
)
from tests.support import (
    publish_as as publish,
)
from tests.unit._ig_helpers import API_KEY, PASSWORD, USERNAME, FakeIg

BANKS = ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"
MONDAY_11AM = "2024-06-17T11:00:00+10:00"
MONDAY = date(2024, 6, 17)
SATURDAY_NOON = "2024-06-15T12:00:00+10:00"
EVENTS = ("trade_executed", "position_closed", "risk_limit_hit")


def write_prices(directory: Path, symbol: str, last_close: float, until: date = date(2024, 6, 14)) -> None:
    """A year of closes wobbling around `last_close`, ending exactly on it."""
    sessions = trading_sessions(date(2023, 6, 1), until, is_trading_day)
    rows = []
    for i, day in enumerate(sessions):
        close = last_close if i == len(sessions) - 1 else last_close + (0.5 if i % 2 else -0.5)
        rows.append(f"{day},{close},{close + 1},{close - 1},{close},{close},1000000")
    (directory / csv_file_name(symbol)).write_text(HEADER + "\n".join(rows) + "\n")


def write_intraday(directory: Path, symbol: str, price_at, until: str = "16:00") -> None:
    """Monday's 5m bars from the open to `until` (bar starts), each flat at `price_at(start)`."""
    start = datetime(2024, 6, 17, 10, 0, tzinfo=SYDNEY)
    last = datetime.combine(MONDAY, datetime.strptime(until, "%H:%M").time(), SYDNEY)
    rows = []
    while start < last:
        p = price_at(start)
        rows.append(f"{start.isoformat()},{p},{p},{p},{p},1000")
        start += timedelta(minutes=5)
    (directory / f"{symbol}_5m.csv").write_text(
        "Datetime,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n"
    )


class Stack:
    """market-data (CSV) and paper-trading processes for one suite (stopped by `processes`)."""

    def __init__(
        self,
        suite: SuiteDirs,
        processes: Processes,
        clock_start: str = MONDAY_11AM,
        speed: float = 1,
        market_env: dict[str, str] | None = None,
        **paper_env: str,
    ):
        self.suite = suite
        self.processes = processes
        market_dir = suite.data_dir / "market"
        market_dir.mkdir(parents=True, exist_ok=True)
        for symbol in BANKS:
            write_prices(market_dir, symbol, 100.0)
            write_intraday(market_dir, symbol, lambda _start: 100.0)
        write_prices(market_dir, "^AXJO", 7800.0)
        self.env = {
            "TRADING_MARKET_DATA_SOURCE": "csv",
            "TRADING_MARKET_DATA_DIR": str(market_dir),
            "TRADING_CLOCK_START": clock_start,
            "TRADING_CLOCK_SPEED": str(speed),
            # One suite clock for both processes (started moments apart), as the supervisor gives.
            "TRADING_CLOCK_EPOCH": repr(time.time()),
            # These tests publish prediction_generated themselves, with no prediction service to
            # vouch for them; test_events_are_checked_with_the_prediction_service turns it on.
            "TRADING_PAPER_TRADING_VERIFY_PREDICTIONS": "false",
        }
        self.market_dir = market_dir
        self.market = processes.service("market-data", suite, extra_env={**self.env, **(market_env or {})})
        self.paper = self.paper_process(**paper_env)

    def paper_process(self, **paper_env: str) -> ServiceProcess:
        return self.processes.service("paper-trading", self.suite, extra_env={**self.env, **paper_env})

    def start(self) -> Stack:
        self.market.start()
        self.paper.start()
        return self

    def stop(self) -> None:
        for process in (self.paper, self.market):
            process.stop()

    def now(self) -> str:
        return rpc_call_sync(self.paper.socket, "health")["now"]

    @property
    def db(self) -> Path:
        return self.suite.data_dir / "paper_trading.db"


@pytest.fixture
def stack(suite, processes):
    return Stack(suite, processes).start()


def prediction(stack: Stack, symbol: str, signal: str, prediction_id: str | None = None) -> dict:
    return {
        "prediction_id": prediction_id or uuid.uuid4().hex,
        "symbol": symbol,
        "signal": signal,
        "confidence": 0.7,
        "created_at": stack.now(),
        "price": 100.0,
        "inputs": {},
    }


def price_move(symbol: str, price: float, quote_time: str | None = None) -> dict:
    """A market_data_updated as market-data sends it in the session (without a time: close basis)."""
    data = {"symbol": symbol, "source": "csv", "price": price, "as_of": "2024-06-14T16:10:00+10:00"}
    if quote_time is None:
        return data | {"price_basis": "close", "quote": None}
    quote = {
        "symbol": symbol,
        "price": price,
        "bid": None,
        "ask": None,
        "quote_time": quote_time,
        "delay_s": 0.0,
        "source": "csv",
        "stale": False,
        "stale_reason": None,
    }
    return data | {"price_basis": "quote", "quote": quote}


def outcomes(db: Path) -> dict[str, str]:
    """Prediction outcomes, read from the live WAL database (readers never block the writer)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT prediction_id, outcome FROM predictions"))


async def processed(suite: SuiteDirs, stack: Stack, *predictions: dict) -> dict[str, str]:
    """Publish `predictions` as the prediction service does; their outcomes once all are decided."""
    await publish(suite, "prediction", "prediction_generated", *predictions)
    ids = [p["prediction_id"] for p in predictions]
    done = await async_wait_until(
        lambda: outcomes(stack.db),
        30,
        what="the predictions processed",
        until=lambda o: all(i in o for i in ids),
    )
    return {i: done[i] for i in ids}


# ---- manual trades --------------------------------------------------------------------------


async def test_a_buy_fills_at_the_quote_with_slippage_and_records_the_quote(stack, suite, client):
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], *EVENTS) as watcher:
        trade = await client.call_service(
            "paper-trading", "execute_trade", symbol="cba.ax", action="buy", quantity=10
        )
        event = await watcher.wait_for("trade_executed", lambda e: e["data"]["trade_id"] == trade["trade_id"])
    # 100.00 + 5 bps = 100.05; commission $10 + 0.1% of $1,000.50 = $11.00.
    assert (trade["symbol"], trade["action"], trade["quantity"]) == ("CBA.AX", "BUY", 10)
    assert (trade["price"], trade["commission"], trade["slippage"]) == (100.05, 11.0, 0.5)
    assert trade["prediction_id"] is None and trade["reason"] == "manual"
    assumptions = trade["assumptions"]
    # The 10:55 bar's close, visible from its end at 11:00 (csv: no delay, no book).
    assert assumptions["quote_time"] == "2024-06-17T11:00:00+10:00"
    assert (assumptions["quote_source"], assumptions["quote_delay_s"], assumptions["quote_stale"]) == (
        "csv",
        0.0,
        False,
    )
    assert (assumptions["quote_bid"], assumptions["quote_ask"]) == (None, None)
    assert (assumptions["quote_price"], assumptions["slippage_bps"]) == (100.0, 5.0)
    assert assumptions["fill_basis"] == "price+slippage" and assumptions["trigger"] == "order"
    assert 0 <= assumptions["quote_age_s"] < 60
    assert assumptions["commission_formula"] == "$10 + 0.1% of trade value"
    assert event["data"] == trade

    status = await client.call_service("paper-trading", "get_portfolio_status")
    assert status["cash"] == 100_000 - 1000.50 - 11.0
    assert status["positions_value"] == 1000.0  # marked at the quote, 100.00
    assert status["equity"] == pytest.approx(status["cash"] + 1000.0)
    assert status["unrealized_pnl"] == -0.5
    assert status["exposure_pct"] == pytest.approx(1000 / status["equity"] * 100, abs=1e-4)
    assert status["trading_halted"] is False and status["day_pnl"] == pytest.approx(-11.5)

    positions = (await client.call_service("paper-trading", "get_positions"))["positions"]
    assert [(p["symbol"], p["quantity"], p["avg_cost"]) for p in positions] == [("CBA.AX", 10, 100.05)]
    assert positions[0]["stop_loss_price"] == pytest.approx(95.0475)
    history = await client.call_service("paper-trading", "get_trade_history", limit=5, symbol="CBA.AX")
    assert [t["trade_id"] for t in history["trades"]] == [trade["trade_id"]]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"symbol": "XYZ.AX", "action": "BUY", "quantity": 1}, "symbol"),
        ({"symbol": "CBA.AX", "action": "SHORT", "quantity": 1}, "action"),
        ({"symbol": "CBA.AX", "action": "BUY", "quantity": 0}, "quantity"),
        ({"symbol": "CBA.AX", "action": "BUY", "quantity": 1.5}, "quantity"),  # whole shares only
        ({"symbol": "CBA.AX", "action": "BUY"}, "quantity"),
    ],
)
async def test_execute_trade_validates_params(stack, client, params, param):
    with pytest.raises(InvalidParams) as raised:
        await client.call_service("paper-trading", "execute_trade", **params)
    assert raised.value.data["param"] == param


@pytest.mark.parametrize(
    ("method", "params", "param"),
    [
        ("get_trade_history", {"limit": 0}, "limit"),
        ("get_trade_history", {"symbol": "BHP.AX"}, "symbol"),
        ("get_trading_performance", {"period": "year"}, "period"),
        ("get_equity_history", {"days": 0}, "days"),
        ("get_equity_history", {"days": 3661}, "days"),
        ("get_equity_history", {"days": "7"}, "days"),
    ],
)
async def test_queries_validate_params(stack, client, method, params, param):
    with pytest.raises(InvalidParams) as raised:
        await client.call_service("paper-trading", method, **params)
    assert raised.value.data["param"] == param


async def test_rejections_name_the_rule_and_by_how_much(stack, suite, client):
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], *EVENTS) as watcher:
        with pytest.raises(RiskRejected) as raised:
            # 60 x 100.05 = 6,003.00 against 5% of 100,000 = 5,000.00.
            await client.call_service(
                "paper-trading", "execute_trade", symbol="WBC.AX", action="BUY", quantity=60
            )
        hit = await watcher.wait_for("risk_limit_hit")
    assert raised.value.code == -32003
    assert (raised.value.data["rule"], raised.value.data["excess"]) == ("position_size", 1003.0)
    assert hit["data"]["rule"] == "position_size" and hit["data"]["symbol"] == "WBC.AX"
    with pytest.raises(RiskRejected) as raised:
        await client.call_service(
            "paper-trading", "execute_trade", symbol="WBC.AX", action="SELL", quantity=1
        )
    assert raised.value.data["rule"] == "no_short_selling"
    history = await client.call_service("paper-trading", "get_trade_history")
    assert history["trades"] == []


async def test_no_orders_outside_market_hours(suite, processes, client):
    closed = Stack(suite, processes, clock_start=SATURDAY_NOON).start()
    with pytest.raises(MarketClosed) as raised:
        await client.call_service("paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=1)
    assert raised.value.code == -32004
    assert raised.value.data["next_open"].startswith("2024-06-17T10:00:00+10:00")
    # A signal on a closed market is answered once, with the reason, and never traded later.
    signal = prediction(closed, "CBA.AX", "BUY")
    await publish(suite, "prediction", "prediction_generated", signal)
    await async_wait_until(lambda: outcomes(closed.db), 30, what="the prediction processed")
    assert outcomes(closed.db) == {signal["prediction_id"]: "ignored"}
    answer = await client.call_service(
        "paper-trading", "get_prediction_outcome", prediction_id=signal["prediction_id"]
    )
    assert (answer["outcome"], answer["trade_id"]) == ("ignored", None)
    assert answer["detail"].startswith("market_hours: the market is closed")
    assert (await client.call_service("paper-trading", "get_trade_history"))["trades"] == []


async def test_a_round_trip_shows_in_performance(stack, client):
    await client.call_service("paper-trading", "execute_trade", symbol="ANZ.AX", action="BUY", quantity=20)
    await client.call_service("paper-trading", "execute_trade", symbol="ANZ.AX", action="SELL", quantity=20)
    report = await client.call_service("paper-trading", "get_trading_performance", period="day")
    # Bought at 100.05, sold at 99.95: -2.00 gross, -2.00 - 12.00 - 12.00 net of both commissions.
    assert (report["number_of_trades"], report["closed_trades"]) == (2, 1)
    assert report["realized_pnl"] == -2.0
    assert (report["win_rate"], report["average_loss"], report["profit_factor"]) == (0.0, -26.0, 0.0)
    assert report["commissions_paid"] == 24.0
    assert report["total_return"] == pytest.approx(-26.0 / 100_000)
    assert report["max_drawdown"] == pytest.approx(26.0 / 100_000)
    assert report["sharpe_ratio"] is None  # one day of returns has no spread
    history = await client.call_service("paper-trading", "get_equity_history", days=7)
    assert history["starting_capital"] == 100_000 and history["days"] == 7
    # One point, today's, at the equity now (the snapshot the trades wrote, read live).
    [today] = history["points"]
    assert (today["equity"], today["cash"], today["positions_value"]) == (100_000 - 26.0, 100_000 - 26.0, 0.0)
    assert today["day"] == MONDAY_11AM[:10]


# ---- market data: stops, targets, daily loss ------------------------------------------------


async def test_stop_loss_and_take_profit_close_on_market_data(stack, suite, client):
    for symbol in ("CBA.AX", "NAB.AX"):
        await client.call_service("paper-trading", "execute_trade", symbol=symbol, action="BUY", quantity=10)
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], *EVENTS) as watcher:
        # avg cost 100.05: the stop is at 95.0475, the target at 110.055.
        now = stack.now()
        await publish(
            suite,
            "market-data",
            "market_data_updated",
            price_move("CBA.AX", 95.1, now),
            price_move("NAB.AX", 110.0, now),
            price_move("CBA.AX", 90.0),  # a close-basis price carries no quote: marks, never exits
        )
        await publish(
            suite,
            "market-data",
            "market_data_updated",
            price_move("CBA.AX", 95.0, now),  # gapped through the stop: fills at the quote
            price_move("NAB.AX", 110.1, now),
        )
        stop = await watcher.wait_for("position_closed", lambda e: e["data"]["symbol"] == "CBA.AX")
        target = await watcher.wait_for("position_closed", lambda e: e["data"]["symbol"] == "NAB.AX")
    assert (stop["data"]["reason"], stop["data"]["quantity"]) == ("stop_loss", 10)
    assert stop["data"]["price"] == 95.0
    assert (target["data"]["reason"], target["data"]["price"]) == ("take_profit", 110.1)
    assert len(watcher.of_type("position_closed")) == 2  # the first moves (95.1, 110.0) closed nothing
    assert (await client.call_service("paper-trading", "get_positions"))["positions"] == []
    exits = (await client.call_service("paper-trading", "get_trade_history", limit=2))["trades"]
    for trade in exits:
        assert trade["assumptions"]["trigger"] == "quote event"
        assert trade["assumptions"]["quote_price"] == trade["price"]
        assert trade["assumptions"]["fill_basis"] == f"{trade['reason']}:quote"


async def test_a_price_already_held_writes_no_mark_and_no_equity_row(stack, suite, client):
    # A refresh repeats the prices market-data already announced (the 09:45 refresh the close's,
    # the monitoring task's the open's): nothing moved, so nothing is written.
    def snapshot() -> tuple:
        with sqlite3.connect(f"file:{stack.db}?mode=ro", uri=True) as conn:
            marks = conn.execute("SELECT price, as_of FROM marks WHERE symbol = 'CBA.AX'").fetchall()
            equity = conn.execute("SELECT day, equity, recorded_at FROM equity_snapshots").fetchall()
        return marks, equity

    def counted(moved: int, unchanged: int) -> bool:
        health = rpc_call_sync(stack.paper.socket, "health")
        return (health["marks_moved"], health["marks_unchanged"]) >= (moved, unchanged)

    await client.call_service("paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=10)
    await publish(suite, "market-data", "market_data_updated", price_move("CBA.AX", 101.0))
    await async_wait_until(lambda: counted(1, 0), 30, what="the first price marked")
    before = snapshot()
    assert before[0] == [("101.0", "2024-06-14T16:10:00+10:00")] and len(before[1]) == 1
    await publish(suite, "market-data", "market_data_updated", price_move("CBA.AX", 101.0))
    await async_wait_until(lambda: counted(1, 1), 30, what="the repeated price seen")
    assert snapshot() == before  # not even the equity row's time
    await publish(suite, "market-data", "market_data_updated", price_move("CBA.AX", 102.0))
    await async_wait_until(lambda: counted(2, 1), 30, what="the new price marked")
    after = snapshot()
    assert after[0] == [("102.0", "2024-06-14T16:10:00+10:00")]
    assert after[1][0][1] != before[1][0][1] and after[1][0][2] > before[1][0][2]  # equity moved


async def test_a_quote_older_than_the_limit_is_refused_naming_its_age(suite, processes, client):
    stack = Stack(suite, processes)
    for symbol in BANKS:  # the feed stopped after the 10:10 bar: the quote is from 10:15
        write_intraday(stack.market_dir, symbol, lambda _start: 100.0, until="10:15")
    stack.start()
    with pytest.raises(DependencyUnavailable) as raised:
        await client.call_service("paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=1)
    assert raised.value.code == -32001
    assert re.search(r"is 27\d\d s old \(from 2024-06-17T10:15:00\+10:00\)", raised.value.message)
    assert raised.value.data["quote_time"] == "2024-06-17T10:15:00+10:00"
    assert raised.value.data["quote_age_s"] >= 2700 and raised.value.data["max_quote_age_s"] == 1500
    # A signal at that quote is answered once, rejected with the same reason, never traded.
    signal = prediction(stack, "WBC.AX", "BUY")
    await publish(suite, "prediction", "prediction_generated", signal)
    await async_wait_until(lambda: outcomes(stack.db), 30, what="the prediction processed")
    assert outcomes(stack.db) == {signal["prediction_id"]: "ignored"}  # a stale quote: not a risk rule
    assert (await client.call_service("paper-trading", "get_trade_history"))["trades"] == []


async def test_the_exit_timer_fires_a_stop_loss_without_any_event(suite, processes, redis_server, client):
    # 11:04 now; from the 11:00 bar (visible at 11:05) the price has gapped to 94.00.
    stack = Stack(
        suite,
        processes,
        clock_start="2024-06-17T11:04:00+10:00",
        speed=10,
        TRADING_PAPER_TRADING_EXIT_CHECK_S="5",
    )
    eleven = datetime(2024, 6, 17, 11, 0, tzinfo=SYDNEY)
    write_intraday(stack.market_dir, "CBA.AX", lambda start: 94.0 if start >= eleven else 100.0)
    stack.start()
    bought = await client.call_service(
        "paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=10
    )
    assert bought["price"] == 100.05  # stop at 95.0475
    redis_server.kill()  # no pub/sub from here on: only the timer can see the drop
    trades = await async_wait_until(
        lambda: rpc_call_sync(stack.paper.socket, "get_trade_history")["trades"],
        60,
        what="the timed stop-loss",
        until=lambda t: len(t) == 2,
    )
    sold = trades[0]
    assert (sold["action"], sold["quantity"], sold["reason"]) == ("SELL", 10, "stop_loss")
    assert sold["price"] == 94.0  # the 11:00 bar opened through the stop: its open, not the level
    assumptions = sold["assumptions"]
    assert assumptions["trigger"] == "timer" and assumptions["fill_basis"] == "stop_loss:open"
    assert (assumptions["quote_price"], assumptions["quote_time"]) == (94.0, "2024-06-17T11:05:00+10:00")
    assert assumptions["exit_bar"] == {
        "interval": "5m", "start": "2024-06-17T11:00:00+10:00", "end": "2024-06-17T11:05:00+10:00",
        "open": 94.0, "high": 94.0, "low": 94.0,
    }  # fmt: skip
    assert rpc_call_sync(stack.paper.socket, "get_positions")["positions"] == []
    # One exit only: later checks find nothing held (counted once its events are out).
    exits = await async_wait_until(
        lambda: rpc_call_sync(stack.paper.socket, "health")["exits"], 30, what="the exit counted"
    )
    assert exits == 1


async def test_a_stop_traded_through_inside_a_bar_fills_at_the_stop_level(suite, processes, client):
    # 11:04 now. The 11:00 bar opens at 100, trades down to 94 and closes at 99: its close never
    # reaches the stop (95.0475), its low does. A resting stop fills at its level, once.
    stack = Stack(
        suite,
        processes,
        clock_start="2024-06-17T11:04:00+10:00",
        speed=10,
        market_env={"TRADING_MARKET_DATA_QUOTE_S": "5"},
    )
    eleven = datetime(2024, 6, 17, 11, 0, tzinfo=SYDNEY)
    rows = []
    for minutes in range(0, 6 * 60, 5):
        start = datetime(2024, 6, 17, 10, 0, tzinfo=SYDNEY) + timedelta(minutes=minutes)
        o, h, lo, c = (
            (100.0, 100.0, 94.0, 99.0) if start == eleven else (99.0,) * 4 if start > eleven else (100.0,) * 4
        )
        rows.append(f"{start.isoformat()},{o},{h},{lo},{c},1000")
    (stack.market_dir / "CBA.AX_5m.csv").write_text(
        "Datetime,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n"
    )
    stack.start()
    bought = await client.call_service(
        "paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=10
    )
    assert (bought["price"], bought["assumptions"]["quote_time"]) == (100.05, "2024-06-17T11:00:00+10:00")
    trades = await async_wait_until(
        lambda: rpc_call_sync(stack.paper.socket, "get_trade_history")["trades"],
        60,
        what="the stop-loss inside the 11:00 bar",
        until=lambda t: len(t) == 2,
    )
    sold = trades[0]
    assert (sold["action"], sold["reason"], sold["price"]) == ("SELL", "stop_loss", 95.0475)
    assert sold["assumptions"]["fill_basis"] == "stop_loss:level"
    assert sold["assumptions"]["exit_bar"]["start"] == "2024-06-17T11:00:00+10:00"
    assert sold["assumptions"]["quote_price"] == 99.0  # the price of the moment was back above it
    # Counted once the exit's events are out (a moment after the trade shows in the history).
    exits = await async_wait_until(
        lambda: rpc_call_sync(stack.paper.socket, "health")["exits"], 30, what="the exit counted"
    )
    assert exits == 1


async def test_an_order_first_brings_every_position_to_its_quote(suite, processes, client):
    # CBA's 11:05 bar falls through its stop while paper-trading is down, so its quote event is
    # never heard (and no later bar sends another; no exit timer either). A NAB prediction then
    # comes: before it is sized, CBA is marked at its quote and stopped out, as it would have been
    # had the quote event arrived first. Events of two channels arrive in either order; the book
    # an order is sized on must not depend on which came first.
    stack = Stack(
        suite,
        processes,
        speed=30,
        market_env={"TRADING_MARKET_DATA_QUOTE_S": "5"},
        TRADING_PAPER_TRADING_EXIT_CHECK_S="86400",
    )
    write_intraday(
        stack.market_dir, "CBA.AX", lambda start: 90.0 if start.minute == 5 else 100.0, until="11:10"
    )
    stack.start()
    bought = await client.call_service(
        "paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=10
    )
    assert bought["price"] == 100.05  # the stop is at 95.0475
    stack.paper.stop()
    await async_wait_until(
        lambda: rpc_call_sync(stack.market.socket, "get_quote", {"symbol": "CBA.AX"}),
        120,
        what="CBA quoted at the 11:05 bar's 90",
        until=lambda q: q["price"] == 90.0,
    )
    stack.paper = stack.paper_process(TRADING_PAPER_TRADING_EXIT_CHECK_S="86400")
    stack.paper.start()
    buy = prediction(stack, "NAB.AX", "BUY")
    await publish(suite, "prediction", "prediction_generated", buy)
    await async_wait_until(
        lambda: outcomes(stack.db), 60, what="the NAB prediction", until=lambda o: buy["prediction_id"] in o
    )
    trades = (await client.call_service("paper-trading", "get_trade_history"))["trades"]  # newest first
    assert [(t["symbol"], t["action"], t["reason"]) for t in trades] == [
        ("NAB.AX", "BUY", trades[0]["reason"]),
        ("CBA.AX", "SELL", "stop_loss"),
        ("CBA.AX", "BUY", "manual"),
    ]
    assert trades[1]["price"] == 90.0 and trades[1]["assumptions"]["trigger"] == "before order"
    # NAB sized on the book after the loss: 5% of the equity left, at 100.05.
    status = await client.call_service("paper-trading", "get_portfolio_status")
    assert status["realized_pnl"] < 0 and trades[0]["quantity"] == int(
        D(str(status["equity"])) * D("0.05") / D("100.05")
    )


async def test_with_daily_bars_only_the_days_range_is_checked_once_its_bar_is_final(suite, processes, client):
    # No intraday files: orders fill at the day's open; the day's low (99 - 1 = 98.5 below the
    # 1% stop of 99.495 from a 100.5 open) shows only in the day's bar, final at 16:10, and the
    # stop is booked then, at its level, as the resting order it was in the session.
    stack = Stack(
        suite,
        processes,
        # 15 real seconds before the close to start two processes and buy, even on busy cores.
        clock_start="2024-06-17T15:45:00+10:00",
        speed=60,
        TRADING_PAPER_TRADING_MAX_QUOTE_AGE_S="86400",
        TRADING_PAPER_TRADING_STOP_LOSS_PCT="1",
    )
    for symbol in BANKS:
        (stack.market_dir / f"{symbol}_5m.csv").unlink()
    with open(stack.market_dir / csv_file_name("CBA.AX"), "a") as f:
        f.write(f"{MONDAY},100.5,101.0,98.5,99.2,99.2,1000000\n")
    stack.start()
    bought = await client.call_service(
        "paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=10
    )
    assert (
        bought["assumptions"]["quote_basis"] == "daily_open" and bought["assumptions"]["quote_price"] == 100.5
    )
    (held,) = (await client.call_service("paper-trading", "get_positions"))["positions"]
    stop = D(str(held["stop_loss_price"]))
    trades = await async_wait_until(
        lambda: rpc_call_sync(stack.paper.socket, "get_trade_history")["trades"],
        90,
        what="the stop-loss on the day's bar after 16:10",
        until=lambda t: len(t) == 2,
    )
    sold = trades[0]
    assert (sold["action"], sold["reason"]) == ("SELL", "stop_loss")
    assert D(str(sold["price"])) == stop.quantize(D("0.0001"))
    assert sold["assumptions"]["fill_basis"] == "stop_loss:level"
    assert sold["assumptions"]["quote_basis"] == "daily_close"
    assert sold["timestamp"] >= "2024-06-17T06:10:00+00:00"  # booked once the day's bar was final
    assert sold["assumptions"]["exit_bar"] == {
        "interval": "1d", "start": "2024-06-17T10:00:00+10:00", "end": "2024-06-17T16:00:00+10:00",
        "open": 100.5, "high": 101.0, "low": 98.5,
    }  # fmt: skip


async def test_new_buys_halt_while_market_data_is_silent_and_resume_when_it_returns(suite, processes, client):
    """market-data hung (SIGSTOP): the exit timer gets no quote for the held position, so past
    the bound new buys halt (health, market_data_stale, -32001 naming it, a BUY prediction waits);
    when quotes come again the halt ends by itself and the waiting prediction trades."""
    import signal

    stack = Stack(
        suite,
        processes,
        TRADING_PAPER_TRADING_MARKET_DATA_SILENT_S="3",
        TRADING_PAPER_TRADING_EXIT_CHECK_S="0.5",
        TRADING_PAPER_TRADING_QUOTE_TIMEOUT_S="1",
    ).start()
    await client.call_service("paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=5)
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "market_data_stale") as watcher:
        stack.market.signal(signal.SIGSTOP)
        try:
            stale = await watcher.wait_for("market_data_stale", lambda e: e["data"]["state"] == "stale", 60)
            assert stale["data"]["symbols"] == ["CBA.AX"] and stale["data"]["bound_s"] == 3
            assert "no usable quote for CBA.AX for" in stale["data"]["reason"]
            health = await client.call_service("paper-trading", "health")
            assert health["status"] == "degraded" and "CBA.AX" in health["buys_halted"]
            assert any(
                w.startswith("new buys halted: no usable quote for CBA.AX") for w in health["warnings"]
            )
            with pytest.raises(
                DependencyUnavailable, match=r"new buys halted: no usable quote for CBA\.AX"
            ) as info:
                await client.call_service(
                    "paper-trading", "execute_trade", symbol="WBC.AX", action="BUY", quantity=5, timeout=30
                )
            assert info.value.data["rule"] == "market_data_silent"
            waiting = prediction(stack, "WBC.AX", "BUY")
            await publish(suite, "prediction", "prediction_generated", waiting)

            async def waits() -> int:
                return (await client.call_service("paper-trading", "metrics"))["events"]["dependency_waits"]

            await async_wait_until(waits, 60, what="the BUY waiting", until=lambda n: n >= 2)
            assert waiting["prediction_id"] not in outcomes(stack.db)
        finally:
            stack.market.signal(signal.SIGCONT)
        await watcher.wait_for("market_data_stale", lambda e: e["data"]["state"] == "fresh", 60)
    await async_wait_until(
        lambda: outcomes(stack.db),
        60,
        what="the waiting BUY traded",
        until=lambda done: done.get(waiting["prediction_id"]) == "traded",
    )
    health = await client.call_service("paper-trading", "health")
    assert health["buys_halted"] is None


async def test_a_prediction_waits_for_market_data_and_trades_once_it_is_back(
    suite, processes, redis_server, client
):
    # market-data away is not the prediction's fault: no delivery is spent on it (the limit is 2
    # here), the handler waits with capped backoff, and trades once the quote can be had.
    import redis.asyncio as aioredis

    stack = Stack(suite, processes, TRADING_EVENTS_MAX_DELIVERIES="2").start()
    stack.market.stop()
    signal = prediction(stack, "CBA.AX", "BUY")
    await publish(suite, "prediction", "prediction_generated", signal)

    async def waits() -> int:
        return (await client.call_service("paper-trading", "metrics"))["events"]["dependency_waits"]

    await async_wait_until(waits, 60, what="paper-trading waiting for market-data", until=lambda n: n >= 5)
    assert outcomes(stack.db) == {}  # not decided while the quote cannot be had
    stack.market = processes.service("market-data", suite, extra_env=stack.env)
    stack.market.start()
    await async_wait_until(
        lambda: outcomes(stack.db), 60, what="the prediction traded", until=lambda o: bool(o)
    )
    assert outcomes(stack.db) == {signal["prediction_id"]: "traded"}
    async with aioredis.from_url(redis_server.url) as r:
        assert await r.xlen("trading:dead:prediction_generated") == 0


async def test_events_are_checked_with_the_prediction_service(suite, processes, redis_server, client):
    # An event is not trusted by its id alone: the prediction service must have made it so.
    import redis.asyncio as aioredis

    stack = Stack(suite, processes, TRADING_PAPER_TRADING_VERIFY_PREDICTIONS="true").start()
    processes.start("sentiment", suite, extra_env=stack.env)
    processes.start("prediction", suite, extra_env=stack.env)
    made = await client.call_service(
        "prediction", "generate_single_prediction", symbol="CBA.AX", timeout_s=20
    )
    await async_wait_until(
        lambda: outcomes(stack.db),
        60,
        what="the genuine one processed",
        until=lambda o: made["prediction_id"] in o,
    )
    genuine = await client.call_service(
        "paper-trading", "get_prediction_outcome", prediction_id=made["prediction_id"]
    )
    assert "prediction service" not in genuine["detail"]  # acted on as its signal says

    # A forged id, and a real prediction whose event lost its own entry and came back altered.
    stack.paper.stop()
    other = await client.call_service(
        "prediction", "generate_single_prediction", symbol="WBC.AX", timeout_s=20
    )
    async with aioredis.from_url(redis_server.url) as r:
        entries = await r.xrange("trading:stream:prediction_generated")
        mine = [eid for eid, fields in entries if other["prediction_id"].encode() in fields[b"event"]]
        assert len(mine) == 1 and await r.xdel("trading:stream:prediction_generated", *mine) == 1
    # A BUY: an event asking for nothing (HOLD, the market closed) is ignored unasked.
    forged = {**made, "prediction_id": "forged-" + made["prediction_id"], "signal": "BUY"}
    altered = {**other, "signal": "BUY" if other["signal"] != "BUY" else "SELL"}
    await publish(suite, "prediction", "prediction_generated", forged, altered)
    stack.paper = stack.paper_process(TRADING_PAPER_TRADING_VERIFY_PREDICTIONS="true")
    stack.paper.start()
    ids = (forged["prediction_id"], other["prediction_id"])
    await async_wait_until(
        lambda: outcomes(stack.db), 60, what="both processed", until=lambda o: all(i in o for i in ids)
    )
    answers = [
        await client.call_service("paper-trading", "get_prediction_outcome", prediction_id=i) for i in ids
    ]
    assert [a["outcome"] for a in answers] == ["ignored", "ignored"]
    assert (
        answers[0]["detail"] == "unknown to the prediction service: not acted on (a forged or foreign event?)"
    )
    assert answers[1]["detail"].startswith(
        f"does not match the prediction service's record (signal {altered['signal']!r} vs {other['signal']!r})"
    )
    trades = (await client.call_service("paper-trading", "get_trade_history"))["trades"]
    assert all(t["prediction_id"] == made["prediction_id"] for t in trades)  # only the genuine one


async def test_daily_loss_halts_new_buys_until_the_next_day(suite, processes, client):
    halting = Stack(
        suite, processes, TRADING_PAPER_TRADING_MAX_DAILY_LOSS="100", TRADING_PAPER_TRADING_STOP_LOSS_PCT="50"
    )
    halting.start()
    await client.call_service("paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=40)
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], *EVENTS) as watcher:
        # 40 shares down $2.50 each: -100 plus the $14.00 commission, past the $100 limit.
        await publish(suite, "market-data", "market_data_updated", price_move("CBA.AX", 97.5))
        hit = await watcher.wait_for("risk_limit_hit", lambda e: e["data"]["rule"] == "max_daily_loss")
    assert hit["data"]["halted_until"].startswith("2024-06-18T10:00:00+10:00")
    status = await client.call_service("paper-trading", "get_portfolio_status")
    assert status["trading_halted"] is True and "daily loss" in status["halt_reason"]
    with pytest.raises(RiskRejected) as raised:
        await client.call_service("paper-trading", "execute_trade", symbol="WBC.AX", action="BUY", quantity=1)
    assert raised.value.data["rule"] == "max_daily_loss"
    # Reducing risk stays allowed while halted.
    sold = await client.call_service(
        "paper-trading", "execute_trade", symbol="CBA.AX", action="SELL", quantity=40
    )
    assert sold["action"] == "SELL"


# ---- following predictions ------------------------------------------------------------------


async def test_predictions_are_followed_once_each(stack, suite, client):
    buy = prediction(stack, "WBC.AX", "BUY")
    hold = prediction(stack, "ANZ.AX", "HOLD")
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], *EVENTS) as watcher:
        # The BUY is delivered twice (a publisher retry): one trade only.
        await publish(suite, "prediction", "prediction_generated", buy, hold, buy)
        await async_wait_until(
            lambda: outcomes(stack.db),
            30,
            what="both predictions processed",
            until=lambda done: len(done) == 2,
        )
        sell = prediction(stack, "WBC.AX", "SELL")
        await publish(suite, "prediction", "prediction_generated", sell)
        closed = await watcher.wait_for(
            "position_closed", lambda e: e["data"]["prediction_id"] == sell["prediction_id"]
        )
    assert outcomes(stack.db) == {
        buy["prediction_id"]: "traded",
        hold["prediction_id"]: "ignored",
        sell["prediction_id"]: "traded",
    }
    trades = (await client.call_service("paper-trading", "get_trade_history"))["trades"]
    assert [(t["action"], t["prediction_id"]) for t in trades] == [
        ("SELL", sell["prediction_id"]),
        ("BUY", buy["prediction_id"]),
    ]
    answer = await client.call_service(
        "paper-trading", "get_prediction_outcome", prediction_id=buy["prediction_id"]
    )
    assert (answer["outcome"], answer["trade_id"]) == ("traded", trades[1]["trade_id"])
    health = await client.call_service("paper-trading", "health")
    assert health["outcomes_today"] == {"traded": 2, "rejected": 0, "ignored": 1}
    with pytest.raises(NotFound, match="no outcome recorded for prediction never-sent"):
        await client.call_service("paper-trading", "get_prediction_outcome", prediction_id="never-sent")
    # Sized by the rules: 5% of 100,000 at 100.05 is 49 whole shares.
    assert trades[1]["quantity"] == 49 and trades[0]["quantity"] == 49
    assert closed["data"]["reason"].startswith("signal SELL")
    assert len(watcher.of_type("trade_executed")) == 2


async def test_a_second_buy_on_the_same_quote_is_ignored_and_a_newer_quote_adds(suite, processes, client):
    """The open's re-prediction and the monitoring task's both say BUY on one quote: one order.
    At ten times speed from 10:56 the 11:00 bar's quote arrives 24 s later and may add to it."""
    stack = Stack(suite, processes, clock_start="2024-06-17T10:56:00+10:00", speed=10).start()
    first, again = prediction(stack, "WBC.AX", "BUY"), prediction(stack, "WBC.AX", "BUY")
    done = await processed(suite, stack, first, again)
    assert done == {first["prediction_id"]: "traded", again["prediction_id"]: "ignored"}
    answer = await client.call_service(
        "paper-trading", "get_prediction_outcome", prediction_id=again["prediction_id"]
    )
    bought = (await client.call_service("paper-trading", "get_trade_history"))["trades"]
    quote_time = bought[0]["assumptions"]["quote_time"]
    assert quote_time == "2024-06-17T10:55:00+10:00"  # the 10:50 bar's close
    assert answer["detail"] == (
        f"BUY: WBC.AX was already bought on its {quote_time} quote (trade #{bought[0]['trade_id']}); "
        "a position is added to only on a newer quote"
    )

    async def quote_time_now() -> str:
        return (await client.call_service("market-data", "get_quote", symbol="WBC.AX"))["quote_time"]

    await async_wait_until(
        quote_time_now,
        120,
        what="the 11:00 quote",
        until=lambda seen: seen != quote_time,
    )
    newer = prediction(stack, "WBC.AX", "BUY")
    await publish(suite, "prediction", "prediction_generated", newer)
    await async_wait_until(
        lambda: outcomes(stack.db).get(newer["prediction_id"]), 30, what="the newer BUY processed"
    )
    trades = (await client.call_service("paper-trading", "get_trade_history"))["trades"]
    assert [(t["action"], t["prediction_id"]) for t in trades] == [
        ("BUY", newer["prediction_id"]),
        ("BUY", first["prediction_id"]),
    ]
    assert trades[0]["assumptions"]["quote_time"] > quote_time


async def test_a_signal_on_the_last_close_waits_for_one_on_the_sessions_quote(suite, processes, client):
    """A BUY made in the session on Friday's close (market-data had no quote of the day yet) is
    not filled at Monday's quote; the prediction on Monday's quote is."""
    stack = Stack(suite, processes, clock_start="2024-06-17T10:56:00+10:00").start()
    on_close = prediction(stack, "WBC.AX", "BUY") | {
        "inputs": {"market_data": {"price_basis": "close", "date": "2024-06-14"}}
    }
    on_quote = prediction(stack, "WBC.AX", "BUY") | {
        "inputs": {"market_data": {"price_basis": "quote", "quote_time": "2024-06-17T10:50:00+10:00"}}
    }
    done = await processed(suite, stack, on_close, on_quote)
    assert done == {on_close["prediction_id"]: "ignored", on_quote["prediction_id"]: "traded"}
    answer = await client.call_service(
        "paper-trading", "get_prediction_outcome", prediction_id=on_close["prediction_id"]
    )
    assert answer["detail"].startswith(
        "BUY: made on the 2024-06-14 close, before WBC.AX's quote of 2024-06-17"
    )
    trades = (await client.call_service("paper-trading", "get_trade_history"))["trades"]
    assert [t["prediction_id"] for t in trades] == [on_quote["prediction_id"]]


async def test_two_ledgers_on_one_redis_each_read_every_prediction(stack, suite, processes):
    """A second paper-trading (another data and socket directory, the same Redis) consumes through
    a group named after its own ledger: both books see every prediction, none is split off."""
    other = processes.suite_dirs("second", suite.env["TRADING_REDIS_URL"])
    second = processes.service("paper-trading", other, extra_env=stack.env).start()
    holds = [prediction(stack, symbol, "HOLD") for symbol in BANKS * 3]
    await publish(suite, "prediction", "prediction_generated", *holds)
    every = {p["prediction_id"] for p in holds}
    for db in (stack.db, other.data_dir / "paper_trading.db"):
        await async_wait_until(
            lambda db=db: outcomes(db), 30, what=f"the HOLDs in {db}", until=lambda done: set(done) == every
        )
    groups = {
        rpc_call_sync(process.socket, "metrics")["events"]["consumer_group"]
        for process in (stack.paper, second)
    }
    assert len(groups) == 2 and all(re.fullmatch(r"paper-trading@[0-9a-f]{16}", g) for g in groups)
    # The id is the ledger's: a restart reads through the same group (nothing delivered twice).
    stack.paper.stop()
    stack.paper = stack.paper_process().start()
    assert rpc_call_sync(stack.paper.socket, "metrics")["events"]["consumer_group"] in groups


# ---- IG Markets -----------------------------------------------------------------------------


async def test_sync_without_credentials_is_not_configured(stack, client):
    with pytest.raises(NotConfigured) as raised:
        await client.call_service("paper-trading", "sync_with_ig_markets")
    assert raised.value.code == -32002
    assert "IG_API_KEY" in raised.value.data["detail"]
    with pytest.raises(NotConfigured, match="IG Markets is not configured"):
        await client.call_service("paper-trading", "reconcile_ig")
    with pytest.raises(NotConfigured, match="IG Markets is not configured"):
        await client.call_service("paper-trading", "adopt_ig_state")
    health = await client.call_service("paper-trading", "health")
    assert health["ig_mirror_state"] == {"state": "off", "why": "off"}


async def test_mirroring_on_without_ig_credentials_is_degraded_saying_so(suite, processes, client):
    Stack(suite, processes, TRADING_PAPER_TRADING_IG_MIRROR="true").start()
    health = await client.call_service("paper-trading", "health")
    assert health["status"] == "degraded" and health["ig_mirror_state"]["state"] == "off"
    assert health["warnings"] == [
        "IG mirror on, but IG is not configured (IG_API_KEY, IG_USERNAME, IG_PASSWORD)"
    ]
    trade = await client.call_service(
        "paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=1
    )
    assert trade["quantity"] == 1  # paper trading goes on


def ig_env(ig: FakeIg, **knobs: str) -> dict[str, str]:
    """IG configured and mirroring on, with the mirror's timers shrunk."""
    return {
        "IG_API_KEY": API_KEY,
        "IG_USERNAME": USERNAME,
        "IG_PASSWORD": PASSWORD,
        "IG_BASE_URL": ig.url,
        "TRADING_PAPER_TRADING_IG_MIRROR": "true",
        "TRADING_PAPER_TRADING_IG_TIMEOUT_S": "5",
        "TRADING_PAPER_TRADING_IG_CONFIRM_DELAY_S": "0.05",
        "TRADING_PAPER_TRADING_IG_SETTLE_S": "1",
        "TRADING_PAPER_TRADING_IG_RECONCILE_S": "0.5",
    } | {f"TRADING_PAPER_TRADING_IG_{k.upper()}": v for k, v in knobs.items()}


def ig_order(db: Path, trade_id: int) -> dict:
    """The trade's mirror order, read from the live journal."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM ig_orders WHERE trade_id = ?", (trade_id,)).fetchone()
    return dict(row)


async def test_sync_reports_differences_and_a_divergence_halts_mirroring(suite, processes, client):
    with FakeIg() as ig:
        ig.state.hold("AA.D.NAB.CASH.IP", 7.0, level=99.0)  # a deal the journal never recorded
        mirrored = Stack(suite, processes, **ig_env(ig)).start()
        trade = await client.call_service(
            "paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=10
        )
        health = await async_wait_until(
            lambda: client.call_service("paper-trading", "health"),
            30,
            what="the mirror halted",
            until=lambda h: h["ig_mirror_state"]["state"] == "halted",
        )
        report = await client.call_service("paper-trading", "sync_with_ig_markets")
        order = ig_order(mirrored.db, trade["trade_id"])
        mirrored.stop()
        logs = (suite.log_dir / "paper-trading.log").read_text() + mirrored.paper.output()
    assert report["account_id"] == "***C123" and report["ig_balance"]["balance"] == 25_000.0
    rows = {r["symbol"]: r for r in report["positions"]}
    # Paper traded; the mirror did not send the order while IG holds a deal it cannot explain.
    assert (rows["CBA.AX"]["paper_quantity"], rows["CBA.AX"]["ig_size"]) == (10, 0.0)
    assert (order["state"], order["attempts"]) == ("pending", 0) and ig.state.posted(
        order["deal_reference"]
    ) == 0
    assert (rows["NAB.AX"]["paper_quantity"], rows["NAB.AX"]["difference"]) == (0, 7.0)
    assert report["in_sync"] is False and report["mirror_enabled"] is True
    assert [d["kind"] for d in report["divergences"]] == ["unknown_deal"]
    assert report["ig_mirror"]["state"] == "halted" and report["ig_mirror"]["orders"]["pending"] == 1
    assert health["status"] == "degraded" and "IG mirror halted" in health["warnings"][0]
    assert report["cash_difference"] == pytest.approx(25_000 - (100_000 - 1000.50 - 11.0))
    for secret in (API_KEY, PASSWORD):
        assert secret not in logs


async def test_each_divergence_is_found_before_the_next_order_and_halts_until_mended(
    suite, processes, client
):
    """For each of the five kinds: IG diverges, the next fill's order is not sent, mirroring halts
    with ig_mirror_halted naming the kind; the account mended (reconcile_ig), or IG's sizes adopted
    where nothing at IG can mend it (adopt_ig_state), it resumes (ig_mirror_resumed) and the
    waiting order goes out, once."""
    cba, wbc, anz, nab = (f"AA.D.{code}.CASH.IP" for code in ("CBA", "WBC", "ANZ", "NAB"))
    with FakeIg() as ig:
        stack = Stack(suite, processes, **ig_env(ig)).start()
        async with EventWatcher(
            suite.env["TRADING_REDIS_URL"], "ig_mirror_halted", "ig_mirror_resumed"
        ) as watcher:

            async def buy(symbol: str, quantity: int) -> dict:
                trade = await client.call_service(
                    "paper-trading", "execute_trade", symbol=symbol, action="BUY", quantity=quantity
                )
                return ig_order(stack.db, trade["trade_id"])

            async def decided(order: dict) -> dict:
                return await async_wait_until(
                    lambda: ig_order(stack.db, order["trade_id"]),
                    30,
                    what=f"{order['deal_reference']} decided",
                    until=lambda o: o["state"] not in ("pending", "unknown"),
                )

            async def halts_on(kind: str, waiting: dict) -> None:
                halted = await watcher.wait_for(
                    "ig_mirror_halted", lambda e: kind in [d["kind"] for d in e["data"]["divergences"]]
                )
                assert [d["kind"] for d in halted["data"]["divergences"]] == [kind]
                # A reconciliation after the order was journaled (the worker's, on the fill or
                # RECONCILE_S later) found it, and the order waits unsent.
                journaled = datetime.fromisoformat(waiting["created_at"])
                state = await async_wait_until(
                    lambda: client.call_service("paper-trading", "health"),
                    30,
                    what=f"halted on {kind} after {waiting['deal_reference']} was journaled",
                    until=lambda h: (
                        (s := h["ig_mirror_state"])["state"] == "halted"
                        and (s["head"] or {}).get("deal_reference") == waiting["deal_reference"]
                        and datetime.fromisoformat(s["last_reconciled_at"]) > journaled
                    ),
                )
                assert [d["kind"] for d in state["ig_mirror_state"]["divergences"]] == [kind]
                assert ig.state.posted(waiting["deal_reference"]) == 0
                assert ig_order(stack.db, waiting["trade_id"])["attempts"] == 0

            async def mended_and_sent(waiting: dict, mend: Callable[[], object]) -> dict:
                resumed_before = len(watcher.of_type("ig_mirror_resumed"))
                mend()  # the worker may find it mended by itself (RECONCILE_S): reconcile_ig or not
                reply = await client.call_service("paper-trading", "reconcile_ig")
                assert reply["reconciliation"]["clean"] is True and reply["state"] == "running"
                await watcher.wait_for(
                    "ig_mirror_resumed", lambda e: len(watcher.of_type("ig_mirror_resumed")) > resumed_before
                )
                done = await decided(waiting)
                assert done["state"] == "accepted" and ig.state.posted(done["deal_reference"]) == 1
                return done

            async def adopted_and_sent(waiting: dict, kind: str) -> dict:
                """What no change at IG can mend (a deal cannot be reopened or grown there): the
                operator takes IG's size as the truth."""
                resumed_before = len(watcher.of_type("ig_mirror_resumed"))
                reply = await client.call_service("paper-trading", "adopt_ig_state")
                assert [a["kind"] for a in reply["adopted"]] == [kind]
                assert reply["reconciliation"]["clean"] is True and reply["state"] == "running"
                await watcher.wait_for(
                    "ig_mirror_resumed", lambda e: len(watcher.of_type("ig_mirror_resumed")) > resumed_before
                )
                done = await decided(waiting)
                assert done["state"] == "accepted" and ig.state.posted(done["deal_reference"]) == 1
                return done

            # unknown_deal: found at start, before any order.
            manual = ig.state.hold(nab, 7.0)
            first = await buy("CBA.AX", 10)
            await halts_on("unknown_deal", first)
            first = await mended_and_sent(first, lambda: ig.state.drop(manual["dealId"]))

            # missing_fill: IG confirms a deal it never books; the next order finds it missing.
            ig.state.phantom_epics.add(wbc)
            phantom = await decided(await buy("WBC.AX", 5))
            ig.state.phantom_epics.clear()
            waiting = await buy("ANZ.AX", 3)
            await halts_on("missing_fill", waiting)
            await mended_and_sent(
                waiting,
                lambda: ig.state.hold(
                    wbc, 5.0, deal_id=phantom["deal_id"], deal_reference=phantom["deal_reference"]
                ),
            )

            # closed_at_ig: a deal IG was seen holding is closed there.
            ig.state.drop(first["deal_id"])
            waiting = await buy("NAB.AX", 2)
            await halts_on("closed_at_ig", waiting)
            await adopted_and_sent(waiting, "closed_at_ig")

            # partial_fill: IG fills half of a deal.
            ig.state.partial_fills[cba] = 0.5
            partial = await decided(await buy("CBA.AX", 4))
            ig.state.partial_fills.clear()
            assert (partial["state"], partial["filled_size"]) == ("accepted", 2.0)
            waiting = await buy("WBC.AX", 1)
            await halts_on("partial_fill", waiting)
            await adopted_and_sent(waiting, "partial_fill")

            # extra_position: IG holds a deal under the reference of an order it rejected.
            ig.state.reject_epics[anz] = "MARKET_CLOSED_WITH_EDITS"
            rejected = await decided(await buy("ANZ.AX", 1))
            ig.state.reject_epics.clear()
            assert rejected["state"] == "rejected"
            late = ig.state.hold(anz, 1.0, deal_reference=rejected["deal_reference"])
            waiting = await buy("NAB.AX", 1)
            await halts_on("extra_position", waiting)
            await mended_and_sent(waiting, lambda: ig.state.drop(late["dealId"]))

        stack.stop()
    assert all(n == 1 for n in ig.state.made.values()), ig.state.made
    # CBA: the first deal closed at IG and the half-filled one, both adopted as IG has them.
    assert ig.state.sizes() == {cba: 2.0, wbc: 6.0, anz: 3.0, nab: 3.0}


async def test_a_restart_mid_order_does_not_double_the_deal(suite, processes, client):
    import signal

    with FakeIg() as ig:
        env = ig_env(ig, timeout_s="60")  # the client waits; the process dies first
        ig.state.otc_delay_s = 30  # IG makes the deal and holds its answer
        ig.state.otc_faults = ["delay_after_deal"]
        stack = Stack(suite, processes, **env).start()
        trade = await client.call_service(
            "paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=10
        )
        reference = ig_order(stack.db, trade["trade_id"])["deal_reference"]
        await async_wait_until(lambda: ig.state.made, 30, what="the deal made at IG")
        in_flight = ig_order(stack.db, trade["trade_id"])
        assert (in_flight["state"], in_flight["in_flight"], in_flight["attempts"]) == ("pending", 1, 1)
        stack.paper.signal(signal.SIGKILL)
        stack.paper.wait_exit()
        stack.paper = stack.paper_process(**env).start()
        done = await async_wait_until(
            lambda: ig_order(stack.db, trade["trade_id"]),
            30,
            what="the order decided after the restart",
            until=lambda o: o["state"] == "accepted",
        )
        # Then the reconciliation that follows finds IG and the journal agree.
        await async_wait_until(
            lambda: client.call_service("paper-trading", "health"),
            30,
            what="the mirror running after the restart",
            until=lambda h: h["ig_mirror_state"]["state"] == "running",
        )
        stack.stop()
    assert ig.state.made == {reference: 1} and ig.state.posted(reference) == 1
    assert done["deal_id"] == f"DI{reference}" and ig.state.sizes() == {"AA.D.CBA.CASH.IP": 10}


# ---- durability: SIGKILL mid-stream, then restart --------------------------------------------


@pytest.mark.slow
async def test_sigkill_while_trading_then_restart_loses_nothing_and_doubles_nothing(stack, suite, client):
    import signal

    # Small trades (0.2% of the portfolio: one share) so every BUY fills and the caps never bind.
    stack.paper.stop()
    stack.paper = stack.paper_process(TRADING_PAPER_TRADING_POSITION_SIZE_PCT="0.2").start()
    # Each symbol in turn sees BUY, BUY, SELL, HOLD.
    signals = [("BUY", "BUY", "SELL", "HOLD")[(i // 4) % 4] for i in range(240)]
    batch = [prediction(stack, BANKS[i % 4], s) for i, s in enumerate(signals)]
    # Every tenth prediction is delivered a second time, as a retrying publisher would.
    deliveries = batch + batch[::10]
    expected = {p["prediction_id"] for p in batch}
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "trade_executed") as watcher:
        await publish(suite, "prediction", "prediction_generated", *deliveries)
        done_at_kill = len(
            await async_wait_until(
                lambda: outcomes(stack.db),
                60,
                what="30 predictions processed",
                until=lambda done: len(done) >= 30,
            )
        )
        stack.paper.signal(signal.SIGKILL)
        stack.paper.wait_exit()
        assert done_at_kill < len(expected), "the kill should land mid-stream"
        stack.paper = stack.paper_process(TRADING_PAPER_TRADING_POSITION_SIZE_PCT="0.2").start()
        await async_wait_until(
            lambda: outcomes(stack.db),
            120,
            what="every prediction processed",
            until=lambda done: set(done) == expected,
        )
        stack.paper.stop()

        store = TradeStore(stack.db, D("100000"), SuiteClock().now())
        try:
            trades = store.trades()
            ids = [t.prediction_id for t in trades]
            assert len(ids) == len(set(ids)), "a prediction was traded twice"
            assert store.replay_ledger() == store.load_portfolio()
            assert store.unpublished_trades() == []
            traded = {pid for pid, outcome in outcomes(stack.db).items() if outcome == "traded"}
            assert set(ids) == traded
            assert len(trades) > 30
        finally:
            store.close()
        # Every trade's event went out (a trade committed just before the kill is published at
        # restart, so an event may appear twice, never not at all).
        await async_wait_until(
            lambda: (
                {e["data"]["trade_id"] for e in watcher.of_type("trade_executed")}
                >= {t.trade_id for t in trades}
            ),
            30,
            what="trade_executed for every trade",
        )


async def test_trade_events_survive_redis_down_and_a_crash(stack, suite, redis_server, client):
    import signal

    import redis.asyncio as aioredis

    redis_server.kill()
    # The trade commits; its durable events can only wait in the process's memory.
    trade = await client.call_service(
        "paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=3
    )
    stack.paper.signal(signal.SIGKILL)
    stack.paper.wait_exit()
    redis_server.start()
    stack.paper = stack.paper_process().start()
    # At start the service republishes what the dead process never handed over.
    bus = aioredis.from_url(suite.env["TRADING_REDIS_URL"])
    try:

        async def published_ids() -> set[int]:
            entries = await bus.xrange("trading:stream:trade_executed")
            return {orjson.loads(fields[b"event"])["data"]["trade_id"] for _, fields in entries}

        await async_wait_until(published_ids, 30, what="trade_executed in the stream")
        assert await published_ids() == {trade["trade_id"]}
    finally:
        await bus.aclose()
    history = await client.call_service("paper-trading", "get_trade_history")
    assert [t["trade_id"] for t in history["trades"]] == [trade["trade_id"]]


async def test_trades_wait_in_their_outbox_while_redis_refuses_writes(suite, processes, client):
    """Redis full (maxmemory reached: XADD refused, pub/sub still flows): the trades commit, their
    events wait in the trades table, past the bound an outbox_backlog alert goes out and health
    degrades; once Redis takes writes again they reach the stream without a restart."""
    import redis.asyncio as aioredis

    url = suite.env["TRADING_REDIS_URL"]
    Stack(suite, processes, TRADING_EVENTS_OUTBOX_BOUND="2").start()
    admin = aioredis.from_url(url)

    async def streamed() -> set[int]:
        entries = await admin.xrange("trading:stream:trade_executed")
        return {orjson.loads(fields[b"event"])["data"]["trade_id"] for _, fields in entries}

    try:
        async with EventWatcher(url, "outbox_backlog") as watcher:
            await admin.config_set("maxmemory", "1")  # noeviction: every write that needs memory fails
            try:
                trades = [
                    await client.call_service(
                        "paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=1
                    )
                    for _ in range(3)
                ]
                growing = await watcher.wait_for("outbox_backlog", lambda e: e["data"]["state"] == "growing")
                assert (growing["data"]["service"], growing["data"]["outbox"]) == ("paper-trading", "trades")
                assert growing["data"]["size"] == 3 and growing["data"]["bound"] == 2
                health = await client.call_service("paper-trading", "health")
                assert health["status"] == "degraded" and health["outbox"] == 3
                assert any("3 trades saved but not yet on the bus" in w for w in health["warnings"])
                assert await streamed() == set()
            finally:
                await admin.config_set("maxmemory", "0")
            await watcher.wait_for("outbox_backlog", lambda e: e["data"]["state"] == "cleared")
        assert await streamed() == {t["trade_id"] for t in trades}
        health = await client.call_service("paper-trading", "health")
        assert health["outbox"] == 0 and health["outbox_resent"] == 3
    finally:
        await admin.aclose()


def test_epics_default_per_symbol_and_can_be_overridden():
    from services.paper_trading.paper_trading_knobs import parse_epic_overrides
    from services.paper_trading.paper_trading_service import epics_for

    assert epics_for(("CBA.AX",), parse_epic_overrides("")) == {"CBA.AX": "AA.D.CBA.CASH.IP"}
    assert epics_for(("CBA.AX", "WBC.AX"), parse_epic_overrides(" cba.ax = IX.D.CBA.X ,")) == {
        "CBA.AX": "IX.D.CBA.X",
        "WBC.AX": "AA.D.WBC.CASH.IP",
    }
    with pytest.raises(ValueError, match="SYMBOL=EPIC"):
        parse_epic_overrides("CBA.AX")


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"TRADING_PAPER_TRADING_MAX_EXPOSURE_PCT": "120"}, "TRADING_PAPER_TRADING_MAX_EXPOSURE_PCT"),
        ({"TRADING_PAPER_TRADING_IG_EPICS": "CBA.AX"}, "SYMBOL=EPIC"),
        ({"TRADING_PAPER_TRADING_IG_MIRROR": "maybe"}, "not a boolean"),
    ],
)
def test_bad_settings_exit_2_with_the_reason(suite, processes, env, reason):
    process = processes.start("paper-trading", suite, extra_env=env, wait=False)
    assert process.wait_exit() == 2
    assert reason in process.output()


async def test_a_stale_prediction_is_not_acted_on(stack, suite, client):
    old = prediction(stack, "CBA.AX", "BUY") | {"created_at": "2024-06-17T08:00:00+10:00"}  # 3 h old
    undated = prediction(stack, "WBC.AX", "BUY") | {"created_at": None}
    await publish(suite, "prediction", "prediction_generated", old, undated)
    await async_wait_until(
        lambda: outcomes(stack.db), 30, what="both predictions processed", until=lambda done: len(done) == 2
    )
    assert set(outcomes(stack.db).values()) == {"ignored"}
    reasons = [
        (
            await client.call_service(
                "paper-trading", "get_prediction_outcome", prediction_id=p["prediction_id"]
            )
        )["detail"]
        for p in (old, undated)
    ]
    assert all(r.startswith("expired: prediction too old or undated") for r in reasons)


async def test_without_market_data_a_trade_fails_typed_and_writes_nothing(stack, client):
    stack.market.stop()
    with pytest.raises(DependencyUnavailable) as raised:
        await client.call_service("paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=1)
    assert raised.value.code == -32001 and "market-data" in raised.value.message
    assert (await client.call_service("paper-trading", "get_trade_history"))["trades"] == []
