"""The socket directory through the real CLI, supervisor and services: an unsafe one is refused with
one line before anything is opened in it; `stop` never signals a pid a fake socket hands it; the
default under XDG_RUNTIME_DIR; the supervisor's log rotation with a chatty service.

The second user is uid 65534 (nobody), through os.chown and subprocess user=: that needs root, as
CI runs; those tests are skipped otherwise."""

from __future__ import annotations

import contextlib
import os
import signal
import socketserver
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import psutil
import pytest

from tests.support import (
    REPO,
    Processes,
    SuiteDirs,
    manager_cli,
    manager_command,
    rpc_call_sync,
    short_tempdir,
    wait_until,
)

OTHER_UID = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a second uid needs root (CI runs as root)")


def env_with_sockets(dirs: SuiteDirs, socket_dir: Path) -> dict[str, str]:
    return {**dirs.env, "TRADING_SOCKET_DIR": str(socket_dir)}


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def run_python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )


@pytest.fixture
def dirs(processes: Processes) -> SuiteDirs:
    return processes.suite_dirs("sd-")


# ---- refusals ------------------------------------------------------------------------------------


@needs_root
def test_another_users_directory_with_a_planted_lock_is_refused_by_cli_supervisor_and_service(dirs):
    """The review's attack: /tmp/trading_sockets made first by another user, manager.lock a
    symlink to a root-owned file. Nothing is opened there, the file keeps its contents."""
    theirs = dirs.root / "theirs"
    theirs.mkdir(mode=0o777)
    os.chmod(theirs, 0o777)
    victim = dirs.root / "root-owned"
    victim.write_text("precious\n")
    (theirs / "manager.lock").symlink_to(victim)
    os.lchown(theirs / "manager.lock", OTHER_UID, OTHER_UID)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    env = env_with_sockets(dirs, theirs)
    expected = (
        f"socket directory {theirs} is owned by uid {OTHER_UID} (mode 0777), not by uid 0: remove it"
        " or set TRADING_SOCKET_DIR to a directory of your own with mode 0700"
    )
    for command in (["start"], ["start", "--foreground"], ["status"], ["stop"]):
        result = manager_cli(env, *command, timeout_s=60)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert one_line(result) == f"service_manager.py: {expected}", command
    # The supervisor itself (not through the CLI's check) and a service started by its file.
    supervisor = run_python(
        env, "-c", "from services.management.supervisor import Supervisor; Supervisor().run()"
    )
    assert supervisor.returncode == 78 and one_line(supervisor) == f"manager: {expected}"
    service = run_python(env, str(REPO / "services/scheduler/scheduler_service.py"))
    assert service.returncode == 78 and one_line(service) == f"scheduler: {expected}"
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in theirs.iterdir()) == ["manager.lock"]  # nothing created there
    assert not (dirs.data_dir / "redis").exists()  # no Redis was started


def test_a_0777_directory_of_ours_is_refused(dirs):
    loose = dirs.root / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    result = manager_cli(env_with_sockets(dirs, loose), "status", timeout_s=60)
    assert result.returncode == 1
    assert f"socket directory {loose} is writable by group or others" in one_line(result)
    assert "(mode 0777)" in result.stderr
    assert stat.S_IMODE(loose.stat().st_mode) == 0o777  # reported, not changed


def test_a_sticky_shared_directory_is_refused_and_a_private_subdirectory_accepted(dirs):
    shared = dirs.root / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    refused = manager_cli(env_with_sockets(dirs, shared), "status", timeout_s=60)
    assert refused.returncode == 1 and "(mode 1777)" in one_line(refused)
    accepted = manager_cli(env_with_sockets(dirs, shared / "trading"), "status", timeout_s=60)
    assert accepted.returncode == 3 and accepted.stdout.strip() == "supervisor: not running"
    # The logs stay readable when the socket directory is refused: they say why.
    logs = manager_cli(env_with_sockets(dirs, shared), "logs", timeout_s=60)
    assert "socket directory" not in logs.stderr


# ---- stop never signals what is not ours -----------------------------------------------------------


