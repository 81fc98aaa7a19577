"""Alerts a person can live with: incidents, grouping, resolution, routing, quiet hours, rate limits.

Pure: no I/O, `now` is always passed in (aware datetimes, the suite clock's), so every rule is
tested with a moved clock. The alerts process (services/alerts/) does the I/O around it: it feeds
occurrences from events and polls, persists incidents and deliveries, and sends.

- An **occurrence** is one sighting of a problem (`kind`, `subject`: e.g. service_fatal of
  paper-trading) or of its end (`resolve=True`).
- The first occurrence opens an **incident** and one message goes out at once (`open`); kinds
  that flap (restarts) wait one group window first and then say how many (`defer_first`).
- Repeats of an open incident are counted, never sent one by one: at most one `repeat` message
  per group window, saying how many more there were.
- A resolvable incident ends with a `resolved` message when its clearing occurrence comes (the
  service runs again, the data is fresh). Kinds with no clearing event end by themselves once a
  group window passes without a repeat (silently, or with a message for those that say so).
- Opening an incident may close others of the same subject silently (`supersedes`): a crash loop's
  restarts fold into the one `service_fatal` message.

Then each message is **routed** to channels (per-kind routes, minimum severity per channel,
silenced kinds), and each delivery is **planned**: sent now, or held until the end of the quiet
hours (non-critical only) or until the channel's rate limit frees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo

SEVERITIES = ("info", "warning", "critical")
RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True, slots=True)
class KindRule:
    severity: str
    #: Cleared by an occurrence with resolve=True; otherwise it ends after a quiet group window.
    resolvable: bool = True
    #: The first message waits one group window and says how many occurrences it saw.
    defer_first: bool = False
    #: When it ends by itself, say so (a restarting service that has stayed up).
    message_on_end: bool = False
    #: Kinds of the same subject that this one closes silently when it opens.
    supersedes: tuple[str, ...] = ()
    #: One message and done (summaries, tests): never grouped, never open.
    one_shot: bool = False


#: Every kind of alert the desk raises, and how it behaves.
KINDS: Mapping[str, KindRule] = {
    "service_fatal": KindRule("critical", supersedes=("service_restarting",)),
    "service_restarting": KindRule("warning", resolvable=False, defer_first=True, message_on_end=True),
    "supervisor_down": KindRule("critical"),
    "redis_down": KindRule("critical"),
    "buy_rate_alert": KindRule("warning", resolvable=False),
    "trading_halted": KindRule("critical"),
    "risk_limit_hit": KindRule("warning", resolvable=False),
    "task_failed": KindRule("warning", resolvable=False),
    "event_dead_lettered": KindRule("warning", resolvable=False),
    "storage_halted": KindRule("critical"),
    "ig_mirror_halted": KindRule("warning"),
    "outbox_backlog": KindRule("warning"),
    "market_data_stale": KindRule("warning"),
    "disk_low": KindRule("critical"),
    "models_expired": KindRule("warning"),
    "daily_summary": KindRule("info", resolvable=False, one_shot=True),
    "weekly_summary": KindRule("info", resolvable=False, one_shot=True),
}


@dataclass(frozen=True, slots=True)
class Occurrence:
    kind: str
    subject: str
    title: str
    text: str = ""
    resolve: bool = False
    severity: str | None = None  # None: the kind's


@dataclass(slots=True)
class Incident:
    kind: str
    subject: str
    severity: str
    title: str
    text: str
    opened_at: datetime
    last_at: datetime
    count: int = 1
    #: The count the last message told about (0: none sent yet).
    notified_count: int = 0
    last_notified_at: datetime | None = None
    state: str = "open"  # open, resolved, ended, superseded, sent (one-shot)
    closed_at: datetime | None = None
    id: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.subject)


@dataclass(frozen=True, slots=True)
class Notice:
    """A message to send about an incident: `state` is open, repeat, resolved or summary."""

    incident: Incident
    state: str
    title: str
    text: str
    severity: str


def rule_of(kind: str) -> KindRule:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown alert kind {kind!r}") from None


def duration_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


class IncidentBook:
    """The open incidents by (kind, subject), and the rules that move them."""

    def __init__(self, group_window_s: float, open_incidents: Iterable[Incident] = ()):
        self.window = timedelta(seconds=group_window_s)
        self.open: dict[tuple[str, str], Incident] = {i.key: i for i in open_incidents}

    def observe(self, occurrence: Occurrence, now: datetime) -> tuple[list[Notice], list[Incident]]:
        """(messages to send, incidents changed) for one occurrence."""
        rule = rule_of(occurrence.kind)
        key = (occurrence.kind, occurrence.subject)
        current = self.open.get(key)
        if occurrence.resolve:
            if current is None or not rule.resolvable:
                return [], []
            return self._close(current, "resolved", now, occurrence.text), [current]
        severity = occurrence.severity or rule.severity
        if rule.one_shot:
            incident = Incident(
                occurrence.kind, occurrence.subject, severity, occurrence.title, occurrence.text, now, now,
                notified_count=1, last_notified_at=now, state="sent", closed_at=now,
            )  # fmt: skip
            return [Notice(incident, "summary", occurrence.title, occurrence.text, severity)], [incident]
        if current is not None:
            current.count += 1
            current.last_at = now
            current.text = occurrence.text or current.text
            if RANK[severity] > RANK[current.severity]:
                current.severity = severity
            return [], [current]
        changed: list[Incident] = []
        for other in rule.supersedes:
            folded = self.open.pop((other, occurrence.subject), None)
            if folded is not None:
                folded.state, folded.closed_at = "superseded", now
                changed.append(folded)
        incident = Incident(
            occurrence.kind, occurrence.subject, severity, occurrence.title, occurrence.text, now, now
        )
        self.open[key] = incident
        changed.append(incident)
        if rule.defer_first:
            return [], changed
        return [self._tell(incident, "open", now)], changed

    def tick(self, now: datetime) -> tuple[list[Notice], list[Incident]]:
        """Grouped messages whose window has passed, and incidents that ended by themselves."""
        notices: list[Notice] = []
        changed: list[Incident] = []
        for incident in list(self.open.values()):
            rule = rule_of(incident.kind)
            before = len(notices)
            ends = not rule.resolvable and now >= incident.last_at + self.window
            if incident.last_notified_at is None and ends and rule.message_on_end:
                # Deferred and already over (a service that restarted and stayed up): one message
                # that says both, not an "open" and a "resolved" at the same moment.
                span = duration_text((incident.last_at - incident.opened_at).total_seconds())
                title = f"{incident.title}: {times(incident.count)}{' in ' + span if incident.count > 1 else ''}, stable again"
                self._tell(incident, "resolved", now)
                notices.append(Notice(incident, "resolved", title, incident.text, incident.severity))
                self._close(incident, "ended", now, "")
                changed.append(incident)
                continue
            if incident.last_notified_at is None:
                if now >= incident.opened_at + self.window:
                    notices.append(self._tell(incident, "open", now))
            elif incident.count > incident.notified_count and now >= incident.last_notified_at + self.window:
                notices.append(self._tell(incident, "repeat", now))
            if ends:
                if rule.message_on_end:
                    notices += self._close(incident, "ended", now, "")
                else:
                    self._close(incident, "ended", now, "")
            if len(notices) > before or incident.state != "open":
                changed.append(incident)
        return notices, changed

    def _tell(self, incident: Incident, state: str, now: datetime) -> Notice:
        new = incident.count - incident.notified_count
        if state == "open" and incident.count > 1:
            title = f"{incident.title} ({times(incident.count)} in {duration_text((now - incident.opened_at).total_seconds())})"
        elif state == "repeat":
            span = duration_text((now - (incident.last_notified_at or incident.opened_at)).total_seconds())
            title = f"{incident.title}: {times(new)} more in {span} ({incident.count} in all)"
        else:
            title = incident.title
        incident.notified_count = incident.count
        incident.last_notified_at = now
        return Notice(incident, state, title, incident.text, incident.severity)

    def _close(self, incident: Incident, state: str, now: datetime, text: str) -> list[Notice]:
        self.open.pop(incident.key, None)
        incident.state, incident.closed_at = state, now
        if incident.last_notified_at is None:
            return []  # nothing was said about it: nothing to take back
        lasted = duration_text((now - incident.opened_at).total_seconds())
        detail = f"after {lasted}, {times(incident.count)} in all" + (f"; {text}" if text else "")
        return [Notice(incident, "resolved", f"RESOLVED: {incident.title}", detail, incident.severity)]


# ---- routing ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    #: kind -> the channels it goes to; a kind not listed goes to every channel.
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: channel -> the least severity it takes; a channel not listed takes everything.
    min_severity: Mapping[str, str] = field(default_factory=dict)


def route(kind: str, severity: str, channels: Sequence[str], policy: RoutingPolicy) -> list[str]:
    """The channels of `channels` a message of this kind and severity goes to."""
    wanted = policy.routes.get(kind)
    return [
        c
        for c in channels
        if (wanted is None or c in wanted) and RANK[severity] >= RANK[policy.min_severity.get(c, "info")]
    ]


def parse_routes(text: str) -> dict[str, tuple[str, ...]]:
    """`kind=chan+chan,kind=chan` -> {kind: (chan, ...)}; ValueError naming the bad part."""
    routes: dict[str, tuple[str, ...]] = {}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        kind, sep, channels = item.partition("=")
        kind = kind.strip()
        if not sep or kind not in KINDS:
            raise ValueError(f"{item!r}: not KIND=CHANNEL+CHANNEL with a known kind ({', '.join(KINDS)})")
        names = tuple(c.strip() for c in channels.split("+") if c.strip())
        if not names:
            raise ValueError(f"{item!r} names no channel")
        routes[kind] = names
    return routes


def parse_min_severity(text: str) -> dict[str, str]:
    """`channel=severity,...` -> {channel: severity}."""
    found: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        channel, sep, severity = item.partition("=")
        if not sep or severity.strip() not in RANK or not channel.strip():
            raise ValueError(f"{item!r}: not CHANNEL=SEVERITY (severity: {', '.join(SEVERITIES)})")
        found[channel.strip()] = severity.strip()
    return found


# ---- quiet hours and rate limits ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local times; `start > end` spans midnight (22:00-07:00)."""

    start: time
    end: time

    def contains(self, local: datetime) -> bool:
        t = local.timetz().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def end_after(self, local: datetime) -> datetime:
        """The first end of the quiet hours at or after `local` (same time zone)."""
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        return end if end > local else end + timedelta(days=1)


