"""BaseService: the life of one service process, laid out in order.

config -> startup (socket checks, bind, `on_start`, event bus) -> serve -> two-stage shutdown
(first signal: stop accepting, let in-flight requests finish within a grace period, `on_stop`,
remove the socket, exit 0; a second signal exits at once).

A subclass sets `name`, marks its JSON-RPC methods with `@rpc` and its event handlers with
`@on_event`, and may override `on_start`, `on_stop` and `health_details`. An un-started
`BaseService('test')` can still call other services with `call_service`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import itertools
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.base.clock import SuiteClock, get_clock
from services.base.config import ConfigError, Settings, get_settings
from services.base.events import (
    Event,
    EventBus,
    EventBusKnobs,
    UnknownEventType,
    check_handler,
    event_type_of,
    on_event,
)
from services.base.knobs import read_knobs
from services.base.logs import setup_logging
from services.base.outbox import OutboxWatch
from services.base.rpc import (
    ConnectionLost,
    DependencyUnavailable,
    InternalError,
    InvalidParams,
    MethodNotFound,
    MethodSpec,
    NotConfigured,
    NotFound,
    RpcClient,
    RpcError,
    RpcKnobs,
    RpcServer,
    RpcTimeout,
    ServiceError,
    rpc,
)
from services.base.socket_dir import UnsafeSocketDir, open_private_file, prepare_socket_dir, socket_is_live
from services.base.storage import LedgerMisconfigured
from services.registry import EVENTS, SERVICES, SUPERVISOR, EventType

if TYPE_CHECKING:
    import psutil

__all__ = [
    "EXIT_NEEDS_OPERATOR",
    "BaseService",
    "DependencyUnavailable",
    "Event",
    "InternalError",
    "InvalidParams",
    "LedgerDamaged",
    "NotConfigured",
    "NotFound",
    "RpcError",
    "RpcTimeout",
    "ServiceAlreadyRunning",
    "ServiceError",
    "UnknownEventType",
    "UnsafeSocketDir",
    "on_event",
    "prepare_socket_dir",
    "rpc",
]

VERSION = "0.1.0"
BUILTIN_METHODS = frozenset({"health", "metrics", "shutdown", "list_methods"})
LATENCY_SAMPLES = 2048
#: Upper bounds (s) of the latency histogram in `metrics` (the gateway's /metrics exports it).
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

log = logging.getLogger("service")


class ServiceAlreadyRunning(RuntimeError):
    """Another live process already serves this socket: stop it first, or use the manager."""


#: A service's exit status when it must not be restarted until a person acts (sysexits'
#: EX_CONFIG): a damaged ledger (LedgerDamaged), one that cannot take its store's pragmas
#: (LedgerMisconfigured), or a socket directory others could write (UnsafeSocketDir). The
#: supervisor marks it fatal at once, with the service's last line as the reason.
EXIT_NEEDS_OPERATOR = 78


class LedgerDamaged(RuntimeError):
    """A service's SQLite database fails its integrity check: trading on it could lose money."""


def verify_ledger(path: Path) -> None:
    """PRAGMA quick_check on `path`, opened read-only; LedgerDamaged naming what failed.

    A file that is not a database, or a damaged page, must stop the service before it reads or
    writes anything: no partial trade is ever recorded on a ledger that is already wrong.
    """
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows = [str(row[0]) for row in db.execute("PRAGMA quick_check").fetchall()]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:  # not a database at all, or a page too broken to walk
        rows = [str(exc)]
    if rows != ["ok"]:
        first = rows[0] if rows else "no answer"
        more = f" and {len(rows) - 1} more problem(s)" if len(rows) > 1 else ""
        raise LedgerDamaged(
            f"{path} failed its integrity check ({first}{more}): restore a backup"
            " (service_manager.py restore) or move the file aside"
        )


