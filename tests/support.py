"""Real parts for tests: a private redis-server, service processes, RPC and event helpers.

Everything here starts real things (a redis-server on a temporary Unix socket, service processes
over their real sockets) and waits with deadlines, never fixed sleeps.
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
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from services.registry import ENTRY_FILES

REPO = Path(__file__).resolve().parent.parent
SHARED_ASX = REPO.parent / "shared" / "data" / "asx"

SERVICE_ENTRIES = ENTRY_FILES  # the registry's entry files (services/registry.py)


def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02, what: str = ""
) -> Any:
    """Poll `predicate` until it returns a truthy value; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(interval_s)


async def async_wait_until(
    predicate, timeout_s: float = 10.0, interval_s: float = 0.02, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        await asyncio.sleep(interval_s)


def short_tempdir(prefix: str = "ts-") -> Path:
    """A temp dir with a short path: Unix socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


# ---- redis ------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    directory: Path
    process: subprocess.Popen | None = None

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
                "no",
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
    for d in (dirs.socket_dir, dirs.log_dir, dirs.data_dir, dirs.models_dir):
        d.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADING_", "MARKETAUX_", "IG_"))}
    env.update(
        {
            "TRADING_SOCKET_DIR": str(dirs.socket_dir),
            "TRADING_LOG_DIR": str(dirs.log_dir),
            "TRADING_DATA_DIR": str(dirs.data_dir),
            "TRADING_MODELS_DIR": str(dirs.models_dir),
            "TRADING_MARKET_DATA_SOURCE": "synthetic",
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
    """One real service process started from its entry file."""

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

    def start(self, wait: bool = True, timeout_s: float = 30.0) -> ServiceProcess:
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

    def wait_healthy(self, timeout_s: float = 30.0, statuses=("healthy", "degraded")) -> dict:
        def ready():
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"{self.service} exited with {self.process.returncode}:\n{self.output()[-3000:]}"
                )
            try:
                health = rpc_call_sync(self.socket, "health", timeout_s=2.0)
            except (OSError, RuntimeError):
                return None
            return health if health.get("status") in statuses else None

        return wait_until(ready, timeout_s, 0.05, what=f"{self.service} to be healthy")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def wait_exit(self, timeout_s: float = 15.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)


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


# ---- events ----------------------------------------------------------------------------------


class EventWatcher:
    """Collects events from Redis pub/sub so a test can wait for one with a deadline."""

    def __init__(self, redis_url: str, *event_types: str):
        self.redis_url = redis_url
        self.event_types = event_types
        self.events: list[dict] = []
        self._task: asyncio.Task | None = None
        self._client = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> EventWatcher:
        import redis.asyncio as aioredis

        self._client = aioredis.from_url(self.redis_url)
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._ready.wait(), 5)
        return self

    async def _listen(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(*(f"trading:events:{t}" for t in self.event_types))
        self._ready.set()
        try:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message and message.get("type") == "message":
                    self.events.append(orjson.loads(message["data"]))
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

    async def wait_for(self, event_type: str, predicate=lambda e: True, timeout_s: float = 10.0) -> dict:
        def found():
            return next((e for e in self.of_type(event_type) if predicate(e)), None)

        return await async_wait_until(found, timeout_s, what=f"event {event_type}")
