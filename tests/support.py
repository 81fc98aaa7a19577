"""Real parts for tests: a private redis-server, service processes, RPC and event helpers.

Everything here starts real things (a redis-server on a temporary Unix socket, service processes
over their real sockets, whole suites through the manager CLI, the real training script) and
waits with deadlines, never fixed sleeps. What a test starts, `Processes` stops, whatever happened.

Deadlines are generous: they only cost time when something is wrong, and the suite must pass on
two cores that are busy with other work.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

from services.management import leftovers
from services.registry import ENTRY_FILES

REPO = Path(__file__).resolve().parent.parent
SHARED_ASX = REPO.parent / "shared" / "data" / "asx"
MANAGER = REPO / "services" / "management" / "service_manager.py"

SERVICE_ENTRIES = ENTRY_FILES  # the registry's entry files (services/registry.py)


# ---- waiting with a deadline ------------------------------------------------------------------


class _Poll:
    """One wait's deadline and what its probe last saw: shared by wait_until and async_wait_until."""

    def __init__(self, probe: Callable, timeout_s: float, what: str, until: Callable[[Any], Any]):
        self.timeout_s = timeout_s
        self.what = what or getattr(probe, "__qualname__", repr(probe))
        self.until = until
        self.deadline = time.monotonic() + timeout_s
        self.last: str = "nothing (the probe never returned)"

    def satisfied(self, value: Any) -> bool:
        self.last = _shown(value)
        return bool(self.until(value))

    def missed(self, error: BaseException) -> None:
        self.last = f"{type(error).__name__}: {error}"

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise AssertionError(
                f"timed out after {self.timeout_s:g}s waiting for {self.what}; last saw: {self.last}"
            )


