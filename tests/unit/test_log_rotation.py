"""Bounded logs: the supervisor's copy-truncate and rename rotation (services/management/
log_rotation.py), the services' JSON log handler (daily or by size), and `logs` escaping control
characters (service_manager.format_log_line, table). With real processes: tests/system/test_logs.py."""

from __future__ import annotations

import logging
import os
import time
import zlib
from pathlib import Path

import orjson

from services.base.logs import DailyAndSizeRotatingHandler, JsonFormatter
from services.management.log_rotation import copy_truncate, rename_rotate, rotate_suite_logs
from services.management.manager_cli import escape_controls, format_log_line, table


def files_of(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(path.parent.glob(path.name + "*"))}


def test_copy_truncate_keeps_the_writers_o_append_descriptor_writing_at_the_start(tmp_path):
    path = tmp_path / "x.stdout.log"
    writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # as the supervisor opens it
    try:
        os.write(writer, b"a" * 10_000)
        assert copy_truncate(path, 4096, 3) is True
        os.write(writer, b"b" * 100)
    finally:
        os.close(writer)
    assert path.read_bytes() == b"b" * 100  # at offset 0: no hole where the old bytes were
    assert (tmp_path / "x.stdout.log.1").read_bytes() == b"a" * 10_000


def test_below_the_size_nothing_moves(tmp_path):
    path = tmp_path / "x.stdout.log"
    path.write_bytes(b"a" * 4095)
    assert copy_truncate(path, 4096, 3) is False and rename_rotate(path, 4096, 3) is False
    assert copy_truncate(tmp_path / "missing.log", 1, 3) is False
    assert files_of(path) == {"x.stdout.log": 4095}


def test_backups_shift_and_the_oldest_is_dropped(tmp_path):
    path = tmp_path / "x.stdout.log"
    for n in range(6):
        path.write_bytes(bytes([65 + n]) * (5000 + n))
        assert copy_truncate(path, 4096, 3)
    assert files_of(path) == {
        "x.stdout.log": 0,
        "x.stdout.log.1": 5005,  # the newest
        "x.stdout.log.2": 5004,
        "x.stdout.log.3": 5003,
    }


def test_a_symlinked_log_is_not_rotated_through_and_the_others_still_are(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"z" * 10_000)
    (tmp_path / "a.stdout.log").symlink_to(target)
    (tmp_path / "b.stdout.log").write_bytes(b"b" * 10_000)
    rotated, failed = rotate_suite_logs(tmp_path, ["a", "b"], None, 4096, 3)
    assert rotated == [tmp_path / "b.stdout.log"] and list(failed) == [tmp_path / "a.stdout.log"]
    assert target.read_bytes() == b"z" * 10_000 and not (tmp_path / "a.stdout.log.1").exists()


# ---- the services' JSON logs ---------------------------------------------------------------------


def json_logger(path: Path, max_bytes: int) -> tuple[logging.Logger, DailyAndSizeRotatingHandler]:
    handler = DailyAndSizeRotatingHandler(path, max_bytes, 7)
    handler.setFormatter(JsonFormatter("svc"))
    # A short name: the record (and so how far past the size a file may go) must not grow with
    # the temporary path, which is longer under test workers.
    logger = logging.getLogger(f"rot-{zlib.crc32(str(path).encode())}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger, handler


def test_json_log_rotates_by_size_and_keeps_seven(tmp_path):
    path = tmp_path / "svc.log"
    logger, handler = json_logger(path, 4096)
    try:
        for n in range(400):
            logger.info("line %d %s", n, "x" * 150)
    finally:
        handler.close()
    sizes = files_of(path)
    assert sorted(sizes) == ["svc.log", *(f"svc.log.{n}" for n in range(1, 8))]
    assert all(size < 4096 + 250 for size in sizes.values())  # past the size by one record at most
    last = orjson.loads(path.read_text().splitlines()[-1])
    assert last["msg"].startswith("line 399 ")


def test_json_log_still_rotates_at_midnight(tmp_path):
    path = tmp_path / "svc.log"
    logger, handler = json_logger(path, 1 << 20)
    try:
        logger.info("yesterday")
        handler.rollover_at = time.time() - 1  # midnight has passed
        logger.info("today")
    finally:
        handler.close()
    assert "yesterday" in (tmp_path / "svc.log.1").read_text()
    assert "yesterday" not in path.read_text() and "today" in path.read_text()
    assert handler.rollover_at > time.time()


# ---- control characters in what `logs` prints ------------------------------------------------------

HOSTILE = "retitled\x1b]0;pwned\x07 \x1b[2J\x1b[31mred\rCR\x9b1m C1 \x00nul\x7fdel\ttab"


def test_format_log_line_escapes_control_characters():
    line = orjson.dumps(
        {
            "ts": "2026-11-30T00:00:00.000Z",
            "level": "INFO",
            "service": "svc",
            "msg": HOSTILE,
            "who": "\x1b[1m",
        }
    ).decode()
    shown = format_log_line(line)
    assert not any((ord(c) < 32 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "retitled\\x1b]0;pwned\\x07 \\x1b[2J\\x1b[31mred\\x0dCR\\x9b1m C1 \\x00nul\\x7fdel\ttab" in shown
    assert "who=\\x1b[1m" in shown


def test_a_message_cannot_pass_for_another_entry():
    fake = "ok\n2026-11-30T00:00:01.000Z ERROR   paper-trading forged"
    shown = format_log_line(orjson.dumps({"ts": "t", "level": "INFO", "service": "s", "msg": fake}).decode())
    assert shown.splitlines()[1] == "    2026-11-30T00:00:01.000Z ERROR   paper-trading forged"


def test_a_raw_line_and_a_table_cell_are_escaped_too():
    assert format_log_line("Traceback \x1b[2J\n") == "Traceback \\x1b[2J"
    assert escape_controls("a\x1bb\tc\nd") == "a\\x1bb\tc\nd"
    assert "\x1b" not in table(["A", "B"], [["x\x1b[2J", "running"]])
