"""alerts service: turns the suite's alert events and what it polls into messages to people.

The process is a thin shell: `services.domain.alert_sources` maps events and poll readings to
occurrences, `services.domain.alert_incidents` decides what to say and when (incidents, grouping,
resolution, routing, quiet hours, rate limits), `alert_store` records incidents and every
delivery in `alerts.db`, `alert_dispatch` sends through the channels of
`services.clients.alert_channels`.

One loop, every `tick_s` real seconds: the incidents' windows (grouped repeats, deferred and
ended incidents), the polls every `poll_s` (supervisor and Redis gone, disk nearly full, models
expired, market data stale in the session, trading still halted), the daily and weekly
summaries after the close, then every delivery that is due. A channel that is misconfigured
leaves the process `degraded`, naming the channel and its variable; the others keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal

from services.alerts.alert_dispatch import DeliveryRules, Dispatcher
from services.alerts.alert_store import AlertStore
from services.alerts.alerts_knobs import AlertsKnobs
from services.base import (
    SYDNEY,
    BaseService,
    Event,
    InvalidParams,
    NotConfigured,
    RpcError,
    on_event,
    rpc,
    run_service,
    socket_is_live,
)
from services.base.knobs import read_knobs
from services.clients.alert_channels import CHANNEL_NAMES, ChannelSetup, channels_from, redact
from services.domain import asx_calendar
from services.domain.alert_incidents import KINDS, IncidentBook, Notice, Occurrence, RoutingPolicy
from services.domain.alert_sources import (
    DiskReading,
    SummaryDue,
    SummaryFigures,
    count_signals,
    disk_occurrence,
    models_expired,
    occurrences_from_event,
    stale_market_data,
    summaries_due,
    summary_text,
)
from services.registry import SUPERVISOR

MAX_LIST = 500
#: prediction's get_recent_predictions returns at most this many: a busy day may hold more.
MAX_PREDICTIONS = 1000
#: "2h", "30m", "90s", "1d": how long a silence lasts.
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Polls the supervisor's socket this many times in a row before calling it gone (a restart of
#: the supervisor takes well under one poll; a dead one stays gone).
SUPERVISOR_MISSES = 2


def parse_duration_s(text: str) -> float:
    """`2h` -> 7200.0; ValueError saying what is allowed."""
    text = text.strip().lower()
    unit = DURATION_UNITS.get(text[-1:]) if text else None
    try:
        value = float(text[:-1]) if unit else float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 2h or 1d")
    return value * (unit or 1)


class AlertsService(BaseService):
    name = "alerts"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.knobs = read_knobs(AlertsKnobs, self.settings.environ)
        self.store: AlertStore | None = None
        self.setup = ChannelSetup()
        self.book = IncidentBook(self.knobs.group_window_s)
        self.dispatcher: Dispatcher | None = None
        self._loop_task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._last_poll = 0.0
        self._supervisor_seen = False
        self._supervisor_misses = 0
        self._redis_misses = 0
        self._stale_symbols: set[str] = set()
        self.counters = {"events": 0, "occurrences": 0, "polls": 0, "poll_errors": 0}

    # ---- life -----------------------------------------------------------------------------------

    async def on_start(self) -> None:
        self.store = AlertStore(self.settings.data_dir / "alerts.db")
        self.setup = channels_from(self.settings.environ, self.settings.secrets, self.knobs.http_timeout_s)
        for channel, problem in self.setup.problems.items():
            self.log.warning("channel %s not used: %s", channel, problem)
        self.book = IncidentBook(self.knobs.group_window_s, self.store.open_incidents())
        k = self.knobs
        self.dispatcher = Dispatcher(
            self.store,
            self.setup.channels,
            DeliveryRules(
                local_tz=SYDNEY,
                routing=RoutingPolicy(routes=k.routes, min_severity=k.min_severity),
                quiet=k.quiet_hours,
                rate_limit=k.rate_limit,
                rate_window_s=k.rate_window_s,
                attempts=k.send_attempts,
                retry_base_s=k.retry_base_s,
                retry_max_s=k.retry_max_s,
                redeliver_s=k.redeliver_s,
                max_age_s=k.max_delivery_age_s,
            ),
            secrets=self.settings.secret_values(),
        )
        self._loop_task = asyncio.create_task(self._loop(), name="alerts-loop")

    async def on_stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self.store is not None:
            self.store.close()

    async def health_details(self) -> dict:
        details: dict[str, Any] = {
            "channels": self._channel_states(),
            "open_incidents": len(self.book.open),
            # The supervisor as this process sees it: up, gone (alerted), or never seen (run alone).
            "supervisor": "up"
            if self._supervisor_seen and not self._supervisor_misses
            else ("gone" if self._supervisor_seen else "not seen"),
            "silenced": {k: v.isoformat() for k, v in self.store.silences(self.clock.now()).items()}
            if self.store
            else {},
            **self.counters,
        }
        warnings = [f"channel {name} is not used: {problem}" for name, problem in self.setup.problems.items()]
        for name, state in details["channels"].items():
            if state.get("state") in ("rejected", "failing"):
                warnings.append(f"channel {name} is {state['state']}: {state.get('last_error')}")
        if warnings:
            details["status"] = "degraded"
            details["warnings"] = warnings
        if not self.setup.configured:
            # Like sentiment without its token: healthy, and it says what is missing.
            details["note"] = (
                "no alert channel is configured: alerts are recorded (alerts list) but reach nobody"
            )
        return details

    def _channel_states(self) -> dict[str, dict]:
        counts = self.store.counts() if self.store else {}
        out: dict[str, dict] = {}
        for name in CHANNEL_NAMES:
            if name in self.setup.problems:
                out[name] = {"state": "misconfigured", "problem": self.setup.problems[name]}
                continue
            if name not in self.setup.channels:
                continue
            last = self.store.last_delivery(name) if self.store else None
            state = "ok"
            if last is not None and last.state == "rejected":
                state = "rejected"
            elif last is not None and last.state in ("retrying", "failed"):
                state = "failing"
            out[name] = {
                "state": state,
                "deliveries": counts.get(name, {}),
                "last_error": last.error if last is not None and last.state != "sent" else None,
            }
        return out

    # ---- events ---------------------------------------------------------------------------------

    @on_event("service_status_changed")
    async def on_service_status_changed(self, event: Event) -> None:
        """A service became fatal, restarts, or runs again."""
        await self._follow(event)

    @on_event("buy_rate_alert")
    async def on_buy_rate_alert(self, event: Event) -> None:
        await self._follow(event)

    @on_event("risk_limit_hit")
    async def on_risk_limit_hit(self, event: Event) -> None:
        await self._follow(event)

    @on_event("task_failed")
    async def on_task_failed(self, event: Event) -> None:
        await self._follow(event)

    @on_event("event_dead_lettered")
    async def on_event_dead_lettered(self, event: Event) -> None:
        await self._follow(event)

    @on_event("storage_halted")
    async def on_storage_halted(self, event: Event) -> None:
        await self._follow(event)

    @on_event("storage_resumed")
    async def on_storage_resumed(self, event: Event) -> None:
        await self._follow(event)

    @on_event("outbox_backlog")
    async def on_outbox_backlog(self, event: Event) -> None:
        await self._follow(event)

    @on_event("market_data_stale")
    async def on_market_data_stale(self, event: Event) -> None:
        await self._follow(event)

    @on_event("ig_mirror_halted")
    async def on_ig_mirror_halted(self, event: Event) -> None:
        await self._follow(event)

    @on_event("ig_mirror_resumed")
    async def on_ig_mirror_resumed(self, event: Event) -> None:
        await self._follow(event)

    async def _follow(self, event: Event) -> None:
        self.counters["events"] += 1
        if self._ready is not None:
            await self._ready.wait()  # an event that arrives during on_start waits for the store
        for occurrence in occurrences_from_event(event.type, event.source, event.data):
            self.observe(occurrence)

    def observe(self, occurrence: Occurrence, now: datetime | None = None) -> list[Notice]:
        """Record one occurrence and queue what it says; the loop sends it at once."""
        assert self.store is not None and self.dispatcher is not None
        now = now or self.clock.now()
        self.counters["occurrences"] += 1
        secrets = self.dispatcher.secrets  # kept out of alerts.db, list_alerts and every message
        occurrence = replace(
            occurrence, title=redact(occurrence.title, secrets), text=redact(occurrence.text, secrets)
        )
        notices, changed = self.book.observe(occurrence, now)
        self._save(notices, changed, now)
        return notices

    def _save(self, notices: list[Notice], changed: list, now: datetime) -> None:
        assert self.store is not None and self.dispatcher is not None
        for incident in changed:
            self.store.save_incident(incident)
        for notice in notices:
            if notice.incident.id is None:
                self.store.save_incident(notice.incident)
            self.dispatcher.enqueue(notice, now)
            self.log.info(
                "%s: %s",
                notice.state,
                notice.title,
                extra={"kind": notice.incident.kind, "severity": notice.severity},
            )
        if notices:
            self._wake.set()

    # ---- the loop -------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self._turn()
            except Exception:
                self.log.exception("alerts loop turn failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.knobs.tick_s)

    async def _turn(self) -> None:
        assert self.dispatcher is not None
        now = self.clock.now()
        notices, changed = self.book.tick(now)
        self._save(notices, changed, now)
        if time.monotonic() - self._last_poll >= self.knobs.poll_s:
            self._last_poll = time.monotonic()
            await self._poll(now)
        await self._summaries(now)
        await self.dispatcher.flush(self.clock.now())

    # ---- polls ----------------------------------------------------------------------------------

    async def _poll(self, now: datetime) -> None:
        self.counters["polls"] += 1
        checks = (self._poll_supervisor, self._poll_redis, self._poll_disks, self._poll_models)
        for check in (*checks, self._poll_market_data, self._poll_trading_halted):
            try:
                result = check(now)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                self.counters["poll_errors"] += 1
                self.log.exception("poll %s failed", check.__name__)

    def _poll_supervisor(self, now: datetime) -> None:
        """The supervisor's socket: gone (after it was seen) opens supervisor_down."""
        live = socket_is_live(self.settings.socket_dir / f"{SUPERVISOR}.sock")
        if live:
            self._supervisor_seen, self._supervisor_misses = True, 0
            self.observe(
                Occurrence("supervisor_down", SUPERVISOR, "", "the supervisor answers again", True), now
            )
            return
        self._supervisor_misses += 1
        if self._supervisor_seen and self._supervisor_misses >= SUPERVISOR_MISSES:
            self.observe(
                Occurrence(
                    "supervisor_down",
                    SUPERVISOR,
                    "The supervisor is gone: nothing restarts crashed services",
                    f"{SUPERVISOR}.sock has not answered for {self._supervisor_misses} polls; run: service_manager.py start",
                ),
                now,
            )

    def _poll_redis(self, now: datetime) -> None:
        connected = self.bus is not None and self.bus.connected
        if connected:
            self._redis_misses = 0
            self.observe(Occurrence("redis_down", "redis", "", "Redis answers again", True), now)
            return
        self._redis_misses += 1
        if self._redis_misses >= 2:
            self.observe(
                Occurrence(
                    "redis_down",
                    "redis",
                    "Redis is down: no events are delivered",
                    f"{self.settings.redis_url.split('://')[0]} Redis unreachable for {self._redis_misses} polls",
                ),
                now,
            )

    def _poll_disks(self, now: datetime) -> None:
        readings: dict[int, DiskReading] = {}
        for label, path in (("data", self.settings.data_dir), ("logs", self.settings.log_dir)):
            try:
                device = os.stat(path).st_dev
                usage = shutil.disk_usage(path)
            except OSError:
                continue
            if device in readings:  # one filesystem holds both: one incident for it
                readings[device] = DiskReading(
                    f"{readings[device].label} and {label}", str(path), usage.free, usage.total
                )
                continue
            readings[device] = DiskReading(label, str(path), usage.free, usage.total)
        for reading in readings.values():
            self.observe(disk_occurrence(reading, self.knobs.disk_min_free_pct), now)

    def _poll_models(self, now: datetime) -> None:
        path = self.settings.models_dir / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            return  # no manifest: ml-model's own health says so
        why = models_expired(manifest, now) if isinstance(manifest, dict) else None
        if why:
            self.observe(Occurrence("models_expired", "ml-model", "The models are expired", why), now)
        else:
            self.observe(Occurrence("models_expired", "ml-model", "", "the models are current", True), now)

    async def _poll_market_data(self, now: datetime) -> None:
        """During the session, the symbols market-data serves stale quotes for."""
        if asx_calendar.phase_at(now) != asx_calendar.Phase.OPEN:
            stale: dict[str, str] = {}
        else:
            try:
                health = await self.call_service("market-data", "health", timeout=5.0, retries=0)
            except RpcError:
                return  # market-data down is the supervisor's alert (service_status_changed)
            stale = stale_market_data(health)
        for symbol, why in stale.items():
            self.observe(Occurrence("market_data_stale", symbol, f"Market data stale: {symbol}", why), now)
        for symbol in self._stale_symbols - set(stale):
            self.observe(Occurrence("market_data_stale", symbol, "", "fresh again", True), now)
        self._stale_symbols = set(stale)

    async def _poll_trading_halted(self, now: datetime) -> None:
        """A halt is announced by risk_limit_hit; its end is read from the portfolio."""
        if ("trading_halted", "paper-trading") not in self.book.open:
            return
        try:
            status = await self.call_service("paper-trading", "get_portfolio_status", timeout=5.0, retries=0)
        except RpcError:
            return
        if not status.get("trading_halted"):
            self.observe(Occurrence("trading_halted", "paper-trading", "", "buying again", True), now)

    # ---- summaries ------------------------------------------------------------------------------

    async def _summaries(self, now: datetime) -> None:
        assert self.store is not None
        due = summaries_due(
            now.astimezone(SYDNEY),
            self.knobs.daily_summary_at,
            self.knobs.weekly_summary,
            asx_calendar.is_trading_day,
            asx_calendar.next_trading_day,
        )
        for summary in due:
            if self.store.has_incident(summary.kind, summary.subject):
                continue
            figures = await self.summary_figures(summary)
            title, text = summary_text(figures)
            self.observe(Occurrence(summary.kind, summary.subject, title, text), now)

    async def summary_figures(self, summary: SummaryDue) -> SummaryFigures:
        """The figures of a daily or weekly summary, from the services' RPCs and the alert record."""
        assert self.store is not None
        missing: list[str] = []
        equity = pnl = None
        trades = None
        try:
            status = await self.call_service("paper-trading", "get_portfolio_status", timeout=10.0, retries=1)
            performance = await self.call_service(
                "paper-trading", "get_trading_performance", timeout=10.0, retries=1, period=summary.period
            )
            equity = float(status["equity"])
            trades = int(performance["number_of_trades"])
            if summary.period == "day":
                pnl = float(status["day_pnl"])
            elif isinstance(performance.get("total_return"), int | float):
                pnl = equity - equity / (1 + performance["total_return"])
        except RpcError as exc:
            missing.append(f"portfolio ({exc.message})")
        signals: dict[str, int] = {}
        capped = None
        try:
            recent = await self.call_service(
                "prediction", "get_recent_predictions", timeout=10.0, retries=1, limit=MAX_PREDICTIONS
            )
            signals, capped = count_signals(
                recent.get("predictions", []), summary.first_day, summary.last_day, SYDNEY, MAX_PREDICTIONS
            )
        except RpcError as exc:
            missing.append(f"signals ({exc.message})")
        start = datetime.combine(summary.first_day, datetime.min.time(), SYDNEY)
        end = datetime.combine(summary.last_day + timedelta(days=1), datetime.min.time(), SYDNEY)
        return SummaryFigures(
            period=summary.period,
            first_day=summary.first_day,
            last_day=summary.last_day,
            equity=equity,
            pnl=pnl,
            trades=trades,
            signals=signals,
            failures=self.store.opened_between(start, end),
            missing=tuple(missing),
            signals_capped_at=capped,
        )

    # ---- RPC ------------------------------------------------------------------------------------

    @rpc
    async def list_alerts(self, limit: int = 20, kind: str | None = None) -> dict:
        """The newest incidents with their state, count and each delivery (channel, state, error)."""
        if not 1 <= limit <= MAX_LIST:
            raise InvalidParams("limit", f"must be in 1..{MAX_LIST}, got {limit}")
        if kind is not None and kind not in KINDS:
            raise InvalidParams("kind", f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        assert self.store is not None
        alerts = self.store.recent(limit, kind)
        return {"alerts": alerts, "count": len(alerts), "open": len(self.book.open)}

    @rpc
    async def silence(self, kind: str, duration: str = "2h") -> dict:
        """Record but do not send alerts of KIND for DURATION (90s, 30m, 2h, 1d); 0s lifts it."""
        if kind not in KINDS:
            raise InvalidParams("kind", f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        try:
            seconds = 0.0 if duration.strip() in ("0", "0s") else parse_duration_s(duration)
        except ValueError as exc:
            raise InvalidParams("duration", str(exc)) from None
        if seconds > 30 * 86400:
            raise InvalidParams("duration", "at most 30d")
        assert self.store is not None
        now = self.clock.now()
        until = now + timedelta(seconds=seconds)
        self.store.silence(kind, until, now)
        self.log.info("silenced %s until %s", kind, until.isoformat())
        return {"kind": kind, "until": until.isoformat(), "silenced": seconds > 0}

    @rpc
    async def test_channel(self, channel: str | None = None) -> dict:
        """Send a test message to one channel (or each configured one); `ok` only if accepted."""
        if channel is not None and channel not in CHANNEL_NAMES:
            raise InvalidParams("channel", f"unknown channel {channel!r}; known: {', '.join(CHANNEL_NAMES)}")
        names = [channel] if channel else list(self.setup.configured)
        if not names:
            raise NotConfigured(
                "no alert channel is configured: set e.g. TRADING_ALERTS_WEBHOOK_URL (see README, Alert channels)"
            )
        assert self.dispatcher is not None
        results = {}
        for name in names:
            if name in self.setup.problems:
                results[name] = {"ok": False, "error": f"misconfigured: {self.setup.problems[name]}"}
            elif name not in self.setup.channels:
                results[name] = {"ok": False, "error": f"{name} is not configured (variables: see README)"}
            else:
                delivery_id, report = await self.dispatcher.send_test(name, self.clock.now())
                results[name] = {
                    "ok": report.ok,
                    "attempts": report.attempts,
                    "error": report.error,
                    "delivery_id": delivery_id,
                }
        return {"ok": all(r["ok"] for r in results.values()), "channels": results}

    @rpc
    async def get_summary(self, period: Literal["day", "week"] = "day") -> dict:
        """Today's (or this week's) summary figures and text, as the scheduled summary would send."""
        today = self.clock.now_sydney().date()
        first = today - timedelta(days=today.weekday()) if period == "week" else today
        kind = "daily_summary" if period == "day" else "weekly_summary"
        summary = SummaryDue(kind, today.isoformat(), period, first, today)
        figures = await self.summary_figures(summary)
        title, text = summary_text(figures)
        return {
            "period": period,
            "first_day": first.isoformat(),
            "last_day": today.isoformat(),
            "equity": figures.equity,
            "pnl": figures.pnl,
            "trades": figures.trades,
            "signals": dict(figures.signals),
            "failures": dict(figures.failures),
            "missing": list(figures.missing),
            "title": title,
            "text": text,
        }


if __name__ == "__main__":
    run_service(AlertsService)
