"""The supervisor daemon: runs Redis and the services, restarts what dies, gives up on crash loops.

It is itself a BaseService named "manager" on `<socket dir>/manager.sock`, so the CLI talks to it
with the same JSON-RPC as everything else. Decisions (order, backoff, crash loops) come from
services.domain.supervision; this module does the processes, sockets and signals.

One supervisor at a time: it holds an exclusive flock on `<socket dir>/manager.lock` for its whole
life (the kernel drops it if the process is killed). When it starts and finds services or a
Redis left running by a supervisor that was killed, it adopts them instead of starting copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from services.base import (
    EXIT_NEEDS_OPERATOR,
    BaseService,
    InvalidParams,
    RpcError,
    ServiceAlreadyRunning,
    rpc,
    socket_is_live,
)
from services.base.base_service import hold_instance_lock
from services.base.child_env import REDIS_SERVER, child_environment
from services.base.knobs import read_knobs
from services.base.socket_dir import prepare_socket_dir
from services.domain.supervision import (
    UP,
    FailureHistory,
    RestartPolicy,
    dependents_of,
    overall_status,
    start_levels,
    start_order,
    stop_order,
    with_dependencies,
)
from services.management.daemon_boot import ForkedZygote
from services.management.launcher import ZygoteChild, ZygoteLauncher
from services.management.manager_knobs import SupervisorKnobs
from services.management.ownership import why_not_ours
from services.registry import SERVICES, SUPERVISOR

#: The alerts process: when it is fatal the supervisor sends the alert itself.
ALERTS = "alerts"


def last_line(path: Path, max_bytes: int = 4096) -> str | None:
    """The last non-empty line of a log file (its tail only), or None."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1].strip() if lines else None


REPO = Path(__file__).resolve().parents[2]


