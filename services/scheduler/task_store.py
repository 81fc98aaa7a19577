"""SQLite persistence for the scheduler: tasks and their run history.

One file, WAL mode (readers never block the writer; the daily backup copies it online, with
services.base.backups like every database of the suite).
The store is synchronous: every statement is a single indexed lookup or insert on a local
file, far below a millisecond, so handing it to a thread would cost more than it saves.

"No double runs of a slot" is enforced by the database, not by memory: a scheduled run
first *claims* its slot with an insert that a unique index on (task_id, slot_key) lets
succeed only once, across restarts and crashes.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from services.base.storage import apply_schema, set_pragmas

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id      TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    config       TEXT NOT NULL,           -- TaskSpec.to_dict() as JSON
    origin       TEXT NOT NULL,           -- 'default' or 'user'
    created_at   TEXT NOT NULL,
    cancelled_at TEXT
);
-- Names are how tasks depend on each other, so they are unique among live tasks.
CREATE UNIQUE INDEX IF NOT EXISTS tasks_live_name ON tasks(name) WHERE cancelled_at IS NULL;

CREATE TABLE IF NOT EXISTS runs (
    run_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id      TEXT NOT NULL REFERENCES tasks(task_id),
    slot_key     TEXT,                    -- NULL for manual runs
    run_date     TEXT NOT NULL,           -- Sydney date the run belongs to ("today" for deps)
    trigger      TEXT NOT NULL,           -- 'schedule', 'catch_up', 'manual'
    status       TEXT NOT NULL,           -- 'running', 'succeeded', 'failed', 'blocked'
    attempts     INTEGER NOT NULL DEFAULT 0,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    error        TEXT,
    result       TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_per_slot ON runs(task_id, slot_key)
    WHERE slot_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_by_task ON runs(task_id, run_id);
"""

# Results are kept for the operator to glance at, not as a data store.
_MAX_RESULT_CHARS = 4000


class DuplicateTaskName(ValueError):
    """A live task already has this name: cancel it first or choose another name."""


@dataclass(frozen=True, slots=True)
class TaskRow:
    task_id: str
    name: str
    config: dict
    origin: str
    created_at: str
    cancelled_at: str | None


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: int
    task_id: str
    slot_key: str | None
    run_date: str
    trigger: str
    status: str
    attempts: int
    started_at: str
    finished_at: str | None
    error: str | None
    result: object

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "task_id": self.task_id,
            "slot": self.slot_key,
            "run_date": self.run_date,
            "trigger": self.trigger,
            "status": self.status,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "result": self.result,
        }


class TaskStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)  # autocommit; explicit txns
        self._db.row_factory = sqlite3.Row
        set_pragmas(
            self._db,
            path,
            {"journal_mode": "WAL", "synchronous": "NORMAL", "foreign_keys": "ON", "busy_timeout": 5000},
        )
        apply_schema(self._db, SCHEMA)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------ tasks

    def add_task(self, task_id: str, name: str, config: dict, origin: str, now: str) -> None:
        try:
            self._db.execute(
                "INSERT INTO tasks(task_id, name, config, origin, created_at) VALUES (?,?,?,?,?)",
                (task_id, name, json.dumps(config), origin, now),
            )
        except sqlite3.IntegrityError:
            raise DuplicateTaskName(f"a task named {name!r} already exists") from None

    def ensure_task(self, task_id: str, name: str, config: dict, origin: str, now: str) -> bool:
        """Insert unless a task with this id exists (live or cancelled). True if inserted.
        Used for the default schedule: an operator's cancellation survives restarts."""
        if self.get_task(task_id) is not None:
            return False
        self.add_task(task_id, name, config, origin, now)
        return True

    def cancel_task(self, task_id: str, now: str) -> bool:
        cursor = self._db.execute(
            "UPDATE tasks SET cancelled_at=? WHERE task_id=? AND cancelled_at IS NULL",
            (now, task_id),
        )
        return cursor.rowcount == 1

    def get_task(self, task_id: str) -> TaskRow | None:
        row = self._db.execute("SELECT * FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        return _task_row(row) if row else None

    def live_tasks(self) -> list[TaskRow]:
        rows = self._db.execute("SELECT * FROM tasks WHERE cancelled_at IS NULL ORDER BY created_at, task_id")
        return [_task_row(r) for r in rows]

    # ------------------------------------------------------------ runs

    def claim_slot(self, task_id: str, slot_key: str, run_date: str, trigger: str, now: str) -> int | None:
        """Start the run of a scheduled slot; None when that slot already has a run."""
        try:
            cursor = self._db.execute(
                "INSERT INTO runs(task_id, slot_key, run_date, trigger, status, started_at)"
                " VALUES (?,?,?,?,'running',?)",
                (task_id, slot_key, run_date, trigger, now),
            )
        except sqlite3.IntegrityError:
            return None
        return cursor.lastrowid

    def start_manual_run(self, task_id: str, run_date: str, now: str) -> int:
        cursor = self._db.execute(
            "INSERT INTO runs(task_id, slot_key, run_date, trigger, status, started_at)"
            " VALUES (?,NULL,?,'manual','running',?)",
            (task_id, run_date, now),
        )
        return cursor.lastrowid

    def finish_run(
        self,
        run_id: int,
        status: str,
        attempts: int,
        now: str,
        error: str | None = None,
        result: object = None,
    ) -> None:
        text = json.dumps(result, default=str)
        if len(text) > _MAX_RESULT_CHARS:
            text = json.dumps({"truncated": True, "chars": len(text)})
        self._db.execute(
            "UPDATE runs SET status=?, attempts=?, finished_at=?, error=?, result=? WHERE run_id=?",
            (status, attempts, now, error, text, run_id),
        )

    def fail_interrupted(self, now: str) -> int:
        """Runs left 'running' by a crash or kill: record them failed, never re-run them
        (their slot is claimed, and the task may have had side effects)."""
        cursor = self._db.execute(
            "UPDATE runs SET status='failed', finished_at=?, error=? WHERE status='running'",
            (now, "interrupted: the scheduler stopped during the run"),
        )
        return cursor.rowcount

    def get_run(self, run_id: int) -> RunRow | None:
        row = self._db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return _run_row(row) if row else None

    def last_run(self, task_id: str) -> RunRow | None:
        row = self._db.execute(
            "SELECT * FROM runs WHERE task_id=? ORDER BY run_id DESC LIMIT 1", (task_id,)
        ).fetchone()
        return _run_row(row) if row else None

    def last_slot_run(self, task_id: str) -> RunRow | None:
        row = self._db.execute(
            "SELECT * FROM runs WHERE task_id=? AND slot_key IS NOT NULL ORDER BY run_id DESC LIMIT 1",
            (task_id,),
        ).fetchone()
        return _run_row(row) if row else None

    def status_on(self, task_id: str, run_date: str) -> str | None:
        """Status of the task's latest run belonging to Sydney date `run_date`, or None."""
        row = self._db.execute(
            "SELECT status FROM runs WHERE task_id=? AND run_date=? ORDER BY run_id DESC LIMIT 1",
            (task_id, run_date),
        ).fetchone()
        return row["status"] if row else None

    def count_on(self, run_date: str, statuses: tuple[str, ...]) -> int:
        """Runs of any task on Sydney date `run_date` that ended in one of `statuses`."""
        marks = ",".join("?" * len(statuses))
        row = self._db.execute(
            f"SELECT count(*) FROM runs WHERE run_date=? AND status IN ({marks})",
            (run_date, *statuses),
        ).fetchone()
        return row[0]

    def history(self, task_id: str, limit: int) -> list[RunRow]:
        rows = self._db.execute(
            "SELECT * FROM runs WHERE task_id=? ORDER BY run_id DESC LIMIT ?", (task_id, limit)
        )
        return [_run_row(r) for r in rows]


def _task_row(row: sqlite3.Row) -> TaskRow:
    return TaskRow(
        task_id=row["task_id"],
        name=row["name"],
        config=json.loads(row["config"]),
        origin=row["origin"],
        created_at=row["created_at"],
        cancelled_at=row["cancelled_at"],
    )


def _run_row(row: sqlite3.Row) -> RunRow:
    return RunRow(
        run_id=row["run_id"],
        task_id=row["task_id"],
        slot_key=row["slot_key"],
        run_date=row["run_date"],
        trigger=row["trigger"],
        status=row["status"],
        attempts=row["attempts"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        result=json.loads(row["result"]) if row["result"] is not None else None,
    )
