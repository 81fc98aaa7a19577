"""Schedule math: next slot, previous slot, catch-up, cron, retries, dependencies, configs.

Every function takes `now` explicitly, so the "fake clock" is just the instants in the tables.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain import schedule as sch
from services.domain.asx_calendar import SYDNEY


def at(text: str) -> datetime:
    """An instant from ISO text; without an offset it is Sydney wall time."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=SYDNEY)


DAILY_0930 = {"type": "daily", "at": "09:30"}
MONITOR = {"type": "interval", "every_minutes": 15, "start": "10:15", "end": "close"}
BACKUP = {"type": "daily", "at": "02:00", "days": "all"}

NEXT_SLOT_CASES = [
    # (schedule, now, expected slot key, expected instant)
    (DAILY_0930, "2025-06-10T09:00", "2025-06-10T09:30", "2025-06-10T09:30:00+10:00"),
    # Exactly at the slot: "strictly after" moves on to the next trading day.
    (DAILY_0930, "2025-06-10T09:30", "2025-06-11T09:30", "2025-06-11T09:30:00+10:00"),
    # Friday after the slot -> Monday (weekend skipped by trading-days-only).
    (DAILY_0930, "2025-06-13T10:00", "2025-06-16T09:30", "2025-06-16T09:30:00+10:00"),
    # Friday before King's Birthday Monday -> Tuesday.
    (DAILY_0930, "2025-06-06T12:00", "2025-06-10T09:30", "2025-06-10T09:30:00+10:00"),
    # Thursday before Easter 2025 -> Tuesday after Easter Monday.
    (DAILY_0930, "2025-04-17T12:00", "2025-04-22T09:30", "2025-04-22T09:30:00+10:00"),
    # Same, every day: Good Friday counts.
    ({**DAILY_0930, "days": "all"}, "2025-04-17T12:00", "2025-04-18T09:30", "2025-04-18T09:30:00+10:00"),
    # Asked in UTC: 22:00Z Monday is 08:00 Tuesday in Sydney.
    (DAILY_0930, "2025-06-09T22:00:00+00:00", "2025-06-10T09:30", "2025-06-10T09:30:00+10:00"),
    # Monitoring: first slot of the day at 10:15.
    (MONITOR, "2025-06-10T09:00", "2025-06-10T10:15", "2025-06-10T10:15:00+10:00"),
    (MONITOR, "2025-06-10T10:15", "2025-06-10T10:30", "2025-06-10T10:30:00+10:00"),
    (MONITOR, "2025-06-10T15:44", "2025-06-10T15:45", "2025-06-10T15:45:00+10:00"),
    # 16:00 is the close, not a slot (end exclusive): next is tomorrow 10:15.
    (MONITOR, "2025-06-10T15:45", "2025-06-11T10:15", "2025-06-11T10:15:00+10:00"),
    # Early close (14:10): last slot 14:00, then after Christmas + Boxing Day + weekend.
    (MONITOR, "2025-12-24T13:50", "2025-12-24T14:00", "2025-12-24T14:00:00+11:00"),
    (MONITOR, "2025-12-24T14:00", "2025-12-29T10:15", "2025-12-29T10:15:00+11:00"),
    # Fixed window end: every 30 min from 07:00 before 09:00.
    (
        {"type": "interval", "every_minutes": 30, "start": "07:00", "end": "09:00", "days": "all"},
        "2025-06-14T08:30",
        "2025-06-15T07:00",
        "2025-06-15T07:00:00+10:00",
    ),
    # Backup every day at 02:00, including weekends.
    (BACKUP, "2025-06-13T03:00", "2025-06-14T02:00", "2025-06-14T02:00:00+10:00"),
    # DST starts 2025-10-05 at 02:00 -> 03:00: 02:00 does not exist; runs at 03:00 AEDT.
    (BACKUP, "2025-10-04T12:00", "2025-10-05T02:00", "2025-10-05T03:00:00+11:00"),
    # DST ends 2026-04-05 at 03:00 -> 02:00: 02:00 happens twice; first one (AEDT) only.
    (BACKUP, "2026-04-04T12:00", "2026-04-05T02:00", "2026-04-05T02:00:00+11:00"),
    (BACKUP, "2026-04-05T02:00:00+11:00", "2026-04-06T02:00", "2026-04-06T02:00:00+10:00"),
    # Cron: weekdays 17:00 (cron's own day filter, every-day calendar).
    (
        {"type": "cron", "cron": "0 17 * * mon-fri", "days": "all"},
        "2025-06-13T17:00",
        "2025-06-16T17:00",
        "2025-06-16T17:00:00+10:00",
    ),
    # Cron on trading days only skips the King's Birthday Monday.
    ({"type": "cron", "cron": "0 17 * * 1-5"}, "2025-06-06T18:00", "2025-06-10T17:00", "2025-06-10T17:00:00+10:00"),
    # Cron with steps inside the hour.
    ({"type": "cron", "cron": "*/20 10-11 * * *", "days": "all"}, "2025-06-10T10:41", "2025-06-10T11:00", "2025-06-10T11:00:00+10:00"),
    # Leap day only.
    ({"type": "cron", "cron": "0 0 29 feb *", "days": "all"}, "2025-03-01T00:00", "2028-02-29T00:00", "2028-02-29T00:00:00+11:00"),
    # dom AND dow restricted: Vixie cron runs on either (the 1st, or any Monday).
    ({"type": "cron", "cron": "0 12 1 * 1", "days": "all"}, "2025-06-02T13:00", "2025-06-09T12:00", "2025-06-09T12:00:00+10:00"),
    ({"type": "cron", "cron": "0 12 1 * 1", "days": "all"}, "2025-06-30T13:00", "2025-07-01T12:00", "2025-07-01T12:00:00+10:00"),
    # "5/15" = 5, 20, 35, 50.
    ({"type": "cron", "cron": "5/15 9 * * *", "days": "all"}, "2025-06-10T09:36", "2025-06-10T09:50", "2025-06-10T09:50:00+10:00"),
    # 7 is Sunday too.
    ({"type": "cron", "cron": "0 9 * * 7", "days": "all"}, "2025-06-10T00:00", "2025-06-15T09:00", "2025-06-15T09:00:00+10:00"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "now", "key", "instant"), NEXT_SLOT_CASES)
