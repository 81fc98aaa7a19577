"""services/base/storage.py: which SQLite failures are the storage's, and pragmas that must take.

Real SQLite errors where they can be had without a fault (a read-only connection, a constraint,
bad SQL, a closed connection); the disk-full and I/O rows are built as SQLite reports them (the
real ones, under a file-size limit, are in test_trade_store.py and tests/service/test_storage_halt.py).
"""

from __future__ import annotations

import sqlite3

import pytest

from services.base.knobs import ConfigError, read_knobs
from services.base.storage import (
    LedgerMisconfigured,
    StorageFailure,
    StorageKnobs,
    apply_schema,
    set_pragmas,
    storage_failure,
    with_synchronous,
)


def sqlite_error(cls: type[sqlite3.Error], message: str, code: int | None, name: str | None) -> sqlite3.Error:
    """An error as the sqlite3 module raises it (3.11 sets these two attributes on each one)."""
    error = cls(message)
    if code is not None:
        error.sqlite_errorcode = code  # type: ignore[attr-defined]
        error.sqlite_errorname = name  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        # A full disk (ENOSPC, or a write cut short): SQLite's own word.
        (
            sqlite_error(sqlite3.OperationalError, "database or disk is full", 13, "SQLITE_FULL"),
            StorageFailure("disk full", "SQLITE_FULL", "database or disk is full"),
        ),
        # A write past RLIMIT_FSIZE fails with EFBIG, not ENOSPC: SQLite calls it an I/O error.
        (
            sqlite_error(sqlite3.OperationalError, "disk I/O error", 778, "SQLITE_IOERR_WRITE"),
            StorageFailure("I/O error", "SQLITE_IOERR_WRITE", "disk I/O error"),
        ),
        (
            sqlite_error(sqlite3.OperationalError, "disk I/O error", 1034, "SQLITE_IOERR_FSYNC"),
            StorageFailure("I/O error", "SQLITE_IOERR_FSYNC", "disk I/O error"),
        ),
        (
            sqlite_error(
                sqlite3.OperationalError, "attempt to write a readonly database", 8, "SQLITE_READONLY"
            ),
            StorageFailure("read-only", "SQLITE_READONLY", "attempt to write a readonly database"),
        ),
        (
            sqlite_error(sqlite3.OperationalError, "unable to open database file", 14, "SQLITE_CANTOPEN"),
            StorageFailure("cannot open", "SQLITE_CANTOPEN", "unable to open database file"),
        ),
        # Without the attributes (an older sqlite3 module): known by SQLite's message.
        (
            sqlite_error(sqlite3.OperationalError, "database or disk is full", None, None),
            StorageFailure("disk full", "SQLITE_FULL", "database or disk is full"),
        ),
        # Not the storage: contention, a damaged file (an operator's job, not a pause), bugs.
        (sqlite_error(sqlite3.OperationalError, "database is locked", 5, "SQLITE_BUSY"), None),
        (sqlite_error(sqlite3.DatabaseError, "database disk image is malformed", 11, "SQLITE_CORRUPT"), None),
        (sqlite_error(sqlite3.OperationalError, "no such table: x", None, None), None),
        (OSError(28, "No space left on device"), None),  # not SQLite's: not a ledger write
    ],
)
def test_storage_failures_are_told_from_other_errors(error, expected):
    assert storage_failure(error) == expected


def test_real_errors_of_sqlite_are_classified(tmp_path):
    path = tmp_path / "x.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        db.execute("INSERT INTO t VALUES (1)")
    db.close()
    readonly = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as raised:
        readonly.execute("INSERT INTO t VALUES (2)")
    assert storage_failure(raised.value) == StorageFailure(
        "read-only", "SQLITE_READONLY", "attempt to write a readonly database"
    )
    writable = sqlite3.connect(path)
    for statement in ("INSERT INTO t VALUES (1)", "INSERT INTO nowhere VALUES (1)"):
        with pytest.raises(sqlite3.Error) as raised:
            writable.execute(statement)
        assert storage_failure(raised.value) is None, statement
    writable.close()
    with pytest.raises(sqlite3.ProgrammingError) as raised:
        writable.execute("SELECT 1")
    assert storage_failure(raised.value) is None  # a closed connection is a bug
    readonly.close()