class MethodStats:
    __slots__ = ("buckets", "count", "errors", "latencies", "latency_sum_s")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        #: Calls per bucket of LATENCY_BUCKETS_S since start (not cumulative; the last: above all).
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum_s = 0.0

    def observe(self, elapsed_s: float) -> None:
        self.latencies.append(elapsed_s)
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, elapsed_s)] += 1
        self.latency_sum_s += elapsed_s

    def summary(self) -> dict:
        ordered = sorted(self.latencies)

        def pct(q: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

        return {
            "count": self.count,
            "errors": self.errors,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": round(ordered[-1] * 1000, 3) if ordered else None,
            # Cumulative counts per upper bound in seconds, Prometheus's histogram shape.
            "histogram": {
                "le_s": [*LATENCY_BUCKETS_S, None],
                "counts": list(itertools.accumulate(self.buckets)),
                "sum_s": round(self.latency_sum_s, 6),
            },
        }


def hold_instance_lock(path: Path) -> int:
    """Take the exclusive lock `path` for as long as the returned descriptor stays open.

    One copy per service: the lock is taken before the socket is bound (checking the socket and
    then binding leaves a window in which two copies both see it free), and the kernel releases
    it when the process dies, however it dies, so a crash never leaves a stale lock. The holder's
    pid is written into the file for the message a second copy prints.
    ServiceAlreadyRunning when another process holds it; UnsafeSocketDir when `path` is a
    symlink (never followed) or not a regular file of ours.
    """
    fd = open_private_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ServiceAlreadyRunning(
            f"another copy holds {path} (pid {holder}): stop it first, or use the manager"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class BaseService:
    name = "base"
    version = VERSION
    #: How long shutdown waits for in-flight requests before it cancels them.
    shutdown_grace_s = 10.0
    #: How long a domain call waits for `on_start` to finish before it is refused.
    ready_wait_s = 30.0
    #: The event types this service may publish and handle: the registry's (services/registry.py).
    #: Only a process outside the suite (a test's demo service) extends it with its own types.
    event_types: Mapping[str, EventType] = EVENTS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse, when the class is defined, a handler of an unregistered event type."""
        super().__init_subclass__(**kwargs)
        for event_type, durable in cls._handler_markers().values():
            check_handler(event_type, durable, cls.event_types)

    def __init__(self, name: str | None = None, settings: Settings | None = None):
        if name is not None:
            self.name = name
        self.settings = settings or get_settings()
        self.clock: SuiteClock = get_clock()
        self.lifecycle = "stopped"
        self.started_at: float | None = None
        self.log = logging.getLogger(self.name)
        self.bus: EventBus | None = None
        self._clients: dict[str, RpcClient] = {}
        self._server: RpcServer | None = None
        self._instance_lock: int | None = None  # fd of <socket dir>/<name>.lock (hold_instance_lock)
        self._stop = asyncio.Event()
        self._ready: asyncio.Event | None = None
        self._signals = 0
        self._stats: dict[str, MethodStats] = {}
        self._methods = self._collect_methods()
        self._process: psutil.Process | None = None
        self._started_notice: asyncio.Task | None = None

    # ---- registry ---------------------------------------------------------------------------

    def _collect_methods(self) -> dict[str, MethodSpec]:
        methods: dict[str, MethodSpec] = {}
        for attr in dir(type(self)):
            func = getattr(type(self), attr, None)
            if callable(func) and getattr(func, "__rpc__", False):
                methods[attr] = MethodSpec.from_function(attr, getattr(self, attr))
        return methods

    @classmethod
    def _handler_markers(cls) -> dict[str, tuple[str, bool]]:
        """Attribute name -> (event type, durable) of every method marked with @on_event."""
        found = {}
        for attr in dir(cls):
            marker = getattr(getattr(cls, attr, None), "__event__", None)
            if marker is not None:
                found[attr] = marker
        return found

    def _event_handlers(self) -> list[tuple[str, bool, Any]]:
        return [
            (event_type, durable, getattr(self, attr))
            for attr, (event_type, durable) in self._handler_markers().items()
        ]

    # ---- hooks for subclasses ----------------------------------------------------------------

    async def on_start(self) -> None:
        """Open databases, load models, warm caches. Runs after the socket is bound."""

    async def on_stop(self) -> None:
        """Close what on_start opened. Runs after in-flight requests finished."""

    def consumer_group(self) -> str:
        """The consumer group this service reads durable streams through. Called once at start,
        before binding and before on_start, with the instance lock held. The service's name by default; a
        service whose state is a ledger names the ledger in it, so that two books never split
        one group's events between them."""
        return self.name

    async def health_details(self) -> dict:
        """The service's own figures for `health`; may set "status" to degrade it with "warnings"."""
        return {}

    # ---- built-in methods ---------------------------------------------------------------------

    @rpc
    async def health(self) -> dict:
        """Status, uptime, memory, CPU, Redis state and the service's own figures."""
        details: dict = {}
        status = self.lifecycle
        if status == "running":
            status = "healthy"
            if self.bus is not None and not self.bus.connected:
                status = "degraded"
            try:
                details = await self.health_details()
            except Exception:
                self.log.exception("health_details failed")
                details = {"status": "unhealthy", "warnings": ["health check raised; see the log"]}
            status = _worst(status, details.pop("status", status))
        process = self._proc()
        return {
            "service": self.name,
            "status": status,
            "uptime": round(time.monotonic() - self.started_at, 3) if self.started_at else 0.0,
            "memory_usage": process.memory_info().rss if process else None,
            "cpu_usage": process.cpu_percent(interval=None) if process else None,
            "pid": os.getpid(),
            "version": self.version,
            "redis": "connected" if self.bus is not None and self.bus.connected else "disconnected",
            "now": self.clock.now().isoformat(),
            **details,
        }

    @rpc
    async def metrics(self) -> dict:
        """Requests, errors and latency percentiles per method; events in and out."""
        methods = {name: stats.summary() for name, stats in sorted(self._stats.items())}
        bus = self.bus
        return {
            "service": self.name,
            "uptime": round(time.monotonic() - self.started_at, 3) if self.started_at else 0.0,
            "requests": sum(s.count for s in self._stats.values()),
            "errors": sum(s.errors for s in self._stats.values()),
            "inflight": self._server.inflight if self._server else 0,
            # connections refused (peer uid) or over the limit, idle ones closed, bounds hit
            "rpc": self._server.stats() if self._server else {},
            "methods": methods,
            "events": {
                "published": bus.counters["published"] if bus else 0,
                "received": bus.counters["received"] if bus else 0,
                "dropped": bus.counters["dropped"] if bus else 0,
                "dead_lettered": bus.counters["dead_lettered"] if bus else 0,
                "handler_errors": bus.counters["handler_errors"] if bus else 0,
                "dependency_waits": bus.counters["dependency_waits"] if bus else 0,
                "outbox": bus.outbox_size if bus else 0,
                "consumer_group": bus.group if bus else None,
            },
        }

    @rpc
    async def shutdown(self) -> dict:
        """Stop gracefully: finish in-flight requests, remove the socket, exit 0."""
        asyncio.get_running_loop().call_soon(self.request_stop)
        return {"status": "stopping", "service": self.name}

    @rpc
    async def list_methods(self) -> list[dict]:
        """Every method with its params and one line of doc."""
        return [self._methods[name].describe() for name in sorted(self._methods)]

    # ---- dispatch -----------------------------------------------------------------------------

    async def dispatch(self, method: str, params: Any) -> Any:
        stats = self._stats.get(method)
        spec = self._methods.get(method)
        if spec is None:
            raise MethodNotFound(f"method not found: {method}")
        if stats is None:
            stats = self._stats[method] = MethodStats()
        stats.count += 1
        started = time.perf_counter()
        try:
            kwargs = spec.bind(params)
            ready = self._ready
            if ready is not None and not ready.is_set() and method not in BUILTIN_METHODS:
                await self._wait_ready(ready)
            return await spec.func(**kwargs)
        except RpcError:
            stats.errors += 1
            raise
        except Exception:
            stats.errors += 1
            self.log.exception("unhandled error in %s", method)
            raise InternalError("internal error") from None
        finally:
            stats.observe(time.perf_counter() - started)

    async def _wait_ready(self, ready: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(ready.wait(), self.ready_wait_s)
        except TimeoutError:
            raise ServiceError(f"{self.name} is still starting") from None

    # ---- calling other services ----------------------------------------------------------------

    def socket_path(self, service: str) -> Path:
        return self.settings.socket_dir / f"{service}.sock"

    def _client(self, service: str) -> RpcClient:
        client = self._clients.get(service)
        if client is None:
            client = self._clients[service] = RpcClient(
                self.socket_path(service), self.settings.rpc_max_frame_bytes
            )
        return client

    async def call_service(
        self, service: str, method: str, /, timeout: float = 10.0, *, retries: int = 3, **params: Any
    ) -> Any:
        """Call `method` on `service`; raises the remote error as its typed exception.

        `service` and `method` are positional-only, so a remote param may be named `service`.
        Retries with exponential backoff only when the request could not be sent (nothing
        listening); a request that was sent is never repeated, so a call that moves money is not
        duplicated. Raises DependencyUnavailable or RpcTimeout (-32005) after `timeout` seconds.
        """
        client = self._client(service)
        try:
            async with asyncio.timeout(timeout):
                delay, attempt = 0.05, 0
                while True:
                    try:
                        return await client.call(method, params)
                    except ConnectionLost as exc:
                        raise DependencyUnavailable(
                            f"{service} dropped the connection during {method}: {exc}",
                            data={"service": service},
                        ) from None
                    except OSError as exc:  # not sent: nothing listening on the socket
                        if attempt >= retries:
                            raise DependencyUnavailable(
                                f"{service} is unavailable: {exc.strerror or exc}", data={"service": service}
                            ) from None
                        attempt += 1
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 1.0)
        except TimeoutError:
            raise RpcTimeout(
                f"{service}.{method} did not answer within {timeout:g}s", data={"service": service}
            ) from None

    async def close_clients(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    # ---- events ----------------------------------------------------------------------------

    async def publish(self, event_type: str, data: dict, durable: bool | None = None) -> Event:
        """Publish an event on `trading:events:<type>` (durable types also go to their stream).
        A type that is not registered raises UnknownEventType."""
        event_type_of(event_type, self.event_types)
        if self.bus is None:
            raise RuntimeError(f"{self.name}: the event bus is not running")
        return await self.bus.publish(event_type, data, durable)

    def make_outbox_watch(self, holds: str) -> OutboxWatch:
        """A watch on this service's SQLite outbox of `holds` (TRADING_EVENTS_OUTBOX_BOUND)."""
        bound = read_knobs(EventBusKnobs, self.settings.environ).outbox_bound
        return OutboxWatch(self.name, holds, bound)

    async def announce(self, event_type: str, data: dict) -> bool:
        """Publish an alert now; False (nothing queued) when Redis does not take it, so the caller
        keeps it owed and tries again later (services.base.outbox.OutboxWatch does)."""
        event_type_of(event_type, self.event_types)
        if self.bus is None:
            return False
        return await self.bus.publish_now(self.bus.make_event(event_type, data))

    # ---- life -----------------------------------------------------------------------------------

    def _proc(self) -> psutil.Process | None:
        if self._process is None:
            try:
                import psutil

                self._process = psutil.Process()
                self._process.cpu_percent(interval=None)  # prime: the first reading is always 0
            except Exception:
                return None
        return self._process

    def request_stop(self) -> None:
        self._stop.set()

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            self.log.warning("second signal: exiting at once")
            with contextlib.suppress(FileNotFoundError):
                self.socket_path(self.name).unlink()
            os._exit(1)
        self.log.info("signal %s: shutting down", signal.Signals(signum).name)
        self.request_stop()

    async def start(self) -> None:
        """Bind the socket, run on_start, connect the event bus. The service then serves."""
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        prepare_socket_dir(self.settings.socket_dir)
        if self._instance_lock is None:
            self._instance_lock = hold_instance_lock(self.settings.socket_dir / f"{self.name}.lock")
        self._verify_ledgers()  # with the lock held: no other copy writes while it is checked
        group = self.consumer_group()  # may open the ledger: before binding, so a bad one never serves
        path = self.socket_path(self.name)
        if path.exists():
            if socket_is_live(path):
                raise ServiceAlreadyRunning(f"{self.name} is already running on {path}")
            path.unlink()  # stale socket left by a process that died
        rpc_limits = read_knobs(RpcKnobs, self.settings.environ)  # a bad bound stops it here
        handlers = self._event_handlers()
        for event_type, durable, _handler in handlers:  # before binding: a bad handler never serves
            check_handler(event_type, durable, self.event_types)
        self.lifecycle = "starting"
        self.started_at = time.monotonic()
        self._proc()
        self._server = RpcServer(path, self.dispatch, self.settings.rpc_max_frame_bytes, rpc_limits)
        await self._server.start()
        self.bus = EventBus(
            self.settings.redis_url,
            self.name,
            self.clock,
            max_deliveries=read_knobs(EventBusKnobs, self.settings.environ).max_deliveries,
            event_types=self.event_types,
            group=group,
        )
        for event_type, durable, handler in handlers:
            self.bus.subscribe(event_type, handler, durable)
        await self.bus.start()
        await self.bus.wait_connected(2.0)
        try:
            await self.on_start()
        except Exception:
            await self._teardown()
            raise
        self.lifecycle = "running"
        self._ready.set()
        if self.settings.environ.get("TRADING_SUPERVISED") == "1" and self.name in SERVICES:
            self._started_notice = asyncio.create_task(self._tell_supervisor(), name="started-notice")
        self.log.info(
            "%s started",
            self.name,
            extra={"socket": str(path), "pid": os.getpid(), "redis": self.bus.connected},
        )

    async def _tell_supervisor(self) -> None:
        """Tell the supervisor this process has started, so that it asks `health` now instead of
        at its next poll (a faster start; health still decides). Nothing happens when it does not
        answer: it polls anyway."""
        client = RpcClient(self.socket_path(SUPERVISOR), self.settings.rpc_max_frame_bytes)
        try:
            async with asyncio.timeout(2.0):
                await client.call("service_started", {"service": self.name, "pid": os.getpid()})
        except (RpcError, OSError, TimeoutError):
            pass
        finally:
            await client.close()

    def _verify_ledgers(self) -> None:
        """Each database the registry gives this service, when it exists, passes quick_check."""
        spec = SERVICES.get(self.name)
        for database in spec.databases if spec is not None else ():
            path = self.settings.data_dir / database.file
            if path.exists():
                verify_ledger(path)

    async def stop(self) -> None:
        """Graceful stop: refuse new connections, drain in-flight requests, close."""
        if self._server is None:
            return
        self.lifecycle = "stopping"
        await self._server.stop_accepting()
        if not await self._server.drain(self.shutdown_grace_s):
            self.log.warning("grace period over: cancelling %d in-flight requests", self._server.inflight)
        try:
            await self.on_stop()
        except Exception:
            self.log.exception("on_stop failed")
        await self._teardown()
        self.log.info("%s stopped", self.name)

    async def _teardown(self) -> None:
        if self._started_notice is not None:
            self._started_notice.cancel()
            self._started_notice = None
        if self.bus is not None:
            try:
                # Bounded: a Redis command cut off mid-read must not keep the process from exiting.
                await asyncio.wait_for(self.bus.close(), 3.0)
            except TimeoutError:
                self.log.warning("event bus did not close within 3s; exiting anyway")
            except Exception:  # the socket below must still go: `stop` waits for it to
                self.log.exception("event bus did not close cleanly; exiting anyway")
        if self._server is not None:
            await self._server.close()
            self._server = None
        await self.close_clients()
        if self._instance_lock is not None:
            os.close(self._instance_lock)  # the file stays: unlinking it would race a new copy
            self._instance_lock = None
        self.lifecycle = "stopped"

    async def serve(self) -> None:
        """Start, serve until a signal or `shutdown`, then stop."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()

    def run(self) -> None:
        """Entry point of a service process: logs, serve, exit code."""
        settings = self.settings
        supervised = os.environ.get("TRADING_SUPERVISED") == "1"
        setup_logging(
            self.name,
            settings.log_dir,
            secrets=settings.secret_values(),
            # Under the supervisor stderr is captured to a file beside the JSON log: keep it short.
            stderr_level=logging.WARNING if supervised else logging.INFO,
            max_bytes=settings.log_max_bytes,
        )
        profiler = _start_profile()
        try:
            asyncio.run(self.serve())
        except ServiceAlreadyRunning as exc:
            print(f"{self.name}: {exc}", file=sys.stderr)
            sys.exit(1)
        except (LedgerDamaged, LedgerMisconfigured, UnsafeSocketDir) as exc:
            print(f"{self.name}: {exc}", file=sys.stderr)
            sys.exit(EXIT_NEEDS_OPERATOR)
        except ConfigError as exc:  # a service's own knob, read in on_start
            print(f"{self.name}: configuration error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            sys.exit(130)
        finally:
            _save_profile(profiler, self.name)
        sys.exit(0)


def _start_profile() -> Any:
    """cProfile over the whole process when TRADING_PROFILE_DIR names a folder (a developer's
    knob: where a replay's CPU goes, see the README's replay profile); None otherwise."""
    if not os.environ.get("TRADING_PROFILE_DIR"):
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def _save_profile(profiler: Any, name: str) -> None:
    """Write the profile to TRADING_PROFILE_DIR/<service>-<pid>.prof (read with pstats)."""
    if profiler is None:
        return
    profiler.disable()
    folder = Path(os.environ["TRADING_PROFILE_DIR"])
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(folder / f"{name}-{os.getpid()}.prof"))


_SEVERITY = {"healthy": 0, "starting": 1, "degraded": 2, "stopping": 3, "unhealthy": 4}


def _worst(a: str, b: str) -> str:
    return a if _SEVERITY.get(a, 4) >= _SEVERITY.get(b, 4) else b


def run_service(service_cls: type[BaseService]) -> None:
    """`python services/<dir>/<file>.py`: build the settings, then run the service."""
    try:
        service = service_cls()
    except ConfigError as exc:
        print(f"{service_cls.name}: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    service.run()