def test_next_slot(raw: dict, now: str, key: str, instant: str) -> None:
    slot = sch.next_slot(sch.parse_schedule(raw), at(now))
    assert slot is not None
    assert slot.key == key
    assert slot.at.isoformat() == instant


def test_rule_that_never_matches_has_no_next_slot() -> None:
    never = sch.parse_schedule({"type": "cron", "cron": "0 0 31 2 *", "days": "all"})
    assert sch.next_slot(never, at("2025-01-01T00:00")) is None
    assert sch.previous_slot(never, at("2025-01-01T00:00")) is None


def test_monitoring_slots_on_a_normal_and_an_early_close_day() -> None:
    monitor = sch.parse_schedule(MONITOR)
    normal = [s.key[-5:] for s in sch.day_slots(monitor, date(2025, 6, 10))]
    assert normal[0] == "10:15" and normal[-1] == "15:45" and len(normal) == 23
    early = [s.key[-5:] for s in sch.day_slots(monitor, date(2025, 12, 31))]
    assert early[-1] == "14:00" and len(early) == 16
    assert sch.day_slots(monitor, date(2025, 12, 25)) == []  # holiday: no session


PREVIOUS_SLOT_CASES = [
    (DAILY_0930, "2025-06-10T09:30", "2025-06-10T09:30"),  # at the slot: it is due
    (DAILY_0930, "2025-06-10T09:29", "2025-06-06T09:30"),  # Tuesday morning: Friday (Mon holiday)
    (MONITOR, "2025-06-10T12:07", "2025-06-10T12:00"),
    (MONITOR, "2025-06-10T18:00", "2025-06-10T15:45"),
    (BACKUP, "2025-06-10T01:59", "2025-06-09T02:00"),
]


@pytest.mark.parametrize(("raw", "now", "key"), PREVIOUS_SLOT_CASES)
def test_previous_slot(raw: dict, now: str, key: str) -> None:
    slot = sch.previous_slot(sch.parse_schedule(raw), at(now))
    assert slot is not None and slot.key == key


