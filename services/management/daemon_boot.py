"""Starting a zygote (services/management/zygote.py) as a child process, and the daemon's early one.

The zygote's preload (about 550 modules: 0.3-0.5 s of CPU) is the longest step of a cold start.
`service_manager.py start` therefore has the supervisor daemon start its zygote as the first thing
it does, before the daemon imports anything of its own (this module needs only the standard
library): the preload runs on the other core while the supervisor imports, starts Redis and binds
its socket, and the zygote is handed to the supervisor's launcher (launcher.py) once that runs.

The zygote's environment holds no secret. The daemon cannot compute that itself before its imports,
so `start`, which has them, passes the names to leave out (`--zygote-drop`: names, never values, on
the command line) and the zygote's log file (`--zygote-log`). A daemon started without them (by hand,
or by an older `start`) starts its zygote later, from the launcher, as before.

With `--secrets-fd N` as well, `start` gave the daemon an environment without those variables and
their values on a pipe (fd N). The daemon then forks a child that preloads what the zygote would and
the supervisor's own modules, forks the first zygote (which never reads the pipe: it holds no
secret), and only then reads the secrets into its environment and goes on as the supervisor; the
daemon it came from exits. The supervisor so shares its interpreter and imports with the zygote and
every service instead of holding them alone (about 9 MB less for the suite), at the price of its
own start waiting for the preload (it ran beside it). A preload that ends or hangs its process (a
module's import-time code) takes only that child: the daemon then goes on as the supervisor itself,
as before. A zygote started later (one died, or its code changed) is a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The children's process titles are written over the zygote's command line: leave them room.
TITLE_ROOM = " " * 120
ZYGOTE_CODE = "from services.management.zygote import main; main()"

#: The zygote the daemon started before its imports, until the launcher takes it.
_early: tuple[subprocess.Popen | ForkedZygote, socket.socket] | None = None
#: The most `start` sends on the pipe (a pipe holds 64 KiB: `start` writes it without waiting).
SECRETS_MAX_BYTES = 48 * 1024


class ForkedZygote:
    """The zygote the daemon forked (fork_zygote): the part of a Popen the supervisor uses."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._retry_s = 0.02
        self._retrying = False

    def poll(self) -> int | None:
        """Its exit status once it exited (reaped), else None. The supervisor polls it once, when
        its socket closed; a zygote still exiting then is polled again from the event loop until
        reaped (subprocess.Popen does that for an exec'd one), so that no zombie is left."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1  # reaped elsewhere: gone all the same
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
                elif not self._retrying:
                    self._poll_later()
        return self.returncode

    def _poll_later(self) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        def again() -> None:
            self._retrying = False
            self.poll()

        self._retrying = True
        loop.call_later(self._retry_s, again)
        self._retry_s = min(self._retry_s * 2, 1.0)

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                self.returncode = -1
        return self.returncode


def exec_zygote(env: Mapping[str, str], log_path: Path) -> tuple[subprocess.Popen, socket.socket]:
    """A fresh zygote on one end of a socket pair; returns it and the other end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with theirs, open(log_path, "ab") as out:
            argv = [
                sys.executable,
                "-c",
                ZYGOTE_CODE,
                "--fd",
                str(theirs.fileno()),
                f"--title-room={TITLE_ROOM}",
            ]
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=str(REPO),
                pass_fds=(theirs.fileno(),),
                env=dict(env),
                # Its own session, as every service and Redis: where the kernel schedules sessions
                # as groups (autogroup), its preload then does not share the supervisor's slice.
                # It exits when the supervisor's end of the socket closes, however that dies.
                start_new_session=True,
            )
    except BaseException:
        ours.close()
        raise
    return popen, ours


def early_arguments(argv: list[str]) -> tuple[Path, set[str]] | None:
    """(log file, names to leave out of the environment) from the daemon's `--zygote-log PATH
    --zygote-drop A,B` (either spelling `--opt value` or `--opt=value`); None without both."""
    found: dict[str, str] = {}
    words = iter(argv)
    for word in words:
        name, eq, value = word.partition("=")
        if name in ("--zygote-log", "--zygote-drop"):
            found[name] = value if eq else next(words, "")
    if "--zygote-log" not in found or "--zygote-drop" not in found or not found["--zygote-log"]:
        return None
    return Path(found["--zygote-log"]), {n for n in found["--zygote-drop"].split(",") if n}


def zygote_environment(environ: Mapping[str, str], drop: set[str]) -> dict[str, str]:
    """The early zygote's environment: the daemon's without `drop`, supervised (as the launcher's)."""
    env = {k: v for k, v in environ.items() if k not in drop}
    env["TRADING_SUPERVISED"] = "1"
    return env


def secrets_fd_argument(argv: list[str]) -> int | None:
    """The pipe of `--secrets-fd N` (or `--secrets-fd=N`); None without it."""
    words = iter(argv)
    for word in words:
        name, eq, value = word.partition("=")
        if name == "--secrets-fd":
            try:
                return int(value if eq else next(words, ""))
            except ValueError:
                return None
    return None


