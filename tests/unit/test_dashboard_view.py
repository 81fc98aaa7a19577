"""The dashboard's pure view-model, from replies recorded on a live suite and variations of them:
all healthy, one fatal, Redis down, market closed, no supervisor, services answering garbage."""

from __future__ import annotations

import ast
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from services.domain import asx_calendar
from services.management import dashboard_view
from services.management.dashboard_view import (
    Snapshot,
    Unavailable,
    build_view,
    portfolio_lines,
    render_lines,
    render_text,
)
from services.registry import SERVICES
from tests.unit._dashboard_replies import recorded

SYDNEY = ZoneInfo("Australia/Sydney")
NOW = datetime(2026, 11, 24, 16, 1, 28, tzinfo=SYDNEY)  # when the replies were recorded
SYMBOLS = ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")


def snapshot_of(replies: dict, **changes) -> Snapshot:
    fields = {
        "status": replies["status"],
        "health": replies["health"],
        "market_status": replies["market_status"],
        "market_data": replies["market_data"],
        "predictions": replies["predictions"],
        "buy_rate": replies["buy_rate"],
        "portfolio": replies["portfolio"],
        "positions": replies["positions"],
        "big4": replies["big4"],
        "tasks": replies["tasks"],
        "symbols": SYMBOLS,
    }
    return Snapshot(**(fields | changes))


def all_healthy() -> dict:
    """The recording had no trained models (ml-model degraded): as it is once they are trained."""
    replies = recorded()
    replies["health"]["ml-model"]["status"] = "healthy"
    del replies["health"]["ml-model"]["warnings"]
    for service in replies["status"]["services"]:
        service["health"] = "healthy"
    return replies


def one_fatal(name: str = "paper-trading") -> dict:
    replies = all_healthy()
    reason = "exited during start-up (code 1); 3 failures within 300s"
    for service in replies["status"]["services"]:
        if service["name"] == name:
            service.update(state="fatal", pid=None, uptime=None, health=None, restarts=2, reason=reason)
    replies["status"]["overall"] = "down"
    replies["status"]["recent_events"].append(
        {
            "service": name,
            "state": "fatal",
            "previous": "starting",
            "pid": None,
            "restarts": 2,
            "reason": reason,
            "at": "2026-11-24T05:01:20+00:00",
        }
    )
    replies["health"][name] = Unavailable(f"{name} is unavailable: No such file or directory")
    replies["portfolio"] = replies["positions"] = Unavailable(f"{name} is unavailable: Connection refused")
    return replies


def redis_down() -> dict:
    replies = all_healthy()
    replies["status"]["supervisor"]["redis"].update(state="stopped", pid=None)
    for health in replies["health"].values():
        health.update(redis="disconnected", status="degraded")
    return replies


def lines_of(view, width: int = 80, **kwargs) -> list[str]:
    return [line.text for line in render_lines(view, width, **kwargs)]


def assert_fits(text: str, width: int = 80) -> None:
    for line in text.splitlines():
        assert cell_len(line) <= width, line  # rich's measure, not the module's own
        assert "\x1b" not in line and "\r" not in line


# ---- the scenarios ------------------------------------------------------------------------------