def _age_s(pid: int) -> float:
    """How long a process has been running (0 when it cannot be read)."""
    try:
        return max(0.0, time.time() - psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


class LockHeld(RuntimeError):
    """Another supervisor holds the lock: talk to it through manager.sock instead."""


def sd_notify(message: str) -> None:
    """Tell systemd about readiness/watchdog: one datagram to $NOTIFY_SOCKET (no library needed)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


class ProcessHandle:
    """A running process: our child (asyncio subprocess) or one adopted by pid."""

    def __init__(self, pid: int, proc: asyncio.subprocess.Process | None = None):
        self.pid = pid
        self.proc = proc

    @property
    def adopted(self) -> bool:
        return self.proc is None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.returncode is None
        try:
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    async def wait(self) -> int | None:
        if self.proc is not None:
            return await self.proc.wait()
        while self.alive():
            await asyncio.sleep(0.1)
        return None  # not our child: its exit code is not ours to read

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    async def wait_for_exit(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class ServiceRunner:
    def __init__(self, name: str, entry: Path, deps: tuple[str, ...], policy: RestartPolicy):
        self.name = name
        self.entry = entry
        self.deps = deps
        self.state = "stopped"
        self.handle: ProcessHandle | ZygoteChild | None = None
        self.history = FailureHistory(policy)
        self.restarts = 0
        self.started_at: float | None = None
        self.last_exit: int | None = None
        self.reason: str | None = None
        self.health: dict | None = None
        self.health_failures = 0
        self.up = asyncio.Event()
        self.started_notice = asyncio.Event()  # the process said it started (service_started)
        self.task: asyncio.Task | None = None

    def snapshot(self, now: float) -> dict:
        started_at = self.started_at if self.state == "running" else None
        return {
            "name": self.name,
            "state": self.state,
            "pid": self.handle.pid if self.handle and self.handle.alive() else None,
            "uptime": round(now - started_at, 1) if started_at is not None else None,
            "restarts": self.restarts,
            "health": (self.health or {}).get("status") if self.state == "running" else None,
            "memory_usage": (self.health or {}).get("memory_usage"),
            "cpu_usage": (self.health or {}).get("cpu_usage"),
            "depends_on": list(self.deps),
            "last_exit": self.last_exit,
            "reason": self.reason,
            "adopted": bool(self.handle and self.handle.adopted),
        }


class Supervisor(BaseService):
    name = SUPERVISOR

    def __init__(
        self,
        autostart: list[str] | None = None,
        notify: bool = False,
        zygote: tuple[subprocess.Popen | ForkedZygote, socket.socket] | None = None,
    ):
        super().__init__()
        self.knobs = read_knobs(SupervisorKnobs, self.settings.environ)
        self.policy = self.knobs.restart_policy()
        self.autostart = autostart
        self.notify = notify
        self.redis: ProcessHandle | None = None
        self.redis_task: asyncio.Task | None = None
        self._rotation_task: asyncio.Task | None = None  # _rotate_logs
        self.runners = {
            name: ServiceRunner(name, self._entry(name), service.depends_on, self.policy)
            for name, service in SERVICES.items()
        }
        self.events_log: list[dict] = []
        self._watchdog_task: asyncio.Task | None = None
        self._direct_alerts: set[asyncio.Task] = set()
        self._alerts_fatal_told = False  # a direct "alerts is fatal" went out: resolve it when it runs
        # TRADING_MANAGER_LAUNCH=zygote: services are forked from a preloaded parent.
        # `zygote`: one the daemon started before its imports (daemon_boot.py), adopted.
        self.launcher = (
            ZygoteLauncher(self.settings.log_dir, self.log, zygote) if self.knobs.launch == "zygote" else None
        )
        if self.launcher is None and zygote is not None:
            zygote[1].close()  # exec mode: it exits on EOF
            zygote[0].kill()
            zygote[0].wait()
        self._changed = asyncio.Event()  # set and replaced on every state change (wait_services)

    def _entry(self, name: str) -> Path:
        # Tests and debugging can point a service at another file (e.g. one that crashes).
        override = self.knobs.entry_override(name)
        path = Path(override) if override else REPO / SERVICES[name].entry
        return path if path.is_absolute() else REPO / path

    # ---- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        # The directory is checked before anything is opened in it (UnsafeSocketDir: one line).
        # The one-copy lock every service holds (BaseService.start keeps this one), taken here
        # first: before this supervisor starts a Redis another one may already be running.
        prepare_socket_dir(self.settings.socket_dir)
        try:
            self._instance_lock = hold_instance_lock(self.settings.socket_dir / f"{self.name}.lock")
        except ServiceAlreadyRunning as exc:
            if self.launcher is not None:
                await self.launcher.close()  # an early zygote (daemon_boot.py) goes now
            raise LockHeld(str(exc)) from None
        try:
            if self.launcher is not None:
                # First: its preload (the longest step of a cold start) runs on the other core
                # while Redis starts and this process binds its socket.
                await self.launcher.start()
            if self.settings.redis_managed:
                await self._start_redis()
            await super().start()
        except BaseException:
            if self.launcher is not None:
                await self.launcher.close()
            os.close(self._instance_lock)
            self._instance_lock = None
            raise

    async def on_start(self) -> None:
        await self._adopt_leftovers()
        if self.settings.redis_managed:
            self.redis_task = asyncio.create_task(self._watch_redis())
        self._rotation_task = asyncio.create_task(self._rotate_logs(), name="rotate-logs")
        if self.autostart is not None:
            await self.start_services(self.autostart or None)
        if self.notify:
            self._watchdog_task = asyncio.create_task(self._notify_when_ready())

    async def on_stop(self) -> None:
        sd_notify("STOPPING=1")
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
        await self._stop_many(stop_order())
        if self.redis_task is not None:
            self.redis_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.redis_task

    async def _teardown(self) -> None:
        if self._rotation_task is not None:
            self._rotation_task.cancel()
        lock, self._instance_lock = self._instance_lock, None  # held until Redis is down too
        await super()._teardown()
        if self.launcher is not None:
            await self.launcher.close()
        if self.settings.redis_managed:
            await self._stop_redis()
        if lock is not None:
            os.close(lock)

    async def health_details(self) -> dict:
        states = {n: r.state for n, r in self.runners.items() if r.state != "stopped"}
        healths = {n: (r.health or {}).get("status") for n, r in self.runners.items()}
        fatal = [n for n, r in self.runners.items() if r.state == "fatal"]
        details = {"suite": overall_status(states, healths), "services": states}
        if fatal:
            details["warnings"] = [f"{n} is fatal: {self.runners[n].reason}" for n in fatal]
        return details

    # ---- Redis ------------------------------------------------------------------------------

    @property
    def redis_path(self) -> Path:
        return self.settings.socket_dir / "redis.sock"

    async def _redis_command(self, *args: str, timeout_s: float = 2.0):
        from services.base.events import redis_from_url

        client = redis_from_url(
            f"unix://{self.redis_path}", socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        try:
            return await client.execute_command(*args)
        finally:
            await client.aclose()

    async def _start_redis(self) -> None:
        if socket_is_live(self.redis_path):
            info = await self._redis_command("INFO", "server")
            pid = int(info.get("process_id", 0)) if isinstance(info, dict) else 0
            if (why := self._not_ours(pid)) is not None:
                raise RuntimeError(f"{self.redis_path} is served by something else: {why}")
            self.redis = ProcessHandle(pid)
            self.log.info("adopted the running redis-server (pid %s)", pid)
            return
        with contextlib.suppress(FileNotFoundError):
            self.redis_path.unlink()
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run python3 setup_microservices.py --install-deps"
            )
        redis_dir = self.settings.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            binary,
            "--port", "0",
            "--unixsocket", str(self.redis_path),
            "--unixsocketperm", "700",
            "--dir", str(redis_dir),
            # Durable event streams survive a Redis crash: append-only file, fsync every second.
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory", self.knobs.redis_maxmemory,
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.settings.log_dir / "redis.log"),
            env=child_environment(REDIS_SERVER, os.environ),  # no secret: it needs none
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.redis = ProcessHandle(proc.pid, proc)
        deadline = time.monotonic() + 10
        pause = 0.002  # it listens after a few milliseconds: look often at first
        while not socket_is_live(self.redis_path):
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.settings.log_dir / 'redis.log'}")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)

    async def _watch_redis(self) -> None:
        """Restart a managed Redis that died; the services reconnect by themselves."""
        delay = 0.2
        while True:
            if self.redis is not None:
                await self.redis.wait()
            self.log.error("redis-server exited; restarting")
            await asyncio.sleep(delay)
            try:
                await self._start_redis()
                delay = 0.2
            except Exception:
                self.log.exception("redis-server restart failed")
                delay = min(delay * 2, 10.0)

    async def _stop_redis(self) -> None:
        if self.redis is None or not self.redis.alive():
            return
        with contextlib.suppress(Exception):
            await self._redis_command("SHUTDOWN")  # flushes the append-only file, then exits
        if not await self.redis.wait_for_exit(5.0):
            self.redis.signal(signal.SIGKILL)
            await self.redis.wait_for_exit(2.0)
        with contextlib.suppress(FileNotFoundError):
            self.redis_path.unlink()

    # ---- what the supervisor owns: pids a socket names, its log files ----------------------------

    def _not_ours(self, pid: object) -> str | None:
        return why_not_ours(pid, self.settings.socket_dir, self.knobs.entry.values())

    async def _rotate_logs(self) -> None:
        """Every few seconds: stdout logs past the size are copied aside and truncated (the
        children keep their O_APPEND descriptors), redis.log renamed (Redis reopens it per line)."""
        from services.management.log_rotation import rotate_suite_logs

        knobs = self.knobs
        # zygote.stdout.log too: the zygote's own output (a failed preload, a retired zygote's
        # lines) is appended there across restarts of the zygote, as long as the supervisor runs.
        names = [*self.runners, self.name, "zygote"]
        redis_log = self.settings.log_dir / "redis.log" if self.settings.redis_managed else None
        warned: set[Path] = set()
        while True:
            await asyncio.sleep(knobs.log_check_s)
            rotated, failed = await asyncio.to_thread(
                rotate_suite_logs,
                self.settings.log_dir,
                names,
                redis_log,
                knobs.log_max_bytes,
                knobs.log_backups,
            )
            for path in rotated:
                self.log.info("rotated %s", path.name, extra={"file": str(path)})
            for path, why in failed.items():
                if path not in warned:  # once per file, not every few seconds
                    warned.add(path)
                    self.log.warning("cannot rotate %s: %s", path, why)

    # ---- services: spawning, watching, stopping ---------------------------------------------

    async def _adopt_leftovers(self) -> None:
        """Services still serving from a supervisor that was killed: adopt, never start copies."""
        for name, runner in self.runners.items():
            path = self.socket_path(name)
            if not socket_is_live(path):
                continue
            try:
                health = await self.call_service(
                    name, "health", timeout=self.knobs.health_timeout_s, retries=0
                )
            except RpcError:
                health = None
            pid = (health or {}).get("pid")
            if not pid:
                continue
            if (why := self._not_ours(pid)) is not None:  # never signal a pid a socket claims
                self.log.warning("not adopting what answers on %s: %s", path, why)
                continue
            runner.handle = ProcessHandle(int(pid))
            runner.health = health
            runner.started_at = time.monotonic() - _age_s(int(pid))  # its uptime, not ours
            self.log.info("adopted %s (pid %s) left by a previous supervisor", name, pid)
            runner.task = asyncio.create_task(self._keep_running(runner, adopted=True))

    async def _spawn(self, runner: ServiceRunner) -> ProcessHandle | ZygoteChild:
        log_dir = self.settings.log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **child_environment(runner.name, os.environ, self.settings.secrets),  # only its secrets
            "TRADING_SUPERVISED": "1",
            "TRADING_SERVICE_NAME": runner.name,
            "PYTHONUNBUFFERED": "1",
            **self.clock.env(),
        }
        log = log_dir / f"{runner.name}.stdout.log"
        if self.launcher is not None:  # the same env as exec; None: no zygote could fork it
            child = await self.launcher.spawn(runner.name, runner.entry, env, log)
            if child is not None:
                return child
        with open(log, "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(runner.entry),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=str(REPO),
                env=env,
                start_new_session=True,  # survives a killed supervisor, to be adopted by the next
            )
        return ProcessHandle(proc.pid, proc)

    async def _set_state(self, runner: ServiceRunner, state: str, reason: str | None = None) -> None:
        previous, runner.state = runner.state, state
        runner.reason = reason
        if previous == state:
            return
        self._state_changed()
        entry = {
            "service": runner.name,
            "state": state,
            "previous": previous,
            "pid": runner.handle.pid if runner.handle else None,
            "restarts": runner.restarts,
            "reason": reason,
            "at": self.clock.now().isoformat(),
        }
        self.events_log.append(entry)
        del self.events_log[:-200]
        log_level = self.log.error if state == "fatal" else self.log.info
        # "service" in a log line is the process that wrote it (the manager): name the subject apart.
        fields = {("target" if k == "service" else k): v for k, v in entry.items()}
        log_level(
            "%s: %s -> %s%s", runner.name, previous, state, f" ({reason})" if reason else "", extra=fields
        )
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.publish("service_status_changed", entry)
        told = self._alerts_fatal_told
        if runner.name == ALERTS and (state == "fatal" or (state == "running" and told)):
            # The alerts process cannot tell anyone about itself: send through the same channels.
            self._alerts_fatal_told = state == "fatal"
            task = asyncio.create_task(self._alert_directly(state, reason))
            self._direct_alerts.add(task)
            task.add_done_callback(self._direct_alerts.discard)

    async def _alert_directly(self, state: str, reason: str | None) -> None:
        from services.clients.alert_channels import Message
        from services.management.alert_fallback import send_direct

        fatal = state == "fatal"
        last = last_line(self.settings.log_dir / f"{ALERTS}.stdout.log")
        message = Message(
            title="alerts is fatal: alerts reach nobody until it runs again"
            if fatal
            else "RESOLVED: alerts is fatal",
            text=f"{reason or '?'}; its last line: {last or 'none'} (sent by the supervisor)"
            if fatal
            else "alerts runs again",
            severity="critical",
            kind="service_fatal",
            state="open" if fatal else "resolved",
            subject=ALERTS,
            at=self.clock.now().isoformat(),
        )
        try:
            reports = await send_direct(self.settings, message)
        except Exception:
            self.log.exception("direct alert about the alerts process failed")
            return
        for channel, report in reports.items():
            log = self.log.info if report.ok else self.log.error
            log("direct alert to %s: %s", channel, "sent" if report.ok else report.error)

    async def _wait_dependencies(self, runner: ServiceRunner) -> None:
        waiting = [d for d in runner.deps if not self.runners[d].up.is_set()]
        if waiting:
            runner.reason = f"waiting for {', '.join(waiting)}"
        for dep in runner.deps:
            await self.runners[dep].up.wait()
        runner.reason = None

    def _state_changed(self) -> None:
        """Wake whoever waits for a change (wait_services)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_healthy(self, runner: ServiceRunner) -> str | None:
        """None when healthy; otherwise why the start failed. Asks `health` every 20 ms at first,
        then less often, and at once when the service says it started (`service_started`)."""
        deadline = time.monotonic() + self.knobs.start_timeout_s
        pause = 0.02
        while time.monotonic() < deadline:
            if runner.handle is None or not runner.handle.alive():
                code = runner.handle.returncode if runner.handle else None
                runner.last_exit = code
                return f"exited during start-up (code {code})"
            try:
                health = await self.call_service(
                    runner.name, "health", timeout=self.knobs.health_timeout_s, retries=0
                )
            except RpcError:
                health = None
            if health and health.get("status") in UP:
                runner.health = health
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runner.started_notice.wait(), pause)
            runner.started_notice.clear()
            pause = min(pause * 1.5, 0.1)
        return f"not healthy within {self.knobs.start_timeout_s:g}s"

    async def _keep_running(self, runner: ServiceRunner, adopted: bool = False) -> None:
        """Start the service after its dependencies, watch it, restart it, or give up (fatal)."""
        while True:
            if not adopted:
                await self._set_state(runner, "starting")
                await self._wait_dependencies(runner)
                runner.started_notice.clear()
                runner.handle = await self._spawn(runner)
                failure = await self._wait_healthy(runner)
                if failure is not None:
                    if runner.handle.alive():
                        runner.handle.signal(signal.SIGKILL)
                        await runner.handle.wait_for_exit(5)
                    if runner.last_exit == EXIT_NEEDS_OPERATOR:
                        await self._needs_operator(runner)
                        return
                    if await self._after_failure(runner, None, failure):
                        return
                    continue
                runner.started_at = time.monotonic()
            adopted = False
            runner.health_failures = 0
            runner.up.set()
            await self._set_state(runner, "running")
            code = await self._watch(runner)
            runner.up.clear()
            runner.last_exit = code
            if code == EXIT_NEEDS_OPERATOR:
                await self._needs_operator(runner)
                return
            ran_for = time.monotonic() - (runner.started_at or time.monotonic())
            if await self._after_failure(runner, ran_for, f"exited unexpectedly (code {code})"):
                return

    async def _needs_operator(self, runner: ServiceRunner) -> None:
        """The service exited saying a person must act (e.g. a damaged ledger): fatal at once, with
        its own last line as the reason; restarting it would only repeat the refusal."""
        self._clean_socket(runner.name)
        line = last_line(self.settings.log_dir / f"{runner.name}.stdout.log")
        await self._set_state(
            runner, "fatal", f"needs an operator (exit {EXIT_NEEDS_OPERATOR}): {line or 'see its log'}"
        )

    async def _after_failure(self, runner: ServiceRunner, ran_for_s: float | None, reason: str) -> bool:
        """Record a failure; True when the service is now fatal (no more restarts)."""
        now = time.monotonic()
        runner.history.record_failure(now, ran_for_s)
        self._clean_socket(runner.name)
        if runner.history.is_crash_loop(now):
            await self._set_state(
                runner,
                "fatal",
                f"{reason}; {len(runner.history.times)} failures within {self.policy.window_s:g}s",
            )
            return True
        delay = runner.history.next_delay_s()
        runner.restarts += 1
        await self._set_state(runner, "backoff", f"{reason}; restarting in {delay:g}s")
        await asyncio.sleep(delay)
        return False

    async def _watch(self, runner: ServiceRunner) -> int | None:
        """Until the process exits; kills it when its health check keeps timing out (a hang)."""
        handle = runner.handle
        assert handle is not None
        exit_task = asyncio.ensure_future(handle.wait())
        try:
            while True:
                done, _ = await asyncio.wait({exit_task}, timeout=self.knobs.health_interval_s)
                if done:
                    return exit_task.result()
                try:
                    before = (runner.health or {}).get("status")
                    runner.health = await self.call_service(
                        runner.name, "health", timeout=self.knobs.health_timeout_s, retries=0
                    )
                    runner.health_failures = 0
                    if runner.health.get("status") != before:
                        self._state_changed()
                except RpcError as exc:
                    runner.health_failures += 1
                    self.log.warning(
                        "%s health check failed (%d/%d): %s",
                        runner.name,
                        runner.health_failures,
                        self.knobs.hang_checks,
                        exc,
                    )
                    if runner.health_failures >= self.knobs.hang_checks and handle.alive():
                        self.log.error("%s is hung: killing pid %s", runner.name, handle.pid)
                        handle.signal(signal.SIGKILL)
        finally:
            exit_task.cancel()

    def _clean_socket(self, name: str) -> None:
        path = self.socket_path(name)
        if path.exists() and not socket_is_live(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _launch(self, runner: ServiceRunner) -> None:
        if runner.task is not None and not runner.task.done():
            return
        runner.history.reset()
        runner.task = asyncio.create_task(self._keep_running(runner), name=f"run-{runner.name}")

    async def _stop_one(self, runner: ServiceRunner) -> None:
        """`shutdown` RPC, then SIGTERM after the grace period, then SIGKILL."""
        if runner.task is not None:
            runner.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner.task
            runner.task = None
        runner.up.clear()
        handle = runner.handle
        if handle is not None and handle.alive():
            await self._set_state(runner, "stopping")
            with contextlib.suppress(RpcError):
                await self.call_service(runner.name, "shutdown", timeout=2.0, retries=0)
            if not await handle.wait_for_exit(self.knobs.stop_grace_s):
                handle.signal(signal.SIGTERM)
                if not await handle.wait_for_exit(self.knobs.stop_grace_s):
                    self.log.warning("%s ignored SIGTERM: killing", runner.name)
                    handle.signal(signal.SIGKILL)
                    await handle.wait_for_exit(5.0)
        self._clean_socket(runner.name)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path(runner.name).unlink()
        runner.health = None
        await self._set_state(runner, "stopped")

    async def _stop_many(self, names: list[str]) -> None:
        """Stop in reverse dependency order; services of one level stop together."""
        wanted = set(names)
        for level in reversed(start_levels()):
            batch = [n for n in level if n in wanted]
            if batch:
                await asyncio.gather(*(self._stop_one(self.runners[n]) for n in batch))

    async def _notify_when_ready(self) -> None:
        for name in with_dependencies(self.autostart or list(self.runners)):
            await self.runners[name].up.wait()
        sd_notify("READY=1")
        watchdog_us = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        while watchdog_us:
            sd_notify("WATCHDOG=1")
            await asyncio.sleep(watchdog_us / 2e6)

    # ---- RPC API ------------------------------------------------------------------------------

    def _names(self, services: list[str] | None, param: str = "services") -> list[str]:
        # Only null means "all": an empty list or name must not stop or restart the whole suite.
        if services is None:
            return start_order()
        if not services:
            raise InvalidParams(param, "must name at least one service (omit it for all)")
        unknown = [s for s in services if s not in self.runners]
        if unknown:
            raise InvalidParams(
                param, f"unknown service(s): {', '.join(unknown)}; known: {', '.join(start_order())}"
            )
        return services

    @rpc
    async def status(self) -> dict:
        """Every service's state, pid, uptime, restarts and last health."""
        now = time.monotonic()
        services = [self.runners[n].snapshot(now) for n in start_order()]
        redis_alive = self.redis.alive() if self.redis else None
        return {
            "supervisor": {
                "pid": os.getpid(),
                "uptime": round(now - (self.started_at or now), 1),
                "redis": {
                    "managed": self.settings.redis_managed,
                    "url": self.settings.redis_url_shown,
                    "pid": self.redis.pid if self.redis else None,
                    "state": "running" if redis_alive or not self.settings.redis_managed else "stopped",
                },
                "suite_time": self.clock.now().isoformat(),
                "launch": self.knobs.launch,
                "zygote": self.launcher.zygote_pids() if self.launcher is not None else [],
            },
            "services": services,
            "overall": overall_status(
                {s["name"]: s["state"] for s in services}, {s["name"]: s["health"] for s in services}
            ),
            "recent_events": self.events_log[-20:],
        }

    @rpc
    async def wait_services(self, services: list[str] | None = None, timeout_s: float = 120.0) -> dict:
        """`status` once every one of `services` (all when null) is running and healthy or
        degraded, one of them is fatal, `timeout_s` passed, or the supervisor is stopping;
        answered at the change."""
        names = self._names(services)
        if not 0 <= timeout_s <= 3600:
            raise InvalidParams("timeout_s", "must be between 0 and 3600")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            changed = self._changed
            status = await self.status()
            wanted = [s for s in status["services"] if s["name"] in names]
            if all(s["state"] == "running" and s["health"] in UP for s in wanted):
                return status
            remaining = deadline - loop.time()
            if any(s["state"] == "fatal" for s in wanted) or remaining <= 0 or self._stop.is_set():
                return status  # stopping: a waiting call must not hold up the stop's drain
            waits = {asyncio.ensure_future(changed.wait()), asyncio.ensure_future(self._stop.wait())}
            try:  # a second at most: a health change is not a state change
                await asyncio.wait(waits, timeout=min(remaining, 1.0), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()

    @rpc
    async def service_started(self, service: str, pid: int) -> dict:
        """(from a service it started) `service`, process `pid`, has started: its start-up health
        check is asked now rather than at the next poll. Health still decides."""
        self._names([service], "service")
        if pid < 1:
            raise InvalidParams("pid", f"must be a process id (1 or more), got {pid}")
        runner = self.runners.get(service)
        noticed = bool(runner and runner.handle and runner.handle.pid == pid and runner.state == "starting")
        if noticed and runner is not None:
            runner.started_notice.set()
        return {"noticed": noticed}

    @rpc
    async def start_services(self, services: list[str] | None = None) -> dict:
        """Start services (and what they depend on) in dependency order; returns at once."""
        names = with_dependencies(self._names(services))
        for name in start_order():
            if name in names:
                self._launch(self.runners[name])
        return {"starting": [n for n in start_order() if n in names]}

    @rpc
    async def stop_services(self, services: list[str] | None = None) -> dict:
        """Stop services (and what depends on them) in reverse dependency order."""
        names = set(self._names(services))
        names |= dependents_of(names)
        order = [n for n in stop_order() if n in names]
        await self._stop_many(order)
        return {"stopped": order}

    @rpc
    async def restart_service(self, service: str | None = None) -> dict:
        """Restart one service (clearing fatal), or all of them in dependency order."""
        names = self._names(None if service is None else [service], "service")
        await self._stop_many(names)
        if service is None and self.launcher is not None:
            await self.launcher.reload()  # the whole suite restarts on fresh code
        for name in names:
            self._launch(self.runners[name])
        return {"restarting": names}
