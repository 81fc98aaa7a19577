"""A month replayed on 5-minute bars: the session is stepped bar by bar, orders fill where the
market was at the step, and stops and take-profits see each bar's whole range.

The 5m CSVs are the seeded synthetic paths through each day's daily bar (the real ASX bars of
../shared/data/asx when present; see _replay_helpers.intraday_csv_dir), so the daily and the
intraday files agree. Every check reads the CSV files independently of the suite.
"""

from __future__ import annotations

import csv
import json
from datetime import date, datetime, timedelta
from decimal import Decimal as D

import pytest

from services.base.clock import SYDNEY
from services.domain import asx_calendar
from services.domain.portfolio import to_price
from services.management.replay import ReplayDriver, ReplayOptions
from tests.system._replay_helpers import MODELS_BEFORE, SYMBOLS, TRADING_KNOBS, intraday_csv_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

FIRST, LAST = date(2019, 6, 3), date(2019, 6, 28)  # 19 trading days (10 June was a holiday)
assert FIRST >= MODELS_BEFORE
SLIPPAGE = D("0.0005")  # the default 5 bps: no book in a CSV, so fills are the price +/- slippage
FAST_MANAGER = {"TRADING_MANAGER_HEALTH_INTERVAL_S": "0.5", "TRADING_MANAGER_BACKOFF_BASE_S": "0.2"}


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, replay_models):
    options = ReplayOptions(
        first=FIRST,
        last=LAST,
        data_dir=intraday_csv_dir(FIRST, LAST, "5m"),
        out=tmp_path_factory.mktemp("replay-5m"),
        models_dir=replay_models,
        extra_env={**TRADING_KNOBS, **FAST_MANAGER},
    )
    return ReplayDriver(options).run()


def five_minute_bars(symbol: str) -> dict[datetime, dict]:
    """The 5m bars straight from the CSV file, by start instant."""
    path = intraday_csv_dir(FIRST, LAST, "5m") / f"{symbol}_5m.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        datetime.fromisoformat(r["Datetime"]): {k: float(r[k]) for k in ("Open", "High", "Low", "Close")}
        for r in rows
    }


def test_the_report_states_its_intraday_basis_and_the_baselines(replayed):
    report = json.loads((replayed.out / "report.json").read_text())
    assert report["basis"].startswith(f"intraday 5m bars on 19 of 19 days ({', '.join(SYMBOLS)})")
    assert report["equity"]["trading_days"] == 19
    model = report["model"]
    assert model["scored"] == 19 * 4  # one per symbol and day (the CSVs go on past the period)
    assert {"always_up", "yesterday_direction"} <= set(model)
    assert "fill basis        intraday 5m bars" in replayed.text
    assert "always up" in replayed.text and "yesterday's move" in replayed.text
    # Predictions follow the price through the session: many per symbol and day, not one.
    assert report["signals"]["total"] > 19 * 4 * 10


def test_orders_fill_at_the_close_of_the_bar_just_ended(replayed):
    buys = [t for t in replayed.trades if t["action"] == "BUY"]
    assert buys, "the month's signals bought nothing"
    bars = {s: five_minute_bars(s) for s in SYMBOLS}
    for trade in buys:
        a = trade["assumptions"]
        quote_time = datetime.fromisoformat(a["quote_time"])
        bar = bars[trade["symbol"]][quote_time - timedelta(minutes=5)]  # the bar that ended then
        assert a["quote_basis"] == "intraday" and a["fill_basis"] == "price+slippage"
        assert a["quote_price"] == bar["Close"]
        assert D(str(trade["price"])) == to_price(D(str(bar["Close"])) * (1 + SLIPPAGE))
        filled = datetime.fromisoformat(a["filled_at"])
        assert filled - quote_time < timedelta(minutes=5)  # the price of that step, not an older one
        assert asx_calendar.session_open(filled.date()) < filled < asx_calendar.session_close(filled.date())


def test_exits_are_taken_on_a_bars_range_at_the_level_or_the_gap(replayed):
    exits = [t for t in replayed.trades if t["reason"] in ("stop_loss", "take_profit")]
    assert exits, "no stop-loss or take-profit in a month with 1.5% levels"
    bars = {s: five_minute_bars(s) for s in SYMBOLS}
    at_level = 0
    for trade in exits:
        a = trade["assumptions"]
        exit_bar = a["exit_bar"]
        bar = bars[trade["symbol"]][datetime.fromisoformat(exit_bar["start"])]
        assert exit_bar["interval"] == "5m"
        assert (exit_bar["open"], exit_bar["high"], exit_bar["low"]) == (bar["Open"], bar["High"], bar["Low"])
        price = trade["price"]
        kind = a["fill_basis"].split(":")[1]
        if kind == "open":
            assert price == bar["Open"]
        else:
            assert kind == "level" and bar["Low"] <= price <= bar["High"]
            at_level += 1
        if trade["reason"] == "stop_loss":
            assert price <= max(bar["Open"], bar["Low"]) or kind == "level"
    assert at_level >= 1  # at least one level traded through inside a bar, filled at the level


def test_every_trade_is_in_a_session_and_the_book_ends_flat_or_marked(replayed):
    for trade in replayed.trades:
        stamp = datetime.fromisoformat(trade["timestamp"]).astimezone(SYDNEY)
        assert FIRST <= stamp.date() <= LAST
        assert asx_calendar.is_trading_day(stamp.date())
    assert [d for d, _ in replayed.curve[1:]] == asx_calendar.trading_days_between(FIRST, LAST)
