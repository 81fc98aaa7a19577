"""Schedule math for the scheduler: pure functions, `now` is always an argument.

A schedule is a rule for wall times in Sydney (a daily time, every N minutes within a
window, or a 5-field cron expression) plus a day filter (ASX trading days or every day).
Each run belongs to a *slot*: the local date and wall time it was scheduled for. The slot
key is what makes runs idempotent across restarts ("this slot already ran").

Daylight saving: a wall time that does not exist (02:00-03:00 on the first Sunday of
October) runs at the same wall-clock distance after the jump (02:30 -> 03:30 AEDT), so a
daily 02:00 backup is not silently skipped; a wall time that happens twice (02:00-03:00
on the first Sunday of April) runs once, at its first occurrence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from services.domain import asx_calendar

SYDNEY = asx_calendar.SYDNEY

# A leap-day cron ("0 0 29 2 *") can be 8 years away (2096 -> 2104); beyond that a rule
# never matches (e.g. "0 0 31 2 *").
_MAX_SEARCH_DAYS = 366 * 8 + 2


class Days(StrEnum):
    TRADING = "trading"
    ALL = "all"


# ---------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class DailyAt:
    at: time


@dataclass(frozen=True, slots=True)
class Interval:
    """Every `every_minutes` from `start` while before `end` (None: the session close)."""

    every_minutes: int
    start: time
    end: time | None


@dataclass(frozen=True, slots=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday, as in cron
    dom_restricted: bool
    dow_restricted: bool

    def matches_day(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        dom_ok = d.day in self.days_of_month
        dow_ok = (d.isoweekday() % 7) in self.days_of_week
        # Vixie cron: when both day fields are restricted, a day matching either runs.
        if self.dom_restricted and self.dow_restricted:
            return dom_ok or dow_ok
        return dom_ok and dow_ok


Rule = DailyAt | Interval | Cron


@dataclass(frozen=True, slots=True)
class Schedule:
    rule: Rule
    days: Days

    def to_dict(self) -> dict:
        rule = self.rule
        if isinstance(rule, DailyAt):
            body: dict[str, Any] = {"type": "daily", "at": rule.at.strftime("%H:%M")}
        elif isinstance(rule, Interval):
            end = rule.end.strftime("%H:%M") if rule.end else "close"
            body = {
                "type": "interval",
                "every_minutes": rule.every_minutes,
                "start": rule.start.strftime("%H:%M"),
                "end": end,
            }
        else:
            body = {"type": "cron", "cron": rule.text}
        return body | {"days": str(self.days)}


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    """One scheduled occurrence: the instant it is due and its stable identity."""

    at: datetime
    key: str


# ---------------------------------------------------------------- parsing


class ScheduleError(ValueError):
    """An invalid schedule or task field; `field` names it for the caller."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_wall_time(value: object, field: str) -> time:
    if not isinstance(value, str) or not (m := _HHMM.match(value)):
        raise ScheduleError(field, "must be a 24-hour 'HH:MM' string")
    return time(int(m[1]), int(m[2]))


def parse_schedule(raw: object) -> Schedule:
    """Validate a wire schedule dict into a Schedule. Raises ScheduleError."""
    if not isinstance(raw, Mapping):
        raise ScheduleError("schedule", "must be an object")
    days_raw = raw.get("days", "trading")
    if days_raw not in {d.value for d in Days}:
        raise ScheduleError("schedule.days", "must be 'trading' or 'all'")
    kind = raw.get("type")
    parsers: dict[str, Callable[[Mapping], Rule]] = {
        "daily": _parse_daily,
        "interval": _parse_interval,
        "cron": _parse_cron_rule,
    }
    if kind not in parsers:
        raise ScheduleError("schedule.type", "must be 'daily', 'interval' or 'cron'")
    unknown = sorted(set(raw) - _SCHEDULE_FIELDS[kind])
    if unknown:  # e.g. every_s for every_minutes: say so rather than "every_minutes missing"
        allowed = ", ".join(sorted(_SCHEDULE_FIELDS[kind]))
        raise ScheduleError(
            f"schedule.{unknown[0]}", f"unknown field for a {kind} schedule (allowed: {allowed})"
        )
    return Schedule(rule=parsers[kind](raw), days=Days(days_raw))