def _shown(value: Any, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def wait_until(
    probe: Callable[[], Any],
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    what: str = "",
    *,
    until: Callable[[Any], Any] = bool,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call `probe` until `until(value)` holds (by default: the value is truthy); return the value.

    After `timeout_s` it fails naming `what` and showing what the probe last returned, or last
    raised among the `ignoring` exception types (e.g. OSError while a socket is not there yet);
    any other exception from the probe fails at once. So a probe that returns what it observes,
    with the condition in `until`, explains a timeout by itself:
        wait_until(lambda: by_name(dirs)["sentiment"], 20, until=lambda s: s["state"] == "fatal")
    """
    poll = _Poll(probe, timeout_s, what, until)
    while True:
        try:
            value = probe()
        except ignoring as error:
            poll.missed(error)
        else:
            if poll.satisfied(value):
                return value
        poll.check_deadline()
        time.sleep(interval_s)


async def async_wait_until(
    probe: Callable[[], Any],
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    what: str = "",
    *,
    until: Callable[[Any], Any] = bool,
    ignoring: tuple[type[BaseException], ...] = (),
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> Any:
    """`wait_until` for coroutines: the probe may be async, and the loop keeps running meanwhile
    (`sleep=pilot.pause` lets a Textual app under test process its messages between probes)."""
    poll = _Poll(probe, timeout_s, what, until)
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as error:
            poll.missed(error)
        else:
            if poll.satisfied(value):
                return value
        poll.check_deadline()
        await sleep(interval_s)


def short_tempdir(prefix: str = "ts-") -> Path:
    """A temp dir with a short path: Unix socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


# ---- redis ------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    directory: Path
    process: subprocess.Popen | None = None
    # As the supervisor runs its own: an append-only file, so a SIGKILLed server restarted on the
    # same directory comes back with its streams and consumer groups.
    appendonly: bool = False

    @property
    def path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run python3 setup_microservices.py --install-deps"
            )
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                "0",
                "--unixsocket",
                str(self.path),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "everysec",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self.ping(), timeout_s, what="redis-server to answer PING")
        return self

    def ping(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(str(self.path))
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


# ---- a suite's directories and environment -----------------------------------------------------


@dataclass
class SuiteDirs:
    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def socket(self, service: str) -> Path:
        return self.socket_dir / f"{service}.sock"


def make_suite_env(root: Path, redis_url: str | None, **overrides: str) -> SuiteDirs:
    dirs = SuiteDirs(root)
    for d in (dirs.log_dir, dirs.data_dir, dirs.models_dir):
        d.mkdir(parents=True, exist_ok=True)
    dirs.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the suite refuses one others may read
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADING_", "MARKETAUX_", "IG_"))}
    env.update(
        {
            "TRADING_SOCKET_DIR": str(dirs.socket_dir),
            "TRADING_LOG_DIR": str(dirs.log_dir),
            "TRADING_DATA_DIR": str(dirs.data_dir),
            "TRADING_MODELS_DIR": str(dirs.models_dir),
            "TRADING_MARKET_DATA_SOURCE": "synthetic",
            # Every test suite runs a gateway: on a port of the kernel's choosing, never 8780.
            "TRADING_GATEWAY_BIND": "127.0.0.1:0",
            # The session's trained models are reused for days (MODELS_CACHE): they must not
            # expire under a test; tests of expiry set their own maximum age.
            "TRADING_ML_MODEL_MAX_AGE_DAYS": "3650",
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if redis_url:
        env["TRADING_REDIS_URL"] = redis_url
    env.update(overrides)
    dirs.env = env
    return dirs


# ---- service processes -------------------------------------------------------------------------


class ServiceProcess:
    """One real service process started from its entry file (through `Processes`, which stops it)."""

    def __init__(self, service: str, dirs: SuiteDirs, entry: str | Path | None = None, extra_env=None):
        self.service = service
        self.dirs = dirs
        self.entry = REPO / (entry or SERVICE_ENTRIES[service])
        self.env = {**dirs.env, **(extra_env or {})}
        self.process: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return Path(self.env["TRADING_SOCKET_DIR"]) / f"{self.service}.sock"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, wait: bool = True, timeout_s: float = 60.0) -> ServiceProcess:
        out = open(self.dirs.log_dir / f"{self.service}.out", "ab")
        self.process = subprocess.Popen(
            [sys.executable, str(self.entry)], env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
        )
        out.close()
        if wait:
            self.wait_healthy(timeout_s)
        return self

    def output(self) -> str:
        path = self.dirs.log_dir / f"{self.service}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_healthy(self, timeout_s: float = 60.0, statuses=("healthy", "degraded")) -> dict:
        def health() -> dict:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"{self.service} exited with {self.process.returncode}:\n{self.output()[-3000:]}"
                )
            return rpc_call_sync(self.socket, "health", timeout_s=5.0)

        return wait_until(
            health,
            timeout_s,
            what=f"{self.service} to be {' or '.join(statuses)}",
            until=lambda reply: reply.get("status") in statuses,
            ignoring=(OSError, RuntimeError),  # not listening yet, or not answering yet
        )

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; the exit status (None if never started)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)  # a test may have left it stopped
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def manager_command(*args: str) -> list[str]:
    """The argv of `python services/management/service_manager.py ARGS`, as the README runs it."""
    return [sys.executable, str(MANAGER), *args]


def manager_cli(
    dirs_or_env: SuiteDirs | Mapping[str, str], *args: str, timeout_s: float = 180.0
) -> subprocess.CompletedProcess:
    """Run the manager CLI to completion in the repository folder; its output is captured as text."""
    env = dirs_or_env.env if isinstance(dirs_or_env, SuiteDirs) else dict(dirs_or_env)
    try:
        return subprocess.run(
            manager_command(*args), env=env, capture_output=True, text=True, timeout=timeout_s, cwd=REPO
        )
    except subprocess.TimeoutExpired as exc:
        # A CLI that does not return is a failure to explain: what it printed, the suite's processes
        # and the supervisor's last log lines (a hang seen once in CI left nothing else to go on).
        log_dir = Path(env.get("TRADING_LOG_DIR", "")) if env.get("TRADING_LOG_DIR") else None
        raise AssertionError(
            f"service_manager.py {' '.join(args)} did not return within {timeout_s:g}s\n"
            f"{_as_text(exc.stdout)}{_as_text(exc.stderr)}\n{suite_report(env, log_dir)}"
        ) from None


def _as_text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def suite_report(env: Mapping[str, str], log_dir: Path | None, lines: int = 60) -> str:
    """The suite's live processes (with their state) and the last lines of the manager's logs."""
    report = []
    socket_dir = env.get("TRADING_SOCKET_DIR")
    if socket_dir:
        for process in leftovers.suite_processes(Path(socket_dir)):
            with contextlib.suppress(psutil.Error):
                report.append(
                    f"process {process.pid} {process.status()}: {' '.join(process.cmdline())[:160]}"
                )
    for name in ("manager.log", "manager.stdout.log"):
        path = log_dir / name if log_dir is not None else None
        if path is not None and path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            report.append(f"--- last {len(tail)} lines of {path} ---")
            report.extend(tail)
    return "\n".join(report)