OWED_CASES = [
    # (schedule, now, not_before, last_slot_key, grace_s, owed key or None)
    # Down over the 02:00 backup, back at 05:00 with a 1-day grace: run it once.
    (BACKUP, "2025-06-10T05:00", "2025-06-01T00:00", "2025-06-09T02:00", 86400, "2025-06-10T02:00"),
    # ...but not if that slot already ran (restart right after the run).
    (BACKUP, "2025-06-10T05:00", "2025-06-01T00:00", "2025-06-10T02:00", 86400, None),
    # Too late: grace of 1 h, 3 h late.
    (BACKUP, "2025-06-10T05:00", "2025-06-01T00:00", "2025-06-09T02:00", 3600, None),
    # Task opted out of catch-up.
    (BACKUP, "2025-06-10T05:00", "2025-06-01T00:00", "2025-06-09T02:00", None, None),
    # Task created after the slot: it was never owed.
    (BACKUP, "2025-06-10T05:00", "2025-06-10T04:00", None, 86400, None),
    # Down over several monitoring slots: only the latest is owed, once.
    (MONITOR, "2025-06-10T11:20", "2025-06-01T00:00", "2025-06-10T10:15", 600, "2025-06-10T11:15"),
    # Same downtime, but the latest slot is older than the grace: nothing.
    (MONITOR, "2025-06-10T11:29", "2025-06-01T00:00", "2025-06-10T10:15", 300, None),
    # Exactly at the grace boundary: still owed (inclusive).
    (MONITOR, "2025-06-10T11:20", "2025-06-01T00:00", "2025-06-10T10:15", 300, "2025-06-10T11:15"),
]


@pytest.mark.parametrize(("raw", "now", "not_before", "last_key", "grace", "owed"), OWED_CASES)
def test_owed_slot(raw, now, not_before, last_key, grace, owed) -> None:
    slot = sch.owed_slot(sch.parse_schedule(raw), at(now), at(not_before), last_key, grace)
    assert (slot.key if slot else None) == owed


INVALID_SCHEDULES = [
    ("not a dict", "schedule"),
    ({"type": "weekly"}, "schedule.type"),
    ({"type": "daily", "at": "9:30"}, "schedule.at"),  # needs two-digit hours
    ({"type": "daily", "at": "24:00"}, "schedule.at"),
    ({"type": "daily", "at": "09:30", "days": "weekdays"}, "schedule.days"),
    ({"type": "interval", "every_minutes": 0}, "schedule.every_minutes"),
    ({"type": "interval", "every_minutes": True}, "schedule.every_minutes"),  # bool is not int
    ({"type": "interval", "every_minutes": 5, "start": "12:00", "end": "11:00"}, "schedule.end"),
    ({"type": "cron", "cron": "* * * *"}, "schedule.cron"),
    ({"type": "cron", "cron": "60 * * * *"}, "schedule.cron.minute"),
    ({"type": "cron", "cron": "* 9-5 * * *"}, "schedule.cron.hour"),  # reversed range
    ({"type": "cron", "cron": "*/0 * * * *"}, "schedule.cron.minute"),
    ({"type": "cron", "cron": "* * 0 * *"}, "schedule.cron.day_of_month"),
    ({"type": "cron", "cron": "* * * foo *"}, "schedule.cron.month"),
    ({"type": "cron", "cron": 5}, "schedule.cron"),
    ({"type": "interval", "every_s": 60}, "schedule.every_s"),  # unknown, not "every_minutes missing"
    ({"type": "daily", "at": "09:30", "every_minutes": 5}, "schedule.every_minutes"),  # another type's
]


@pytest.mark.parametrize(("raw", "field"), INVALID_SCHEDULES)
def test_invalid_schedules_name_the_field(raw, field: str) -> None:
    with pytest.raises(sch.ScheduleError) as info:
        sch.parse_schedule(raw)
    assert info.value.field == field


@pytest.mark.parametrize(
    "raw", [DAILY_0930, MONITOR, BACKUP, {"type": "cron", "cron": "*/5 10-15 * * 1-5", "days": "all"}]
)
def test_schedule_round_trips_through_its_wire_form(raw: dict) -> None:
    parsed = sch.parse_schedule(raw)
    assert sch.parse_schedule(parsed.to_dict()) == parsed


RETRY_CASES = [
    # (policy, failed attempt, rand, expected delay or None)
    (sch.RetryPolicy(3, 5.0, 300.0, 0.0), 1, 0.9, 5.0),  # no jitter: exact
    (sch.RetryPolicy(3, 5.0, 300.0, 0.0), 2, 0.9, 10.0),
    (sch.RetryPolicy(3, 5.0, 300.0, 0.0), 3, 0.0, None),  # attempts used up
    (sch.RetryPolicy(10, 5.0, 30.0, 0.0), 5, 0.0, 30.0),  # 80 capped at 30
    (sch.RetryPolicy(10, 5.0, 30.0, 0.5), 5, 0.5, 22.5),  # capped, then jitter takes 25 %
    (sch.RetryPolicy(3, 4.0, 300.0, 1.0), 2, 0.25, 6.0),  # full jitter: 8 * 0.75
    (sch.RetryPolicy(1, 5.0, 300.0, 0.5), 1, 0.0, None),  # max_attempts=1: never retry
]


