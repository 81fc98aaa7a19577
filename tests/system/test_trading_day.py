"""A whole trading day run by the default schedule on a sped-up suite clock.

The suite starts through the manager CLI with TRADING_CLOCK_START before the open of 5 June 2019
and TRADING_CLOCK_SPEED at 600 (a 15-minute monitoring slot lasts 1.5 real seconds). Nothing
drives it but the scheduler's default tasks: morning analysis, data and sentiment refresh,
monitoring every 15 minutes in the session (refresh, predictions, which paper-trading follows),
evening analysis and the IG sync. Then every trade must link to its prediction, that prediction
to its inputs, and the book must be within the risk rules.

Daily bars do not move within a day, so stop-loss and take-profit cannot trigger here; the
replay test covers them over several days.
"""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path

import pytest

from services.base.clock import SYDNEY
from tests.support import Processes, install_models, rpc_call_sync, wait_until
from tests.system._replay_helpers import SYMBOLS, TRADING_KNOBS, market_csv_dir, using_real_data

# The first test also waits for the models if they must be trained (see tests/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DAY = date(2019, 6, 5)
SPEED = 600
# Start well before 09:30: the suite takes a few real seconds to come up, minutes of suite time.
START = datetime.combine(DAY, time(8, 0), SYDNEY)
MAX_POSITION_VALUE = 10_000
MAX_EXPOSURE_PCT = 80


@pytest.fixture(scope="module")
def day_suite(replay_models: Path):
    with Processes() as processes:
        dirs = processes.suite_dirs(
            "td-",
            TRADING_MARKET_DATA_SOURCE="csv",
            TRADING_MARKET_DATA_DIR=str(market_csv_dir()),
            TRADING_CLOCK_START=START.isoformat(),
            TRADING_CLOCK_SPEED=str(SPEED),
            TRADING_MANAGER_HEALTH_INTERVAL_S="0.5",
            # Daily bars only: the session's quote is the day's open at 10:00. At speed 600 the
            # default 1500 s limit would leave the 10:15 signal one real second to fill, so on a
            # busy machine the test would decide on load; a day's limit keeps it on the schedule.
            TRADING_PAPER_TRADING_MAX_QUOTE_AGE_S="86400",
            **TRADING_KNOBS,
        )
        install_models(replay_models, dirs.models_dir)
        yield processes.start_suite(dirs)


def call(dirs, service: str, method: str, **params):
    return rpc_call_sync(dirs.socket(service), method, params or None, timeout_s=30)


def tasks_by_name(dirs) -> dict[str, dict]:
    return {t["name"]: t for t in call(dirs, "scheduler", "list_tasks")}


def runs_today(dirs, task: dict) -> list[dict]:
    runs = call(dirs, "scheduler", "get_task_history", task_id=task["task_id"], limit=200)["runs"]
    return [r for r in runs if r["run_date"] == DAY.isoformat()]


@pytest.fixture(scope="module")
def finished_day(day_suite):
    """Wait (real time, with a deadline) until the 17:30 sync of DAY has run."""

    wait_until(
        lambda: runs_today(day_suite, tasks_by_name(day_suite)["paper_trading_sync"]),
        300,
        0.25,
        what="the 17:30 paper_trading_sync of the day",
        until=lambda runs: any(r["finished_at"] for r in runs),
        ignoring=(OSError,),  # a scheduler call that timed out on busy cores is asked again
    )
    return day_suite


def test_the_default_schedule_ran_the_day(finished_day):
    tasks = tasks_by_name(finished_day)
    for name in ("morning_analysis", "market_data_refresh", "sentiment_analysis", "evening_analysis"):
        runs = runs_today(finished_day, tasks[name])
        assert [r["status"] for r in runs] == ["succeeded"], (name, runs)
    monitoring = runs_today(finished_day, tasks["market_monitoring"])
    done = [r for r in monitoring if r["status"] == "succeeded"]
    # 24 slots from 10:15 to 16:00; a slot whose predecessor still runs is skipped, never doubled.
    assert len(done) >= 8, [(r["slot"], r["status"], r["error"]) for r in monitoring]
    assert len({r["slot"] for r in monitoring}) == len(monitoring)
    for run in done:
        slot = datetime.fromisoformat(run["slot"])  # slot keys are Sydney wall times
        assert time(10, 15) <= slot.time() < time(16, 0) and slot.minute % 15 == 0, run["slot"]
    # No IG credentials: the sync is recorded as skipped with -32002's reason (not faked, not
    # retried, and not counted as a failure of the day).
    sync = runs_today(finished_day, tasks["paper_trading_sync"])
    assert sync[-1]["status"] == "skipped" and "not configured" in sync[-1]["error"].lower(), sync
    assert sync[-1]["attempts"] == 1


