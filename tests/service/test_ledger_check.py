"""A service checks its SQLite ledger before it uses it: a damaged one stops it, once, saying why.

`PRAGMA quick_check` on each database the registry gives the service, opened read-only before
the socket is bound. A file that is not a database or has a damaged page ends the process with
exit status 78 (EXIT_NEEDS_OPERATOR) and one line naming the file; the supervisor then marks
the service fatal at once, with that line as the reason, instead of restarting it into the
same refusal. So does a ledger that cannot take the pragmas its store requires (WAL, ...).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from services.base import EXIT_NEEDS_OPERATOR, LedgerDamaged
from services.base.base_service import verify_ledger
from services.paper_trading.trade_store import TradeStore
from tests.support import Processes, manager_cli, rpc_call_sync, wait_until

PAGE = 4096


def good_ledger(path: Path) -> Path:
    store = TradeStore(path, Decimal(100_000), datetime(2024, 6, 17, tzinfo=UTC))
    store.close()  # the last connection closed: the WAL is checkpointed into the file
    return path


def damage_a_page(path: Path) -> None:
    """Scribble over the header of the third page (a table's b-tree page), as a torn write would."""
    assert path.stat().st_size >= 3 * PAGE
    with open(path, "r+b") as f:
        f.seek(2 * PAGE)
        f.write(b"\xff" * 50)


def test_a_sound_ledger_passes(tmp_path):
    verify_ledger(good_ledger(tmp_path / "paper_trading.db"))


def test_a_damaged_page_or_a_file_that_is_no_database_is_refused_naming_it(tmp_path):
    damaged = good_ledger(tmp_path / "paper_trading.db")
    damage_a_page(damaged)
    with pytest.raises(
        LedgerDamaged, match=rf"{damaged} failed its integrity check \(.+\): restore a backup"
    ):
        verify_ledger(damaged)
    junk = tmp_path / "predictions.db"
    junk.write_bytes(b"this is not an SQLite file, just some text that was left here\n" * 100)
    with pytest.raises(LedgerDamaged, match=rf"{junk} failed its integrity check \(file is not a database\)"):
        verify_ledger(junk)


def test_the_service_refuses_to_start_on_a_damaged_ledger(suite, processes):
    damage_a_page(good_ledger(suite.data_dir / "paper_trading.db"))
    service = processes.service("paper-trading", suite)
    service.start(wait=False)
    assert service.wait_exit(60) == EXIT_NEEDS_OPERATOR
    lines = [line for line in service.output().splitlines() if line.startswith("paper-trading: ")]
    assert len(lines) == 1 and "paper_trading.db failed its integrity check" in lines[0]
    assert not service.socket.exists()  # it never served


def test_the_supervisor_marks_it_fatal_at_once_with_its_reason():
    with Processes() as processes:
        dirs = processes.suite(
            processes.suite_dirs(
                "lc-", TRADING_MANAGER_HEALTH_INTERVAL_S="0.5", TRADING_MANAGER_MAX_FAILURES="5"
            )
        )
        damage_a_page(good_ledger(dirs.data_dir / "paper_trading.db"))
        result = manager_cli(dirs, "start", "--timeout", "60")
        assert result.returncode == 1, result.stdout + result.stderr
        rows = {s["name"]: s for s in rpc_call_sync(dirs.socket("manager"), "status")["services"]}
        trader = rows["paper-trading"]
        assert trader["state"] == "fatal" and trader["restarts"] == 0  # never restarted
        assert trader["reason"].startswith(f"needs an operator (exit {EXIT_NEEDS_OPERATOR}): paper-trading: ")
        assert "failed its integrity check" in trader["reason"]
        # The rest of the desk runs (start returns at the fatal one; on busy cores the others may
        # still be starting then).
        wait_until(
            lambda: {
                s["name"]: s["state"]
                for s in rpc_call_sync(dirs.socket("manager"), "status")["services"]
                if s["name"] != "paper-trading"
            },
            90,
            what="the rest of the desk running",
            until=lambda states: set(states.values()) == {"running"},
        )
        assert manager_cli(dirs, "stop").returncode == 0


def test_a_ledger_that_cannot_take_its_pragmas_stops_the_service_once_saying_which(suite, processes):
    """A sound ledger the store cannot put in WAL mode (here: a rollback-journal file made
    immutable, so SQLite opens it read-only) passes quick_check but stops the service at open,
    exit 78 with one line naming the pragma and SQLite's refusal, instead of trading on weaker
    guarantees (or crash-looping on the first write)."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    path = good_ledger(suite.data_dir / "paper_trading.db")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    db.close()
    immutable = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if immutable.returncode != 0:
        pytest.skip(f"cannot make a file immutable here: {immutable.stderr.strip()}")
    try:
        service = processes.service("paper-trading", suite)
        service.start(wait=False)
        assert service.wait_exit(60) == EXIT_NEEDS_OPERATOR
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    lines = [line for line in service.output().splitlines() if line.startswith("paper-trading: ")]
    assert lines == [
        f"paper-trading: {path}: PRAGMA journal_mode=WAL failed (attempt to write a readonly database)"
    ]
    assert not service.socket.exists()  # it never served
