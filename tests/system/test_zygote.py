"""The zygote launch mode (services/management/zygote.py) with real processes: services forked from
the preloaded parent, their titles and sessions, a zygote that dies, exit code 78 through the
zygote, and code changed on disk. The supervisor's other behaviour in this mode is covered by
test_manager.py, which runs in both launch modes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from services.base import EXIT_NEEDS_OPERATOR
from services.domain.supervision import UP
from services.registry import ENTRY_FILES
from tests.support import REPO, Processes, SuiteDirs, manager_cli, rpc_call_sync, wait_until
from tests.system.test_manager import FAST_TIMERS, by_name, wait_for_service

pytestmark = pytest.mark.slow


def supervisor(dirs: SuiteDirs) -> dict:
    return rpc_call_sync(dirs.socket("manager"), "status")["supervisor"]


def zygote_pid(dirs: SuiteDirs) -> int:
    pids = supervisor(dirs)["zygote"]
    assert pids, "no zygote running"
    return pids[0]


def running(name: str, other_than: int | None = None):
    return lambda s: s["state"] == "running" and s["health"] in UP and s["pid"] not in (None, other_than)


@pytest.fixture(scope="module")
def suite():
    """Sentiment alone (it needs only Redis), in the default launch mode."""
    with Processes() as processes:
        dirs = processes.suite_dirs("zy-", **FAST_TIMERS)
        assert "TRADING_MANAGER_LAUNCH" not in dirs.env  # the default is the zygote
        yield processes.start_suite(dirs, "sentiment")


def test_a_service_is_forked_from_the_zygote_in_its_own_session_and_title(suite):
    assert supervisor(suite)["launch"] == "zygote"
    zygote = zygote_pid(suite)
    row = by_name(suite)["sentiment"]
    pid = row["pid"]
    assert row["state"] == "running" and not row["adopted"]
    child = psutil.Process(pid)
    assert child.ppid() == zygote  # forked, not exec'd: the zygote is its parent
    assert os.getsid(pid) == pid != os.getsid(zygote)  # its own session, like exec mode
    assert child.name() == "sentiment"  # /proc/<pid>/comm
    assert ENTRY_FILES["sentiment"] in " ".join(child.cmdline())  # ps shows what it runs
    assert psutil.Process(zygote).name() == "trading-zygote"
    # It is the service, with its own environment and no descriptor of the zygote's left open.
    health = rpc_call_sync(suite.socket("sentiment"), "health")
    assert health["pid"] == pid and health["service"] == "sentiment"
    assert not [f for f in child.open_files() if f.path.endswith("manager.lock")]
    log = (suite.log_dir / "sentiment.stdout.log").read_text()
    assert "Traceback" not in log


def test_a_dead_zygote_is_replaced_while_services_keep_running(suite):
    old = zygote_pid(suite)
    service = by_name(suite)["sentiment"]["pid"]
    os.kill(old, signal.SIGKILL)
    new = wait_until(
        lambda: supervisor(suite)["zygote"],
        60,
        what="a new zygote",
        until=lambda pids: pids and old not in pids,
    )[0]
    row = by_name(suite)["sentiment"]
    assert row["pid"] == service and row["state"] == "running"  # kept running meanwhile
    assert row["adopted"]  # its parent is gone: watched like an adopted process
    # The orphan's death is seen (its exit code is nobody's to read), and it is forked again from
    # the new zygote, whose children's exit codes reach the supervisor again.
    os.kill(service, signal.SIGKILL)
    row = wait_for_service(suite, "sentiment", running("sentiment", service), what="orphan restarted")
    assert psutil.Process(row["pid"]).ppid() == new
    assert row["last_exit"] is None and not row["adopted"]
    os.kill(row["pid"], signal.SIGKILL)
    again = wait_for_service(suite, "sentiment", running("sentiment", row["pid"]), what="restarted")
    assert again["last_exit"] == -signal.SIGKILL


def test_restart_of_the_whole_suite_starts_a_fresh_zygote(suite):
    old = zygote_pid(suite)
    result = manager_cli(suite, "restart")
    assert result.returncode == 0, result.stdout + result.stderr
    row = wait_for_service(suite, "sentiment", running("sentiment"))
    new = zygote_pid(suite)
    assert new != old and psutil.Process(row["pid"]).ppid() == new
    wait_until(lambda: not psutil.pid_exists(old), 30, what="the retired zygote to exit")


@pytest.mark.parametrize("after_s", [None, "0.5"], ids=["at-start", "while-running"])
def test_exit_code_78_reaches_the_supervisor(processes, after_s):
    extra = {"NEEDS_OPERATOR_AFTER_S": after_s} if after_s else {}
    dirs = processes.suite(
        processes.suite_dirs(
            "zy-", **FAST_TIMERS, TRADING_MANAGER_ENTRY_SENTIMENT="tests/system/_needs_operator.py", **extra
        )
    )
    manager_cli(dirs, "start", "sentiment", "--timeout", "30")
    fatal = wait_for_service(dirs, "sentiment", lambda s: s["state"] == "fatal")
    assert fatal["last_exit"] == EXIT_NEEDS_OPERATOR
    assert f"needs an operator (exit {EXIT_NEEDS_OPERATOR})" in fatal["reason"]
    assert "ledger damaged: simulated" in fatal["reason"]  # its own last line
    assert fatal["restarts"] == 0  # never retried
    assert supervisor(dirs)["launch"] == "zygote"


MARKED_SERVICE = """
import os

