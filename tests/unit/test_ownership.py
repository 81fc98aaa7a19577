"""Which pids the suite may signal (services/management/ownership.py): a table of command lines and
the pids never signalled. With real processes (another uid too): tests/system/test_ownership.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.management.ownership import cmdline_is_suite, suite_entries, why_not_ours

SOCKETS = Path("/tmp/ts-x/sock")
REDIS_SOCKET = str(SOCKETS / "redis.sock")
ENTRIES = suite_entries(["tests/system/_crash_after_start.py"])
MD = "services/market-data/market_data_service.py"


@pytest.mark.parametrize(
    ("cmdline", "ours"),
    [
        (["/repo/.venv/bin/python", f"/repo/{MD}"], True),  # as the supervisor spawns it
        (["python", MD], True),  # `python services/<dir>/<file>.py` from the repository
        (["python", "services/management/service_manager.py", "daemon"], True),
        (["python", "-m", "services.management.zygote"], True),  # the zygote launcher
        ([f"services.management.zygote: market-data {MD}"], True),  # a title set over argv
        ([f"market-data: {MD}"], True),  # the zygote branch's title of a forked service
        (["python", "-c", "from services.management.zygote import main; main()", "--fd", "5"], True),
        (["python", "/repo/tests/system/_crash_after_start.py"], True),  # an entry override in force
        (["redis-server", f"unixsocket:{REDIS_SOCKET}"], True),  # redis's own process title
        (["redis-server", "--port", "0", "--unixsocket", REDIS_SOCKET], True),
        (["redis-server", "unixsocket:/tmp/other/redis.sock"], False),  # another suite's Redis
        (["redis-server", "*:6379"], False),
        (["sleep", "600"], False),
        (["python", "/repo/services/market-data/market_data_service.py.bak"], False),
        (["python", "/repo/xservices/market-data/market_data_service.py"], False),  # not a path end
        (["bash", "-c", "echo market-data"], False),  # naming a service is not running it
        ([], False),  # a kernel thread, or a zombie
    ],
)
def test_cmdline_is_suite_table(cmdline, ours):
    assert cmdline_is_suite(cmdline, ENTRIES, REDIS_SOCKET) is ours


@pytest.mark.parametrize("pid", [-1, 0, 1, True, "123", None, 12.0])
def test_pids_never_signalled_whatever_the_socket_says(pid):
    """kill(-1) would signal every process of the user, kill(0) the caller's group."""
    assert why_not_ours(pid, SOCKETS) is not None


def test_our_own_pid_is_not_signalled():
    assert why_not_ours(os.getpid(), SOCKETS) is not None