def test_all_healthy_is_green_with_every_figure():
    view = build_view(snapshot_of(all_healthy()), NOW)
    assert (view.overall, view.light) == ("healthy", "🟢")
    assert [r.name for r in view.services] == [
        "alerts", "market-data", "ml-model", "sentiment", "prediction", "paper-trading", "scheduler"
    ]  # fmt: skip
    assert {r.level for r in view.services} == {"ok"}
    by_name = {r.name: r for r in view.services}
    assert by_name["prediction"].deps == "ok" and by_name["market-data"].deps == "-"
    assert by_name["prediction"].pid == 874 and by_name["prediction"].memory_bytes == 37691392
    assert view.market.phase == "post_market" and view.market.next_open.hour == 10
    cba = view.symbols[0]
    # Price and change (a percentage) from market-data; signal and confidence from the prediction.
    assert (cba.symbol, cba.price, cba.signal) == ("CBA.AX", 139.674, "SELL")
    assert cba.change_pct == pytest.approx(-0.2619, abs=1e-4)
    assert cba.confidence == pytest.approx(0.14954)
    assert view.symbols[1].price == 28.7189  # no market-data reply for WBC: the prediction's price
    assert view.buy_rate.rate == 0.0 and not view.buy_rate.alerting
    assert (view.portfolio.equity, view.portfolio.cash, view.portfolio.day_pnl) == (100000.0, 100000.0, 0.0)
    assert [t.name for t in view.next_tasks][:2] == ["evening_analysis", "paper_trading_sync"]
    assert view.failed_tasks == () and view.missing == {}
    assert [a.text for a in view.alerts] == [
        "market-data: synthetic data: seeded random walks, not real prices"
    ]
    text = render_text(view)
    assert_fits(text)
    for expected in ("🟢 HEALTHY", "post-market · opens Wed 10:00 (in 17h58m)", "CBA.AX", "SELL",
                     "equity $100,000.00", "day P&L +$0.00", "BIG 4 SENTIMENT +0.00", "evening_analysis 17:00"):  # fmt: skip
        assert expected in text, expected


def test_one_fatal_service_is_red_with_its_reason_first():
    view = build_view(snapshot_of(one_fatal()), NOW)
    assert (view.overall, view.light) == ("down", "🔴")
    row = {r.name: r for r in view.services}["paper-trading"]
    assert (row.state, row.health, row.pid, row.level) == ("fatal", "-", None, "bad")
    assert (row.memory_bytes, row.cpu_pct, row.uptime_s) == (None, None, None)  # no process: no figures
    assert view.alerts[0].level == "bad" and view.alerts[0].text.startswith("paper-trading is fatal: exited")
    assert any(a.text.startswith("paper-trading became fatal") and a.at == "16:01" for a in view.alerts)
    assert view.portfolio is None and "Connection refused" in view.missing["portfolio"]
    text = render_text(view)
    assert_fits(text)
    assert "paper-trading fatal" in text and "PORTFOLIO unknown" in text
    # A long alert wraps onto a second, indented line instead of losing its reason.
    assert "3 failures within\n      300s (r to restart)\n" in text, text


def test_redis_down_is_red_and_every_service_lacks_it():
    view = build_view(snapshot_of(redis_down()), NOW)
    assert view.overall == "down" and view.redis_down
    assert all(r.deps.startswith("down: redis") for r in view.services)
    assert view.alerts[0].text.startswith("redis is down")
    assert "redis stopped" in render_text(view).splitlines()[0]


def test_without_the_supervisor_answering_services_show_running_and_the_rest_down():
    replies = all_healthy()
    replies["health"]["sentiment"] = Unavailable("sentiment is unavailable: Connection refused")
    view = build_view(snapshot_of(replies, status=Unavailable("manager is unavailable: No such file")), NOW)
    states = {r.name: (r.state, r.level) for r in view.services}
    assert states["sentiment"] == ("down", "bad") and states["prediction"][0] == "running"
    assert states["prediction"][1] == "warn"  # it runs, but a dependency is down
    assert {r.name: r.deps for r in view.services}["prediction"] == "down: sentiment"
    assert view.overall == "down" and view.alerts[0].text.startswith("supervisor not running")
    assert view.supervisor == "supervisor not running · redis connected"  # the services say so
    assert view.alerts[0].text == (
        "supervisor not running (manager is unavailable: No such file): service_manager.py start"
    )
    assert render_text(view).startswith("🔴 DOWN")


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (
            datetime(2026, 11, 28, 11, 0, tzinfo=SYDNEY),
            "MARKET closed · opens Mon 10:00 (in 1d23h)",
        ),  # Saturday
        # Christmas is a Friday and Boxing Day (Saturday) is observed on Monday 28th.
        (datetime(2026, 12, 25, 12, 0, tzinfo=SYDNEY), "MARKET closed (Christmas Day) · opens Tue 10:00"),
        (datetime(2026, 11, 24, 9, 0, tzinfo=SYDNEY), "MARKET pre-market · opens 10:00 (in 1h00m)"),
        (datetime(2026, 11, 24, 11, 30, tzinfo=SYDNEY), "MARKET open · closes 16:00 (in 4h30m)"),
    ],
)
def test_market_line_for_each_phase(moment, expected):
    # The scheduler's reply is asx_calendar.market_status: record it at each moment.
    view = build_view(snapshot_of(all_healthy(), market_status=asx_calendar.market_status(moment)), moment)
    assert next(line for line in lines_of(view) if line.startswith("MARKET")).startswith(expected)


