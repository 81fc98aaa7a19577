"""Bounded logs with real processes: a chatty child's O_APPEND stdout copy-truncated, Redis
writing a new log after a rename, and the `logs` command's output (control characters escaped,
the newest rotated copy read when the current file is short)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

from services.management.log_rotation import rename_rotate, rotate_suite_logs
from tests.support import REPO, RedisServer, wait_until

HOSTILE = "retitled\x1b]0;pwned\x07 \x1b[2J\x1b[31mred\rCR"


def files_of(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(path.parent.glob(path.name + "*"))}


def test_a_chatty_child_stays_bounded(tmp_path):
    """A real child with its stdout on an O_APPEND file writes 40 bursts, each after the previous
    was rotated away: 3 backups of one burst each are kept, never more."""
    path = tmp_path / "svc.stdout.log"
    burst = 8192
    code = (
        "import os, sys, time\n"
        f"for i in range(40):\n"
        f"    os.write(1, bytes([65 + i % 26]) * {burst})\n"
        f"    while os.fstat(1).st_size >= {burst}: time.sleep(0.005)\n"
    )
    with open(path, "ab") as out:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=out)
    try:
        while child.poll() is None:
            rotate_suite_logs(tmp_path, ["svc"], None, 4096, 3)
            time.sleep(0.005)
            assert len(files_of(path)) <= 4
    finally:
        child.kill()
        child.wait(10)
    rotate_suite_logs(tmp_path, ["svc"], None, 4096, 3)
    sizes = files_of(path)
    assert sizes == {"svc.stdout.log": 0, **{f"svc.stdout.log.{n}": burst for n in (1, 2, 3)}}
    assert (tmp_path / "svc.stdout.log.1").read_bytes() == bytes([65 + 39 % 26]) * burst  # the last


def test_redis_reopens_its_renamed_log(short_tmp):
    """Redis opens its logfile for each line: after a rename the next line makes a new file."""
    import redis

    server = RedisServer(short_tmp / "r").start()  # --logfile <dir>/redis.log
    log = server.directory / "redis.log"
    client = redis.Redis(unix_socket_path=str(server.path))
    try:
        client.config_set("loglevel", "verbose")  # each new connection logs a line

        def connect_and_look() -> bool:
            redis.Redis(unix_socket_path=str(server.path)).close()
            with redis.Redis(unix_socket_path=str(server.path)) as other:
                other.ping()
            return log.exists() and log.stat().st_size > 0

        wait_until(connect_and_look, 10, what="redis to log", until=bool)
        assert rename_rotate(log, 1, 3) is True
        assert not log.exists()
        wait_until(connect_and_look, 10, what="a new redis.log", until=bool)
        assert (server.directory / "redis.log.1").stat().st_size > 0
    finally:
        client.close()
        server.stop()


def logs_cli(log_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRADING_")},
        "TRADING_LOG_DIR": str(log_dir),
        "TRADING_SOCKET_DIR": str(log_dir / "sock"),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, str(REPO / "services/management/service_manager.py"), "logs", *args],
        env=env,
        capture_output=True,
        timeout=60,
        cwd=REPO,
    )


def test_logs_reaches_into_the_newest_rotated_copy(tmp_path):
    def entry(n: int) -> bytes:
        return orjson.dumps(
            {"ts": f"2026-11-30T00:00:{n:02d}.000Z", "level": "INFO", "service": "s", "msg": f"m{n}"}
        )

    (tmp_path / "scheduler.log.1").write_bytes(b"\n".join(entry(n) for n in range(10)) + b"\n")
    (tmp_path / "scheduler.log").write_bytes(b"\n".join(entry(n) for n in (10, 11)) + b"\n")
    result = logs_cli(tmp_path, "scheduler", "-n", "5")
    assert result.returncode == 0, result.stderr
    assert [line.split()[-1] for line in result.stdout.decode().splitlines()] == [
        "m7",
        "m8",
        "m9",
        "m10",
        "m11",
    ]
    bad = logs_cli(tmp_path, "scheduler", "-n", "0")
    assert (
        bad.returncode == 2
        and bad.stderr.decode().strip() == "service_manager.py: -n must be at least 1, not 0"
    )


def test_logs_command_prints_no_escape_sequence(tmp_path):
    """The real CLI on a log file holding an escape sequence (no suite needed)."""
    entry = {"ts": "2026-11-30T00:00:00.000Z", "level": "WARNING", "service": "market-data", "msg": HOSTILE}
    (tmp_path / "market-data.log").write_bytes(orjson.dumps(entry) + b"\n" + b"plain \x1b[5m line\n")
    result = logs_cli(tmp_path, "market-data")
    assert result.returncode == 0, result.stderr
    assert b"\x1b" not in result.stdout and b"\x07" not in result.stdout and b"\r" not in result.stdout
    assert b"\\x1b]0;pwned\\x07" in result.stdout and b"plain \\x1b[5m line" in result.stdout