@pytest.mark.parametrize(("policy", "attempt", "rand", "expected"), RETRY_CASES)
def test_retry_delay(policy, attempt, rand, expected) -> None:
    assert sch.retry_delay_s(policy, attempt, rand) == expected


@given(
    attempts=st.integers(1, 10),
    base=st.floats(0, 3600),
    cap=st.floats(0, 86400),
    jitter=st.floats(0, 1),
    failed=st.integers(1, 10_000),
    rand=st.floats(0, 1, exclude_max=True),
)
def test_retry_delay_is_bounded(attempts, base, cap, jitter, failed, rand) -> None:
    delay = sch.retry_delay_s(sch.RetryPolicy(attempts, base, cap, jitter), failed, rand)
    if failed >= attempts:
        assert delay is None
    else:
        assert delay is not None and 0 <= delay <= cap


def test_retry_delays_grow_until_the_cap() -> None:
    policy = sch.RetryPolicy(8, 1.0, 20.0, 0.0)
    delays = [sch.retry_delay_s(policy, n, 0.0) for n in range(1, 8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]


DEPENDENCY_CASES = [
    ({}, "run", None),  # no dependencies
    ({"refresh": "succeeded"}, "run", None),
    ({"refresh": None}, "run", None),  # not run today: nothing bad to build on
    ({"refresh": "failed"}, "blocked", "refresh"),
    ({"refresh": "blocked"}, "blocked", "refresh"),  # blocking propagates down a chain
    ({"refresh": "running"}, "wait", "refresh"),
    ({"a": "running", "b": "failed"}, "blocked", "b"),  # a failure wins over waiting
    ({"a": "succeeded", "b": "succeeded"}, "run", None),
]


@pytest.mark.parametrize(("statuses", "decision", "culprit"), DEPENDENCY_CASES)
def test_dependency_decision(statuses, decision, culprit) -> None:
    assert sch.dependency_decision(statuses) == (decision, culprit)


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": ["b"], "b": []}, None),
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
        ({"a": ["missing"]}, None),  # unknown names are leaves, not cycles
        ({"a": ["b", "c"], "b": ["c"], "c": []}, None),  # diamond, no cycle
    ],
)
def test_dependency_cycle(graph, cycle) -> None:
    assert sch.dependency_cycle(graph) == cycle


VALID_TASK = {
    "name": "morning_analysis",
    "service": "prediction",
    "method": "generate_predictions",
    "params": {"symbols": ["CBA.AX"]},
    "schedule": DAILY_0930,
}


def test_task_config_defaults_and_round_trip() -> None:
    spec = sch.parse_task_config(VALID_TASK)
    assert spec.calls == (sch.Call("prediction", "generate_predictions", {"symbols": ["CBA.AX"]}),)
    assert spec.timeout_s == 300.0 and spec.retry == sch.RetryPolicy() and spec.enabled
    assert spec.catch_up_grace_s is None
    assert sch.parse_task_config(spec.to_dict()) == spec


def test_task_config_with_several_calls_and_no_schedule() -> None:
    spec = sch.parse_task_config(
        {
            "name": "monitor",
            "calls": [
                {"service": "market-data", "method": "refresh_all_data"},
                {"service": "prediction", "method": "generate_predictions", "params": {}},
            ],
        }
    )
    assert [c.service for c in spec.calls] == ["market-data", "prediction"]
    assert spec.schedule is None


INVALID_TASKS = [
    ({**VALID_TASK, "name": ""}, "name"),
    ({**VALID_TASK, "name": "has space"}, "name"),
    ({**VALID_TASK, "surprise": 1}, "surprise"),
    ({**VALID_TASK, "method": "_private"}, "method"),
    ({**VALID_TASK, "service": None}, "service"),
    ({**VALID_TASK, "params": ["positional"]}, "params"),
    ({**VALID_TASK, "timeout_s": 0}, "timeout_s"),
    ({**VALID_TASK, "timeout_s": "30"}, "timeout_s"),
    ({**VALID_TASK, "depends_on": "refresh"}, "depends_on"),  # must be a list
    ({**VALID_TASK, "depends_on": ["morning_analysis"]}, "depends_on"),  # itself
    ({**VALID_TASK, "retry": {"max_attempts": 0}}, "retry.max_attempts"),
    ({**VALID_TASK, "retry": {"jitter": 1.5}}, "retry.jitter"),
    ({**VALID_TASK, "retry": {"base_delay_s": 10, "max_delay_s": 5}}, "retry.max_delay_s"),
    ({**VALID_TASK, "catch_up_grace_s": -1}, "catch_up_grace_s"),
    ({**VALID_TASK, "enabled": "yes"}, "enabled"),
    ({**VALID_TASK, "schedule": {"type": "daily"}}, "schedule.at"),
    ({**VALID_TASK, "calls": []}, "calls"),  # both forms given
    ({"name": "x", "calls": [{"service": "a", "method": "b", "params": 3}]}, "calls[0].params"),
    ({"name": "x", "calls": []}, "calls"),
    ({"name": "x", "calls": [{"service": "a", "method": "b", "param": {}}]}, "calls[0].param"),  # typo
    ([], "config"),
]