def test_market_unknown_when_the_scheduler_did_not_answer():
    view = build_view(
        snapshot_of(all_healthy(), market_status=Unavailable("scheduler.get_market_status timed out"))
    )
    assert view.market is None
    assert "MARKET unknown (scheduler.get_market_status timed out)" in render_text(view)


@pytest.mark.parametrize(
    ("reply", "alerting"),
    [
        ({"buy_rate": 0.75, "samples": 20, "min_samples": 10, "threshold": 0.7, "alerting": True}, True),
        # Over the line with enough samples: an alert even if the flag lags behind.
        ({"buy_rate": 0.75, "samples": 20, "min_samples": 10, "threshold": 0.7, "alerting": False}, True),
        # Too few samples to judge: 4 BUYs of 5 is no alert yet.
        ({"buy_rate": 0.8, "samples": 5, "min_samples": 10, "threshold": 0.7, "alerting": False}, False),
        # Hysteresis: the service still alerts just under the line until it falls further.
        ({"buy_rate": 0.68, "samples": 20, "min_samples": 10, "threshold": 0.7, "alerting": True}, True),
        ({"buy_rate": 0.70, "samples": 20, "min_samples": 10, "threshold": 0.7, "alerting": False}, False),
        ({"buy_rate": None, "samples": 0, "threshold": 0.7, "alerting": False}, False),
        ({"buy_rate": 0.9, "samples": 50}, True),  # no threshold in the reply: the 70% default
    ],
)
def test_buy_rate_alert(reply, alerting):
    view = build_view(snapshot_of(all_healthy(), buy_rate=reply), NOW)
    assert view.buy_rate.alerting is alerting
    assert any(a.text.startswith("buy rate") for a in view.alerts) is alerting
    assert ("ALERT >" in render_text(view)) is alerting


@pytest.mark.parametrize(
    ("changes", "service", "deps", "level"),
    [
        ({"market-data": ("backoff", None)}, "prediction", "down: market-data", "warn"),
        ({"prediction": ("starting", None)}, "scheduler", "down: prediction", "warn"),
        ({"prediction": ("running", "unhealthy")}, "paper-trading", "down: prediction", "warn"),
        ({"ml-model": ("running", "degraded")}, "prediction", "ok", "ok"),  # degraded still serves
        ({"market-data": ("stopped", None)}, "market-data", "-", "bad"),
    ],
)
def test_dependency_status(changes, service, deps, level):
    replies = all_healthy()
    for entry in replies["status"]["services"]:
        if entry["name"] in changes:
            entry["state"], entry["health"] = changes[entry["name"]]
            if entry["health"] is not None:
                replies["health"][entry["name"]]["status"] = entry["health"]
    row = {r.name: r for r in build_view(snapshot_of(replies), NOW).services}[service]
    assert (row.deps, row.level) == (deps, level)


