"""The dashboard's view-model: plain data built by pure functions from recorded replies.

The dashboard (services/management/dashboard.py) only asks: the supervisor's `status`, every
service's `health` and a few business methods. Whatever came back (a reply, `Unavailable` with
the reason, or garbage from a service answering badly) goes into a `Snapshot`; `build_view`
turns it into a `DashboardView` and `render_lines` into text lines of a given width. Nothing
here does I/O or reads the clock, so every frame can be rebuilt in a test from recorded replies,
and no reply, however malformed, can raise out of these functions.
"""

from __future__ import annotations

import math
import textwrap
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from services.domain.supervision import DEPENDENCIES, UP, overall_status, start_order

LIGHTS = {"healthy": "🟢", "degraded": "🟡", "down": "🔴"}
BAD_STATES = ("fatal", "stopped", "backoff", "down")
BAD_HEALTH = ("unhealthy", "no answer", "garbage", "down")
FAILED_RUNS = ("failed", "blocked")
DEFAULT_BUY_RATE_THRESHOLD = 0.7
HELP = "↑↓/jk select  r restart  l logs  PgUp/PgDn scroll  q quit"
SYDNEY = ZoneInfo("Australia/Sydney")  # quote times are shown in the market's time


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A call that got no usable reply: the service is down, timed out, or raised."""

    reason: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the dashboard asked for in one round. Each reply is the decoded JSON result,
    `Unavailable`, or None when it was not asked (yet)."""

    status: Any = None
    health: Mapping[str, Any] = field(default_factory=dict)
    market_status: Any = None
    market_data: Mapping[str, Any] = field(default_factory=dict)
    predictions: Any = None
    buy_rate: Any = None
    portfolio: Any = None
    positions: Any = None
    big4: Any = None
    tasks: Any = None
    events: Sequence[Any] = ()  # live Redis events (envelopes), oldest first
    incidents: Any = None  # the alerts process's list_alerts
    symbols: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class ServiceRow:
    name: str
    state: str
    health: str
    pid: int | None
    uptime_s: float | None
    restarts: int | None
    memory_bytes: float | None
    cpu_pct: float | None
    deps: str
    note: str
    level: str  # ok, warn, bad


@dataclass(frozen=True, slots=True)
class SymbolRow:
    symbol: str
    price: float | None
    change_pct: float | None
    signal: str | None
    confidence: float | None
    stale: bool  # market-data's daily data is stale
    price_basis: str | None = None  # "quote" (in session) or "close", as market-data says
    quote_time: datetime | None = None  # the intraday quote's own time, in Sydney
    delay_s: float | None = None  # how old the quote was when fetched, as its source states
    quote_source: str | None = None
    quote_stale: bool = False  # the last good quote, kept while refreshes fail
    stale_reason: str | None = None

    @property
    def marked_stale(self) -> bool:
        """The price shown is not fresh: stale daily data, or a stale quote being the price."""
        return self.stale or (self.quote_stale and self.price_basis == "quote")


@dataclass(frozen=True, slots=True)
class Alert:
    level: str  # warn or bad (ok: something cleared)
    text: str
    at: str | None = None  # HH:MM of the event, when it was one


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """One alert as the alerts process records it, with where each delivery stands."""

    at: str  # HH:MM (Sydney) of its last occurrence
    severity: str
    title: str
    state: str  # open, resolved, ended, superseded, sent
    count: int
    deliveries: str  # "webhook sent, email held (quiet_hours)", or "not sent"
    level: str  # ok, warn, bad


@dataclass(frozen=True, slots=True)
class TaskRow:
    name: str
    at: datetime | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PositionRow:
    symbol: str
    quantity: int | None
    market_value: float | None
    unrealized_pnl: float | None


@dataclass(frozen=True, slots=True)
class PortfolioView:
    equity: float | None
    cash: float | None
    day_pnl: float | None
    exposure_pct: float | None
    open_positions: int | None
    halted: bool
    halt_reason: str | None
    positions: tuple[PositionRow, ...]
    # Today's predictions by outcome (traded / rejected / ignored), from paper-trading's health
    outcomes_today: Mapping[str, int] | None = None


@dataclass(frozen=True, slots=True)
class BuyRateView:
    rate: float | None
    samples: int | None
    threshold: float
    alerting: bool


@dataclass(frozen=True, slots=True)
class SentimentView:
    score: float | None
    confidence: float | None
    source: str | None
    banks: tuple[tuple[str, float | None], ...]


@dataclass(frozen=True, slots=True)
class MarketView:
    phase: str
    next_open: datetime | None
    next_close: datetime | None
    holiday: str | None


@dataclass(frozen=True, slots=True)
class DashboardView:
    overall: str  # healthy, degraded, down
    supervisor: str  # one line about the supervisor and Redis
    redis_down: bool
    now: datetime | None
    services: tuple[ServiceRow, ...]
    market: MarketView | None
    symbols: tuple[SymbolRow, ...]
    buy_rate: BuyRateView | None
    portfolio: PortfolioView | None
    sentiment: SentimentView | None
    next_tasks: tuple[TaskRow, ...]
    failed_tasks: tuple[TaskRow, ...]  # tasks whose last run failed, newest first
    failed_today: int | None  # runs failed or blocked today, from the scheduler's health
    alerts: tuple[Alert, ...]
    missing: Mapping[str, str]  # section -> why it has no data
    incidents: tuple[IncidentRow, ...] = ()  # the alerts process's record, newest first
    alerts_note: str | None = None  # e.g. no alert channel is configured (alerts' health)

    @property
    def light(self) -> str:
        return LIGHTS.get(self.overall, LIGHTS["down"])