def suite_processes(dirs: SuiteDirs) -> list[psutil.Process]:
    """Every live process of one suite, found by its socket directory (in its environment, or in its
    command line: the managed redis-server's socket path)."""
    return leftovers.suite_processes(dirs.socket_dir)


def stop_suite(dirs: SuiteDirs) -> None:
    """`service_manager.py stop` when its supervisor answers, then SIGKILL whatever is left."""
    if dirs.env and (dirs.socket_dir / "manager.sock").exists():
        with contextlib.suppress(subprocess.TimeoutExpired):
            manager_cli(dirs, "stop", timeout_s=120)
    leftovers.kill_suite_processes(dirs.socket_dir)


def _end_service(process: ServiceProcess) -> None:
    process.stop()


def _end_popen(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class Drain:
    """Reads a process's stdout and stderr (those that are pipes, in text mode) in two threads until
    they close: a process whose output fills a pipe nobody reads (64 KiB) blocks on its next write.
    `text()` waits for the pipes to close (the process has exited) and returns (stdout, stderr)."""

    def __init__(self, proc: subprocess.Popen):
        self.parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.threads = [
            threading.Thread(target=self._read, args=(stream, self.parts[name]), daemon=True)
            for name, stream in (("stdout", proc.stdout), ("stderr", proc.stderr))
            if stream is not None
        ]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in iter(stream.readline, ""):
            into.append(line)

    def text(self, timeout_s: float = 60.0) -> tuple[str, str]:
        for thread in self.threads:
            thread.join(timeout_s)
        return "".join(self.parts["stdout"]), "".join(self.parts["stderr"])


class Processes:
    """Whatever a test starts (service processes, commands, whole suites, their directories),
    ended at teardown in reverse order even when the test failed: the `processes` fixture, or
    `with Processes() as processes:` in a module-scoped fixture.

    A service gets SIGCONT (a test may have left it stopped), SIGTERM, then SIGKILL after a grace
    period; a suite `service_manager.py stop`, then SIGKILL for anything still running with its
    socket directory. One failing clean-up does not keep the others from running.
    """

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def service(
        self, name: str, dirs: SuiteDirs, *, entry: str | Path | None = None, extra_env=None
    ) -> ServiceProcess:
        """A service process to start later (`.start()`), already stopped at teardown."""
        process = ServiceProcess(name, dirs, entry=entry, extra_env=extra_env)
        self._stack.callback(_end_service, process)
        return process

    def start(
        self,
        name: str,
        dirs: SuiteDirs,
        *,
        entry: str | Path | None = None,
        extra_env=None,
        wait: bool = True,
        timeout_s: float = 60.0,
    ) -> ServiceProcess:
        """Start a service from its entry file; with `wait`, return once it answers healthy."""
        return self.service(name, dirs, entry=entry, extra_env=extra_env).start(wait, timeout_s)

    def popen(self, args: list[str], **popen_kwargs: Any) -> subprocess.Popen:
        """Any other command (a supervisor in the foreground, a replay), run from the repository."""
        proc = subprocess.Popen(args, cwd=popen_kwargs.pop("cwd", REPO), **popen_kwargs)
        self._stack.callback(_end_popen, proc)
        return proc

    def suite(self, dirs: SuiteDirs) -> SuiteDirs:
        """A suite that the manager CLI starts in `dirs` (here or in the test): stopped at teardown."""
        self._stack.callback(stop_suite, dirs)
        return dirs

    def start_suite(self, dirs: SuiteDirs, *args: str) -> SuiteDirs:
        """`service_manager.py start ARGS` in `dirs`, which must succeed; stopped at teardown."""
        self.suite(dirs)
        started = manager_cli(dirs, "start", *args)
        assert started.returncode == 0, started.stdout + started.stderr
        return dirs

    def suite_dirs(self, prefix: str, redis_url: str | None = None, **overrides: str) -> SuiteDirs:
        """Fresh directories and environment for a suite (`make_suite_env`), removed at teardown
        after everything started in them has stopped."""
        dirs = make_suite_env(short_tempdir(prefix), redis_url, **overrides)
        self._stack.callback(shutil.rmtree, dirs.root, ignore_errors=True)
        return dirs


def rpc_call_sync(path: Path, method: str, params: Any = None, timeout_s: float = 10.0) -> Any:
    """One JSON-RPC call over a fresh connection, without asyncio (for polling from tests)."""
    frame = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        frame["params"] = params
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(path))
        s.sendall(orjson.dumps(frame) + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                raise RuntimeError(f"{path.name} closed the connection")
            buf += chunk
    reply = orjson.loads(buf)
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def raw_exchange(path: Path, payload: bytes, timeout_s: float = 5.0, expect_reply: bool = True) -> bytes:
    """Send raw bytes, return the first line of the reply (b"" if the peer closed or none came)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(path))
        s.sendall(payload)
        if not expect_reply:
            s.settimeout(0.3)
        buf = b""
        try:
            while b"\n" not in buf:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
        except TimeoutError:
            pass
        return buf.split(b"\n", 1)[0] if buf else b""


# ---- trained models ----------------------------------------------------------------------------

MODELS_CACHE = Path(tempfile.gettempdir()) / "trading-test-models"
# What decides a trained models folder: the pipeline, the history it reads and fetches, and the
# model-set layout it writes.
TRAINING_CODE = (
    "services/ml-model",
    "services/domain",
    "services/market-data",
    "services/clients/yahoo_history.py",
    "services/base/model_sets.py",
)
TRAINING_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Training:
    """What a set of test models is trained on. With the training code, it is the cache key."""

    years: float
    symbols: tuple[str, ...] | None = None  # None: the default universe (TRADING_SYMBOLS)
    data_dir: Path | None = None  # Yahoo-format CSVs; None: the synthetic provider's bars
    clock_start: datetime | None = None  # the suite clock at training; None: now

    def key(self) -> str:
        digest = hashlib.sha256(repr((self.years, self.symbols, self.clock_start)).encode())
        if self.data_dir is None:
            # Synthetic bars are a deterministic walk up to the latest session before now.
            from services.domain.asx_calendar import is_trading_day
            from services.domain.bars import latest_session

            now = self.clock_start or datetime.now(UTC)
            digest.update(f"synthetic until {latest_session(now, is_trading_day)}".encode())
        else:
            for path in sorted(self.data_dir.glob("*.csv")):
                digest.update(path.name.encode() + path.read_bytes())
        for part in TRAINING_CODE:
            paths = [REPO / part] if part.endswith(".py") else sorted((REPO / part).rglob("*.py"))
            for path in paths:
                digest.update(str(path.relative_to(REPO)).encode() + path.read_bytes())
        return digest.hexdigest()[:20]

    def cached(self) -> Path:
        """Where these models are (or will be) kept between sessions."""
        return MODELS_CACHE / self.key()

    def command(self, out: Path) -> list[str]:
        args = [sys.executable, str(REPO / "services/ml-model/train_models.py"), "--out", str(out)]
        args += ["--synthetic"] if self.data_dir is None else ["--data-dir", str(self.data_dir)]
        args += ["--years", repr(self.years)]
        return args + (["--symbols", *self.symbols] if self.symbols else [])


def models_ready(models_dir: Path) -> bool:
    """A manifest serves from `models_dir`: its current model set's, or a flat one."""
    from services.base.model_sets import serving_dir

    return (serving_dir(models_dir) / "manifest.json").is_file()


def trained_models(training: Training) -> Path:
    """Models from the real training script, trained once and kept under the system temp dir by
    what decides them (`Training.key`): a later session reuses them, any change trains afresh.
    Read-only for tests: copy them into a suite with `install_models`."""
    out = training.cached()
    if models_ready(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Test workers (pytest-xdist) asking for the same models at once: one trains, the others wait
    # for it and find them on disk.
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if models_ready(out):
            return out
        return _train(training, out)


def _train(training: Training, out: Path) -> Path:
    work = short_tempdir("models-")
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "TRADING_LOG_DIR": str(work / "logs"),
        # OpenMP threads (the gradient-boosting model) spin while they wait for each other: with
        # two cores already busy, one thread trains several times faster than two.
        "OMP_NUM_THREADS": "1",
    }
    if training.clock_start is not None:
        env["TRADING_CLOCK_START"] = training.clock_start.isoformat()
    result = subprocess.run(
        training.command(work / "models"),
        env=env,
        capture_output=True,
        text=True,
        timeout=TRAINING_TIMEOUT_S,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # another session finished the same training first
        os.rename(work / "models", out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def install_models(trained: Path, models_dir: Path, symbols: Iterable[str] | None = None) -> Path:
    """Copy trained models into a suite's models folder, only those of `symbols` when given (the
    manifest then lists just them, as if only they had been trained). The whole folder (model
    sets and the `current` pointer) is copied as it is; a selection is installed flat, the
    layout before model sets, which ml-model serves too."""
    if symbols is None:
        shutil.copytree(trained, models_dir, dirs_exist_ok=True)
        return models_dir
    from services.base.model_inference import INFERENCE_DIR
    from services.base.model_sets import serving_dir
    from services.base.model_store import MANIFEST_NAME

    trained = serving_dir(trained)

    wanted = set(symbols)
    manifest = json.loads((trained / MANIFEST_NAME).read_text())
    entries = [e for e in manifest["models"] if e["symbol"] in wanted]
    assert {e["symbol"] for e in entries} == wanted, f"{trained} has no models for some of {wanted}"
    (models_dir / INFERENCE_DIR).mkdir(parents=True, exist_ok=True)
    for entry in entries:
        shutil.copy2(trained / entry["file"], models_dir / entry["file"])
        form = Path(INFERENCE_DIR) / f"{entry['sha256']}.json"
        if (trained / form).exists():
            shutil.copy2(trained / form, models_dir / form)
    manifest.update(models=entries, symbols=[s for s in manifest["symbols"] if s in wanted])
    (models_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return models_dir


async def publish_as(suite: SuiteDirs, source: str, event_type: str, *payloads: dict) -> None:
    """Publish as `source` does: the same bus, the same envelope (durable types go to their stream)."""
    from services.base.clock import SuiteClock
    from services.base.events import EventBus

    bus = EventBus(suite.env["TRADING_REDIS_URL"], source, SuiteClock())
    await bus.start()
    try:
        assert await bus.wait_connected(5)
        for data in payloads:
            await bus.publish(event_type, data)
    finally:
        await bus.close()


# ---- events ----------------------------------------------------------------------------------


class EventWatcher:
    """Collects events from Redis pub/sub so a test can wait for one with a deadline."""

    def __init__(self, redis_url: str, *event_types: str):
        self.redis_url = redis_url
        self.event_types = event_types
        self.events: list[dict] = []
        self._task: asyncio.Task | None = None
        self._client = None
        self._pubsub = None
        self._ready = asyncio.Event()
        self._pongs: set[str] = set()

    async def __aenter__(self) -> EventWatcher:
        import redis.asyncio as aioredis

        self._client = aioredis.from_url(self.redis_url)
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._ready.wait(), 30)
        return self

    async def _listen(self) -> None:
        self._pubsub = pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(*(f"trading:events:{t}" for t in self.event_types))
        self._ready.set()
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if not message:
                    continue
                if message.get("type") == "message":
                    self.events.append(orjson.loads(message["data"]))
                elif message.get("type") == "pong":
                    data = message["data"]
                    self._pongs.add(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            await pubsub.aclose()

    async def __aexit__(self, *exc) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    def of_type(self, event_type: str) -> list[dict]:
        return [e for e in self.events if e["type"] == event_type]

    async def wait_for(self, event_type: str, predicate=lambda e: True, timeout_s: float = 30.0) -> dict:
        seen = await async_wait_until(
            lambda: self.of_type(event_type),
            timeout_s,
            0.02,
            what=f"a matching {event_type} event (seen: every {event_type} so far)",
            until=lambda events: any(predicate(e) for e in events),
        )
        return next(e for e in seen if predicate(e))

    async def settle(self, timeout_s: float = 30.0) -> list[dict]:
        """Every event published before this call has been collected when it returns.

        A PING sent on the subscribed connection is answered after the messages Redis queued for
        it before, so its pong is a barrier: "no alert yet" is then decided, not slept on.
        """
        token = os.urandom(8).hex()
        await self._pubsub.ping(token)
        await async_wait_until(lambda: token in self._pongs, timeout_s, 0.01, what="the pub/sub pong")
        return self.events


def png_bytes(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour (zlib and struct: no imaging library), e.g. a replay's chart."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