def test_live_events_become_alerts_newest_first():
    events = [
        {"type": "risk_limit_hit", "timestamp": "2026-11-24T05:00:00+00:00",
         "data": {"rule": "max_position", "detail": "position would be 12% of equity", "symbol": "CBA.AX"}},
        {"type": "market_data_updated", "timestamp": "2026-11-24T05:00:30+00:00", "data": {"symbol": "CBA.AX"}},
        {"type": "buy_rate_alert", "timestamp": "2026-11-24T05:01:00+00:00", "data": {"rate": 0.8}},
        {"type": "task_failed", "timestamp": "2026-11-24T04:59:00+00:00",
         "data": {"name": "morning_analysis", "error": "prediction is unavailable"}},
        {"type": "event_dead_lettered", "timestamp": "2026-11-24T05:02:00+00:00",
         "data": {"event_type": "prediction_generated", "consumer": "paper-trading", "delivered": 8,
                  "error": "ValueError('bad signal')"}},
    ]  # fmt: skip
    view = build_view(snapshot_of(all_healthy(), events=events), NOW)
    timed = [(a.at, a.text) for a in view.alerts if a.at]
    assert timed == [
        (
            "16:02",
            "paper-trading dead-lettered a prediction_generated after 8 deliveries: ValueError('bad signal')",
        ),
        ("16:01", "buy rate alert: 80% of recent predictions are BUY"),
        ("16:00", "risk limit max_position (CBA.AX): position would be 12% of equity"),
        ("15:59", "task morning_analysis failed: prediction is unavailable"),
    ]


def test_storage_halted_and_resumed_become_alerts():
    """paper-trading's storage alerts: the halt names the reason, the resume how long it lasted."""
    reason = "disk full: database or disk is full (SQLITE_FULL)"
    events = [
        {"type": "storage_halted", "timestamp": "2026-11-24T05:00:00+00:00",
         "data": {"service": "paper-trading", "reason": reason, "error": "SQLITE_FULL",
                  "state": "halted", "since": "2026-11-24T05:00:00+00:00"}},
        {"type": "storage_resumed", "timestamp": "2026-11-24T05:03:00+00:00",
         "data": {"service": "paper-trading", "halted_s": 181.6, "reason": reason}},
        {"type": "storage_halted", "timestamp": "2026-11-24T05:04:00+00:00", "data": {}},  # malformed
    ]  # fmt: skip
    view = build_view(snapshot_of(all_healthy(), events=events), NOW)
    assert [(a.at, a.level, a.text) for a in view.alerts if a.at] == [
        ("16:04", "bad", "? halted trading, storage: ?"),
        ("16:03", "warn", "paper-trading resumed trading: storage writable again after 182 s"),
        ("16:00", "bad", f"paper-trading halted trading, storage: {reason}"),
    ]


def test_failed_tasks_newest_first_and_halted_trading():
    replies = all_healthy()
    replies["tasks"][0].update(last_status="failed", last_run="2026-11-24T15:00:00+11:00", last_error="boom")
    replies["tasks"][1].update(last_status="blocked", last_run="2026-11-24T15:30:00+11:00", last_error=None)
    replies["tasks"][2].update(last_status="succeeded", last_run="2026-11-24T15:45:00+11:00")
    replies["portfolio"].update(trading_halted=True, halt_reason="daily loss $2100 reached the $2000 limit")
    replies["health"]["scheduler"]["failed_today"] = 3
    view = build_view(snapshot_of(replies), NOW)
    assert view.failed_today == 3
    assert [(t.name, t.error) for t in view.failed_tasks] == [
        ("paper_trading_sync", "blocked"),
        ("evening_analysis", "boom"),
    ]
    assert "trading halted: daily loss $2100 reached the $2000 limit" in [a.text for a in view.alerts]
    text = render_text(view)
    assert "FAILED paper_trading_sync Tue 15:30: blocked" in text and "HALTED" in text
    replies["tasks"][0]["last_status"] = replies["tasks"][1]["last_status"] = "succeeded"
    assert "FAILED none · 3 failed runs today" in render_text(build_view(snapshot_of(replies), NOW))


def test_the_days_predictions_are_counted_by_outcome():
    replies = all_healthy()
    older = portfolio_lines(build_view(snapshot_of(replies), NOW), room=20)  # a trader without counts
    assert not any("signals today" in line.text for line in older)
    replies["health"]["paper-trading"]["outcomes_today"] = {"traded": 3, "rejected": 1, "ignored": 40}
    view = build_view(snapshot_of(replies), NOW)
    assert view.portfolio is not None and view.portfolio.outcomes_today == {
        "traded": 3,
        "rejected": 1,
        "ignored": 40,
    }
    lines = [line.text for line in portfolio_lines(view, room=20)]
    assert "signals today: 3 traded  1 rejected  40 ignored" in lines