# ---- defensive readers: a reply may be anything -------------------------------------------------


def _obj(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _seq(value: Any) -> list:
    return value if isinstance(value, list) else []


def _num(d: Any, key: str) -> float | None:
    value = _obj(d).get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _int(d: Any, key: str) -> int | None:
    value = _num(d, key)
    return int(value) if value is not None and value.is_integer() else None


def _text(d: Any, key: str) -> str | None:
    value = _obj(d).get(key)
    return clean(value) if isinstance(value, str) and value else None


def _time(d: Any, key: str) -> datetime | None:
    """An ISO instant with an offset; anything else (naive, garbage) is no time at all."""
    text = _text(d, key)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def clean(text: str) -> str:
    """Printable text only: a reply must not smuggle escape codes or line breaks into a frame."""
    return "".join(" " if ch in "\t\n\r" else ch if ch.isprintable() else "?" for ch in text)


def why(reply: Any) -> str:
    """Why a reply gives no data, in a few words."""
    if isinstance(reply, Unavailable):
        return clean(reply.reason)
    if reply is None:
        return "waiting for the first reply"
    return "unexpected reply"


# ---- building the view -----------------------------------------------------------------------------


def build_view(snapshot: Snapshot, now: datetime | None = None) -> DashboardView:
    """The whole dashboard as plain data. `now` is the suite clock's time (for "in 2h")."""
    status = _obj(snapshot.status)
    supervisor = _obj(status.get("supervisor"))
    redis_state = _redis_state(supervisor, snapshot.health)
    redis_down = redis_state in ("stopped", "disconnected")
    rows = _service_rows(status, snapshot.health, redis_down)
    next_tasks, failed_tasks = _tasks(snapshot.tasks)
    view = DashboardView(
        overall=_overall(rows, bool(supervisor), redis_down),
        supervisor=_supervisor_line(supervisor, redis_state),
        redis_down=redis_down,
        now=now,
        services=rows,
        market=_market(snapshot.market_status),
        symbols=_symbol_rows(snapshot),
        buy_rate=_buy_rate(snapshot.buy_rate),
        portfolio=_portfolio(snapshot.portfolio, snapshot.positions, snapshot.health.get("paper-trading")),
        sentiment=_sentiment(snapshot.big4),
        next_tasks=next_tasks,
        failed_tasks=failed_tasks,
        failed_today=_int(snapshot.health.get("scheduler"), "failed_today"),
        alerts=(),
        missing={},
        incidents=_incidents(snapshot.incidents, now.tzinfo if now is not None else SYDNEY),
        alerts_note=_text(snapshot.health.get("alerts"), "note"),
    )
    view = replace(view, missing=_missing(view, snapshot))
    return replace(view, alerts=_alerts(view, status, snapshot))


def _missing(view: DashboardView, snapshot: Snapshot) -> dict[str, str]:
    """Each section that has no data, with the reason (shown in its place)."""
    replies = {
        "market": snapshot.market_status,
        "buy_rate": snapshot.buy_rate,
        "portfolio": snapshot.portfolio,
        "sentiment": snapshot.big4,
    }
    missing = {name: why(reply) for name, reply in replies.items() if getattr(view, name) is None}
    if not _obj(_obj(snapshot.status).get("supervisor")):
        missing["supervisor"] = why(snapshot.status)
    if not isinstance(snapshot.tasks, list):
        missing["tasks"] = why(snapshot.tasks)
    # Not asked (None): no panel at all; asked and no list: the panel says why.
    if snapshot.incidents is not None and not isinstance(_obj(snapshot.incidents).get("alerts"), list):
        missing["incidents"] = why(snapshot.incidents)
    if not isinstance(_obj(snapshot.predictions).get("predictions"), list):
        missing["predictions"] = why(snapshot.predictions)
    return missing


def _redis_state(supervisor: dict, health: Mapping[str, Any]) -> str:
    """The supervisor knows whether its Redis runs; without it, ask what the services say."""
    state = _text(_obj(supervisor.get("redis")), "state")
    if state is not None:
        return state
    said = [_text(h, "redis") for h in health.values() if isinstance(h, dict)]
    if "connected" in said:
        return "connected"
    return "disconnected" if said and all(s == "disconnected" for s in said) else "unknown"


def _service_rows(status: dict, health: Mapping[str, Any], redis_down: bool) -> tuple[ServiceRow, ...]:
    managed = {
        s["name"]: s
        for s in _seq(status.get("services"))
        if isinstance(s, dict) and isinstance(s.get("name"), str)
    }
    supervised = bool(_obj(status.get("supervisor")))
    basics = {
        name: _state_and_health(managed.get(name), health.get(name), supervised) for name in start_order()
    }
    return tuple(
        _service_row(name, managed.get(name, {}), health.get(name), basics, redis_down)
        for name in start_order()
    )


def _state_and_health(managed: dict | None, reply: Any, supervised: bool) -> tuple[str, str]:
    """The supervisor says what the process is doing; the service's own health reply (fresher than
    the supervisor's last check) says how it is. Without a supervisor, an answer means "running"."""
    answered = isinstance(reply, dict)
    own = _text(reply, "status") if answered else None
    if managed is not None and _text(managed, "state"):
        state = _text(managed, "state") or "unknown"
    elif supervised:
        state = "unknown"
    else:
        state = "running" if answered else "down"
    if state != "running":
        return state, "-"
    if own is not None:
        return state, own
    if reply is None:
        return state, _text(managed, "health") or "-"
    return state, "no answer" if isinstance(reply, Unavailable) else "garbage"


def _service_row(
    name: str, managed: dict, reply: Any, basics: Mapping[str, tuple[str, str]], redis_down: bool
) -> ServiceRow:
    state, health = basics[name]
    own = _obj(reply)
    deps = DEPENDENCIES.get(name, ())
    missing = [d for d in deps if not (basics[d][0] == "running" and basics[d][1] in UP)]
    if redis_down:
        missing.insert(0, "redis")
    deps_text = f"down: {','.join(missing)}" if missing else ("ok" if deps else "-")
    warnings = [clean(w) for w in _seq(own.get("warnings")) if isinstance(w, str)]
    note = _text(managed, "reason") or (warnings[0] if warnings else "")
    if isinstance(reply, Unavailable) and state in ("running", "down"):
        note = note or clean(reply.reason)  # why it does not answer; the supervisor's reason wins
    # The service's own reply is fresher than the supervisor's copy of its last health check; a
    # process that is not running has no memory or CPU, whatever its last check said.
    figures = (own, managed) if state == "running" else ({}, {})
    return ServiceRow(
        name=name,
        state=state,
        health=health,
        pid=_int(managed, "pid") or _int(own, "pid"),
        uptime_s=_first(figures[::-1], "uptime"),
        restarts=_int(managed, "restarts"),
        memory_bytes=_first(figures, "memory_usage"),
        cpu_pct=_first(figures, "cpu_usage"),
        deps=deps_text,
        note=note,
        level=_level(state, health, bool(missing)),
    )


def _first(replies: Sequence[dict], key: str) -> float | None:
    return next((v for r in replies if (v := _num(r, key)) is not None), None)


def _level(state: str, health: str, dependency_down: bool) -> str:
    if state in BAD_STATES or health in BAD_HEALTH:
        return "bad"
    if state != "running" or health != "healthy" or dependency_down:
        return "warn"
    return "ok"


def _overall(rows: Sequence[ServiceRow], supervised: bool, redis_down: bool) -> str:
    if not supervised or redis_down or any(r.state == "down" for r in rows):
        return "down"
    return overall_status({r.name: r.state for r in rows}, {r.name: r.health for r in rows})


def _supervisor_line(supervisor: dict, redis_state: str) -> str:
    if not supervisor:
        return f"supervisor not running · redis {redis_state}"  # why: in the alerts
    return f"supervisor up {human_seconds(_num(supervisor, 'uptime'))} · redis {redis_state}"


def _market(reply: Any) -> MarketView | None:
    phase = _text(reply, "phase")
    if phase is None:
        return None
    return MarketView(
        phase=phase,
        next_open=_time(reply, "next_open"),
        next_close=_time(reply, "next_close"),
        holiday=_text(reply, "holiday"),
    )


def _symbol_rows(snapshot: Snapshot) -> tuple[SymbolRow, ...]:
    latest: dict[str, dict] = {}
    for p in _seq(_obj(snapshot.predictions).get("predictions")):  # newest first
        symbol = _text(p, "symbol")
        if symbol is not None:
            latest.setdefault(symbol, p)
    symbols = [s for s in snapshot.symbols if isinstance(s, str)] or sorted(latest)
    rows = []
    for symbol in symbols:
        market = _obj(snapshot.market_data.get(symbol))
        prediction = latest.get(symbol, {})
        signal = _text(prediction, "signal")
        quote = _obj(market.get("quote"))
        quote_time = _time(quote, "quote_time")
        delay_s = _num(quote, "delay_s")
        rows.append(
            SymbolRow(
                symbol=clean(symbol),
                price=_num(market, "price") if market else _num(prediction, "price"),
                change_pct=_num(market, "change_pct"),
                signal=signal.upper() if signal else None,
                confidence=_num(prediction, "confidence"),
                stale=market.get("stale") is True,
                price_basis=_text(market, "price_basis"),
                quote_time=quote_time.astimezone(SYDNEY) if quote_time else None,
                delay_s=delay_s if delay_s is not None and delay_s >= 0 else None,
                quote_source=_text(quote, "source"),
                quote_stale=quote.get("stale") is True,
                stale_reason=_text(quote, "stale_reason"),
            )
        )
    return tuple(rows)


def _buy_rate(reply: Any) -> BuyRateView | None:
    if not isinstance(reply, dict) or "buy_rate" not in reply:
        return None
    rate = _num(reply, "buy_rate")
    threshold = _num(reply, "threshold")
    threshold = DEFAULT_BUY_RATE_THRESHOLD if threshold is None else threshold
    samples = _int(reply, "samples")
    enough = samples is not None and samples >= (_int(reply, "min_samples") or 1)
    # The service's own flag has hysteresis; a rate over the line with enough samples alerts too.
    alerting = reply.get("alerting") is True or (rate is not None and enough and rate > threshold)
    return BuyRateView(rate=rate, samples=samples, threshold=threshold, alerting=alerting)


def _portfolio(status: Any, positions: Any, health: Any = None) -> PortfolioView | None:
    if not isinstance(status, dict) or _num(status, "equity") is None:
        return None
    rows = tuple(
        PositionRow(
            symbol=_text(p, "symbol") or "?",
            quantity=_int(p, "quantity"),
            market_value=_num(p, "market_value"),
            unrealized_pnl=_num(p, "unrealized_pnl"),
        )
        for p in _seq(_obj(positions).get("positions"))
        if isinstance(p, dict)
    )
    return PortfolioView(
        equity=_num(status, "equity"),
        cash=_num(status, "cash"),
        day_pnl=_num(status, "day_pnl"),
        exposure_pct=_num(status, "exposure_pct"),
        open_positions=_int(status, "open_positions") if "open_positions" in status else len(rows),
        halted=status.get("trading_halted") is True,
        halt_reason=_text(status, "halt_reason"),
        positions=rows,
        outcomes_today=_outcomes(_obj(health).get("outcomes_today")),
    )


def _outcomes(reply: Any) -> Mapping[str, int] | None:
    if not isinstance(reply, dict):
        return None
    counts = {k: _int(reply, k) for k in ("traded", "rejected", "ignored")}
    return {k: v for k, v in counts.items() if v is not None} or None


def _sentiment(reply: Any) -> SentimentView | None:
    if not isinstance(reply, dict) or _num(reply, "score") is None:
        return None
    banks = tuple(
        (clean(symbol), _num(result, "score"))
        for symbol, result in _obj(reply.get("banks")).items()  # the universe's order
        if isinstance(symbol, str)
    )
    return SentimentView(
        score=_num(reply, "score"),
        confidence=_num(reply, "confidence"),
        source=_text(reply, "source"),
        banks=banks,
    )


def _tasks(reply: Any) -> tuple[tuple[TaskRow, ...], tuple[TaskRow, ...]]:
    tasks = [t for t in _seq(reply) if isinstance(t, dict) and _text(t, "name")]
    upcoming = [TaskRow(_text(t, "name") or "?", _time(t, "next_run")) for t in tasks if _time(t, "next_run")]
    upcoming.sort(key=lambda t: t.at.timestamp() if t.at else math.inf)
    failed = [
        TaskRow(
            _text(t, "name") or "?", _time(t, "last_run"), _text(t, "last_error") or _text(t, "last_status")
        )
        for t in tasks
        if _text(t, "last_status") in FAILED_RUNS
    ]
    failed.sort(key=lambda t: t.at.timestamp() if t.at else -math.inf, reverse=True)
    return tuple(upcoming), tuple(failed)


# ---- incidents (the alerts process) ---------------------------------------------------------------

INCIDENT_LEVEL = {"critical": "bad", "warning": "warn", "info": "text"}


def _incidents(reply: Any, tz: tzinfo | None) -> tuple[IncidentRow, ...]:
    rows = []
    for alert in _seq(_obj(reply).get("alerts")):
        last = _time(alert, "last_at")
        severity = _text(alert, "severity") or "?"
        state = _text(alert, "state") or "?"
        deliveries = [_delivery_text(d) for d in _seq(_obj(alert).get("deliveries"))]
        rows.append(
            IncidentRow(
                at=last.astimezone(tz).strftime("%H:%M") if last else "?",
                severity=severity,
                title=_text(alert, "title") or "?",
                state=state,
                count=_int(alert, "count") or 1,
                deliveries=", ".join(deliveries) or "not sent",
                level="ok" if state in ("resolved", "ended") else INCIDENT_LEVEL.get(severity, "warn"),
            )
        )
    return tuple(rows)


def _delivery_text(delivery: Any) -> str:
    channel, state = _text(delivery, "channel") or "?", _text(delivery, "state") or "?"
    reason = _text(delivery, "hold_reason") if state == "held" else None
    return f"{channel} {state}" + (f" ({reason})" if reason else "")


# ---- alerts ------------------------------------------------------------------------------------------


def _alerts(view: DashboardView, status: dict, snapshot: Snapshot) -> tuple[Alert, ...]:
    """Now-conditions first (worst first), then recent happenings, newest first; no repeats."""
    tz = view.now.tzinfo if view.now else None
    alerts = [*_current_alerts(view, snapshot), *_event_alerts(status, snapshot.events, tz)]
    seen: set[str] = set()
    unique = []
    for alert in alerts:
        if alert.text not in seen:
            seen.add(alert.text)
            unique.append(alert)
    return tuple(unique)


def _current_alerts(view: DashboardView, snapshot: Snapshot) -> list[Alert]:
    """What is wrong right now (no timestamp): the worst first."""
    alerts = []
    if "supervisor" in view.missing:
        why_not = view.missing["supervisor"]
        alerts.append(Alert("bad", f"supervisor not running ({why_not}): service_manager.py start"))
    if view.redis_down:
        alerts.append(Alert("bad", "redis is down: no events are delivered"))
    for row in view.services:
        if row.state == "fatal":
            alerts.append(
                Alert("bad", f"{row.name} is fatal: {row.note or 'gave up restarting'} (r to restart)")
            )
        elif row.state in ("down", "backoff", "stopped"):
            alerts.append(Alert("bad", f"{row.name} is {row.state}{': ' + row.note if row.note else ''}"))
    if view.buy_rate is not None and view.buy_rate.alerting:
        rate = pct(view.buy_rate.rate, 0)
        alerts.append(Alert("bad", f"buy rate {rate} is above {pct(view.buy_rate.threshold, 0)}"))
    if view.portfolio is not None and view.portfolio.halted:
        alerts.append(Alert("bad", f"trading halted: {view.portfolio.halt_reason or 'risk limit hit'}"))
    for name in start_order():
        for warning in _seq(_obj(snapshot.health.get(name)).get("warnings")):
            if isinstance(warning, str):
                alerts.append(Alert("warn", f"{name}: {clean(warning)}"))
    return alerts


def _event_alerts(status: dict, events: Sequence[Any], tz: tzinfo | None) -> list[Alert]:
    """Recent happenings, newest first: the supervisor's state changes and live Redis events."""
    timed: list[tuple[str, Alert]] = []
    for entry in _seq(status.get("recent_events")):
        alert = _state_change_alert(_obj(entry), tz)
        if alert is not None:
            timed.append((_text(entry, "at") or "", alert))
    for envelope in events:
        envelope = _obj(envelope)
        alert = _live_event_alert(_text(envelope, "type") or "", _obj(envelope.get("data")), envelope, tz)
        if alert is not None:
            timed.append((_text(envelope, "timestamp") or "", alert))
    timed.sort(key=lambda pair: _sort_key(pair[0]), reverse=True)
    return [alert for _, alert in timed]


def _sort_key(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (ValueError, OverflowError, OSError):
        return -math.inf


def _state_change_alert(entry: dict, tz: tzinfo | None) -> Alert | None:
    state, service = _text(entry, "state"), _text(entry, "service") or "?"
    at = _clock_of(_text(entry, "at"), tz)
    reason = _text(entry, "reason")
    if state == "fatal":
        return Alert("bad", f"{service} became fatal: {reason or '?'}", at)
    if state == "backoff":
        return Alert("warn", f"{service} restarting: {reason or '?'}", at)
    return None


def _live_event_alert(kind: str, data: dict, envelope: dict, tz: tzinfo | None) -> Alert | None:
    at = _clock_of(_text(envelope, "timestamp"), tz)
    if kind == "risk_limit_hit":
        where = f" ({_text(data, 'symbol')})" if _text(data, "symbol") else ""
        return Alert(
            "bad", f"risk limit {_text(data, 'rule') or '?'}{where}: {_text(data, 'detail') or ''}", at
        )
    if kind == "storage_halted":
        return Alert(
            "bad",
            f"{_text(data, 'service') or '?'} halted trading, storage: {_text(data, 'reason') or '?'}",
            at,
        )
    if kind == "storage_resumed":
        halted_s = _num(data, "halted_s")
        after = f" after {halted_s:.0f} s" if halted_s is not None else ""
        return Alert(
            "warn", f"{_text(data, 'service') or '?'} resumed trading: storage writable again{after}", at
        )
    if kind == "buy_rate_alert":
        return Alert("bad", f"buy rate alert: {pct(_num(data, 'rate'), 0)} of recent predictions are BUY", at)
    if kind == "task_failed":
        error = _text(data, "error") or _text(data, "status") or "failed"
        return Alert("warn", f"task {_text(data, 'name') or '?'} failed: {error}", at)
    if kind == "service_status_changed":
        return _state_change_alert(data | {"at": _text(envelope, "timestamp")}, tz)
    if kind == "market_data_stale":
        if _text(data, "state") == "stale":
            return Alert("bad", f"new buys halted: {_text(data, 'reason') or 'market data silent'}", at)
        return Alert("ok", "market data arriving again: new buys resume", at)
    if kind == "outbox_backlog":
        what = f"{_text(data, 'service') or '?'}: {_count(_num(data, 'size'))} {_text(data, 'outbox') or 'events'}"
        if _text(data, "state") == "growing":
            return Alert("bad", f"{what} not yet on the bus (outbox past {_count(_num(data, 'bound'))})", at)
        return Alert("ok", f"{what} left in the outbox: drained", at)
    if kind == "event_dead_lettered":
        return Alert(
            "bad",
            f"{_text(data, 'consumer') or '?'} dead-lettered a {_text(data, 'event_type') or '?'}"
            f" after {_count(_num(data, 'delivered'))} deliveries: {_text(data, 'error') or '?'}",
            at,
        )
    return None


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def _clock_of(iso: str | None, tz: tzinfo | None) -> str | None:
    """HH:MM in the dashboard's zone (the market's), whatever zone the event was stamped in."""
    if iso is None:
        return None
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return None
    if tz is not None and moment.tzinfo is not None:
        moment = moment.astimezone(tz)
    return moment.strftime("%H:%M")


# ---- formatting --------------------------------------------------------------------------------------


def human_seconds(value: float | None) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
        return "-"
    value = int(value)
    if value < 60:
        return f"{value}s"
    if value < 3600:
        return f"{value // 60}m{value % 60:02d}s"
    if value < 86400:
        return f"{value // 3600}h{value % 3600 // 60:02d}m"
    return f"{value // 86400}d{value % 86400 // 3600:02d}h"


def delay_text(delay_s: float | None) -> str:
    """A quote's delay in a few characters: "20m", "45s", "live" (under a second), "" unknown."""
    if delay_s is None:
        return ""
    if delay_s < 1:
        return "live"
    if delay_s < 60:
        return f"{int(delay_s)}s"
    return f"{round(delay_s / 60)}m"


def human_bytes(value: float | None) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        return "-"
    return f"{value / (1024 * 1024):.1f}M"


def pct(fraction: float | None, decimals: int = 1) -> str:
    return "-" if fraction is None else f"{fraction * 100:.{decimals}f}%"


def money(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    sign = ("+" if value >= 0 else "-") if signed else ("-" if value < 0 else "")
    return f"{sign}${abs(value):,.2f}"


def when(moment: datetime | None, now: datetime | None) -> str:
    """A time of day (with the weekday when not today) and how far away it is."""
    if moment is None:
        return "-"
    same_day = now is not None and moment.date() == now.astimezone(moment.tzinfo).date()
    text = moment.strftime("%H:%M" if same_day else "%a %H:%M")
    if now is not None and moment >= now:
        text += f" (in {human_seconds((moment - now).total_seconds())})"
    return text


# ---- text layout -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the frame; `tag` says how to colour it (title, head, ok, warn, bad, text)."""

    text: str
    tag: str = "text"
    selected: bool = False


def cell_width(text: str) -> int:
    """Columns the text takes on a terminal: wide (East Asian, emoji) characters take two."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def fit(text: str, width: int) -> str:
    """Cut to `width` columns (with … when cut) and pad with spaces to exactly `width`."""
    if width <= 0:
        return ""
    if cell_width(text) > width:
        out, used = "", 0
        for ch in text:
            w = cell_width(ch)
            if used + w > width - 1:
                break
            out, used = out + ch, used + w
        text = out + "…"
    return text + " " * (width - cell_width(text))


def columns(cells: Sequence[tuple[str, int, str]]) -> str:
    """Fixed-width columns: (text, width, align '<' or '>'), one space apart."""
    parts = []
    for text, width, align in cells:
        cut = fit(text, width)
        parts.append(
            " " * (width - cell_width(text)) + text if align == ">" and cell_width(text) <= width else cut
        )
    return " ".join(parts)


SERVICE_COLUMNS = (("SERVICE", 13, "<"), ("STATE", 8, "<"), ("HEALTH", 9, "<"), ("PID", 7, ">"),
                   ("UPTIME", 6, ">"), ("RST", 3, ">"), ("MEM", 6, ">"), ("CPU", 5, ">"))  # fmt: skip


def service_lines(view: DashboardView, width: int, selected: int | None) -> list[Line]:
    """The services table; from 100 columns a NOTE column (the supervisor's reason, a warning)."""
    rest = max(width - sum(w for _, w, _ in SERVICE_COLUMNS) - len(SERVICE_COLUMNS), 4)
    deps_width = 20 if rest >= 40 else rest
    extra = [("DEPS", deps_width, "<")] + ([("NOTE", rest - deps_width - 1, "<")] if rest >= 40 else [])
    lines = [Line(columns([*SERVICE_COLUMNS, *extra]), "head")]
    for index, row in enumerate(view.services):
        cpu = "-" if row.cpu_pct is None else f"{row.cpu_pct:.1f}%"
        cells = [row.name, row.state, row.health, str(row.pid or "-"), human_seconds(row.uptime_s),
                 "-" if row.restarts is None else str(row.restarts), human_bytes(row.memory_bytes), cpu,
                 row.deps, row.note]  # fmt: skip
        layout = [*SERVICE_COLUMNS, *extra]
        text = columns([(c, w, a) for c, (_, w, a) in zip(cells, layout, strict=False)])
        lines.append(Line(text, row.level, index == selected))
    return lines


def title_line(view: DashboardView) -> Line:
    clock = f" · {view.now.strftime('%a %d %b %H:%M:%S %Z').rstrip()}" if view.now else ""
    return Line(f"{view.light} {view.overall.upper()}{clock} · {view.supervisor}", "title")


def market_line(view: DashboardView) -> Line:
    market = view.market
    if market is None:
        return Line(f"MARKET unknown ({view.missing.get('market', '?')})", "warn")
    label = market.phase.replace("_", "-")
    if market.holiday:
        label += f" ({market.holiday})"
    if market.phase == "open":
        text = f"MARKET {label} · closes {when(market.next_close, view.now)}"
    else:
        text = f"MARKET {label} · opens {when(market.next_open, view.now)}"
    return Line(text, "ok" if market.phase == "open" else "text")


SYMBOL_COLUMNS = (
    ("SYMBOL", 8, "<"),
    ("PRICE", 9, ">"),
    ("CHG", 7, ">"),
    ("SIGNAL", 6, ">"),
    ("CONF", 4, ">"),
)
# Beside the portfolio on an 80-column terminal: the change gives way to the quote's time and delay.
COMPACT_SYMBOL_COLUMNS = (("SYMBOL", 7, "<"), ("PRICE", 8, ">"), ("SIG", 4, ">"), ("CONF", 4, ">"))
QUOTE_WIDTH = 11  # "11:05 STALE", "11:05 20m", "close"
SYMBOL_TABLE_WIDTH = sum(w for _, w, _ in SYMBOL_COLUMNS) + len(SYMBOL_COLUMNS) + QUOTE_WIDTH  # 50
MIN_SYMBOL_NOTE = 12


def quote_cell(row: SymbolRow, width: int = QUOTE_WIDTH) -> str:
    """When the price is from: the quote's Sydney time and its delay, or "close"; STALE when so.
    In fewer than `QUOTE_WIDTH` columns, the one word that matters most."""
    mark = " STALE" if row.quote_stale else ""
    if row.price_basis == "close":
        text = "close" + mark
    elif row.quote_time is None:
        text = "-"
    else:
        text = f"{row.quote_time.strftime('%H:%M')}{mark or ' ' + delay_text(row.delay_s)}".rstrip()
    if len(text) <= width:
        return text
    return "STALE" if row.quote_stale else text.split()[0]


def symbol_note(row: SymbolRow) -> str:
    """The longer story of the row's price, for a wide table (a stale quote: why; QUOTE says STALE)."""
    if row.quote_stale:
        return row.stale_reason or "no fresh quote"
    last = f"last quote {row.quote_time.strftime('%H:%M')}" if row.quote_time else ""
    if row.price_basis == "close":
        return f"last close{'; ' + last if last else ''}"
    if row.quote_time is None:
        return ""
    delay = delay_text(row.delay_s)
    how = "real-time" if delay == "live" else (f"{delay} delayed" if delay else "delay unknown")
    return f"{row.quote_source or 'quote'} {how}"


def symbol_lines(view: DashboardView, width: int = SYMBOL_TABLE_WIDTH, compact: bool = False) -> list[Line]:
    """The symbols table in `width` columns: the QUOTE column (cut on narrow screens), and a NOTE
    column (a stale quote's reason, the source and its delay) when there is room. `compact`: no CHG."""
    base = COMPACT_SYMBOL_COLUMNS if compact else SYMBOL_COLUMNS
    base_width = sum(w for _, w, _ in base) + len(base)
    quote_width = min(QUOTE_WIDTH, width - base_width)
    layout = [*base] + ([("QUOTE", quote_width, "<")] if quote_width >= 5 else [])
    note_width = width - base_width - QUOTE_WIDTH - 1
    if note_width >= MIN_SYMBOL_NOTE:
        layout.append(("NOTE", note_width, "<"))
    lines = [Line(columns(layout), "head")]
    for row in view.symbols:
        price = "-" if row.price is None else f"{row.price:,.2f}" + ("*" if row.marked_stale else "")
        cells = {
            "SYMBOL": row.symbol,
            "PRICE": price,
            "CHG": "-" if row.change_pct is None else f"{row.change_pct:+.2f}%",
            "SIGNAL": row.signal or "-",
            "SIG": row.signal or "-",
            "CONF": pct(row.confidence, 0),
            "QUOTE": quote_cell(row, quote_width),
            "NOTE": symbol_note(row),
        }
        tag = {"BUY": "ok", "SELL": "bad"}.get(row.signal or "", "text")
        if row.quote_stale and tag == "text":
            tag = "warn"
        lines.append(Line(columns([(cells[name], w, a) for name, w, a in layout]), tag))
    if not view.symbols:
        lines.append(Line(f"no symbols ({view.missing.get('predictions', 'none configured')})", "warn"))
    lines.append(buy_rate_line(view))
    return lines


def buy_rate_line(view: DashboardView) -> Line:
    rate = view.buy_rate
    if rate is None:
        return Line(f"BUY RATE unknown ({view.missing.get('buy_rate', '?')})", "warn")
    samples = "" if rate.samples is None else f" of last {rate.samples}"
    if rate.alerting:
        return Line(f"BUY RATE {pct(rate.rate, 0)}{samples} ALERT >{pct(rate.threshold, 0)}", "bad")
    return Line(f"BUY RATE {pct(rate.rate, 0)}{samples} (alert >{pct(rate.threshold, 0)})", "text")


def portfolio_lines(view: DashboardView, room: int) -> list[Line]:
    p = view.portfolio
    if p is None:
        return [Line("PORTFOLIO unknown", "warn"), Line(view.missing.get("portfolio", "?"), "warn")]
    day_tag = "bad" if (p.day_pnl or 0) < 0 else "ok"
    lines = [
        Line(f"PORTFOLIO equity {money(p.equity)}", "head"),
        Line(f"cash {money(p.cash)}  day P&L {money(p.day_pnl, signed=True)}", day_tag),
        Line(
            f"exposure {'-' if p.exposure_pct is None else f'{p.exposure_pct:.1f}%'}"
            f"  open positions {'-' if p.open_positions is None else p.open_positions}"
        ),
    ]
    if p.outcomes_today is not None:
        said = "  ".join(f"{n} {kind}" for kind, n in p.outcomes_today.items())
        lines.append(Line(f"signals today: {said}"))
    if p.halted:
        lines.append(Line(f"HALTED: {p.halt_reason or 'risk limit'}", "bad"))
    free = max(room - len(lines), 1)
    shown = p.positions if len(p.positions) <= free else p.positions[: free - 1]
    for pos in shown:
        qty = "-" if pos.quantity is None else str(pos.quantity)
        tag = "bad" if (pos.unrealized_pnl or 0) < 0 else "text"
        text = f" {pos.symbol:<8} {qty:>6} {money(pos.market_value)} {money(pos.unrealized_pnl, True)}"
        lines.append(Line(text, tag))
    if len(shown) < len(p.positions):
        lines.append(Line(f" … and {len(p.positions) - len(shown)} more positions"))
    return lines


def sentiment_lines(view: DashboardView) -> list[Line]:
    s = view.sentiment
    if s is None:
        return [Line(f"BIG 4 SENTIMENT unknown ({view.missing.get('sentiment', '?')})", "warn")]
    source = f" {s.source}" if s.source else ""
    banks = " ".join(
        f"{sym.split('.')[0]}{' -' if score is None else f'{score:+.2f}'}" for sym, score in s.banks
    )
    score = "-" if s.score is None else f"{s.score:+.2f}"
    tag = "text" if s.score is None or abs(s.score) < 0.2 else ("ok" if s.score > 0 else "bad")
    return [Line(f"BIG 4 SENTIMENT {score} conf {pct(s.confidence, 0)}{source}", tag), Line(banks)]


def task_lines(view: DashboardView) -> list[Line]:
    if "tasks" in view.missing:
        return [Line(f"TASKS unknown ({view.missing['tasks']})", "warn")]
    upcoming = " · ".join(f"{t.name} {when(t.at, view.now)}" for t in view.next_tasks[:3])
    lines = [Line(f"NEXT {upcoming or 'nothing scheduled'}")]
    today = f" · {view.failed_today} failed runs today" if view.failed_today else ""
    if not view.failed_tasks:
        return [*lines, Line(f"FAILED none{today}", "warn" if today else "ok")]
    for task in view.failed_tasks[:2]:
        at = task.at.strftime("%a %H:%M") if task.at else "?"
        lines.append(Line(f"FAILED {task.name} {at}: {task.error or '?'}", "bad"))
    return lines


def alert_lines(view: DashboardView, limit: int, width: int) -> list[Line]:
    """The newest `limit` alerts, each wrapped onto at most two lines (the reason is the point)."""
    if not view.alerts:
        return [Line("ALERTS none", "ok")]
    lines = [Line(f"ALERTS {len(view.alerts)}", "head")]
    for alert in view.alerts[:limit]:
        parts = textwrap.wrap(
            f"{alert.at or 'now':<5} {alert.text}",
            width,
            subsequent_indent=" " * 6,
            max_lines=2,
            placeholder=" …",
        )
        lines.extend(Line(part, alert.level) for part in parts)
    if len(view.alerts) > limit:
        lines.append(Line(f"… {len(view.alerts) - limit} more"))
    return lines


def incident_lines(view: DashboardView, limit: int, width: int, missing: str | None) -> list[Line]:
    """The alerts sent to people (the alerts process's record) and each delivery's state."""
    if missing is not None:
        return [Line(f"SENT ALERTS unknown ({missing})", "warn")]
    note = [Line(f"  {view.alerts_note}", "warn")] if view.alerts_note else []
    if not view.incidents:
        return [Line("SENT ALERTS none", "ok"), *note]
    lines = [Line(f"SENT ALERTS {len(view.incidents)} recent", "head"), *note]
    for row in view.incidents[:limit]:
        count = f" x{row.count}" if row.count > 1 else ""
        parts = textwrap.wrap(
            f"{row.at:<5} {row.title}{count} [{row.state}] → {row.deliveries}",
            width,
            subsequent_indent=" " * 6,
            max_lines=2,
            placeholder=" …",
        )
        lines.extend(Line(part, row.level) for part in parts)
    return lines


def side_by_side(
    left: list[Line], right: list[Line], width: int, left_width: int | None = None
) -> list[Line]:
    """Two columns split by a bar (halves unless `left_width`); a line takes the worse tag of its halves."""
    left_width = (width - 3) // 2 if left_width is None else left_width
    right_width = width - 3 - left_width
    rank = {"bad": 3, "warn": 2, "ok": 1}
    out = []
    for index in range(max(len(left), len(right))):
        a = left[index] if index < len(left) else Line("")
        b = right[index] if index < len(right) else Line("")
        tag = max((a.tag, b.tag), key=lambda t: rank.get(t, 0))
        out.append(Line(f"{fit(a.text, left_width)} │ {fit(b.text, right_width)}".rstrip(), tag))
    return out


def render_lines(
    view: DashboardView, width: int = 80, selected: int | None = None, alerts: int = 6
) -> list[Line]:
    """The frame as lines no wider than `width` columns (two columns side by side from 80)."""
    width = max(width, 40)
    business = business_lines(view, width)
    lines = [
        title_line(view),
        *service_lines(view, width, selected),
        market_line(view),
        *business,
        *task_lines(view),
        *alert_lines(view, alerts, width),
        *incident_lines(view, max(alerts // 2, 3), width, view.missing.get("incidents")),
    ]
    if not view.incidents and "incidents" not in view.missing and not view.alerts_note:
        lines = lines[:-1]  # nothing recorded: the "SENT ALERTS none" line would only take a row
    return [Line(fit(line.text, width).rstrip(), line.tag, line.selected) for line in lines]


RIGHT_MIN_WIDTH = 38  # the portfolio and sentiment lines


def business_lines(view: DashboardView, width: int) -> list[Line]:
    """Symbols beside portfolio and sentiment (from 91 columns the symbols take the extra width,
    for their CHG and NOTE columns; from 76 a compact table without CHG); else stacked."""
    right_width = max(RIGHT_MIN_WIDTH, (width - 3) // 3)
    if width - 3 - right_width >= SYMBOL_TABLE_WIDTH:
        left_width = width - 3 - right_width
        symbols = symbol_lines(view, left_width)
    elif width >= 76:
        left_width = (width - 3) // 2
        symbols = symbol_lines(view, left_width, compact=True)
    else:
        symbols = symbol_lines(view, width)
        portfolio = portfolio_lines(view, room=max(len(symbols) - 2, 5))
        return [*symbols, *portfolio, *sentiment_lines(view)]
    right = portfolio_lines(view, room=max(len(symbols) - 2, 5)) + sentiment_lines(view)
    return side_by_side(symbols, right, width, left_width)


def render_text(view: DashboardView, width: int = 80) -> str:
    """One plain-text frame (for --once and scripts)."""
    return "\n".join(line.text for line in render_lines(view, width, alerts=10))
