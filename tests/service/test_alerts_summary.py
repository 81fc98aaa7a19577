"""The daily and weekly summaries on a moved suite clock, against the real services' figures.

market-data (synthetic), prediction and paper-trading run as real processes with the alerts
process, all on one clock file. The test trades during a Friday session, asks for predictions,
records a failed task, then moves the clock to just before 16:30 at 20x: the alerts process
must send the daily summary and, Friday being the week's last trading day, the weekly one, with
the equity and P&L paper-trading reports, the trades made, the signals by kind and the failure.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from services.base.clock import write_clock_file
from tests.alert_fakes import FakeHttpEndpoint
from tests.service.test_alerts_service import publish
from tests.support import async_wait_until, rpc_call_sync

pytestmark = pytest.mark.timeout(180)

SYDNEY = ZoneInfo("Australia/Sydney")
FRIDAY_11AM = datetime(2026, 11, 27, 11, 0, tzinfo=SYDNEY)


async def test_daily_and_weekly_summaries_after_the_close_have_the_right_figures(suite, processes):
    clock = suite.root / "clock.json"
    write_clock_file(clock, FRIDAY_11AM)
    env = {
        "TRADING_CLOCK_FILE": str(clock),
        "TRADING_PAPER_TRADING_FOLLOW_SIGNALS": "false",  # only the trades the test makes
        "TRADING_PAPER_TRADING_VERIFY_PREDICTIONS": "false",
    }
    with FakeHttpEndpoint() as webhook:
        alerts_env = {
            **env,
            "TRADING_ALERTS_WEBHOOK_URL": f"{webhook.url}/hook",
            "TRADING_ALERTS_TICK_S": "0.1",
            "TRADING_ALERTS_POLL_S": "0.5",
        }
        for name in ("market-data", "prediction", "paper-trading"):
            processes.start(name, suite, extra_env=env)
        alerts = processes.start("alerts", suite, extra_env=alerts_env)

        def call(service: str, method: str, **params):
            return rpc_call_sync(suite.socket(service), method, params or None, timeout_s=60)

        for symbol, action, quantity in (("CBA.AX", "BUY", 10), ("WBC.AX", "BUY", 20), ("CBA.AX", "SELL", 4)):
            call("paper-trading", "execute_trade", symbol=symbol, action=action, quantity=quantity)
        signals: dict[str, int] = {}
        for _ in range(2):
            made = call("prediction", "generate_predictions", force_refresh=True)["predictions"]
            for prediction in made.values():
                signals[prediction["signal"]] = signals.get(prediction["signal"], 0) + 1
        assert sum(signals.values()) == 8
        await publish(
            suite, "scheduler", "task_failed", {"name": "market_monitoring", "status": "failed", "error": "x"}
        )
        await async_wait_until(webhook.received, 30, what="the task_failed alert")
        # No summary during the day.
        assert [r.json()["kind"] for r in webhook.received()] == ["task_failed"]

        write_clock_file(clock, datetime(2026, 11, 27, 16, 29, 0, tzinfo=SYDNEY), speed=20.0)
        received = await async_wait_until(
            lambda: [r.json() for r in webhook.received() if r.json()["state"] == "summary"],
            60,
            what="the daily and weekly summaries",
            until=lambda m: len(m) == 2,
        )
        status = call("paper-trading", "get_portfolio_status")  # after the close: closing prices
        daily, weekly = received
        assert (daily["kind"], daily["title"]) == ("daily_summary", "Daily summary 2026-11-27")
        assert (weekly["kind"], weekly["title"]) == (
            "weekly_summary",
            "Weekly summary 2026-11-23 to 2026-11-27",
        )
        equity, pnl = status["equity"], status["day_pnl"]
        assert pnl == pytest.approx(equity - 100_000, abs=0.01)  # the book started this morning
        # Prediction also re-predicts on its own (new quotes, the day's final bar): the figures are
        # its record of the day up to the summary, of which the test's 8 are part.
        stored = call("prediction", "get_recent_predictions", limit=1000)["predictions"]
        at = datetime.fromisoformat(daily["at"])
        day = [p for p in stored if datetime.fromisoformat(p["created_at"]) <= at]
        assert len(day) >= 8
        expected = {k: sum(p["signal"] == k for p in day) for k in ("BUY", "SELL", "HOLD")}
        assert all(expected[k] >= n for k, n in signals.items())
        signal_text = f"signals BUY {expected['BUY']}, SELL {expected['SELL']}, HOLD {expected['HOLD']} ({len(day)} predictions)"
        for message, pnl_label in ((daily, "day P&L"), (weekly, "week P&L")):
            lines = message["text"].splitlines()
            assert lines[0] == f"equity ${equity:,.2f}"
            sign = "-" if pnl < 0 else "+"
            assert lines[1] == f"{pnl_label} {sign}${abs(pnl):,.2f}"
            assert lines[2:] == ["trades 3", signal_text, "failures task_failed 1"]
        # Sent once: a later turn (or a restart) does not send them again.
        alerts.stop()
        alerts = processes.start("alerts", suite, extra_env=alerts_env)
        listed = await async_wait_until(
            lambda: call("alerts", "list_alerts", limit=10)["alerts"], 30, until=lambda a: len(a) == 3
        )
        assert sorted(a["kind"] for a in listed) == ["daily_summary", "task_failed", "weekly_summary"]
        assert len([r for r in webhook.received() if r.json()["state"] == "summary"]) == 2