class FakeService(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers `health` with the pid it was given, and `shutdown` (and does nothing)."""

    daemon_threads = True

    def __init__(self, path: Path, pid: object):
        self.pid = pid
        super().__init__(str(path), FakeHandler)


class FakeHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            request = orjson.loads(line)
            result = {"status": "healthy", "pid": self.server.pid} if request["method"] == "health" else {}  # type: ignore[attr-defined]
            self.wfile.write(orjson.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}) + b"\n")


@contextlib.contextmanager
def fake_services(socket_dir: Path, pids: dict[str, object]) -> Iterator[None]:
    servers = [FakeService(socket_dir / f"{name}.sock", pid) for name, pid in pids.items()]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@needs_root
def test_stop_never_signals_a_pid_that_is_not_a_suite_process_of_ours(dirs, processes):
    """Fake sockets hand `stop` a `sleep` of ours, the same under uid 65534, kill(-1)'s pid and
    our own process: none is signalled; each is reported on one line."""
    ours = processes.popen(["sleep", "600"])
    theirs = processes.popen(["sleep", "600"], user=OTHER_UID, group=OTHER_UID)
    os.chmod(dirs.socket_dir, 0o700)
    claims = {"market-data": ours.pid, "sentiment": theirs.pid, "ml-model": -1, "prediction": 1}
    with fake_services(dirs.socket_dir, claims):
        result = manager_cli(dirs, "stop", timeout_s=120)
    assert result.returncode == 0, result.stderr
    assert "stopped leftovers: none" in result.stdout
    assert sorted(result.stderr.strip().splitlines()) == sorted(
        [
            f"not stopped: market-data: pid {ours.pid} (sleep 600) is not a process of the suite",
            f"not stopped: sentiment: pid {theirs.pid} runs as uid {OTHER_UID}, not as uid 0",
            "not stopped: ml-model: -1 is not a process id the suite may signal",
            "not stopped: prediction: 1 is not a process id the suite may signal",
        ]
    )
    assert ours.poll() is None and theirs.poll() is None


def test_stop_still_stops_a_real_service_left_without_a_supervisor(suite, processes):
    service = processes.start("scheduler", suite)
    result = manager_cli(suite, "stop", "scheduler", timeout_s=120)
    assert result.returncode == 0, result.stderr
    assert "stopped leftovers: scheduler" in result.stdout
    assert service.wait_exit(30) == 0  # the graceful `shutdown`, no signal needed


def test_the_supervisor_does_not_adopt_a_pid_that_is_not_ours(dirs, processes):
    """A socket left where market-data's goes answers `health` with a `sleep` of ours: the starting
    supervisor neither adopts nor ever signals it."""
    victim = processes.popen(["sleep", "600"])
    processes.suite(dirs)
    with fake_services(dirs.socket_dir, {"market-data": victim.pid}):
        processes.popen(
            manager_command("daemon"), env=dirs.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(
            lambda: (
                (dirs.log_dir / "manager.log").exists()
                and "not adopting" in (dirs.log_dir / "manager.log").read_text()
            ),
            60,
            what="the supervisor's look at leftovers",
            until=bool,
        )
        row = next(
            s
            for s in rpc_call_sync(dirs.socket("manager"), "status")["services"]
            if s["name"] == "market-data"
        )
        assert row["state"] == "stopped" and not row["adopted"]
        stop = manager_cli(dirs, "stop", timeout_s=120)
        assert stop.returncode == 0, stop.stderr
    assert victim.poll() is None
    line = next(
        json for json in (dirs.log_dir / "manager.log").read_text().splitlines() if "not adopting" in json
    )
    assert f"pid {victim.pid} (sleep 600) is not a process of the suite" in line


# ---- the XDG default and log rotation, through a real supervisor ------------------------------------


def end_suite(env: dict[str, str], socket_dir: Path) -> None:
    """`stop`, then SIGKILL whatever of this suite is left (found by its environment or path)."""
    if (socket_dir / "manager.sock").exists():
        with contextlib.suppress(subprocess.TimeoutExpired):
            manager_cli(env, "stop", timeout_s=120)
    left = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        with contextlib.suppress(psutil.Error):
            mine = (proc.info["environ"] or {}).get("XDG_RUNTIME_DIR") == env["XDG_RUNTIME_DIR"]
            if mine or str(socket_dir) in " ".join(proc.info["cmdline"] or []):
                proc.send_signal(signal.SIGKILL)
                left.append(proc)
    psutil.wait_procs(left, timeout=10)


@pytest.mark.slow
def test_xdg_default_and_a_chatty_services_stdout_log_stays_bounded(dirs):
    """No TRADING_SOCKET_DIR: the suite makes $XDG_RUNTIME_DIR/trading 0700 and puts everything
    there. A service writing 12 bursts of 96 KiB to stdout: the supervisor rotates past 64 KiB,
    3 copies kept, so its stdout logs never hold more than 4 bursts; the zygote's stdout log, found
    past the size, is rotated too."""
    runtime = short_tempdir("xdg-")
    os.chmod(runtime, 0o700)
    env = {k: v for k, v in dirs.env.items() if k not in ("TRADING_SOCKET_DIR", "TRADING_REDIS_URL")}
    burst, bursts = 96 << 10, 12
    env.update(
        XDG_RUNTIME_DIR=str(runtime),
        TRADING_MANAGER_ENTRY_MARKET_DATA="tests/system/_chatty_service.py",
        TRADING_MANAGER_LOG_MAX_BYTES=str(64 << 10),
        TRADING_MANAGER_LOG_CHECK_S="0.1",
        CHATTY_BURST_BYTES=str(burst),
        CHATTY_BURSTS=str(bursts),
    )
    sockets = runtime / "trading"
    log = dirs.log_dir / "market-data.stdout.log"
    # The zygote's own stdout log, appended across the zygote's restarts, is rotated as well.
    zygote_log = dirs.log_dir / "zygote.stdout.log"
    dirs.log_dir.mkdir(parents=True, exist_ok=True)
    zygote_log.write_bytes(b"an earlier zygote's line\n" * (burst // 16))
    zygote_written = zygote_log.stat().st_size
    try:
        started = manager_cli(env, "start", "market-data", "--timeout", "60")
        assert started.returncode == 0, started.stdout + started.stderr
        assert stat.S_IMODE(sockets.lstat().st_mode) == 0o700 and sockets.lstat().st_uid == os.geteuid()
        assert {"manager.sock", "manager.lock", "redis.sock", "market-data.sock", "market-data.lock"} <= {
            p.name for p in sockets.iterdir()
        }
        wait_until(
            lambda: (
                rpc_call_sync(sockets / "market-data.sock", "health")["bursts"] == bursts
                and log.stat().st_size < burst
            ),
            90,
            what="every burst written and rotated",
            until=bool,
            ignoring=(OSError, RuntimeError),
        )
        sizes = {p.name: p.stat().st_size for p in dirs.log_dir.glob("market-data.stdout.log*")}
        assert sorted(sizes) == [
            "market-data.stdout.log",
            *(f"market-data.stdout.log.{n}" for n in (1, 2, 3)),
        ]
        assert all(burst <= sizes[f"market-data.stdout.log.{n}"] < burst + 4096 for n in (1, 2, 3))
        assert sum(sizes.values()) < 4 * burst  # 12 bursts written, at most 4 kept
        newest = (dirs.log_dir / "market-data.stdout.log.1").read_bytes()
        assert f"burst {bursts - 1:03d} ".encode() in newest
        assert "rotated market-data.stdout.log" in (dirs.log_dir / "manager.log").read_text()
        wait_until(
            lambda: (dirs.log_dir / "zygote.stdout.log.1").stat().st_size >= zygote_written,
            30,
            what="the zygote's stdout log rotated",
            until=bool,
            ignoring=(OSError,),
        )
        assert zygote_log.stat().st_size < 64 << 10
    finally:
        end_suite(env, sockets)
        subprocess.run(["rm", "-rf", str(runtime)], check=False)
