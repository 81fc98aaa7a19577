"""Events on Redis: the envelope, pub/sub for live events, Streams for durable ones.

- Every event goes out on the pub/sub channel `trading:events:<type>`.
- Durable events (those that move money or state) are also appended to the stream
  `trading:stream:<type>`. Each consuming service reads them through its own consumer group,
  acknowledges an entry only after its handler succeeded, re-reads its pending entries after a
  restart (and claims, with XAUTOCLAIM, entries another consumer of its group left idle), and
  moves an entry to `trading:dead:<type>` once Redis has delivered it TRADING_EVENTS_MAX_DELIVERIES
  times without it being settled (counted by Redis, so across restarts), publishing
  `event_dead_lettered`. A handler failing because a dependency is away (or its own storage
  cannot be written: -32007) is retried in place with capped backoff and is not counted against
  the entry.
- While Redis is away the bus keeps reconnecting with backoff, resubscribes when it is back, and
  holds durable events published with `publish` meanwhile in a bounded in-memory outbox that it
  flushes in order (an overflow is counted and logged). The money path does not rely on it:
  prediction and paper-trading save their events in SQLite (services.base.outbox) and send them
  with `publish_now`, which queues nothing.
- Each consuming service reads through its consumer group (`group`: the service's name, or
  paper-trading's `paper-trading@<ledger id>`).
- Event types, and which of them are durable, come from the registry (services/registry.py): the
  bus refuses to publish or subscribe to a type that is not registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import orjson

from services.base.clock import SuiteClock
from services.base.knobs import knob
from services.base.redaction import mask_url
from services.registry import DURABLE_EVENTS, EVENTS, EventType

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("events")

CHANNEL_PREFIX = "trading:events:"
STREAM_PREFIX = "trading:stream:"
DEAD_PREFIX = "trading:dead:"
HEARTBEAT_PREFIX = "trading:heartbeat:"
DURABLE_TYPES = DURABLE_EVENTS
EVENT_TYPES = frozenset(EVENTS)
STREAM_MAXLEN = 10_000  # per event type; keeps the managed Redis small
OUTBOX_MAX = 10_000
# The heartbeat's PING must answer within this, or Redis counts as away (a stopped or hung
# server keeps the socket open: only a deadline tells). Well under the supervisor's default
# health interval (5 s), so `health` says degraded within two of them.
PING_TIMEOUT_S = 2.0


def redis_from_url(url: str, **kwargs) -> Redis:
    """`redis.asyncio.from_url` telling Redis the client's version (CLIENT SETINFO) from
    `redis.__version__`: by default redis-py looks it up with `importlib.metadata` for each new
    pool, which scans the installed packages and parses their metadata with the email parser (in a
    forked service that alone copies about 0.5 MB of the zygote's pages, and costs ~10 ms)."""
    import redis
    import redis.asyncio as aioredis
    from redis.driver_info import DriverInfo

    kwargs.setdefault("driver_info", DriverInfo(lib_version=redis.__version__))
    return aioredis.from_url(url, **kwargs)


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    source: str
    timestamp: str
    seq: int
    data: dict

    def to_json(self) -> bytes:
        # Not dataclasses.asdict: it deep-copies `data` (a prediction's inputs and features) only
        # to serialise it; orjson writes nested dicts, lists and dataclasses the same way.
        envelope = {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "timestamp": self.timestamp,
            "seq": self.seq,
            "data": self.data,
        }
        return orjson.dumps(envelope, default=str)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        obj = orjson.loads(raw)
        return cls(
            id=str(obj["id"]),
            type=str(obj["type"]),
            source=str(obj["source"]),
            timestamp=str(obj["timestamp"]),
            seq=int(obj["seq"]),
            data=obj.get("data") or {},
        )


Handler = Callable[[Event], Awaitable[None]]


def retry_delay_s(failures: int) -> float:
    """Wait before a failed durable entry is tried again: 0.2 s doubling to 5 s. With the default
    8 deliveries an entry is retried for about 16 s, long enough for a dependency to restart."""
    return min(0.2 * 2 ** (failures - 1), 5.0)


@dataclass(frozen=True, slots=True)
class EventBusKnobs:
    """The event bus's knobs (TRADING_EVENTS_*), the same for every service."""

    service: ClassVar[str] = "events"

    max_deliveries: int = knob(
        8, low=1, high=100, doc="a durable event failing this often goes to trading:dead"
    )
    outbox_bound: int = knob(
        100,
        low=1,
        high=1_000_000,
        doc="saved durable events not yet on Redis past which health degrades and outbox_backlog is sent",
    )


class UnknownEventType(ValueError):
    """An event type that is not registered: add it to services/registry.py (EVENTS) first."""


def event_type_of(event_type: str, event_types: Mapping[str, EventType] = EVENTS) -> EventType:
    """The registered type named `event_type`; UnknownEventType when there is none."""
    found = event_types.get(event_type) if isinstance(event_type, str) else None
    if found is None:
        raise UnknownEventType(
            f"unknown event type {event_type!r}: register it in services/registry.py "
            f"(known: {', '.join(sorted(event_types))})"
        )
    return found


def check_handler(event_type: str, durable: bool, event_types: Mapping[str, EventType] = EVENTS) -> None:
    """Refuse a handler of an unregistered type, or a durable handler of a type that is not kept
    in a stream (it would never receive anything)."""
    registered = event_type_of(event_type, event_types)
    if durable and not registered.durable:
        raise ValueError(
            f"{event_type} is not a durable event type (services/registry.py): "
            "a durable handler would never receive it"
        )


def on_event(event_type: str, durable: bool = False) -> Callable:
    """Mark an async method as the handler of `event_type` (durable: consumed from the stream).

    The type must be registered: BaseService checks its handlers when the class is defined."""

    def mark(func: Callable) -> Callable:
        vars(func)["__event__"] = (event_type, durable)  # a function attribute, as @rpc's
        return func

    return mark


class EventBus:
    """One service's connection to the event bus."""

    def __init__(
        self,
        url: str,
        service: str,
        clock: SuiteClock,
        *,
        max_deliveries: int = 8,
        heartbeat_s: float = 5.0,
        on_state_change: Callable[[bool], None] | None = None,
        event_types: Mapping[str, EventType] = EVENTS,
        group: str | None = None,
    ):
        self.url = url
        #: The consumer group of its durable streams: the service's name unless the service ties
        #: it to its ledger (paper-trading: one group per ledger, never split between two books).
        self.group = group or service
        self.event_types = event_types
        self.service = service
        self.clock = clock
        self.max_deliveries = max_deliveries
        self.heartbeat_s = heartbeat_s
        self.on_state_change = on_state_change
        self.connected = False
        self.counters = {
            "published": 0, "received": 0, "dropped": 0, "dead_lettered": 0, "handler_errors": 0,
            "dependency_waits": 0,
        }  # fmt: skip
        self._seq = itertools.count(1)
        self._handlers: dict[str, list[Handler]] = {}
        self._durable_handlers: dict[str, Handler] = {}
        self._outbox: deque[tuple[str, bytes]] = deque(maxlen=OUTBOX_MAX)
        self._redis: Redis | None = None
        self._tasks: list[asyncio.Task] = []
        self._handler_tasks: set[asyncio.Task] = set()
        self._up = asyncio.Event()
        self._lost = asyncio.Event()  # another loop saw Redis fail: the watcher checks at once

    # ---- registration ---------------------------------------------------------------------

    def subscribe(self, event_type: str, handler: Handler, durable: bool = False) -> None:
        check_handler(event_type, durable, self.event_types)
        if durable:
            if event_type in self._durable_handlers:
                raise ValueError(f"{self.service}: a durable handler for {event_type} already exists")
            self._durable_handlers[event_type] = handler
        else:
            self._handlers.setdefault(event_type, []).append(handler)

    # ---- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        import redis.exceptions  # imported here so a bus-less test never pays for it
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # redis-py's default retries a failed command 3 times with up to 7 s of backoff, timeouts
        # included: a command on a dead or stopped Redis then hangs for many seconds before the
        # bus may say so. One immediate retry on a new connection (a pooled one from before a
        # Redis restart is dead) and no more: the loops below back off and report by themselves.
        self._redis = redis_from_url(
            self.url,
            socket_connect_timeout=1.0,
            socket_timeout=5.0,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
        )
        self._tasks.append(asyncio.create_task(self._watch_connection(), name="bus-watch"))
        if self._handlers:
            self._tasks.append(asyncio.create_task(self._pubsub_loop(), name="bus-pubsub"))
        for event_type, handler in self._durable_handlers.items():
            self._tasks.append(
                asyncio.create_task(self._stream_loop(event_type, handler), name=f"bus-stream-{event_type}")
            )

    async def wait_connected(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), timeout_s)
        return self.connected

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._handler_tasks:
            await asyncio.wait(set(self._handler_tasks), timeout=2.0)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.delete(HEARTBEAT_PREFIX + self.service)
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None

    @property
    def _client(self) -> Redis:
        """The client `start` opened; the loops it starts run only while there is one."""
        if self._redis is None:
            raise ConnectionError("event bus not started")
        return self._redis

    def _set_connected(self, up: bool) -> None:
        if up == self.connected:
            return
        self.connected = up
        if up:
            self._up.set()
            log.info("redis connected", extra={"redis_url": mask_url(self.url)})
        else:
            self._up.clear()
            self._lost.set()
            log.warning("redis disconnected; reconnecting", extra={"redis_url": mask_url(self.url)})
        if self.on_state_change is not None:
            self.on_state_change(up)

    async def _watch_connection(self) -> None:
        """Ping, flush the outbox, keep the heartbeat key fresh; back off while Redis is away."""
        delay = 0.1
        while True:
            try:
                self._lost.clear()
                # redis types ping for sync and async alike
                await asyncio.wait_for(self._client.ping(), PING_TIMEOUT_S)  # type: ignore[arg-type]
                self._set_connected(True)
                await self._flush_outbox()
                await self._client.set(
                    HEARTBEAT_PREFIX + self.service,
                    orjson.dumps({"service": self.service, "at": self.clock.now().isoformat()}),
                    ex=max(3, int(self.heartbeat_s * 3)),
                )
                delay = 0.1
                # Woken early when a stream, pub/sub or publish call lost Redis: reconnected (and
                # healthy again) within one backoff step of Redis's return, not a heartbeat later.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._lost.wait(), min(self.heartbeat_s, 1.0) if self._outbox else self.heartbeat_s
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                self._set_connected(False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # ---- publishing -------------------------------------------------------------------------

    def make_event(self, event_type: str, data: dict) -> Event:
        return Event(
            id=uuid.uuid4().hex,
            type=event_type,
            source=self.service,
            timestamp=self.clock.now().isoformat(),
            seq=next(self._seq),
            data=data,
        )

    async def publish(self, event_type: str, data: dict, durable: bool | None = None) -> Event:
        """Publish now; a durable event that cannot be sent yet waits in the outbox.
        An unregistered `event_type` raises UnknownEventType (nothing is sent)."""
        registered = event_type_of(event_type, self.event_types)
        event = self.make_event(event_type, data)
        durable = registered.durable if durable is None else durable
        payload = event.to_json()
        if durable and self._outbox:
            self._queue(event_type, payload)  # keep order behind what is waiting
            return event
        try:
            await self._send(event_type, payload, durable)
        except Exception:
            self._set_connected(False)
            if durable:
                self._queue(event_type, payload)
                log.warning("redis unavailable: %s queued in outbox", event_type)
            else:
                self.counters["dropped"] += 1
        return event

    def _queue(self, event_type: str, payload: bytes) -> None:
        """Keep a durable event in memory until Redis is back. Bounded: past OUTBOX_MAX the oldest
        goes, counted and logged (the money path's events never come here: prediction and
        paper-trading keep theirs in SQLite and send them with publish_now)."""
        if len(self._outbox) == OUTBOX_MAX:
            lost_type, _ = self._outbox[0]
            self.counters["dropped"] += 1
            log.error(
                "in-memory outbox full (%d events): the oldest %s is dropped",
                OUTBOX_MAX,
                lost_type,
                extra={"event_type": lost_type},
            )
        self._outbox.append((event_type, payload))

    async def publish_now(self, event: Event) -> bool:
        """Send `event` now; True once Redis has it (stream entry and channel), False when it could
        not be sent. Nothing is queued: the caller keeps it (a SQLite outbox) and sends it again,
        so a durable event survives the process too, not only a Redis outage."""
        registered = event_type_of(event.type, self.event_types)
        try:
            await self._send(event.type, event.to_json(), registered.durable)
        except Exception:
            self._set_connected(False)
            return False
        return True

    async def _send(self, event_type: str, payload: bytes, durable: bool) -> None:
        if self._redis is None:
            raise ConnectionError("event bus not started")
        async with self._redis.pipeline(transaction=False) as pipe:
            if durable:
                pipe.xadd(
                    STREAM_PREFIX + event_type, {"event": payload}, maxlen=STREAM_MAXLEN, approximate=True
                )
            pipe.publish(CHANNEL_PREFIX + event_type, payload)
            await pipe.execute()
        self.counters["published"] += 1

    async def _flush_outbox(self) -> None:
        while self._outbox:
            event_type, payload = self._outbox[0]
            await self._send(event_type, payload, durable=True)
            self._outbox.popleft()

    @property
    def outbox_size(self) -> int:
        return len(self._outbox)

    async def dead_letter_sizes(self) -> dict[str, int]:
        """Entries in each durable type's dead-letter stream `trading:dead:<type>` (the gateway's
        /metrics); raises ConnectionError or a Redis error when Redis does not answer."""
        names = sorted(name for name, e in self.event_types.items() if e.durable)
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.xlen(DEAD_PREFIX + name)
            sizes = await pipe.execute()
        return dict(zip(names, (int(n) for n in sizes), strict=True))

    # ---- consuming --------------------------------------------------------------------------

    def _run_handler(self, handler: Handler, event: Event) -> None:
        async def run() -> None:
            try:
                await handler(event)
            except Exception:
                self.counters["handler_errors"] += 1
                log.exception("handler for %s failed", event.type)

        task = asyncio.create_task(run())
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)

    async def _pubsub_loop(self) -> None:
        channels = [CHANNEL_PREFIX + t for t in self._handlers]
        delay = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
                delay = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    try:
                        event = Event.from_json(message["data"])
                    except (ValueError, KeyError, TypeError):
                        log.warning("malformed event on %s", message.get("channel"))
                        continue
                    self.counters["received"] += 1
                    for handler in self._handlers.get(event.type, ()):
                        self._run_handler(handler, event)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._set_connected(False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _stream_loop(self, event_type: str, handler: Handler) -> None:
        """At-least-once delivery through this bus's consumer group (see `group`)."""
        import redis.exceptions

        stream, group, consumer = STREAM_PREFIX + event_type, self.group, self.service
        delay = 0.1
        while True:
            try:
                try:
                    await self._client.xgroup_create(stream, group, id="0", mkstream=True)
                except redis.exceptions.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                delay = 0.1
                # Entries another consumer of this group read and left (a renamed or vanished
                # consumer) come to us once idle for a minute; ours we read below anyway.
                await self._client.xautoclaim(stream, group, consumer, min_idle_time=60_000, count=100)
                while True:
                    # Our own pending entries first: delivered before a crash or a failed handler.
                    reply = await self._client.xreadgroup(group, consumer, {stream: "0"}, count=100)
                    entries = reply[0][1] if reply else []
                    if not entries:
                        reply = await self._client.xreadgroup(
                            group, consumer, {stream: ">"}, count=100, block=1000
                        )
                        entries = reply[0][1] if reply else []
                    failures = await self._deliver(stream, group, event_type, entries, handler)
                    if failures:
                        await asyncio.sleep(retry_delay_s(failures))
            except asyncio.CancelledError:
                raise
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):  # Redis restarted without its data: recreate
                    log.exception("stream %s", stream)
                await asyncio.sleep(delay)
            except Exception:
                self._set_connected(False)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _deliver(
        self, stream: str, group: str, event_type: str, entries: list, handler: Handler
    ) -> int:
        """Run the handler on each entry in order; 0 when every entry was settled, else how many
        times the entry it stopped on has been delivered (it stays pending and is read again).

        The delivery count is Redis's (XPENDING): every read of a pending entry counts, across
        restarts, so an entry that crashes the process is dead-lettered too once it has been
        delivered `max_deliveries` times. A handler failing because a dependency is away
        (DependencyUnavailable, a timeout, a refused connection) is not the entry's fault: it is
        retried in place with capped backoff, without a new delivery, until the dependency answers
        or the handler settles it another way (paper-trading expires a prediction past its age).
        """
        delivered = await self._delivery_counts(stream, group, entries)
        for entry_id, fields in entries:
            raw = fields.get(b"event") if fields else None
            try:
                event = Event.from_json(raw) if raw is not None else None
            except (ValueError, KeyError, TypeError):
                event = None
            if event is None:
                await self._dead_letter(stream, group, event_type, entry_id, fields, "malformed entry", 1)
                continue
            count = delivered.get(entry_id, 1)
            if count > self.max_deliveries:  # it never settled, e.g. it crashed the consumer each time
                error = f"delivered {count} times without being settled (it may crash the consumer)"
                await self._dead_letter(stream, group, event_type, entry_id, fields, error, count)
                continue
            try:
                await self._handle_waiting_for_dependencies(event_type, handler, event)
            except Exception as exc:
                self.counters["handler_errors"] += 1
                log.warning(
                    "durable %s handler failed (delivery %d/%d): %r",
                    event_type,
                    count,
                    self.max_deliveries,
                    exc,
                )
                if count >= self.max_deliveries:
                    await self._dead_letter(stream, group, event_type, entry_id, fields, repr(exc), count)
                    continue
                return count  # keep order: retry this entry before any later one
            self.counters["received"] += 1
            await self._client.xack(stream, group, entry_id)
        return 0

    async def _handle_waiting_for_dependencies(self, event_type: str, handler: Handler, event: Event) -> None:
        waits = 0
        while True:
            try:
                await handler(event)
                return
            except Exception as exc:
                if not dependency_unavailable(exc):
                    raise
                waits += 1
                self.counters["dependency_waits"] += 1
                if waits == 1 or waits % 20 == 0:
                    log.warning("durable %s waits for a dependency (try %d): %r", event_type, waits, exc)
                await asyncio.sleep(retry_delay_s(waits))

    async def _delivery_counts(self, stream: str, group: str, entries: list) -> dict[bytes, int]:
        """Redis's delivery count of each entry (this read included)."""
        if not entries:
            return {}
        rows = await self._client.xpending_range(
            stream, group, min=entries[0][0], max=entries[-1][0], count=len(entries) + 10
        )
        return {_as_bytes(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def _dead_letter(
        self, stream, group, event_type, entry_id, fields, error: str, delivered: int
    ) -> None:
        payload = dict(fields or {})
        payload[b"error"] = error.encode()
        payload[b"consumer"] = self.service.encode()
        await self._client.xadd(DEAD_PREFIX + event_type, payload, maxlen=STREAM_MAXLEN, approximate=True)
        await self._client.xack(stream, group, entry_id)
        self.counters["dead_lettered"] += 1
        log.error("durable %s entry %s moved to the dead-letter stream: %s", event_type, entry_id, error)
        # An alert for whoever watches (the dashboard, and what routes alerts to a person).
        await self.publish(
            "event_dead_lettered",
            {
                "event_type": event_type,
                "entry_id": _as_bytes(entry_id).decode(),
                "consumer": self.service,
                "delivered": delivered,
                "error": error,
                "dead_letter_stream": DEAD_PREFIX + event_type,
            },
        )


def dependency_unavailable(exc: BaseException) -> bool:
    """A failure that says a dependency is away or slow (not that the event is bad). The
    service's own storage counts: a handler refused because its database cannot be written
    (StorageUnavailable, -32007) waits for the disk as it would for a service."""
    from services.base.rpc import DependencyUnavailable, RpcTimeout, StorageUnavailable

    return isinstance(
        exc, DependencyUnavailable | RpcTimeout | StorageUnavailable | ConnectionError | TimeoutError
    )


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