def read_secrets(fd: int) -> dict[str, str]:
    """The variables `start` wrote on the pipe (a JSON object), read to its end; the pipe closed."""
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    except OSError:
        return {}
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        found = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def supervisor_modules() -> tuple[str, ...]:
    """What the daemon imports beyond the services' code: preloaded with it before the fork."""
    from services.management.zygote import entry_imports

    own = entry_imports(Path(__file__).with_name("manager_cli.py"))
    return (
        *own,
        "services.management.manager_cli",
        "services.management.supervisor",
        "services.management.launcher",
    )


def fork_zygote(log_path: Path) -> tuple[ForkedZygote, socket.socket]:
    """Preload (the zygote's modules and the supervisor's), then fork the first zygote: it shares
    every page of this interpreter with the supervisor. Called before the secrets are read."""
    from services.management import zygote

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = zygote.Zygote(theirs)
    modules = child.prepare(zygote.entries_of_suite(), supervisor_modules())
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the zygote: never returns
        status = 1
        try:
            os.setsid()  # a session of its own, as an exec'd zygote (exec_zygote)
            os.dup2(log, 1)
            os.dup2(log, 2)
            keep = theirs.fileno()
            os.closerange(3, keep)  # our end of the socket and the secrets' pipe among them
            os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
            os.environ["TRADING_SUPERVISED"] = "1"  # as zygote_environment
            child.loop(modules)
            status = 0
        except (BrokenPipeError, ConnectionResetError):
            status = 0  # the supervisor is gone
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)
    os.close(log)
    theirs.close()
    return ForkedZygote(pid), ours


#: How long the daemon waits for its child's preload (0.4 s idle, a few seconds under heavy load)
#: before it goes on as the supervisor itself: within the 20 s `start` waits for the supervisor.
PRELOAD_TIMEOUT_S = 12.0


def become_preloaded_supervisor(
    log_path: Path, secrets_fd: int, timeout_s: float = PRELOAD_TIMEOUT_S
) -> tuple[ForkedZygote, socket.socket] | None:
    """Fork a child that preloads and forks the zygote (fork_zygote), then goes on as the supervisor
    with the secrets; this process then exits. The preload runs a module's import-time code: one
    that ends its process (`os._exit`, a crash in a C extension) or hangs ends or stops only that
    child, and this process goes on as the supervisor itself (None: the launcher's zygote then, as
    before), reading the secrets the child never read."""
    told, tell = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the supervisor-to-be
        os.close(told)
        try:
            early = fork_zygote(log_path)
            os.write(tell, b"1")
            os.close(tell)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(70)
        gc.enable()
        os.environ.update(read_secrets(secrets_fd))
        return early
    os.close(tell)
    import select

    ready, _, _ = select.select([told], [], [], timeout_s)
    done = bool(ready) and os.read(told, 1) == b"1"
    os.close(told)
    if done:
        os._exit(0)  # the child is the supervisor now
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # it hung (or is already gone)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    print(
        "service_manager.py: the preload before the supervisor's fork failed; starting as before",
        file=sys.stderr,
    )
    os.environ.update(read_secrets(secrets_fd))
    return None


def preload_in_foreground(log_path: Path, secrets_fd: int) -> tuple[ForkedZygote, socket.socket] | None:
    """`start --foreground` (what the systemd unit runs) in zygote mode: this process is the one
    systemd watches (its main PID, the sender of READY=1 and the watchdog's pings), so it preloads
    and forks the first zygote itself instead of through a child (become_preloaded_supervisor), then
    reads its secrets. `start --foreground` re-executed itself into this without the secrets in its
    environment (daemon_launch.exec_foreground), so the zygote's memory never held them. A preload
    that raises falls back to the launcher's zygote (None); one that crashes this process or hangs
    it is systemd's to restart (after five tries in ten minutes it alerts a person)."""
    try:
        early: tuple[ForkedZygote, socket.socket] | None = fork_zygote(log_path)
    except Exception:
        traceback.print_exc()
        early = None
    gc.enable()
    os.environ.update(read_secrets(secrets_fd))
    return early


def start_early(argv: list[str]) -> None:
    """In the daemon, before its imports: start the zygote when `start` said how (see above)."""
    global _early
    parsed = early_arguments(argv)
    if parsed is None or _early is not None:
        return
    log_path, drop = parsed
    secrets_fd = secrets_fd_argument(argv)
    if secrets_fd is not None and "--foreground" in argv:
        _early = preload_in_foreground(log_path, secrets_fd)
        if _early is not None:
            return
    elif secrets_fd is not None:
        _early = become_preloaded_supervisor(log_path, secrets_fd)
        if _early is not None:
            return
    try:
        _early = exec_zygote(zygote_environment(os.environ, drop), log_path)
    except OSError as exc:  # the launcher starts one later and reports what fails then
        print(f"service_manager.py: the early zygote did not start: {exc}", file=sys.stderr)


def take_early() -> tuple[subprocess.Popen | ForkedZygote, socket.socket] | None:
    """The early zygote, once (the launcher adopts it); None when there is none."""
    global _early
    early, _early = _early, None
    return early