@pytest.mark.parametrize(("raw", "field"), INVALID_TASKS)
def test_invalid_task_configs_name_the_field(raw, field: str) -> None:
    with pytest.raises(sch.ScheduleError) as info:
        sch.parse_task_config(raw)
    assert info.value.field == field


# ---------------------------------------------------------------- invariants

SCHEDULES = st.sampled_from(
    [
        DAILY_0930,
        MONITOR,
        BACKUP,
        {"type": "cron", "cron": "*/7 1-3 * * *", "days": "all"},  # crosses the DST hours
        {"type": "cron", "cron": "30 2 * * sun", "days": "all"},
    ]
)
INSTANTS = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1)).map(
    lambda naive: naive.replace(tzinfo=UTC)
)


@given(raw=SCHEDULES, now=INSTANTS)
def test_next_slot_is_after_now_and_previous_is_not(raw: dict, now: datetime) -> None:
    schedule = sch.parse_schedule(raw)
    following, preceding = sch.next_slot(schedule, now), sch.previous_slot(schedule, now)
    assert following is not None and following.at > now
    assert preceding is not None and preceding.at <= now
    # No slot lies strictly between the previous and the next one around `now`.
    assert sch.next_slot(schedule, preceding.at) == following or following.at == preceding.at


@given(raw=SCHEDULES, now=INSTANTS)
def test_walking_slots_never_repeats_a_key(raw: dict, now: datetime) -> None:
    schedule, seen, cursor = sch.parse_schedule(raw), set(), now
    for _ in range(20):
        slot = sch.next_slot(schedule, cursor)
        assert slot is not None and slot.key not in seen and slot.at > cursor
        seen.add(slot.key)
        cursor = slot.at


def test_slot_key_is_sydney_wall_time() -> None:
    assert sch.slot_key(date(2025, 6, 10), time(9, 30)) == "2025-06-10T09:30"
    slot = sch.next_slot(sch.parse_schedule(DAILY_0930), datetime(2025, 6, 9, 22, 0, tzinfo=UTC))
    assert slot is not None and slot.at - datetime(2025, 6, 9, 23, 30, tzinfo=UTC) == timedelta(0)


def _field(values: set[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


@given(
    minutes=st.sets(st.integers(0, 59), min_size=1, max_size=4),
    hours=st.sets(st.integers(0, 23), min_size=1, max_size=3),
    days_of_month=st.none() | st.sets(st.integers(1, 28), min_size=1, max_size=3),
    days_of_week=st.none() | st.sets(st.integers(0, 6), min_size=1, max_size=3),
    start=st.datetimes(min_value=datetime(2025, 5, 1), max_value=datetime(2025, 8, 1)),
)
def test_cron_next_slot_matches_a_minute_by_minute_scan(
    minutes, hours, days_of_month, days_of_week, start
) -> None:
    # May-September has no DST change in Sydney, so wall minutes and instants map one to one.
    dom_text = "*" if days_of_month is None else _field(days_of_month)
    dow_text = "*" if days_of_week is None else _field(days_of_week)
    text = f"{_field(minutes)} {_field(hours)} {dom_text} * {dow_text}"
    schedule = sch.parse_schedule({"type": "cron", "cron": text, "days": "all"})

    def day_matches(d: date) -> bool:  # Vixie cron's rule, written out independently
        dom_ok = days_of_month is None or d.day in days_of_month
        dow_ok = days_of_week is None or (d.isoweekday() % 7) in days_of_week
        if days_of_month is not None and days_of_week is not None:
            return dom_ok or dow_ok
        return dom_ok and dow_ok

    now = start.replace(tzinfo=SYDNEY)
    wall = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while not (wall.minute in minutes and wall.hour in hours and day_matches(wall.date())):
        wall += timedelta(minutes=1)
    slot = sch.next_slot(schedule, now)
    assert slot is not None and slot.at == wall.replace(tzinfo=SYDNEY)
