"""`service_manager.py start` launches the supervisor daemon before its own imports
(services/management/daemon_launch.py): only for a plain start, only when none answers, and with
no asyncio loaded by then. The launch itself is replaced by a stand-in that says what it was given;
the real one runs in every system test that starts a suite (tests/system/test_cold_start.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from services.management.daemon_launch import plain_start
from tests.support import REPO, short_tempdir


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        ([], []),
        (["sentiment"], ["sentiment"]),
        (["market-data", "--timeout", "30", "ml-model"], ["market-data", "ml-model"]),
        (["--timeout=2.5"], []),
        (["--foreground"], None),  # the supervisor in this process: nothing to launch
        (["--help"], None),
        (["-h"], None),
        (["no-such-service"], None),  # the parser's error, and nothing launched
        (["--timeout"], None),
        (["--timeout", "soon"], None),
        (["--time", "5"], None),  # an abbreviation argparse would take: left to it
        (["sentiment", "--", "alerts"], None),
    ],
)
def test_only_a_plain_start_is_launched_early(argv: list[str], names: list[str] | None):
    assert plain_start(argv) == names


STAND_IN = """
import json, sys
from services.management import daemon_launch
launched = []
daemon_launch.launch_daemon = lambda autostart=None: launched.append(autostart) or "daemon"
daemon_launch.start_early(sys.argv[1:])
print(json.dumps({"launched": launched, "asyncio": "asyncio" in sys.modules,
                  "taken": daemon_launch.take_launched(), "again": daemon_launch.take_launched()}))
"""


def early(argv: list[str], socket_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
    env["TRADING_SOCKET_DIR"] = str(socket_dir)
    env["TRADING_LOG_DIR"] = str(socket_dir.parent / "logs")
    done = subprocess.run(
        [sys.executable, "-c", STAND_IN, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout.strip().splitlines()[-1])


def test_a_plain_start_launches_before_asyncio_is_imported_and_hands_it_over_once():
    root = short_tempdir("dl-")
    found = early(["sentiment", "--timeout", "30"], root / "sock")
    assert found == {"launched": [["sentiment"]], "asyncio": False, "taken": "daemon", "again": None}
    assert early(["--foreground"], root / "sock")["launched"] == []


def test_nothing_is_launched_early_when_a_supervisor_answers():
    root = short_tempdir("dl-")
    (root / "sock").mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listening:
        listening.bind(str(root / "sock" / "manager.sock"))
        listening.listen()
        assert early(["sentiment"], root / "sock")["launched"] == []


def test_a_start_the_parser_refuses_launches_no_daemon():
    """The real command line: a typo is one line and exit 2, and no supervisor was launched."""
    root = short_tempdir("dl-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
    env.update(TRADING_SOCKET_DIR=str(root / "sock"), TRADING_LOG_DIR=str(root / "logs"))
    done = subprocess.run(
        [sys.executable, str(REPO / "services/management/service_manager.py"), "start", "--timeout", "soon"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert not (root / "logs" / "manager.stdout.log").exists()  # the daemon's output file: never opened
