"""The incident rules with a moved clock: open once, repeats grouped, resolved, storms folded,
quiet hours, rate limits, routing."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.domain.alert_incidents import (
    IncidentBook,
    Occurrence,
    QuietHours,
    RoutingPolicy,
    digest,
    parse_min_severity,
    parse_quiet_hours,
    parse_routes,
    plan_delivery,
    route,
)

SYDNEY = ZoneInfo("Australia/Sydney")
T0 = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)  # 11:00 in Sydney (AEDT)
WINDOW_S = 300


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fatal(service: str = "paper-trading", resolve: bool = False) -> Occurrence:
    text = "running again" if resolve else "5 failures"
    return Occurrence("service_fatal", service, f"{service} is fatal", text, resolve=resolve)


def test_an_incident_opens_once_and_repeats_are_grouped_into_one_message_per_window():
    book = IncidentBook(WINDOW_S)
    notices, _ = book.observe(Occurrence("task_failed", "market_monitoring", "task failed"), at(0))
    assert [n.state for n in notices] == ["open"]
    for s in (10, 20, 30):  # three repeats inside the window: nothing sent
        assert book.observe(Occurrence("task_failed", "market_monitoring", "task failed"), at(s))[0] == []
    assert book.tick(at(299))[0] == []
    (repeat,), _ = book.tick(at(300))
    assert repeat.state == "repeat" and repeat.title == "task failed: 3 times more in 5 min (4 in all)"
    assert repeat.incident.count == 4
    assert book.tick(at(301))[0] == []  # told once: nothing more


def test_the_grouped_title_counts_the_new_and_all():
    book = IncidentBook(WINDOW_S)
    book.observe(Occurrence("task_failed", "t", "task t failed"), at(0))
    book.observe(Occurrence("task_failed", "t", "task t failed"), at(5))
    book.observe(Occurrence("task_failed", "t", "task t failed"), at(6))
    (repeat,), _ = book.tick(at(300))
    assert repeat.title == "task t failed: 2 times more in 5 min (3 in all)"


def test_a_resolvable_incident_ends_with_one_resolved_message():
    book = IncidentBook(WINDOW_S)
    book.observe(fatal(), at(0))
    book.observe(fatal(), at(60))
    (resolved,), changed = book.observe(fatal(resolve=True), at(600))
    assert resolved.state == "resolved" and resolved.title == "RESOLVED: paper-trading is fatal"
    assert resolved.text == "after 10 min, 2 times in all; running again"
    assert changed[0].state == "resolved" and not book.open
    assert book.observe(fatal(resolve=True), at(700)) == ([], [])  # nothing open: nothing to say
    (again,), _ = book.observe(fatal(), at(800))  # a new incident
    assert again.state == "open" and again.incident is not resolved.incident


def test_a_crash_loop_yields_one_message():
    """Five restarts and then fatal: the restarts wait a window (deferred), fatal folds them in."""
    book = IncidentBook(WINDOW_S)
    sent = []
    for s in range(5):
        sent += book.observe(Occurrence("service_restarting", "prediction", "prediction restarting"), at(s))[
            0
        ]
    sent += book.observe(fatal("prediction"), at(6))[0]
    for s in range(0, 3600, 30):
        sent += book.tick(at(s))[0]
    assert [(n.incident.kind, n.state) for n in sent] == [("service_fatal", "open")]


def test_restarts_without_fatal_are_told_once_with_their_count_then_ended():
    book = IncidentBook(WINDOW_S)
    sent = []
    for s in (0, 40, 80):
        sent += book.observe(Occurrence("service_restarting", "sentiment", "sentiment restarting"), at(s))[0]
    assert sent == []
    for s in range(0, 1200, 10):
        sent += book.tick(at(s))[0]
    assert [n.state for n in sent] == ["open", "resolved"]
    assert sent[0].title == "sentiment restarting (3 times in 5 min)"
    assert sent[0].incident.state == "ended"


def test_a_single_restart_that_stays_up_is_one_message():
    book = IncidentBook(WINDOW_S)
    assert (
        book.observe(Occurrence("service_restarting", "ml-model", "ml-model restarting", "code 1"), at(0))[0]
        == []
    )
    sent = []
    for s in range(0, 900, 10):
        sent += book.tick(at(s))[0]
    assert [(n.state, n.title) for n in sent] == [("resolved", "ml-model restarting: once, stable again")]
    assert not book.open


def test_one_shot_incidents_never_group():
    book = IncidentBook(WINDOW_S)
    a = book.observe(Occurrence("daily_summary", "2026-11-30", "Daily summary"), at(0))[0]
    b = book.observe(Occurrence("daily_summary", "2026-11-30", "Daily summary"), at(1))[0]
    assert [n.state for n in a + b] == ["summary", "summary"] and not book.open


def test_reloaded_open_incidents_keep_grouping_after_a_restart():
    first = IncidentBook(WINDOW_S)
    first.observe(fatal(), at(0))
    second = IncidentBook(WINDOW_S, first.open.values())
    assert second.observe(fatal(), at(10))[0] == []  # still the same incident
    assert [n.state for n in second.observe(fatal(resolve=True), at(20))[0]] == ["resolved"]


# ---- routing -----------------------------------------------------------------------------------


def test_routes_and_minimum_severity():
    policy = RoutingPolicy(
        routes=parse_routes("daily_summary=email,service_fatal=telegram+email"),
        min_severity=parse_min_severity("telegram=critical,ntfy=warning"),
    )
    channels = ["webhook", "telegram", "ntfy", "email"]
    assert route("daily_summary", "info", channels, policy) == ["email"]
    assert route("service_fatal", "critical", channels, policy) == ["telegram", "email"]
    # not routed: every channel whose minimum it meets
    assert route("task_failed", "warning", channels, policy) == ["webhook", "ntfy", "email"]
    assert route("models_expired", "info", channels, policy) == ["webhook", "email"]


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        (parse_routes, "nonsense=email"),  # unknown kind
        (parse_routes, "task_failed="),  # no channel
        (parse_min_severity, "telegram=loud"),
        (parse_quiet_hours, "22:00"),
        (parse_quiet_hours, "25:00-07:00"),
        (parse_quiet_hours, "07:00-07:00"),
    ],
)
def test_bad_settings_are_refused(parser, text):
    with pytest.raises(ValueError):
        parser(text)


# ---- quiet hours and rate limits ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "quiet"),
    [
        (time(23, 0), True),
        (time(3, 0), True),  # past midnight: still quiet
        (time(7, 0), False),  # the end is not quiet
        (time(21, 59), False),
    ],
)
def test_quiet_hours_across_midnight(local, quiet):
    hours = QuietHours(time(22, 0), time(7, 0))
    assert hours.contains(datetime(2026, 11, 30, local.hour, local.minute, tzinfo=SYDNEY)) is quiet


def test_quiet_hours_hold_non_critical_until_their_end_in_local_time():
    quiet = parse_quiet_hours("22:00-07:00")
    night = datetime(2026, 11, 30, 23, 30, tzinfo=SYDNEY).astimezone(UTC)
    held = plan_delivery("warning", night, SYDNEY, quiet, [], 10, 3600)
    assert not held.send_now and held.hold_reason == "quiet_hours"
    assert held.until == datetime(2026, 12, 1, 7, 0, tzinfo=SYDNEY)
    assert plan_delivery("critical", night, SYDNEY, quiet, [], 10, 3600).send_now  # never held
    morning = datetime(2026, 12, 1, 7, 0, tzinfo=SYDNEY)
    assert plan_delivery("warning", morning, SYDNEY, quiet, [], 10, 3600).send_now
    assert plan_delivery("warning", night, SYDNEY, None, [], 10, 3600).send_now  # default: none


def test_the_rate_limit_holds_until_the_oldest_send_leaves_the_window():
    sent = [at(0), at(100), at(200)]
    assert plan_delivery("warning", at(300), SYDNEY, None, sent[:2], 3, 3600).send_now
    held = plan_delivery("critical", at(300), SYDNEY, None, sent, 3, 3600)
    assert not held.send_now and held.hold_reason == "rate_limited" and held.until == at(3600)
    assert plan_delivery("warning", at(3601), SYDNEY, None, sent, 3, 3600).send_now


def test_a_digest_lists_what_was_held():
    title, text = digest([("warning", "a", "why a"), ("critical", "b", "")], "quiet_hours")
    assert title == "2 alerts held during quiet hours (the worst: critical)"
    assert text == "- [warning] a\n  why a\n- [critical] b"
