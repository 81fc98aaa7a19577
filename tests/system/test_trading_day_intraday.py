"""A trading day on synthetic intraday prices: the desk sees the market move through the session.

The whole suite starts through the manager CLI on the synthetic source (a seeded 1-minute path
through each day's synthetic daily bar) with the suite clock at speed 240 from 08:30 on
Wednesday 5 June 2024, and the default schedule drives it. Quotes refresh every 5 suite minutes.
At 10:20 the test buys each bank by hand (signals may or may not buy on synthetic models); the
stop-loss is 0.3% below cost, and on that day's seeded paths every bank later trades at least
0.5% below its 10:20 price, so the stops must fire in the session, each at its level (or at the
open of a minute that opened below it).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest

from services.base.clock import SYDNEY
from services.domain.portfolio import to_price, trade_value
from tests.support import Processes, install_models, rpc_call_sync, wait_until
from tests.system._replay_helpers import SYMBOLS, TRADING_KNOBS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DAY = date(2024, 6, 5)
SPEED = 240
START = datetime.combine(DAY, time(8, 30), SYDNEY)
STOP_PCT = D("0.3")
SLIPPAGE = D("0.0005")
BOUGHT_AT = time(10, 20)


def call(dirs, service: str, method: str, **params):
    return rpc_call_sync(dirs.socket(service), method, params or None, timeout_s=30)


def suite_now(dirs) -> datetime:
    return datetime.fromisoformat(call(dirs, "paper-trading", "health")["now"]).astimezone(SYDNEY)


@pytest.fixture(scope="module")
def day(synthetic_models: Path):
    with Processes() as processes:
        dirs = processes.suite_dirs(
            "tdi-",
            TRADING_MARKET_DATA_SOURCE="synthetic",
            TRADING_CLOCK_START=START.isoformat(),
            TRADING_CLOCK_SPEED=str(SPEED),
            TRADING_MANAGER_HEALTH_INTERVAL_S="0.5",
            TRADING_MARKET_DATA_QUOTE_S="300",
            TRADING_PAPER_TRADING_STOP_LOSS_PCT=str(STOP_PCT),
            TRADING_PAPER_TRADING_TAKE_PROFIT_PCT="20",
            **{k: v for k, v in TRADING_KNOBS.items() if "PAPER_TRADING" not in k},
        )
        install_models(synthetic_models, dirs.models_dir)
        dirs = processes.start_suite(dirs)
        wait_until(
            lambda: suite_now(dirs), 300, 0.05, what="10:20 on the suite clock",
            until=lambda now: now.time() >= BOUGHT_AT, ignoring=(OSError,),
        )  # fmt: skip
        manual = []
        positions = call(dirs, "paper-trading", "get_positions")["positions"]
        held = {p["symbol"]: p["cost_basis"] for p in positions}
        for symbol in SYMBOLS:  # up to $4,000 each, within the $10,000 per-symbol limit
            room = min(4000.0, 9000.0 - held.get(symbol, 0.0))
            price = call(dirs, "market-data", "get_quote", symbol=symbol)["price"]
            if room >= price:  # the signals may have bought it already
                order = {"symbol": symbol, "action": "BUY", "quantity": int(room // price)}
                manual.append(call(dirs, "paper-trading", "execute_trade", **order))
        wait_until(
            lambda: suite_now(dirs), 600, 0.25, what="16:15 on the suite clock",
            until=lambda now: now.time() >= time(16, 15), ignoring=(OSError,),
        )  # fmt: skip
        yield dirs, manual


def trades(dirs) -> list[dict]:
    return call(dirs, "paper-trading", "get_trade_history", limit=1000)["trades"]


def test_prices_move_and_predictions_follow_them_through_the_session(day):
    dirs, _ = day
    predictions = call(dirs, "prediction", "get_recent_predictions", limit=1000)["predictions"]
    for symbol in SYMBOLS:
        after = [
            p for p in predictions
            if p["symbol"] == symbol and datetime.fromisoformat(p["created_at"]).astimezone(SYDNEY).time() > time(10, 15)
        ]  # fmt: skip
        quotes = {
            (p["inputs"]["quote"]["quote_time"], p["inputs"]["quote"]["price"])
            for p in after
            if p["inputs"].get("quote")
        }
        # A new prediction for each quote that moved: many in the session, on different prices.
        assert len(quotes) >= 10, (symbol, len(quotes))
        assert len({price for _, price in quotes}) >= 5, symbol
        for p in after:
            quote = p["inputs"]["quote"]
            made = datetime.fromisoformat(p["created_at"])
            assert quote["source"] == "synthetic" and datetime.fromisoformat(quote["quote_time"]) <= made


def test_manual_buys_filled_at_the_quote_of_the_moment(day):
    _, manual = day
    for trade in manual:
        a = trade["assumptions"]
        assert (a["quote_source"], a["quote_basis"], a["fill_basis"]) == (
            "synthetic",
            "intraday",
            "price+slippage",
        )
        quote_time = datetime.fromisoformat(a["quote_time"]).astimezone(SYDNEY)
        filled = datetime.fromisoformat(a["filled_at"]).astimezone(SYDNEY)
        assert quote_time <= filled and filled - quote_time <= timedelta(minutes=10)  # refreshed every 5
        assert D(str(trade["price"])) == to_price(D(str(a["quote_price"])) * (1 + SLIPPAGE))


def test_stop_losses_fire_inside_the_session_at_the_stop_level(day):
    dirs, _ = day
    history = list(reversed(trades(dirs)))  # oldest first
    stops = [t for t in history if t["reason"] == "stop_loss"]
    assert stops, "no stop-loss fired on a day every bank fell more than 0.3% after 10:20"
    for stop in stops:
        # The position's average cost from its buys since it was last flat (cost excludes commission).
        held = []
        for t in history[: history.index(stop)]:
            if t["symbol"] != stop["symbol"]:
                continue
            held = [] if t["action"] == "SELL" else [*held, t]
        cost = sum(trade_value(t["quantity"], D(str(t["price"]))) for t in held)  # cents, as booked
        level = to_price(to_price(cost / sum(t["quantity"] for t in held)) * (1 - STOP_PCT / 100))
        a = stop["assumptions"]
        filled = datetime.fromisoformat(a["filled_at"]).astimezone(SYDNEY)
        assert time(10, 20) < filled.time() < time(16, 10), a["filled_at"]
        bar = a["exit_bar"]
        assert bar["interval"] == "1m" and bar["low"] <= float(stop["price"])
        if a["fill_basis"] == "stop_loss:level":
            assert D(str(stop["price"])) == level, (stop, level)
            assert bar["low"] <= float(level) <= bar["open"]
        else:  # the minute opened below the stop: its open, the first price there was
            assert a["fill_basis"] == "stop_loss:open" and stop["price"] == bar["open"] < float(level)
    assert any(s["assumptions"]["fill_basis"] == "stop_loss:level" for s in stops)


def test_every_fill_names_its_quote(day):
    dirs, _ = day
    for trade in trades(dirs):
        a = trade["assumptions"]
        for key in (
            "quote_price",
            "quote_time",
            "quote_source",
            "quote_basis",
            "quote_delay_s",
            "fill_basis",
            "trigger",
        ):
            assert a.get(key) is not None, (key, trade)
        assert a["quote_source"] == "synthetic"
        assert datetime.fromisoformat(a["quote_time"]) <= datetime.fromisoformat(a["filled_at"])
        filled = datetime.fromisoformat(trade["timestamp"]).astimezone(SYDNEY)
        assert filled.date() == DAY and time(10, 0) <= filled.time() < time(16, 10)