def test_positions_fill_the_room_and_the_rest_is_counted():
    replies = all_healthy()
    replies["positions"]["positions"] = [
        {"symbol": s, "quantity": 100, "market_value": 3000.0, "unrealized_pnl": -12.5} for s in SYMBOLS * 3
    ]
    replies["portfolio"]["open_positions"] = 12
    text = render_text(build_view(snapshot_of(replies), NOW))
    assert " CBA.AX      100 $3,000.00 -$12.50" in text and "more positions" in text
    assert_fits(text)


def test_selected_row_and_narrow_terminals():
    view = build_view(snapshot_of(all_healthy()), NOW)
    lines = render_lines(view, 80, selected=4)  # alerts, market-data, ml-model, sentiment, prediction
    assert [line.text.split()[0] for line in lines if line.selected] == ["prediction"]
    for width in (40, 60, 79, 120):
        assert_fits("\n".join(lines_of(view, width)), width)
    assert "│" not in "\n".join(lines_of(view, 60))  # too narrow for two columns: stacked
    wide = lines_of(view, 120)  # room for a NOTE column: the warning shows in the table too
    assert wide[1].split()[-2:] == ["DEPS", "NOTE"] and "synthetic data" in wide[3]  # market-data's row
    assert "NOTE" not in lines_of(view, 80)[1]


# ---- quotes: the price of the moment, its time and delay -----------------------------------------

IN_SESSION = datetime(2026, 11, 24, 11, 30, tzinfo=SYDNEY)


def quote_reply(symbol: str, price: float, at: str, **changes) -> dict:
    quote = {"symbol": symbol, "price": price, "bid": None, "ask": None, "previous_close": price - 0.5,
             "change": 0.5, "change_pct": 0.4, "quote_time": at, "delay_s": 1200.0, "source": "yfinance",
             "stale": False, "stale_reason": None}  # fmt: skip
    quote.update(changes)
    return {"symbol": symbol, "price": price, "change": 0.5, "change_pct": 0.4, "price_basis": "quote",
            "as_of": "2026-11-23T16:10:00+11:00", "source": "yfinance", "stale": False, "quote": quote}  # fmt: skip


def in_session_market_data() -> dict:
    return {
        # 00:05 UTC is 11:05 in Sydney (daylight time): shown in the market's time.
        "CBA.AX": quote_reply("CBA.AX", 140.5, "2026-11-24T00:05:00+00:00"),
        "WBC.AX": quote_reply(
            "WBC.AX", 28.9, "2026-11-24T10:50:00+11:00", stale=True, stale_reason="yfinance: no intraday data"
        ),
        "ANZ.AX": quote_reply("ANZ.AX", 31.7, "2026-11-24T11:29:00+11:00", delay_s=0.0, source="ig"),
        # NAB: no reply from market-data: the prediction's price, no quote.
    }