_SCHEDULE_FIELDS = {
    "daily": {"type", "days", "at"},
    "interval": {"type", "days", "every_minutes", "start", "end"},
    "cron": {"type", "days", "cron"},
}


def _parse_daily(raw: Mapping) -> DailyAt:
    return DailyAt(parse_wall_time(raw.get("at"), "schedule.at"))


def _parse_interval(raw: Mapping) -> Interval:
    every = raw.get("every_minutes")
    if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= 1440:
        raise ScheduleError("schedule.every_minutes", "must be an integer 1..1440")
    start = parse_wall_time(raw.get("start", "00:00"), "schedule.start")
    end_raw = raw.get("end", "close")
    end = None if end_raw == "close" else parse_wall_time(end_raw, "schedule.end")
    if end is not None and end <= start:
        raise ScheduleError("schedule.end", "must be after start (windows do not cross midnight)")
    return Interval(every, start, end)


def _parse_cron_rule(raw: Mapping) -> Cron:
    text = raw.get("cron")
    if not isinstance(text, str):
        raise ScheduleError("schedule.cron", "must be a 5-field cron string")
    return parse_cron(text)


_MONTH_NAMES = {n: i for i, n in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_DOW_NAMES = {n: i for i, n in enumerate("sun mon tue wed thu fri sat".split())}
# (name, low, high, names) per field, in cron order.
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day_of_month", 1, 31, {}),
    ("month", 1, 12, _MONTH_NAMES),
    ("day_of_week", 0, 7, _DOW_NAMES),
)


def parse_cron(text: str) -> Cron:
    """Parse 'minute hour day-of-month month day-of-week' (lists, ranges, steps, names)."""
    parts = text.split()
    if len(parts) != 5:
        raise ScheduleError("schedule.cron", f"needs 5 fields, got {len(parts)}")
    sets = [
        _parse_cron_field(part, name, lo, hi, names)
        for part, (name, lo, hi, names) in zip(parts, _CRON_FIELDS, strict=True)
    ]
    dow = frozenset(d % 7 for d in sets[4])  # 7 is another name for Sunday
    return Cron(
        text=" ".join(parts),
        minutes=sets[0],
        hours=sets[1],
        days_of_month=sets[2],
        months=sets[3],
        days_of_week=dow,
        dom_restricted=not parts[2].startswith("*"),
        dow_restricted=not parts[4].startswith("*"),
    )


def _parse_cron_field(part: str, name: str, lo: int, hi: int, names: dict) -> frozenset[int]:
    values: set[int] = set()
    for item in part.lower().split(","):
        values.update(_parse_cron_item(item, f"schedule.cron.{name}", lo, hi, names))
    return frozenset(values)


def _parse_cron_item(item: str, field: str, lo: int, hi: int, names: dict) -> range:
    base, _, step_text = item.partition("/")
    step = _cron_number(step_text, field, names={}) if step_text else 1
    if step < 1:
        raise ScheduleError(field, "step must be at least 1")
    if base == "*":
        first, last = lo, hi
    elif "-" in base:
        first_text, last_text = base.split("-", 1)
        first, last = _cron_number(first_text, field, names), _cron_number(last_text, field, names)
    else:
        first = _cron_number(base, field, names)
        # "5/15" means 5, 20, 35, ... up to the field's maximum, as in Vixie cron.
        last = hi if step_text else first
    if not (lo <= first <= hi and lo <= last <= hi) or first > last:
        raise ScheduleError(field, f"'{item}' is outside {lo}..{hi}")
    return range(first, last + 1, step)


def _cron_number(text: str, field: str, names: dict) -> int:
    if text in names:
        return names[text]
    if not text.isdigit():
        raise ScheduleError(field, f"'{text}' is not a number")
    return int(text)