import marker_module
from services.base.base_service import BaseService, run_service


class Marked(BaseService):
    name = os.environ["TRADING_SERVICE_NAME"]

    async def health_details(self) -> dict:
        return {"marker": marker_module.VALUE}


if __name__ == "__main__":
    run_service(Marked)
"""


def marked_suite(processes, tmp_path: Path, marker_module: str):
    """A suite whose sentiment is MARKED_SERVICE, reporting `marker_module`'s VALUE (written to
    tmp_path, on the path of the zygote's preload too)."""
    (tmp_path / "marker_module.py").write_text(marker_module)
    entry = tmp_path / "marked_service.py"
    entry.write_text(MARKED_SERVICE)
    return processes.suite(
        processes.suite_dirs(
            "zy-",
            **FAST_TIMERS,
            TRADING_MANAGER_ENTRY_SENTIMENT=str(entry),
            PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}",  # the zygote preloads marker_module too
        )
    )


def test_code_changed_on_disk_is_started_fresh(processes, tmp_path: Path):
    """A module the zygote preloaded changes: the next start forks from a fresh zygote."""
    dirs = marked_suite(processes, tmp_path, 'VALUE = "one"\n')
    module = tmp_path / "marker_module.py"
    assert manager_cli(dirs, "start", "sentiment").returncode == 0
    assert rpc_call_sync(dirs.socket("sentiment"), "health")["marker"] == "one"
    old = zygote_pid(dirs)
    module.write_text('VALUE = "two"\n')
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))  # coarse clocks
    result = manager_cli(dirs, "restart", "sentiment")
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for_service(dirs, "sentiment", running("sentiment"))
    assert rpc_call_sync(dirs.socket("sentiment"), "health")["marker"] == "two"
    assert zygote_pid(dirs) != old


ZYGOTE_BREAKER = """
import os
import sys

# Imported by a zygote's preload (whose argv is not this service's file): it dies before it is
# ready. A service started by exec runs on.
if not sys.argv[0].endswith("marked_service.py"):
    os._exit(1)
"""


def test_services_start_by_exec_while_no_zygote_can_start(processes, tmp_path: Path):
    dirs = marked_suite(processes, tmp_path, ZYGOTE_BREAKER + 'VALUE = "exec"\n')
    result = manager_cli(dirs, "start", "sentiment")
    assert result.returncode == 0, result.stdout + result.stderr
    assert rpc_call_sync(dirs.socket("sentiment"), "health")["marker"] == "exec"
    row = by_name(dirs)["sentiment"]
    assert psutil.Process(row["pid"]).ppid() == supervisor(dirs)["pid"]  # exec'd by the supervisor
    assert supervisor(dirs)["launch"] == "zygote" and supervisor(dirs)["zygote"] == []
    assert "did not start" in (dirs.log_dir / "manager.log").read_text()


DAEMON_PRELOAD_HANG = """
import sys
import time

# Imported by the preload of the daemon's child (whose argv is the manager's): it hangs there, and
# only there. The zygote the daemon then starts itself, and the services, import it at once.
if sys.argv[0].endswith("service_manager.py"):
    time.sleep(3600)
"""


def test_a_preload_that_hangs_the_daemons_child_leaves_the_daemon_to_start_as_before(
    processes, tmp_path: Path
):
    dirs = marked_suite(processes, tmp_path, DAEMON_PRELOAD_HANG + 'VALUE = "forked"\n')
    result = manager_cli(dirs, "start", "sentiment")  # after the daemon's wait (PRELOAD_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    assert rpc_call_sync(dirs.socket("sentiment"), "health")["marker"] == "forked"
    zygote = psutil.Process(zygote_pid(dirs))
    assert zygote.ppid() == supervisor(dirs)["pid"]
    assert psutil.Process(by_name(dirs)["sentiment"]["pid"]).ppid() == zygote.pid
    ready = [
        line for line in (dirs.log_dir / "manager.log").read_text().splitlines() if "zygote ready" in line
    ]
    assert ready and "started before the supervisor's imports" in ready[0], ready
    assert "failed; starting as before" in (dirs.log_dir / "manager.stdout.log").read_text()
    # The hung child is gone: no process of this suite sleeps in the manager's preload.
    hung = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(dirs.log_dir) in " ".join(p.info["cmdline"] or []) and p.pid != supervisor(dirs)["pid"]
    ]
    assert hung == [], hung