def test_symbol_rows_carry_the_quote_time_delay_and_staleness():
    replies = all_healthy()
    market_status = asx_calendar.market_status(IN_SESSION)
    snapshot = snapshot_of(replies, market_data=in_session_market_data(), market_status=market_status)
    view = build_view(snapshot, IN_SESSION)
    cba, wbc, anz, nab = view.symbols
    assert (cba.price, cba.price_basis, cba.delay_s, cba.quote_source) == (140.5, "quote", 1200.0, "yfinance")
    assert cba.quote_time.strftime("%H:%M %Z") == "11:05 AEDT" and not cba.marked_stale
    assert wbc.quote_stale and wbc.marked_stale and wbc.stale_reason == "yfinance: no intraday data"
    assert (
        anz.delay_s == 0.0
        and nab.quote_time is None
        and nab.price
        == replies["predictions"]["predictions"][
            next(i for i, p in enumerate(replies["predictions"]["predictions"]) if p["symbol"] == "NAB.AX")
        ]["price"]
    )

    # 80 columns, beside the portfolio: the quote's time and delay take the change's place.
    narrow = lines_of(view, 80)
    head = next(line for line in narrow if line.startswith("SYMBOL"))
    assert head.split()[:5] == ["SYMBOL", "PRICE", "SIG", "CONF", "QUOTE"]
    rows = {line.split()[0]: line for line in narrow if line.split() and line.split()[0] in SYMBOLS}
    assert "140.50 SELL  15% 11:05 20m " in rows["CBA.AX"]
    assert "28.90* HOLD  25% 10:50 STALE " in rows["WBC.AX"]  # * : the price is the stale quote
    assert "11:29 live " in rows["ANZ.AX"]
    assert "18% - " in rows["NAB.AX"]  # no quote known
    assert_fits("\n".join(narrow), 80)
    # From 91 columns the change is back; from 104 a NOTE says the source, its delay, why STALE.
    assert "+0.40%   SELL  15% 11:05 20m" in render_text(view, 91)
    assert "no intraday" not in render_text(view, 91)
    wide = render_text(view, 140)
    assert "10:50 STALE yfinance: no intraday data" in wide
    assert "11:05 20m   yfinance 20m delayed" in wide and "11:29 live  ig real-time" in wide
    # Stacked on a narrow terminal, too narrow for the whole QUOTE column: the time is kept.
    assert "140.50  +0.40%   SELL  15% 11:05" in lines_of(view, 44)[11]  # below 7 service rows
    for width in (40, 44, 56, 76, 80, 91, 104, 120, 160):
        assert_fits("\n".join(lines_of(view, width)), width)


def test_after_the_close_the_price_is_the_close_and_says_so():
    view = build_view(snapshot_of(all_healthy()), NOW)  # the recording: post-market
    cba = view.symbols[0]
    assert (cba.price, cba.price_basis) == (139.674, "close")  # the close, not the day's last quote
    assert "139.67 SELL  15% close " in next(line for line in lines_of(view, 80) if line.startswith("CBA"))
    row = next(line for line in lines_of(view, 140) if line.startswith("CBA.AX"))
    assert "139.67" in row and " close " in row and "last close; last quote 16:00" in row


def test_a_stale_quote_after_the_close_is_marked_but_the_close_is_not():
    replies = all_healthy()
    replies["market_data"]["CBA.AX"]["quote"].update(stale=True, stale_reason="source down")
    cba = build_view(snapshot_of(replies), NOW).symbols[0]
    assert cba.quote_stale and not cba.marked_stale  # the price shown is the close: not stale
    row = next(
        line for line in lines_of(build_view(snapshot_of(replies), NOW), 140) if line.startswith("CBA")
    )
    assert "close STALE source down" in row and "139.67 " in row


@pytest.mark.parametrize(
    ("delay_s", "text"),
    [(None, ""), (0.0, "live"), (0.4, "live"), (15.0, "15s"), (60.0, "1m"), (1200.0, "20m"), (1230.0, "20m")],
)
def test_delay_text(delay_s, text):
    assert dashboard_view.delay_text(delay_s) == text


# ---- bad replies never crash the view ----------------------------------------------------------------