def test_predictions_in_the_session_are_made_on_the_previous_close(finished_day):
    predictions = call(finished_day, "prediction", "get_recent_predictions", limit=1000)["predictions"]
    assert {p["symbol"] for p in predictions} == set(SYMBOLS)
    in_session = 0
    for p in predictions:
        made = datetime.fromisoformat(p["created_at"]).astimezone(SYDNEY)
        seen = datetime.fromisoformat(p["inputs"]["market_data"]["as_of"])
        assert made.date() == DAY and seen <= made, (p["created_at"], seen)  # never a bar from the future
        if time(10, 0) <= made.time() < time(16, 0):
            in_session += 1
            assert seen.date() == date(2019, 6, 4), p["inputs"]["market_data"]  # the close before the open
    # Monitoring publishes predictions during the session, the ones paper-trading can act on.
    assert in_session >= 4, (
        f"{in_session} predictions made while the market was open: the ones made at the 09:45 refresh"
        " were rejected as out of hours, and market_monitoring publishes nothing new on an unchanged bar"
    )


def test_every_trade_links_to_its_prediction_and_its_inputs(finished_day):
    trades = call(finished_day, "paper-trading", "get_trade_history", limit=1000)["trades"]
    if using_real_data():
        # NAB's signal on 4 June 2019's close is a BUY with the knobs of TRADING_KNOBS.
        assert any(t["action"] == "BUY" for t in trades), trades
    for trade in trades:
        assert trade["prediction_id"], trade  # nothing but signals trades in one day
        filled = datetime.fromisoformat(trade["timestamp"]).astimezone(SYDNEY)
        assert filled.date() == DAY and time(10, 0) <= filled.time() < time(16, 0), trade["timestamp"]
        prediction = call(finished_day, "prediction", "get_prediction", prediction_id=trade["prediction_id"])
        assert (prediction["symbol"], prediction["signal"]) == (trade["symbol"], trade["action"])
        inputs = prediction["inputs"]
        assert inputs["market_data"]["source"] == "csv" and inputs["market_data"]["as_of"]
        assert inputs["technical"]["rsi"] is not None
        assert inputs["sentiment"]["source"] in ("fallback", "cache", "marketaux")
        members = inputs["model"]["members"]
        assert members and all(m["version"] for m in members)
        assert trade["assumptions"]["quote_price"] == inputs["market_data"]["price"]
    assert len({t["prediction_id"] for t in trades}) == len(trades)


def test_the_book_is_within_the_risk_rules(finished_day):
    trades = call(finished_day, "paper-trading", "get_trade_history", limit=1000)["trades"]
    positions = call(finished_day, "paper-trading", "get_positions")["positions"]
    status = call(finished_day, "paper-trading", "get_portfolio_status")
    for position in positions:
        assert position["cost_basis"] <= MAX_POSITION_VALUE, position
    assert status["exposure_pct"] <= MAX_EXPOSURE_PCT
    assert status["cash"] >= 0
    predictions = call(finished_day, "prediction", "get_recent_predictions", limit=1000)["predictions"]
    for symbol in {t["symbol"] for t in trades if t["action"] == "BUY"}:
        # The signal repeats every 15 minutes; the position cap stops the buying, not the signal.
        buy_signals = [p for p in predictions if p["symbol"] == symbol and p["signal"] == "BUY"]
        buys = [t for t in trades if t["symbol"] == symbol and t["action"] == "BUY"]
        assert len(buys) < len(buy_signals), (symbol, len(buys), len(buy_signals))
    commissions = sum(t["commission"] for t in trades)
    assert status["commissions_paid"] == pytest.approx(commissions)
