"""Which pids the suite may signal, on real processes: ours and not a suite entry, ours and a suite
entry (by a process title over argv, as a zygote's child shows), and the same title under another
uid (65534, which needs root: skipped otherwise)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from services.management.ownership import why_not_ours
from tests.support import REPO, wait_until

SOCKETS = Path("/tmp/ts-x/sock")
MD = "services/market-data/market_data_service.py"


def titled(title: str, **popen: object) -> subprocess.Popen:
    """`sleep` with argv[0] set to `title` (how a process title over argv reads in /proc)."""
    return subprocess.Popen(["bash", "-c", f'exec -a "{title}" sleep 600'], **popen)  # type: ignore[call-overload]


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(10)


def wait_exec(proc: subprocess.Popen, word: str) -> None:
    """Until bash has exec'ed (its command line is the title, not `bash -c ...`)."""
    wait_until(
        lambda: " ".join(psutil.Process(proc.pid).cmdline()),
        10,
        what="the titled process",
        until=lambda cmd: word in cmd and "bash" not in cmd,
    )


def test_a_process_of_ours_that_is_no_suite_entry_is_refused(started):
    started.append(subprocess.Popen(["sleep", "600"]))
    wait_exec(started[0], "sleep")  # /proc shows its command line a moment after the fork
    why = why_not_ours(started[0].pid, SOCKETS)
    assert why is not None and "is not a process of the suite" in why and "sleep 600" in why


def test_a_suite_entry_of_ours_is_accepted(started):
    started.append(titled(f"python {REPO / MD}"))
    wait_exec(started[0], MD)
    assert why_not_ours(started[0].pid, SOCKETS) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another uid needs root (CI runs as root)")
def test_the_same_command_line_under_another_uid_is_refused(started):
    started.append(titled(f"python {REPO / MD}", user=65534, group=65534))
    wait_exec(started[0], MD)
    why = why_not_ours(started[0].pid, SOCKETS)
    assert why == f"pid {started[0].pid} runs as uid 65534, not as uid 0"


def test_a_process_that_is_gone_is_not_signalled():
    proc = subprocess.Popen(["true"])
    proc.wait(10)
    assert why_not_ours(proc.pid, SOCKETS) == f"pid {proc.pid} is gone"