GARBAGE_ROWS = [
    {"status": "oops"},
    {"status": {"supervisor": [], "services": "x", "recent_events": {"a": 1}}},
    {"status": {"supervisor": {"redis": "up"}, "services": [1, None, {"name": 5}, {"name": "prediction"}]}},
    {"health": {"market-data": [1, 2], "prediction": {"status": 3, "pid": "x", "warnings": "not a list"}}},
    {"health": {"sentiment": {"memory_usage": -1e308, "cpu_usage": True, "uptime": "long"}}},
    {"market_status": {"phase": "open", "next_close": "not a time", "next_open": "2026-11-24T10:00:00"}},
    {
        "predictions": {
            "predictions": [{"symbol": 3}, "x", {"symbol": "CBA.AX", "signal": 1, "confidence": "hi"}]
        }
    },
    {"market_data": {"CBA.AX": {"price": "1e6", "change_pct": None}}},
    {
        "market_data": {
            "CBA.AX": {"price": 1.0, "price_basis": 7, "quote": {"quote_time": "11:05", "delay_s": -5}}
        }
    },
    {
        "market_data": {
            "CBA.AX": {"quote": {"quote_time": "2026-11-24T11:05:00", "stale": "yes", "source": 3}}
        }
    },
    {"market_data": {"CBA.AX": {"quote": {"stale": True, "stale_reason": "\x1b[2Jgone\n"}}}},
    {"portfolio": {"equity": "lots"}, "positions": {"positions": [{"symbol": None}, 7]}},
    {"portfolio": {"equity": 1.0, "open_positions": 2.5}, "positions": "none"},
    {"big4": {"score": True, "banks": [1]}},
    {"big4": {"score": 0.1, "banks": {"CBA.AX": "x", "WBC.AX": {"score": "up"}}}},
    {"tasks": {"not": "a list"}},
    {"tasks": [{"name": "x", "next_run": "garbage", "last_status": "failed", "last_run": 5}]},
    {"events": [None, "x", {"type": "risk_limit_hit", "data": "x", "timestamp": 3}]},
    {"buy_rate": {"buy_rate": "high", "samples": "many", "threshold": None}},
    # Escape codes and line breaks inside strings must not reach the terminal.
    {"tasks": [{"name": "\x1b[31mevil\x1b[0m", "next_run": "2026-11-24T17:00:00+11:00"}]},
    {"health": {"ml-model": {"status": "healthy", "warnings": ["line1\nline2\x07\x1b]0;title\x07"]}}},
]


@pytest.mark.parametrize("garbage", GARBAGE_ROWS)
def test_garbage_replies_never_crash_and_never_leak_escapes(garbage):
    replies = all_healthy()
    changes = {k: (replies[k] | v if k == "health" else v) for k, v in garbage.items()}
    view = build_view(snapshot_of(replies, **changes), NOW)
    text = render_text(view)
    assert_fits(text)
    assert not any(ch in text for ch in "\x07\x1b\x00")
    assert len(view.services) == len(SERVICES)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
REPLY = JSON | st.builds(Unavailable, st.text(max_size=40))
KEYS = st.sampled_from(["status", "health", "market_status", "market_data", "predictions", "buy_rate",
                        "portfolio", "positions", "big4", "tasks", "events"])  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(data=st.data(), width=st.integers(40, 160))
def test_any_reply_anywhere_renders_within_the_width(data, width):
    """Invariant: replace any reply (or any value nested inside one) with anything JSON can carry."""
    replies = all_healthy()
    changes = {}
    for key in data.draw(st.lists(KEYS, max_size=4, unique=True)):
        if key in ("health", "market_data"):
            changes[key] = data.draw(
                st.dictionaries(st.sampled_from(["market-data", "prediction", "CBA.AX"]), REPLY)
            )
        elif key == "events":
            changes[key] = data.draw(st.lists(JSON, max_size=3))
        else:
            changes[key] = data.draw(REPLY)
    target = replies["status"]["services"][data.draw(st.integers(0, 5))]
    target[data.draw(st.sampled_from(sorted(target)))] = data.draw(JSON)
    view = build_view(snapshot_of(replies, **changes), NOW if data.draw(st.booleans()) else None)
    lines = render_lines(view, width, selected=data.draw(st.integers(0, 5)))
    assert all(cell_len(line.text) <= width for line in lines)
    assert all(ch.isprintable() for line in lines for ch in line.text)


def test_nothing_yet_is_a_frame_too():
    """Before the first reply the dashboard still draws: everything is waiting."""
    view = build_view(Snapshot(), None)
    assert view.overall == "down"
    assert "waiting for the first reply" in render_text(view)


def test_the_view_module_imports_only_the_stdlib_and_pure_domain_modules():
    tree = ast.parse(Path(dashboard_view.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    outside = {n for n in names if n.split(".")[0] not in sys.stdlib_module_names}
    assert outside <= {"__future__", "services.domain.supervision"}, outside
