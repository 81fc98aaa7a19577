"""The supervisor's side of the zygote (services/management/zygote.py): start it, ask it to fork a
service, watch what it forked, replace it when it dies or its code changed.

- The zygote is a fresh `python -c` process started with no secret in its environment (a zygote
  forked from the supervisor would hand every service the supervisor's secrets, in memory and in
  /proc/<pid>/environ), and no secret ever passes through its memory: a spawn request names the
  service's secret variables, and their values go on a pipe of their own whose read end travels
  with the request (SCM_RIGHTS); only the forked service reads it. A secret parsed by the zygote
  would stay in its heap once freed, and every service forked later would inherit it.
- The first zygote of a daemon started by `service_manager.py start` was started by the daemon
  before its imports (daemon_boot.py); the launcher adopts it instead of starting one.
- A forked service is watched through a pidfd; its exit code comes from the zygote's notice (the
  zygote is its parent). When the zygote died, its children keep running and are watched like
  adopted processes (exit code unknown), and a new zygote is started at once.
- A spawn that finds a preloaded file changed on disk retires that zygote (it exits once its last
  child is gone, still reporting their exits) and asks a fresh one.
- Whatever fails here (a zygote that cannot start, e.g. code that no longer imports) makes
  `spawn` return None: the supervisor then starts that service as a separate interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
from array import array
from collections.abc import Callable
from pathlib import Path

import orjson
import psutil

from services.base.child_env import ZYGOTE, child_environment, secret_variables
from services.management.daemon_boot import ForkedZygote, exec_zygote

REPO = Path(__file__).resolve().parents[2]
#: A zygote has this long to import everything and say it is ready.
READY_TIMEOUT_S = 60.0
#: The most a service's secrets take on their pipe: written whole before the request is sent, so
#: within a pipe's capacity (64 KiB); more, and the service starts by exec.
SECRETS_MAX_BYTES = 48 * 1024


class ZygoteGone(RuntimeError):
    """The zygote died (or was retired) before it answered."""


class ZygoteChild:
    """A service the zygote forked; the same interface as supervisor.ProcessHandle."""

    proc = None

    def __init__(self, pid: int, zygote: ZygoteProcess):
        self.pid = pid
        self.zygote = zygote
        self._loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[int | None] = self._loop.create_future()
        self._gone = False  # its pidfd said it exited
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(pid)
            self._loop.add_reader(self._pidfd, self._on_pidfd)
        except ProcessLookupError:
            self._gone = True

    @property
    def adopted(self) -> bool:
        """True once its zygote is gone: nobody can tell its exit code any more."""
        return not self.zygote.alive

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    def alive(self) -> bool:
        if self._exit.done():
            return False
        if self.zygote.alive:
            return True  # the zygote reaps it and tells us
        if self._gone:
            return False
        try:
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    async def wait(self) -> int | None:
        return await asyncio.shield(self._exit)

    def signal(self, signum: int) -> None:
        if self._pidfd is None or self._exit.done():
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self._pidfd, signum)  # never a recycled pid

    async def wait_for_exit(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _on_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)  # level-triggered: once is enough
        self._gone = True
        if not self.zygote.alive:
            self.finish(None)

    def orphaned(self) -> None:
        """Its zygote died: an exit already seen by the pidfd ends it now, a later one then."""
        if self._gone:
            self.finish(None)

    def finish(self, code: int | None) -> None:
        if not self._exit.done():
            self._exit.set_result(code)
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


class ZygoteProcess:
    """One zygote: its socket, its pending requests, the children it forked."""

    def __init__(self, pid: int, sock: socket.socket, reap: Callable[[], None], on_lost: Callable):
        self.pid = pid
        self.sock = sock
        self.alive = True
        self.retired = False
        self.children: dict[int, ZygoteChild] = {}
        self._reap = reap
        self._on_lost = on_lost
        self._pending: dict[int, asyncio.Future[dict]] = {}
        self._ids = 0
        self.ready: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        # Requests go out on a second descriptor of the same socket, written with sendmsg (a
        # request may carry a descriptor; the stream transport reading `sock` cannot send one).
        self._out: socket.socket | None = None
        self._sending = asyncio.Lock()  # one request at a time: a line is never interleaved
        self._retiring: asyncio.Task | None = None
        self._waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.set_result(None)  # none waiting for room on the socket

    async def open(self) -> None:
        self._out = socket.socket(fileno=os.dup(self.sock.fileno()))
        self._out.setblocking(False)
        reader, self._writer = await asyncio.open_unix_connection(sock=self.sock, limit=1 << 20)
        self._task = asyncio.create_task(self._read(reader), name=f"zygote-{self.pid}")

    async def _send(self, data: bytes, fd: int | None = None) -> None:
        """Write one request line, `fd` (if any) with its first byte, then close `fd` (it is this
        call's); waits while the socket is full. A line is written whole or the zygote is gone:
        callers shield it from cancellation (a half line would garble every later one)."""
        try:
            async with self._sending:
                view = memoryview(data)
                ancillary = [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", [fd]))]
                while view:
                    if self._out is None:
                        raise ZygoteGone(f"zygote {self.pid} exited")
                    try:
                        sent = self._out.sendmsg([view], ancillary)
                    except BlockingIOError:
                        await self._writable()
                        continue
                    except OSError as exc:
                        raise ZygoteGone(f"zygote {self.pid} exited ({exc})") from None
                    view, ancillary = view[sent:], []  # the descriptor went with the first byte sent
        finally:
            if fd is not None:
                os.close(fd)  # sent (the zygote has its own copy) or not: ours goes

    async def _writable(self) -> None:
        """Until the socket takes more, or the zygote is gone (ZygoteGone)."""
        assert self._out is not None
        loop = asyncio.get_running_loop()
        self._waiting = loop.create_future()
        fileno = self._out.fileno()
        loop.add_writer(fileno, self._room)
        try:
            await self._waiting
        finally:
            if self._out is not None:
                loop.remove_writer(fileno)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                message = orjson.loads(line)
                if "exit" in message:
                    child = self.children.pop(message["exit"], None)
                    if child is not None:
                        child.finish(message["code"])
                elif "ready" in message:
                    if not self.ready.done():
                        self.ready.set_result(message)
                elif (future := self._pending.pop(message.get("id"), None)) is not None:
                    if "pid" in message and future.done():  # the spawn was cancelled (a stop)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(message["pid"], signal.SIGKILL)
                    elif "pid" in message:  # registered before any later exit notice is read
                        self.children[message["pid"]] = ZygoteChild(message["pid"], self)
                    if not future.done():
                        future.set_result(message)
        except (OSError, ValueError):
            pass
        finally:
            self._lost()

    def _lost(self) -> None:
        self.alive = False
        for future in [self.ready, *self._pending.values()]:
            if not future.done():
                future.set_exception(ZygoteGone(f"zygote {self.pid} exited"))
        self._pending.clear()
        for child in self.children.values():
            child.orphaned()
        if self._writer is not None:
            self._writer.close()
        self._close_out()
        self._reap()
        self._on_lost(self)

    def _room(self) -> None:
        if not self._waiting.done():
            self._waiting.set_result(None)

    def _close_out(self) -> None:
        if self._out is not None:
            asyncio.get_running_loop().remove_writer(self._out.fileno())
            self._out.close()
            self._out = None
        if not self._waiting.done():  # a request waiting for room: the zygote is gone
            self._waiting.set_exception(ZygoteGone(f"zygote {self.pid} exited"))
            self._waiting.exception()  # retrieved: nobody may be waiting any more

    async def request(self, message: dict, fd: int | None = None) -> dict:
        """Send a request (with the descriptor `fd`, if any: closed here, sent or not) and wait
        for its answer. Cancelled (a stop), the request still goes out whole; a service forked for
        it is then killed (see _read)."""
        if not self.alive or self._writer is None:
            if fd is not None:
                os.close(fd)
            raise ZygoteGone(f"zygote {self.pid} exited")
        self._ids += 1
        request_id = self._ids
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        sending = asyncio.ensure_future(self._send(orjson.dumps({**message, "id": request_id}) + b"\n", fd))
        try:
            await asyncio.shield(sending)
        except ZygoteGone:
            self._pending.pop(request_id, None)
            raise
        except asyncio.CancelledError:
            future.cancel()  # its answer (a pid) finds it done: that service is killed
            raise
        return await future

    def retire(self) -> None:
        """No more spawns; it exits once its last child is reaped, reporting their exits."""
        self.retired = True
        if self.alive and self._out is not None:
            self._retiring = asyncio.create_task(self._send_retire(), name=f"zygote-{self.pid}-retire")

    async def _send_retire(self) -> None:
        with contextlib.suppress(ZygoteGone):
            await self._send(b'{"op": "retire"}\n')

    async def close(self, timeout_s: float = 5.0) -> None:
        """End it: it exits on EOF (its children keep running)."""
        if self._writer is not None:
            self._writer.close()
        self._close_out()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        if psutil.pid_exists(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self._reap()


class ZygoteLauncher:
    """Keeps one zygote ready and forks services through it."""

    def __init__(
        self,
        log_dir: Path,
        log: logging.Logger,
        early: tuple[subprocess.Popen | ForkedZygote, socket.socket] | None = None,
    ):
        self.log_dir = log_dir
        self.log = log
        self._early = early  # started by the daemon before its imports (daemon_boot.py)
        self.current: ZygoteProcess | None = None
        self.retired: set[ZygoteProcess] = set()
        self._starting: asyncio.Task | None = None
        self._closing = False
        self.started = 0  # zygotes started, for status and tests
        self._retry_s = 1.0  # after a zygote that did not start; doubles up to a minute

    @property
    def log_path(self) -> Path:
        return self.log_dir / "zygote.stdout.log"

    async def start(self) -> None:
        """Have a zygote starting (in the background): a spawn waits for it."""
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start(), name="zygote-start")

    async def _start(self) -> ZygoteProcess | None:
        early = ""
        if self._early is not None:
            early = ", started before the supervisor's imports"
            if isinstance(self._early[0], ForkedZygote):
                early = ", forked by the supervisor from their shared preload, before it read its secrets"
        zygote = self._exec()
        self.started += 1
        await zygote.open()
        try:
            ready = await asyncio.wait_for(asyncio.shield(zygote.ready), READY_TIMEOUT_S)
        except (ZygoteGone, TimeoutError):
            self.log.error(
                "the zygote (pid %s) did not start (services start by exec meanwhile); "
                "trying again in %gs; see %s",
                zygote.pid,
                self._retry_s,
                self.log_path,
            )
            zygote.retired = True
            await zygote.close(1.0)
            if not self._closing:
                asyncio.get_running_loop().call_later(self._retry_s, self._start_soon)
                self._retry_s = min(self._retry_s * 2, 60.0)
            return None
        self._retry_s = 1.0
        self.log.info(
            "zygote ready (pid %s, %s modules preloaded%s)",
            zygote.pid,
            ready.get("modules"),
            early,
        )
        self.current = zygote
        return zygote

    def _exec(self) -> ZygoteProcess:
        early, self._early = self._early, None
        if early is not None:  # already preloading since the daemon's first step
            popen, ours = early
        else:
            # No secret: the services it forks get theirs on a pipe of their own (spawn), so
            # none of them holds (in memory or in /proc/<pid>/environ) a secret it was not given.
            popen, ours = exec_zygote(child_environment(ZYGOTE, os.environ), self.log_path)

        def reap() -> None:
            popen.poll()

        return ZygoteProcess(popen.pid, ours, reap, self._lost)

    def _start_soon(self) -> None:
        if not self._closing and self.current is None and (self._starting is None or self._starting.done()):
            self._starting = asyncio.create_task(self._start(), name="zygote-start")

    def _lost(self, zygote: ZygoteProcess) -> None:
        self.retired.discard(zygote)
        if zygote is not self.current:
            return
        self.current = None
        if not self._closing:
            self.log.error("the zygote (pid %s) died; starting a new one", zygote.pid)
            self._start_soon()

    async def _ready(self) -> ZygoteProcess | None:
        if self.current is not None and self.current.alive:
            return self.current
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start(), name="zygote-start")
        return await asyncio.shield(self._starting)

    async def spawn(self, name: str, entry: Path, env: dict[str, str], log: Path) -> ZygoteChild | None:
        """Fork `entry` as service `name`; None when no zygote can do it (start it by exec).
        Its secrets are not in the request: they go on a pipe (secrets_pipe) that the service
        reads after the fork, so they never pass through the zygote's memory."""
        hidden = secret_variables(env)
        plain = {k: v for k, v in env.items() if k not in hidden}
        request = {"op": "spawn", "name": name, "entry": str(entry), "env": plain, "cwd": str(REPO)}
        request["log"] = str(log)
        request["secrets"] = sorted(hidden)
        secrets = orjson.dumps({k: env[k] for k in request["secrets"]}) if hidden else b""
        if len(secrets) > SECRETS_MAX_BYTES:
            self.log.error("%s's secrets are too big for their pipe: it starts by exec", name)
            return None
        for _ in range(3):
            zygote = await self._ready()
            if zygote is None:
                return None
            try:
                reply = await zygote.request(request, secrets_pipe(secrets) if hidden else None)
            except ZygoteGone:
                continue
            if reply.get("stale"):
                self.log.info("code changed on disk (%s): starting a fresh zygote", reply.get("changed"))
                self._retire(zygote)
                continue
            if "pid" not in reply:
                self.log.error("the zygote could not fork %s: %s", name, reply.get("error"))
                return None
            return zygote.children.get(reply["pid"]) or ZygoteChild(reply["pid"], zygote)
        return None

    def _retire(self, zygote: ZygoteProcess) -> None:
        zygote.retire()
        self.retired.add(zygote)
        if zygote is self.current:
            self.current = None

    async def reload(self) -> None:
        """A fresh zygote (fresh code) for the next spawns: `restart` of the whole suite."""
        if self.current is not None:
            self._retire(self.current)
        await self.start()

    async def close(self) -> None:
        self._closing = True
        if self._early is not None:  # never adopted
            popen, ours = self._early
            self._early = None
            ours.close()  # it exits on EOF; killed, as it may still be preloading
            popen.kill()
            popen.wait()
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._starting
        for zygote in [*self.retired, *([self.current] if self.current else [])]:
            await zygote.close()

    def zygote_pids(self) -> list[int]:
        found = [z.pid for z in self.retired if z.alive]
        return ([self.current.pid] if self.current and self.current.alive else []) + found


def secrets_pipe(secrets: bytes) -> int:
    """A pipe holding `secrets` (written whole, the write end closed): its read end."""
    read_end, write_end = os.pipe()
    try:
        view = memoryview(secrets)
        while view:  # within the pipe's capacity (SECRETS_MAX_BYTES): never waits
            view = view[os.write(write_end, view) :]
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end
