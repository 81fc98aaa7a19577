"""The dashboard's panel of alerts sent to people, from a recorded list_alerts reply."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from services.management.dashboard_view import Unavailable, build_view, render_text
from tests.unit._dashboard_replies import incidents
from tests.unit.test_dashboard_view import all_healthy, assert_fits, snapshot_of

NOW = datetime(2026, 11, 24, 16, 1, tzinfo=ZoneInfo("Australia/Sydney"))


def test_incidents_show_with_each_deliverys_state():
    view = build_view(snapshot_of(all_healthy(), incidents=incidents()), NOW)
    first, second = view.incidents
    assert (first.at, first.severity, first.state, first.count) == ("16:00", "warning", "open", 2)
    assert first.deliveries == "webhook sent, email held (quiet_hours)" and first.level == "warn"
    assert (second.state, second.level, second.deliveries) == ("resolved", "ok", "webhook sent, webhook sent")
    text = render_text(view, 100)
    assert "SENT ALERTS 2 recent" in text
    assert "16:00 Task evening_analysis failed x2 [open] → webhook sent, email held (quiet_hours)" in text
    for width in (40, 80, 120):
        assert_fits(render_text(view, width), width)


def test_the_alerts_process_down_says_why_and_no_channel_says_so():
    view = build_view(
        snapshot_of(all_healthy(), incidents=Unavailable("alerts is unavailable: refused")), NOW
    )
    assert "SENT ALERTS unknown (alerts is unavailable: refused)" in render_text(view)
    replies = all_healthy()
    replies["health"]["alerts"]["note"] = (
        "no alert channel is configured: alerts are recorded but reach nobody"
    )
    view = build_view(snapshot_of(replies, incidents={"alerts": [], "count": 0, "open": 0}), NOW)
    assert "SENT ALERTS none\n  no alert channel is configured" in render_text(view)


def test_garbage_incidents_never_break_the_frame():
    for garbage in (
        {"alerts": [1, None, {"deliveries": "x", "last_at": "nonsense", "title": "\x1b[31m"}]},
        "x",
        5,
    ):
        text = render_text(build_view(snapshot_of(all_healthy(), incidents=garbage), NOW))
        assert "\x1b" not in text
        assert_fits(text)