def parse_quiet_hours(text: str) -> QuietHours | None:
    """`HH:MM-HH:MM` (local time), or empty for none; ValueError saying what is wrong."""
    text = text.strip()
    if not text:
        return None
    first, sep, last = text.partition("-")
    try:
        if not sep:
            raise ValueError
        quiet = QuietHours(time.fromisoformat(first.strip()), time.fromisoformat(last.strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not HH:MM-HH:MM (e.g. 22:00-07:00)") from None
    if quiet.start == quiet.end:
        raise ValueError(f"{text!r} is empty: start and end are the same")
    return quiet


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    send_now: bool
    hold_reason: str | None = None  # quiet_hours, rate_limited
    until: datetime | None = None


def plan_delivery(
    severity: str,
    now: datetime,
    local_tz: tzinfo,
    quiet: QuietHours | None,
    sent_at: Sequence[datetime],
    rate_limit: int,
    rate_window_s: float,
) -> DeliveryPlan:
    """Send now, or hold: during quiet hours a non-critical message waits for their end; a channel
    that sent `rate_limit` messages within the last window waits until the oldest leaves it.
    `sent_at` are the channel's recent sends."""
    if quiet is not None and severity != "critical":
        local = now.astimezone(local_tz)
        if quiet.contains(local):
            return DeliveryPlan(False, "quiet_hours", quiet.end_after(local))
    window = timedelta(seconds=rate_window_s)
    recent = sorted(t for t in sent_at if t > now - window)
    if len(recent) >= rate_limit:
        return DeliveryPlan(False, "rate_limited", recent[len(recent) - rate_limit] + window)
    return DeliveryPlan(True)


def digest(items: Sequence[tuple[str, str, str]], reason: str) -> tuple[str, str]:
    """(title, text) of one message that carries several held ones: (severity, title, text) each."""
    why = {"quiet_hours": "held during quiet hours", "rate_limited": "held by the rate limit"}.get(
        reason, "held"
    )
    worst = max((RANK[s] for s, _, _ in items), default=0)
    head = f"{len(items)} alerts {why}" + (" (the worst: " + SEVERITIES[worst] + ")" if items else "")
    lines = []
    for severity, title, text in items:
        lines.append(f"- [{severity}] {title}")
        lines += [f"  {line}" for line in text.splitlines() if line.strip()]
    return head, "\n".join(lines)