# ---------------------------------------------------------------- slots


def slot_key(d: date, wall: time) -> str:
    """Stable identity of the occurrence scheduled for wall time `wall` on local date `d`."""
    return f"{d.isoformat()}T{wall.strftime('%H:%M')}"


def _instant(d: date, wall: time) -> datetime:
    # fold=0 in a DST gap uses the offset from before the jump; converting normalises it
    # to the real instant after the jump (02:30 -> 03:30 AEDT). The round trip goes via UTC
    # because astimezone() to the same tzinfo object returns the value unchanged.
    return datetime.combine(d, wall, tzinfo=SYDNEY).astimezone(UTC).astimezone(SYDNEY)


def _day_applies(schedule: Schedule, d: date) -> bool:
    return schedule.days is Days.ALL or asx_calendar.is_trading_day(d)


def _wall_times(rule: Rule, d: date) -> list[time]:
    if isinstance(rule, DailyAt):
        return [rule.at]
    if isinstance(rule, Interval):
        return _interval_times(rule, d)
    if not rule.matches_day(d):
        return []
    return [time(h, m) for h in sorted(rule.hours) for m in sorted(rule.minutes)]


def _interval_times(rule: Interval, d: date) -> list[time]:
    if rule.end is not None:
        end_minute = rule.end.hour * 60 + rule.end.minute
    elif asx_calendar.is_trading_day(d):
        close = asx_calendar.session_close(d)
        end_minute = close.hour * 60 + close.minute
    else:
        return []  # "until the close" on a day without a session: nothing
    start_minute = rule.start.hour * 60 + rule.start.minute
    # The end is exclusive: "every 15 min while open" must not fire at the 16:00 close.
    return [time(m // 60, m % 60) for m in range(start_minute, end_minute, rule.every_minutes)]


def day_slots(schedule: Schedule, d: date) -> list[Slot]:
    """All slots on local date `d`, in time order."""
    if not _day_applies(schedule, d):
        return []
    slots: dict[datetime, Slot] = {}
    for wall in _wall_times(schedule.rule, d):
        instant = _instant(d, wall)
        # In the DST gap 02:MM and 03:MM are the same instant: one run, the first key.
        slots.setdefault(instant, Slot(instant, slot_key(d, wall)))
    return sorted(slots.values())


def next_slot(schedule: Schedule, after: datetime) -> Slot | None:
    """The first slot strictly after `after`, or None when the rule never matches."""
    start = asx_calendar.to_sydney(after).date()
    for offset in range(_MAX_SEARCH_DAYS):
        for slot in day_slots(schedule, start + timedelta(days=offset)):
            if slot.at > after:
                return slot
    return None


def previous_slot(schedule: Schedule, at_or_before: datetime) -> Slot | None:
    """The latest slot due at or before `at_or_before`, or None."""
    start = asx_calendar.to_sydney(at_or_before).date()
    for offset in range(_MAX_SEARCH_DAYS):
        due = [s for s in day_slots(schedule, start - timedelta(days=offset)) if s.at <= at_or_before]
        if due:
            return due[-1]
    return None


def owed_slot(
    schedule: Schedule,
    now: datetime,
    not_before: datetime,
    last_slot_key: str | None,
    grace_s: float | None,
) -> Slot | None:
    """The one missed slot still worth running at `now`, if any.

    Only the latest missed slot is considered (a scheduler that was down for three
    monitoring slots runs at most one catch-up, never a backlog). It is owed when it is
    not the slot that last ran, is not older than `not_before` (task creation or last run),
    and is at most `grace_s` late; `grace_s=None` means the task never catches up.
    """
    if grace_s is None:
        return None
    slot = previous_slot(schedule, now)
    if slot is None or slot.key == last_slot_key or slot.at < not_before:
        return None
    if (now - slot.at).total_seconds() > grace_s:
        return None
    return slot


# ---------------------------------------------------------------- retries


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts include the first one: max_attempts=1 means no retry."""

    max_attempts: int = 3
    base_delay_s: float = 5.0
    max_delay_s: float = 300.0
    jitter: float = 0.5  # fraction of the delay that is randomised away (0 = none, 1 = full)

    def to_dict(self) -> dict:
        return {
            "max_attempts": self.max_attempts,
            "base_delay_s": self.base_delay_s,
            "max_delay_s": self.max_delay_s,
            "jitter": self.jitter,
        }


def retry_delay_s(policy: RetryPolicy, failed_attempt: int, rand: float) -> float | None:
    """Seconds to wait after attempt number `failed_attempt` (1-based) failed, or None when
    the attempts are used up. `rand` is a uniform number in [0, 1) supplied by the caller
    (so this stays pure): the delay is exponential, capped, then reduced by up to `jitter`
    of itself so that tasks failing together do not retry in lockstep.
    """
    if failed_attempt >= policy.max_attempts:
        return None
    exponent = min(failed_attempt - 1, 62)  # bound the power so huge attempt numbers stay finite
    capped = min(policy.max_delay_s, policy.base_delay_s * 2.0**exponent)
    return capped * (1.0 - policy.jitter * rand)


def parse_retry_policy(raw: object) -> RetryPolicy:
    if raw is None:
        return RetryPolicy()
    if not isinstance(raw, Mapping):
        raise ScheduleError("retry", "must be an object")
    default = RetryPolicy()
    attempts = raw.get("max_attempts", default.max_attempts)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 10:
        raise ScheduleError("retry.max_attempts", "must be an integer 1..10")
    base = _bounded_number(raw, "base_delay_s", default.base_delay_s, 0.0, 3600.0)
    cap = _bounded_number(raw, "max_delay_s", default.max_delay_s, base, 86400.0)
    jitter = _bounded_number(raw, "jitter", default.jitter, 0.0, 1.0)
    return RetryPolicy(attempts, base, cap, jitter)


def _bounded_number(raw: Mapping, key: str, default: float, lo: float, hi: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ScheduleError(f"retry.{key}", f"must be a number {lo}..{hi}")
    return float(value)


# ---------------------------------------------------------------- dependencies


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    SKIPPED = "skipped"  # its slot came while the previous run was still going, or not configured


class DependencyDecision(StrEnum):
    RUN = "run"
    WAIT = "wait"
    BLOCKED = "blocked"


def dependency_decision(
    today_status: Mapping[str, RunStatus | str | None],
) -> tuple[DependencyDecision, str | None]:
    """Whether a task may run, given each dependency's latest run status today (None: not
    run today). A failed or blocked dependency blocks (its output would be bad data, and
    blocking propagates down a chain); a running one means wait; otherwise run. Returns
    the decision and, unless RUN, which dependency caused it.
    """
    for name, status in sorted(today_status.items()):
        if status in (RunStatus.FAILED, RunStatus.BLOCKED):
            return DependencyDecision.BLOCKED, name
    for name, status in sorted(today_status.items()):
        if status == RunStatus.RUNNING:
            return DependencyDecision.WAIT, name
    return DependencyDecision.RUN, None


# ---------------------------------------------------------------- task configs

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TASK_KEYS = {
    "name", "service", "method", "params", "calls", "schedule", "depends_on",
    "timeout_s", "retry", "catch_up_grace_s", "enabled",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Call:
    """One RPC a task makes: `service`.`method`(**params)."""

    service: str
    method: str
    params: Mapping[str, object]

    def to_dict(self) -> dict:
        return {"service": self.service, "method": self.method, "params": dict(self.params)}


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    calls: tuple[Call, ...]
    schedule: Schedule | None  # None: runs only when executed by hand
    depends_on: tuple[str, ...] = ()
    timeout_s: float = 300.0
    retry: RetryPolicy = RetryPolicy()
    catch_up_grace_s: float | None = None
    enabled: bool = True

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "calls": [c.to_dict() for c in self.calls],
            "schedule": self.schedule.to_dict() if self.schedule else None,
            "depends_on": list(self.depends_on),
            "timeout_s": self.timeout_s,
            "retry": self.retry.to_dict(),
            "catch_up_grace_s": self.catch_up_grace_s,
            "enabled": self.enabled,
        }


def parse_task_config(raw: object) -> TaskSpec:
    """Validate a task config (the wire form of `schedule_task`). Raises ScheduleError.

    Either `calls: [{service, method, params}]` (run in order; a failing call fails the
    run) or the single-call shorthand `service`, `method`, `params`.
    """
    if not isinstance(raw, Mapping):
        raise ScheduleError("config", "must be an object")
    unknown = set(raw) - _TASK_KEYS
    if unknown:
        raise ScheduleError(sorted(unknown)[0], "unknown field")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ScheduleError("name", "must be 1-64 of letters, digits, '_', '.', '-'")
    schedule = parse_schedule(raw["schedule"]) if raw.get("schedule") is not None else None
    grace = raw.get("catch_up_grace_s")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0):
        raise ScheduleError("catch_up_grace_s", "must be null or a number >= 0")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ScheduleError("enabled", "must be a boolean")
    return TaskSpec(
        name=name,
        calls=_parse_calls(raw),
        schedule=schedule,
        depends_on=_parse_depends_on(raw.get("depends_on", []), name),
        timeout_s=_parse_timeout(raw.get("timeout_s", 300.0)),
        retry=parse_retry_policy(raw.get("retry")),
        catch_up_grace_s=None if grace is None else float(grace),
        enabled=enabled,
    )


def _parse_calls(raw: Mapping) -> tuple[Call, ...]:
    if "calls" in raw:
        if any(k in raw for k in ("service", "method", "params")):
            raise ScheduleError("calls", "give either calls or service/method/params, not both")
        items = raw["calls"]
        if not isinstance(items, list) or not 1 <= len(items) <= 20:
            raise ScheduleError("calls", "must be a list of 1..20 calls")
        return tuple(_parse_call(item, f"calls[{i}]") for i, item in enumerate(items))
    return (_parse_call(raw, ""),)


def _parse_call(raw: object, where: str) -> Call:
    prefix = f"{where}." if where else ""
    if not isinstance(raw, Mapping):
        raise ScheduleError(where or "config", "must be an object")
    if where and (unknown := set(raw) - {"service", "method", "params"}):
        raise ScheduleError(f"{prefix}{sorted(unknown)[0]}", "unknown field")
    service, method = raw.get("service"), raw.get("method")
    if not isinstance(service, str) or not _NAME.match(service):
        raise ScheduleError(f"{prefix}service", "must be a service name")
    if not isinstance(method, str) or not method.isidentifier() or method.startswith("_"):
        raise ScheduleError(f"{prefix}method", "must be a public method name")
    params = raw.get("params", {})
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise ScheduleError(f"{prefix}params", "must be an object of named parameters")
    return Call(service, method, dict(params))


def _parse_depends_on(raw: object, own_name: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(n, str) and _NAME.match(n) for n in raw):
        raise ScheduleError("depends_on", "must be a list of task names")
    if own_name in raw:
        raise ScheduleError("depends_on", "a task cannot depend on itself")
    return tuple(dict.fromkeys(raw))


def _parse_timeout(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= 86400:
        raise ScheduleError("timeout_s", "must be a number of seconds in (0, 86400]")
    return float(raw)


def dependency_cycle(graph: Mapping[str, tuple[str, ...] | list[str]]) -> list[str] | None:
    """A dependency cycle in task name -> depends_on (e.g. ['a', 'b', 'a']), or None.
    Names that are not keys (unknown tasks) are leaves."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished

    def visit(node: str, path: list[str]) -> list[str] | None:
        if state.get(node) == 1:
            return [*path[path.index(node) :], node]
        if state.get(node) == 2 or node not in graph:
            return None
        state[node] = 1
        for dep in graph[node]:
            if found := visit(dep, [*path, node]):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if found := visit(start, []):
            return found
    return None
