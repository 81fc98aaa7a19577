"""The processes of one suite, found by its socket directory, and killing what is left of them.

Used where a suite's own `stop` is not enough or not possible: a sweep's replay child that was
interrupted (services.management.sweep), and a test's teardown (tests/support.py). A process
belongs to the suite when TRADING_SOCKET_DIR in its environment is the suite's socket directory
(the supervisor and the services it starts), or when its command line names that directory (the
managed redis-server, started with `--unixsocket <socket dir>/redis.sock`). The calling process
is never one of them, whatever its environment.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil


def suite_processes(socket_dir: Path) -> list[psutil.Process]:
    """Every live process of the suite whose socket directory is `socket_dir`."""
    wanted = str(socket_dir)
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            env = proc.info["environ"] or {}
            cmd = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if proc.pid != os.getpid() and (env.get("TRADING_SOCKET_DIR") == wanted or wanted in cmd):
            found.append(proc)
    return found


def kill_suite_processes(socket_dir: Path, timeout_s: float = 10.0) -> int:
    """SIGKILL every process of the suite in `socket_dir` and wait up to `timeout_s` for them to
    go; how many there were. SIGKILL ends a stopped process (SIGSTOP in a test) as well."""
    left = suite_processes(socket_dir)
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(left, timeout=timeout_s)
    return len(left)