def test_pragmas_that_take_pass(tmp_path):
    db = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    set_pragmas(
        db,
        tmp_path / "x.db",
        {"journal_mode": "WAL", "synchronous": "FULL", "foreign_keys": "ON", "busy_timeout": 30000},
    )
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2
    set_pragmas(db, tmp_path / "x.db", {"synchronous": "NORMAL", "foreign_keys": "off"})
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1
    db.close()


def test_a_pragma_that_does_not_take_or_fails_stops_naming_it(tmp_path):
    # An in-memory database answers journal_mode=WAL by keeping `memory`, without an error.
    memory = sqlite3.connect(":memory:")
    with pytest.raises(
        LedgerMisconfigured,
        match=r"memory.db: PRAGMA journal_mode=WAL did not take \(SQLite keeps journal_mode=memory\)",
    ):
        set_pragmas(memory, "memory.db", {"journal_mode": "WAL"})
    memory.close()
    # A file that can only be read (here a read-only connection) refuses WAL with an error.
    path = tmp_path / "ro.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    readonly = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(
        LedgerMisconfigured,
        match=rf"{path}: PRAGMA journal_mode=WAL failed \(attempt to write a readonly database\)",
    ):
        set_pragmas(readonly, path, {"synchronous": "FULL", "journal_mode": "WAL"})
    readonly.close()


def test_a_lock_held_by_another_connection_is_not_a_misconfigured_ledger(tmp_path):
    """Switching a rollback-journal file to WAL needs it to itself: a reader elsewhere makes that
    `database is locked`, which passes (the supervisor restarts the service), so it is not fatal."""
    path = tmp_path / "x.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM t").fetchall()  # a shared lock, held until the transaction ends
    other = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        set_pragmas(other, path, {"journal_mode": "WAL"})
    reader.execute("COMMIT")
    set_pragmas(other, path, {"journal_mode": "WAL"})  # once free, it takes
    for db in (reader, other):
        db.close()


def test_the_synchronous_knob_lowers_every_store_to_normal_or_leaves_it(tmp_path):
    """TRADING_STORAGE_SYNCHRONOUS=NORMAL (the replay's suite) replaces each store's level; unset
    keeps it; any other value is refused with the variable's name (the service exits 2)."""
    assert read_knobs(StorageKnobs, {}).synchronous == ""
    level = read_knobs(StorageKnobs, {"TRADING_STORAGE_SYNCHRONOUS": "normal"}).synchronous
    assert level == "NORMAL"
    with pytest.raises(ConfigError, match="TRADING_STORAGE_SYNCHRONOUS"):
        read_knobs(StorageKnobs, {"TRADING_STORAGE_SYNCHRONOUS": "OFF"})
    full = {"journal_mode": "WAL", "synchronous": "FULL"}
    assert with_synchronous(full, "") == full
    db = sqlite3.connect(tmp_path / "x.db")
    set_pragmas(db, tmp_path / "x.db", with_synchronous(full, level))
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    db.close()


def test_a_schema_is_one_transaction_and_a_failed_statement_leaves_nothing(tmp_path) -> None:
    db = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    apply_schema(db, "CREATE TABLE IF NOT EXISTS a (x);\nCREATE INDEX IF NOT EXISTS a_x ON a(x);")
    statements = [s.strip("\n ;") for s in seen]
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT"
    assert statements.count("COMMIT") == 1
    assert not db.in_transaction
    with pytest.raises(sqlite3.OperationalError, match="no_such"):
        apply_schema(db, "CREATE TABLE b (y);\nCREATE INDEX b_z ON b(no_such);")
    assert not db.in_transaction
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"a"}  # b rolled back with the failed index
    apply_schema(db, "CREATE TABLE IF NOT EXISTS a (x);")  # idempotent: again, nothing changes
    assert {row[0] for row in db.execute("SELECT name FROM sqlite_master")} == {"a", "a_x"}
