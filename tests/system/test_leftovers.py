"""A suite's leftover processes on real processes: found by TRADING_SOCKET_DIR in their environment
or by the socket directory in their command line (a managed redis-server's `--unixsocket`), killed,
and nothing of another suite touched (services/management/leftovers.py)."""

from __future__ import annotations

import os
import signal

import psutil

from services.management.leftovers import kill_suite_processes, suite_processes
from tests.support import wait_until


def test_a_suites_processes_are_found_by_socket_directory_and_only_they_are_killed(processes, short_tmp):
    sock, other = short_tmp / "sock", short_tmp / "other"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
    service = processes.popen(["sleep", "600"], env={**env, "TRADING_SOCKET_DIR": str(sock)})
    stopped = processes.popen(["sleep", "600"], env={**env, "TRADING_SOCKET_DIR": str(sock)})
    redis = processes.popen(
        ["bash", "-c", f'exec -a "redis-server --unixsocket {sock}/redis.sock" sleep 600']
    )
    theirs = processes.popen(["sleep", "600"], env={**env, "TRADING_SOCKET_DIR": str(other)})
    wait_until(
        lambda: " ".join(psutil.Process(redis.pid).cmdline()), 10, what="bash to exec the title",
        until=lambda cmd: cmd.startswith("redis-server"),
    )  # fmt: skip
    stopped.send_signal(signal.SIGSTOP)  # a test may leave one stopped: SIGKILL ends it all the same

    assert {p.pid for p in suite_processes(sock)} == {service.pid, stopped.pid, redis.pid}
    assert kill_suite_processes(sock) == 3
    # Gone (reaped by the kill's wait: psutil waits on its children too).
    assert not any(psutil.pid_exists(p.pid) for p in (service, stopped, redis))
    assert suite_processes(sock) == [] and kill_suite_processes(sock) == 0
    assert theirs.poll() is None  # another suite's socket directory: untouched
