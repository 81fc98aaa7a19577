"""SQLite storage as the services use it: pragmas that must take, and failures that are the disk's.

- `set_pragmas` sets each pragma a store relies on (WAL, a synchronous level, foreign keys, a busy
  timeout) and reads it back: SQLite answers a pragma it cannot apply by silently keeping the old
  value (`journal_mode=WAL` on a file system without shared memory stays `delete`) or with an
  error (a read-only file). Either stops the service with LedgerMisconfigured, one line naming
  the file, the pragma and what SQLite said, before anything is written on weaker guarantees.
- `StorageKnobs.synchronous` (`TRADING_STORAGE_SYNCHRONOUS`) lowers every store's synchronous
  level to NORMAL for a suite whose files need not outlive a power loss (a replay's private suite:
  in WAL mode a commit still survives its process being killed, only not the machine losing power).
- `storage_failure` tells a failed write that is the storage's fault (the disk full, an I/O error,
  the file gone read-only or impossible to open) from a bug (a constraint, SQL, a closed
  connection): the first may mend by itself, so a service pauses and probes; the second may not.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from services.base.knobs import knob

#: SQLite's primary result codes that say the storage failed, with what to call them. The
#: extended codes (SQLITE_IOERR_WRITE, SQLITE_READONLY_DIRECTORY, ...) share their low byte.
STORAGE_RESULT_CODES: Mapping[int, str] = {
    sqlite3.SQLITE_FULL: "disk full",
    sqlite3.SQLITE_IOERR: "I/O error",
    sqlite3.SQLITE_READONLY: "read-only",
    sqlite3.SQLITE_CANTOPEN: "cannot open",
}
#: The same by the messages SQLite gives them, for an error that carries no result code.
_STORAGE_MESSAGES: Mapping[str, tuple[int, str]] = {
    "database or disk is full": (sqlite3.SQLITE_FULL, "SQLITE_FULL"),
    "disk i/o error": (sqlite3.SQLITE_IOERR, "SQLITE_IOERR"),
    "attempt to write a readonly database": (sqlite3.SQLITE_READONLY, "SQLITE_READONLY"),
    "unable to open database file": (sqlite3.SQLITE_CANTOPEN, "SQLITE_CANTOPEN"),
}
#: PRAGMA synchronous reads back as a number.
_SYNCHRONOUS = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}
_BOOLEANS = {"ON": 1, "TRUE": 1, "YES": 1, "OFF": 0, "FALSE": 0, "NO": 0}


def parse_synchronous(raw: str) -> str:
    text = raw.strip().upper()
    if text not in ("", "NORMAL"):
        raise ValueError(f"{raw!r} is not a synchronous level this knob takes (NORMAL, or unset)")
    return text


@dataclass(frozen=True, slots=True)
class StorageKnobs:
    """SQLite durability of every store (TRADING_STORAGE_*), the same for every service."""

    service: ClassVar[str] = "storage"

    synchronous: str = knob(
        "",
        parse=parse_synchronous,
        doc="NORMAL: every store commits without waiting for the disk (survives a killed process,"
        " not a power loss; the replay's private suite); unset: each store's own level",
    )


def with_synchronous(pragmas: Mapping[str, str | int], level: str) -> dict[str, str | int]:
    """`pragmas` with synchronous set to `level` (StorageKnobs.synchronous); unchanged when blank."""
    return {**pragmas, "synchronous": level} if level else dict(pragmas)


@dataclass(frozen=True, slots=True)
class StorageFailure:
    """Why a write failed, when the storage failed it."""

    kind: str  # "disk full", "I/O error", "read-only", "cannot open"
    error: str  # SQLite's name for it: SQLITE_FULL, SQLITE_IOERR_WRITE, ...
    message: str  # SQLite's message: "database or disk is full", "disk I/O error", ...

    def __str__(self) -> str:
        return f"{self.kind}: {self.message} ({self.error})"


class LedgerWriteFailed(Exception):
    """A store's write failed because the storage did (`failure`); nothing of it was recorded."""

    def __init__(self, failure: StorageFailure, path: Path | str):
        super().__init__(f"{path}: {failure}")
        self.failure = failure
        self.path = str(path)


class LedgerMisconfigured(RuntimeError):
    """A database cannot run with the pragmas its store requires: fix the file or its file system."""


def storage_failure(exc: BaseException) -> StorageFailure | None:
    """The storage failure `exc` reports, or None when it is not one (a bug, a constraint, busy)."""
    if not isinstance(exc, sqlite3.Error):
        return None
    message = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        primary, name = code & 0xFF, str(getattr(exc, "sqlite_errorname", None) or code)
    else:
        primary, name = _STORAGE_MESSAGES.get(message.strip().lower(), (-1, ""))
    kind = STORAGE_RESULT_CODES.get(primary)
    return None if kind is None else StorageFailure(kind, name, message)


def set_pragmas(db: sqlite3.Connection, path: Path | str, pragmas: Mapping[str, str | int]) -> None:
    """Set each pragma in order and read it back; LedgerMisconfigured at the first that did not take.

    Values as one writes them: `{"journal_mode": "WAL", "synchronous": "FULL",
    "foreign_keys": "ON", "busy_timeout": 30000}`.
    """
    for name, wanted in pragmas.items():
        try:
            db.execute(f"PRAGMA {name}={wanted}").fetchall()
            got = db.execute(f"PRAGMA {name}").fetchone()
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise  # another connection holds a lock (a backup reading): passes, not fatal
            raise LedgerMisconfigured(f"{path}: PRAGMA {name}={wanted} failed ({exc})") from None
        value = got[0] if got else None
        if _normalised(name, value) != _normalised(name, wanted):
            raise LedgerMisconfigured(
                f"{path}: PRAGMA {name}={wanted} did not take (SQLite keeps {name}={value}): the"
                " store's guarantees need it; check the file system (WAL needs shared memory) and"
                " the file's permissions"
            )


def _normalised(name: str, value: object) -> object:
    if isinstance(value, str):
        text = value.strip().upper()
        if name == "synchronous" and text in _SYNCHRONOUS:
            return _SYNCHRONOUS[text]
        if text in _BOOLEANS and name != "journal_mode":
            return _BOOLEANS[text]
        return int(text) if text.lstrip("-").isdigit() else text
    return value


def apply_schema(db: sqlite3.Connection, script: str) -> None:
    """Run a store's schema (idempotent DDL: CREATE ... IF NOT EXISTS, PRAGMA user_version) as one
    transaction on an autocommit connection. `executescript` alone commits each statement, and on a
    new file every commit syncs the WAL: alerts' eleven statements took 21 ms of the suite's cold
    start (five services creating their files at once), one transaction a third of that. A failed
    statement rolls the whole script back and raises."""
    try:
        db.executescript(f"BEGIN IMMEDIATE;\n{script}\n;COMMIT;")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
