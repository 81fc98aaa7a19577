"""What the alerts process watches, mapped to occurrences; summaries' schedule and text."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from services.domain import asx_calendar
from services.domain.alert_incidents import KINDS
from services.domain.alert_sources import (
    FOLLOWED_EVENTS,
    DiskReading,
    SummaryFigures,
    count_signals,
    disk_occurrence,
    models_expired,
    occurrences_from_event,
    stale_market_data,
    summaries_due,
    summary_text,
)
from services.registry import EVENTS

SYDNEY = ZoneInfo("Australia/Sydney")


def one(event_type: str, data: dict, source: str = "paper-trading"):
    (occurrence,) = occurrences_from_event(event_type, source, data)
    return occurrence


@pytest.mark.parametrize(
    ("event_type", "data", "kind", "subject", "resolve"),
    [
        ("service_status_changed", {"service": "prediction", "state": "fatal", "reason": "r"}, "service_fatal", "prediction", False),
        ("service_status_changed", {"service": "prediction", "state": "backoff"}, "service_restarting", "prediction", False),
        ("service_status_changed", {"service": "prediction", "state": "running"}, "service_fatal", "prediction", True),
        # an operator stopping a fatal service clears its alert
        ("service_status_changed", {"service": "prediction", "state": "stopped"}, "service_fatal", "prediction", True),
        ("buy_rate_alert", {"rate": 0.8, "threshold": 0.7, "window": 50}, "buy_rate_alert", "prediction", False),
        ("risk_limit_hit", {"rule": "max_daily_loss", "detail": "d", "halted_until": "2026-12-01T10:00:00+11:00"}, "trading_halted", "paper-trading", False),
        ("risk_limit_hit", {"rule": "max_position_value", "detail": "d", "symbol": "CBA.AX"}, "risk_limit_hit", "max_position_value", False),
        ("task_failed", {"name": "market_monitoring", "status": "failed", "error": "e"}, "task_failed", "market_monitoring", False),
        ("event_dead_lettered", {"event_type": "prediction_generated", "consumer": "paper-trading"}, "event_dead_lettered", "prediction_generated/paper-trading", False),
        ("storage_halted", {"reason": "disk I/O error"}, "storage_halted", "paper-trading", False),
        ("storage_resumed", {}, "storage_halted", "paper-trading", True),
        ("ig_mirror_halted", {"reason": "refused"}, "ig_mirror_halted", "paper-trading", False),
        ("ig_mirror_resumed", {}, "ig_mirror_halted", "paper-trading", True),
        ("outbox_backlog", {"state": "growing", "size": 120}, "outbox_backlog", "paper-trading", False),
        ("outbox_backlog", {"state": "cleared"}, "outbox_backlog", "paper-trading", True),
        ("market_data_stale", {"state": "stale", "symbol": "CBA.AX"}, "market_data_stale", "CBA.AX", False),
        ("market_data_stale", {"state": "fresh", "symbol": "CBA.AX"}, "market_data_stale", "CBA.AX", True),
    ],
)  # fmt: skip
def test_events_map_to_occurrences(event_type, data, kind, subject, resolve):
    occurrence = one(event_type, data)
    assert (occurrence.kind, occurrence.subject, occurrence.resolve) == (kind, subject, resolve)
    assert kind in KINDS


def test_events_that_are_no_alert_map_to_nothing():
    assert (
        occurrences_from_event("service_status_changed", "manager", {"service": "x", "state": "starting"})
        == []
    )
    assert occurrences_from_event("trade_executed", "paper-trading", {}) == []


def test_the_buy_rate_text_has_the_figures():
    assert one("buy_rate_alert", {"rate": 0.8, "threshold": 0.7, "window": 50}).text == (
        "80% of the last 50 predictions are BUY (alert above 70%)"
    )


def test_a_followed_event_type_is_subscribed_as_soon_as_the_registry_has_it(tmp_path):
    """A mapped type not registered yet (ig_mirror_halted & co.): the alerts process follows it the
    day it is registered, with no handler to write (a registered consumer keeps its @on_event)."""
    from services.alerts.alerts_service import AlertsService
    from services.base.config import Settings
    from services.registry import EventType, events_with

    class Later(AlertsService):  # the registry of a later day, with two of the new types
        event_types = events_with(
            EventType("ig_mirror_halted", publishers=("paper-trading",)),
            EventType("ig_mirror_resumed", publishers=("paper-trading",)),
        )

    env = {
        "TRADING_SOCKET_DIR": str(tmp_path),
        "TRADING_DATA_DIR": str(tmp_path),
        "TRADING_LOG_DIR": str(tmp_path),
    }
    followed = {event_type for event_type, _, _ in Later(settings=Settings.from_env(env))._event_handlers()}
    registered_now = {t for t in FOLLOWED_EVENTS if t in EVENTS}
    assert followed == registered_now | {"ig_mirror_halted", "ig_mirror_resumed"}
    for name in registered_now:  # today's: declared in the registry, handled by @on_event
        assert "alerts" in EVENTS[name].consumers, name


@pytest.mark.parametrize(("free", "resolve"), [(4, False), (5, True), (50, True)])
def test_disk_low_below_the_bound(free, resolve):
    reading = DiskReading("data", "/srv/data", free_bytes=free * 10**9, total_bytes=100 * 10**9)
    occurrence = disk_occurrence(reading, 5.0)
    assert occurrence.kind == "disk_low" and occurrence.subject == "data" and occurrence.resolve is resolve
    assert occurrence.text.startswith(f"{free:.1f}% free")


def test_models_expired_only_when_the_manifest_says_so():
    now = datetime(2026, 11, 30, tzinfo=UTC)
    assert (
        models_expired({"expired": True, "expired_reason": "older than 14 days"}, now) == "older than 14 days"
    )
    assert (
        models_expired({"expires_at": "2026-11-29T00:00:00+00:00"}, now)
        == "the models expired at 2026-11-29T00:00:00+00:00"
    )
    assert models_expired({"expires_at": "2026-12-29T00:00:00+00:00"}, now) is None
    assert models_expired({"trained_at": "2020-01-01"}, now) is None  # age alone is ml-model's call


def test_stale_symbols_from_market_data_health():
    assert stale_market_data({"stale_quotes": {"WBC.AX": "no new bar", "CBA.AX": "x"}}) == {
        "CBA.AX": "x",
        "WBC.AX": "no new bar",
    }
    assert stale_market_data({"stale_quotes": ["NAB.AX"]}) == {"NAB.AX": "served stale"}
    assert stale_market_data({"stale_quotes": []}) == {} and stale_market_data({}) == {}


def due(local: datetime):
    return summaries_due(
        local, time(16, 30), True, asx_calendar.is_trading_day, asx_calendar.next_trading_day
    )


def test_the_daily_summary_is_due_after_its_time_on_trading_days_only():
    assert due(datetime(2026, 11, 30, 16, 29, tzinfo=SYDNEY)) == []
    (daily,) = due(datetime(2026, 11, 30, 16, 30, tzinfo=SYDNEY))
    assert (daily.kind, daily.subject, daily.first_day) == ("daily_summary", "2026-11-30", date(2026, 11, 30))
    assert due(datetime(2026, 11, 29, 17, 0, tzinfo=SYDNEY)) == []  # a Sunday


def test_the_weekly_summary_follows_the_last_trading_day_of_the_week():
    friday = due(datetime(2026, 12, 4, 17, 0, tzinfo=SYDNEY))
    assert [(s.kind, s.subject, s.first_day) for s in friday] == [
        ("daily_summary", "2026-12-04", date(2026, 12, 4)),
        ("weekly_summary", "2026-W49", date(2026, 11, 30)),
    ]
    # Good Friday 2026 is 3 April: the week's last trading day is Thursday
    thursday = due(datetime(2026, 4, 2, 17, 0, tzinfo=SYDNEY))
    assert [s.kind for s in thursday] == ["daily_summary", "weekly_summary"]


def test_summary_text():
    figures = SummaryFigures(
        "day", date(2026, 11, 30), date(2026, 11, 30), 100512.5, -230.0, 3,
        {"BUY": 2, "HOLD": 5}, {"task_failed": 1}, ("signals (prediction is unavailable)",),
    )  # fmt: skip
    title, text = summary_text(figures)
    assert title == "Daily summary 2026-11-30"
    assert text.splitlines() == [
        "equity $100,512.50",
        "day P&L -$230.00",
        "trades 3",
        "signals BUY 2, SELL 0, HOLD 5 (7 predictions)",
        "failures task_failed 1",
        "not available: signals (prediction is unavailable)",
    ]


def test_a_capped_signal_count_says_so():
    figures = SummaryFigures(
        "day", date(2026, 11, 30), date(2026, 11, 30), 1.0, 0.0, 0, {"HOLD": 1000}, {}, signals_capped_at=1000
    )
    assert summary_text(figures)[1].splitlines()[3] == (
        "signals BUY 0, SELL 0, HOLD 1000 (1000 predictions; counted in the latest 1000 only)"
    )


def test_signals_are_counted_per_sydney_day_and_a_full_list_is_flagged():
    rows = [
        {"created_at": "2026-11-30T05:00:00+00:00", "signal": "BUY"},  # 16:00 Sydney, the 30th
        {"created_at": "2026-11-30T13:30:00+00:00", "signal": "SELL"},  # 00:30 on 1 December
        {"created_at": "2026-11-29T23:30:00+00:00", "signal": "HOLD"},  # 10:30 on the 30th
        {"created_at": "garbage", "signal": "BUY"},
    ]
    day = date(2026, 11, 30)
    assert count_signals(rows, day, day, SYDNEY, 1000) == ({"BUY": 1, "HOLD": 1}, None)
    # The list is full and its oldest row is inside the day: more may have been made.
    assert count_signals(rows[:3], day, day, SYDNEY, 3) == ({"BUY": 1, "HOLD": 1}, 3)
    assert count_signals(rows[:3], date(2026, 12, 1), date(2026, 12, 1), SYDNEY, 3) == ({"SELL": 1}, None)
