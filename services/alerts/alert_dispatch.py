"""From messages to deliveries, and deliveries to channels: routing, holds, digests, retries.

`enqueue` records one delivery per channel the message is routed to (a silenced kind's are
recorded as `silenced`); `flush` sends what is due: per channel, deliveries held by quiet hours
wait for their end, the rest go as one message (a digest when there are several), unless the
channel's rate limit holds them. A send is retried with backoff within the call
(`send_with_retries`); when the channel still fails, a retryable failure is tried again
`redeliver_s` later until the delivery is `max_age_s` old (then `failed`), and a refusal (4xx)
ends it as `rejected`. Every outcome is written to the store before the next send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, tzinfo
from typing import Any

from services.alerts.alert_store import AlertStore, Delivery
from services.clients.alert_channels import Channel, DeliveryReport, Message, redact, send_with_retries
from services.domain.alert_incidents import (
    RANK,
    SEVERITIES,
    Notice,
    QuietHours,
    RoutingPolicy,
    digest,
    plan_delivery,
    route,
)


@dataclass(frozen=True, slots=True)
class DeliveryRules:
    local_tz: tzinfo
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    quiet: QuietHours | None = None
    rate_limit: int = 20
    rate_window_s: float = 3600.0
    attempts: int = 3
    retry_base_s: float = 1.0
    retry_max_s: float = 30.0
    redeliver_s: float = 60.0
    max_age_s: float = 86400.0


Sender = Callable[..., Awaitable[DeliveryReport]]


class Dispatcher:
    def __init__(
        self,
        store: AlertStore,
        channels: Mapping[str, Channel],
        rules: DeliveryRules,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        sender: Sender = send_with_retries,
        secrets: Iterable[str] = (),
    ):
        self.store = store
        self.channels = channels
        # Every credential the process knows: none of them may leave in a message, whatever an
        # event's text carried.
        self.secrets = tuple({*secrets, *(s for c in channels.values() for s in c.secrets)})
        self.rules = rules
        self.sleep = sleep
        self.sender = sender
        self._lock = asyncio.Lock()  # one flush at a time: a delivery is never sent twice

    def enqueue(self, notice: Notice, now: datetime) -> list[int]:
        """One delivery per channel this message goes to; the ids."""
        incident = notice.incident
        silenced = self.store.silences(now).get(incident.kind)
        ids = []
        for channel in route(incident.kind, notice.severity, list(self.channels), self.rules.routing):
            state, reason = (
                ("silenced", f"silenced until {silenced.isoformat()}") if silenced else ("pending", None)
            )
            ids.append(
                self.store.add_delivery(
                    incident.id,
                    channel,
                    incident.kind,
                    incident.subject,
                    notice.state,
                    notice.severity,
                    notice.title,
                    notice.text,
                    state,
                    now,
                    now,
                    reason,
                )
            )
        return ids

    async def send_test(self, channel_name: str, now: datetime) -> tuple[int, DeliveryReport]:
        """A test message straight to one channel (no quiet hours, no rate limit: a person asked)."""
        channel = self.channels[channel_name]
        title = "Test alert from the ASX trading desk"
        text = f"If you read this, the {channel_name} channel works ({now.isoformat()})."
        delivery_id = self.store.add_delivery(
            None, channel_name, "test", channel_name, "test", "info", title, text, "pending", now, now
        )
        message = Message(title, text, "info", "test", "test", channel_name, now.isoformat())
        async with self._lock:
            report = await self._send(channel, message)
            self._record([delivery_id], channel_name, report, now, created=now)
        return delivery_id, report

    async def flush(self, now: datetime) -> int:
        """Send every delivery that is due; how many messages the channels accepted."""
        async with self._lock:
            by_channel: dict[str, list[Delivery]] = {}
            for delivery in self.store.due(now):
                by_channel.setdefault(delivery.channel, []).append(delivery)
            # Channels side by side: one that is slow or retrying never delays the others.
            counts = await asyncio.gather(
                *(self._flush_channel(n, due, now) for n, due in by_channel.items())
            )
            return sum(counts)

    async def _flush_channel(self, name: str, due: list[Delivery], now: datetime) -> int:
        channel = self.channels.get(name)
        if channel is None:  # its configuration went away across a restart
            self.store.finish([d.id for d in due], "failed", 0, f"{name} is not configured any more", now)
            return 0
        rules = self.rules
        ready: list[Delivery] = []
        for delivery in due:  # quiet hours hold each non-critical one on its own
            plan = plan_delivery(delivery.severity, now, rules.local_tz, rules.quiet, [], 1 << 30, 1.0)
            if plan.send_now:
                ready.append(delivery)
            else:
                self.store.hold([delivery.id], str(plan.hold_reason), plan.until or now)
        # Fresh messages go one by one; those that waited (held, or retrying after a failure) go
        # together as one digest, so a backlog never floods the channel when it frees.
        late = [d for d in ready if d.state != "pending"]
        batches = ([late] if late else []) + [[d] for d in ready if d.state == "pending"]
        accepted = 0
        for index, batch in enumerate(batches):
            sent = self.store.sends_since(name, now - timedelta(seconds=rules.rate_window_s))
            plan = plan_delivery(
                "critical", now, rules.local_tz, None, sent, rules.rate_limit, rules.rate_window_s
            )
            if not plan.send_now:
                waiting = [d.id for rest in batches[index:] for d in rest]
                self.store.hold(waiting, "rate_limited", plan.until or now)
                break
            report = await self._send(channel, self._message(batch, now))
            self._record(
                [d.id for d in batch], name, report, now, created=min(_at(d.created_at) for d in batch)
            )
            accepted += report.ok
        return accepted

    def _message(self, ready: list[Delivery], now: datetime) -> Message:
        if len(ready) == 1:
            d = ready[0]
            late = ""
            if d.state in ("held", "retrying"):
                late = f"\n(held since {d.created_at}: {d.hold_reason or d.error or 'retrying'})"
            return Message(
                d.title,
                d.text + late,
                d.severity,
                d.kind,
                d.message_state,
                d.subject,
                d.created_at,
                d.incident_id,
            )
        reasons = {d.hold_reason for d in ready if d.hold_reason} or {"retrying"}
        title, text = digest([(d.severity, d.title, d.text) for d in ready], sorted(reasons)[0])
        worst = SEVERITIES[max(RANK[d.severity] for d in ready)]
        return Message(title, text, worst, "digest", "digest", "", now.isoformat(), None, len(ready))

    async def _send(self, channel: Channel, message: Message) -> DeliveryReport:
        rules = self.rules
        message = replace(
            message, title=redact(message.title, self.secrets), text=redact(message.text, self.secrets)
        )
        return await self.sender(
            channel,
            message,
            attempts=rules.attempts,
            base_s=rules.retry_base_s,
            max_s=rules.retry_max_s,
            sleep=self.sleep,
        )

    def _record(
        self, ids: list[int], channel: str, report: DeliveryReport, now: datetime, created: datetime
    ) -> None:
        if report.ok:
            self.store.finish(ids, "sent", report.attempts, None, now)
            self.store.record_send(channel, now)
            return
        error = report.error or "failed"
        too_old = now - created >= timedelta(seconds=self.rules.max_age_s)
        if report.retryable and not too_old:
            self.store.retry_later(
                ids, report.attempts, error, now + timedelta(seconds=self.rules.redeliver_s)
            )
        else:
            self.store.finish(ids, "failed" if report.retryable else "rejected", report.attempts, error, now)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)
