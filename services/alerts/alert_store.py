"""SQLite record of the alerts process (`alerts.db`): incidents, every delivery, silences.

Every message meant for a channel is a row in `deliveries` before anything is sent, and its row
says how it ended (`sent`, `rejected` by the channel, `failed` after retrying for the maximum
age, `silenced`), or why it waits (`held` by quiet hours or the rate limit, `retrying` after a
failure): a delivery is never lost silently, and `alerts list` shows each one. `sends` keeps one
row per message a channel accepted (a digest of several held deliveries is one), which is what
the per-channel rate limit counts. WAL, synchronous=FULL; synchronous calls: each statement is a
small indexed read or write on a local file.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.base.storage import apply_schema
from services.domain.alert_incidents import Incident

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT NOT NULL,
    subject          TEXT NOT NULL,
    severity         TEXT NOT NULL,
    title            TEXT NOT NULL,
    text             TEXT NOT NULL,
    state            TEXT NOT NULL,       -- open, resolved, ended, superseded, sent (one-shot)
    opened_at        TEXT NOT NULL,
    last_at          TEXT NOT NULL,
    closed_at        TEXT,
    count            INTEGER NOT NULL,
    notified_count   INTEGER NOT NULL,
    last_notified_at TEXT
);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents(state) WHERE state = 'open';
CREATE INDEX IF NOT EXISTS incidents_opened ON incidents(opened_at);
CREATE INDEX IF NOT EXISTS incidents_last ON incidents(last_at);

CREATE TABLE IF NOT EXISTS deliveries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id   INTEGER REFERENCES incidents(id),   -- NULL for a channel test
    channel       TEXT NOT NULL,
    kind          TEXT NOT NULL,
    subject       TEXT NOT NULL,
    message_state TEXT NOT NULL,     -- open, repeat, resolved, summary, test
    severity      TEXT NOT NULL,
    title         TEXT NOT NULL,
    text          TEXT NOT NULL,
    state         TEXT NOT NULL,     -- pending, held, retrying, sent, rejected, failed, silenced
    hold_reason   TEXT,              -- quiet_hours, rate_limited, silenced
    due_at        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    created_at    TEXT NOT NULL,
    sent_at       TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_waiting ON deliveries(due_at)
    WHERE state IN ('pending', 'held', 'retrying');
CREATE INDEX IF NOT EXISTS deliveries_by_incident ON deliveries(incident_id);

CREATE TABLE IF NOT EXISTS sends (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    sent_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sends_by_channel ON sends(channel, sent_at);

CREATE TABLE IF NOT EXISTS silences (
    kind       TEXT PRIMARY KEY,
    until      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""

#: Delivery states that still wait for a send.
WAITING = ("pending", "held", "retrying")


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    incident_id: int | None
    channel: str
    kind: str
    subject: str
    message_state: str
    severity: str
    title: str
    text: str
    state: str
    hold_reason: str | None
    due_at: str
    attempts: int
    error: str | None
    created_at: str
    sent_at: str | None

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "channel": self.channel,
            "message": self.message_state,
            "title": self.title,
            "state": self.state,
            "hold_reason": self.hold_reason,
            "due_at": self.due_at,
            "attempts": self.attempts,
            "error": self.error,
            "created_at": self.created_at,
            "sent_at": self.sent_at,
        }


def _utc(value: datetime) -> str:
    """Stored times are UTC ISO text, so that comparing the text compares the instants."""
    return value.astimezone(UTC).isoformat()


def _iso(value: datetime | None) -> str | None:
    return _utc(value) if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class AlertStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        apply_schema(self.db, SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ---- incidents ------------------------------------------------------------------------------

    def save_incident(self, incident: Incident) -> int:
        values = (
            incident.kind, incident.subject, incident.severity, incident.title, incident.text,
            incident.state, _iso(incident.opened_at), _iso(incident.last_at), _iso(incident.closed_at),
            incident.count, incident.notified_count, _iso(incident.last_notified_at),
        )  # fmt: skip
        if incident.id is None:
            cursor = self.db.execute(
                "INSERT INTO incidents (kind, subject, severity, title, text, state, opened_at, last_at,"
                " closed_at, count, notified_count, last_notified_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                values,
            )
            incident.id = int(cursor.lastrowid or 0)
        else:
            self.db.execute(
                "UPDATE incidents SET kind=?, subject=?, severity=?, title=?, text=?, state=?, opened_at=?,"
                " last_at=?, closed_at=?, count=?, notified_count=?, last_notified_at=? WHERE id=?",
                (*values, incident.id),
            )
        return incident.id

    def open_incidents(self) -> list[Incident]:
        rows = self.db.execute("SELECT * FROM incidents WHERE state = 'open' ORDER BY id").fetchall()
        return [self._incident(row) for row in rows]

    @staticmethod
    def _incident(row: sqlite3.Row) -> Incident:
        return Incident(
            kind=row["kind"],
            subject=row["subject"],
            severity=row["severity"],
            title=row["title"],
            text=row["text"],
            opened_at=datetime.fromisoformat(row["opened_at"]),
            last_at=datetime.fromisoformat(row["last_at"]),
            count=row["count"],
            notified_count=row["notified_count"],
            last_notified_at=_dt(row["last_notified_at"]),
            state=row["state"],
            closed_at=_dt(row["closed_at"]),
            id=row["id"],
        )

    def recent(self, limit: int, kind: str | None = None) -> list[dict]:
        """The newest incidents (by their last occurrence), each with its deliveries."""
        where, args = ("WHERE kind = ?", [kind]) if kind else ("", [])
        rows = self.db.execute(
            f"SELECT * FROM incidents {where} ORDER BY last_at DESC, id DESC LIMIT ?", (*args, limit)
        ).fetchall()
        out = []
        for row in rows:
            deliveries = self.db.execute(
                "SELECT * FROM deliveries WHERE incident_id = ? ORDER BY id", (row["id"],)
            ).fetchall()
            out.append(
                {
                    "id": row["id"],
                    "kind": row["kind"],
                    "subject": row["subject"],
                    "severity": row["severity"],
                    "title": row["title"],
                    "text": row["text"],
                    "state": row["state"],
                    "count": row["count"],
                    "opened_at": row["opened_at"],
                    "last_at": row["last_at"],
                    "closed_at": row["closed_at"],
                    "deliveries": [self._delivery(d).as_dict() for d in deliveries],
                }
            )
        return out

    def opened_between(self, start: datetime, end: datetime) -> dict[str, int]:
        """kind -> incidents opened in [start, end), summaries left out."""
        rows = self.db.execute(
            "SELECT kind, COUNT(*) AS n FROM incidents WHERE opened_at >= ? AND opened_at < ?"
            " AND kind NOT IN ('daily_summary', 'weekly_summary') GROUP BY kind ORDER BY kind",
            (_utc(start), _utc(end)),
        ).fetchall()
        return {row["kind"]: row["n"] for row in rows}

    def has_incident(self, kind: str, subject: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM incidents WHERE kind = ? AND subject = ? LIMIT 1", (kind, subject)
        ).fetchone()
        return row is not None

    # ---- deliveries -----------------------------------------------------------------------------

    def add_delivery(
        self,
        incident_id: int | None,
        channel: str,
        kind: str,
        subject: str,
        message_state: str,
        severity: str,
        title: str,
        text: str,
        state: str,
        due_at: datetime,
        now: datetime,
        hold_reason: str | None = None,
    ) -> int:
        cursor = self.db.execute(
            "INSERT INTO deliveries (incident_id, channel, kind, subject, message_state, severity, title,"
            " text, state, hold_reason, due_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (incident_id, channel, kind, subject, message_state, severity, title, text, state, hold_reason,
             _utc(due_at), _utc(now)),
        )  # fmt: skip
        return int(cursor.lastrowid or 0)

    def delivery(self, delivery_id: int) -> Delivery | None:
        row = self.db.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        return self._delivery(row) if row else None

    def due(self, now: datetime) -> list[Delivery]:
        """Waiting deliveries whose time has come, oldest first."""
        rows = self.db.execute(
            "SELECT * FROM deliveries WHERE state IN ('pending', 'held', 'retrying') AND due_at <= ?"
            " ORDER BY id",
            (_utc(now),),
        ).fetchall()
        return [self._delivery(row) for row in rows]

    def next_due_at(self) -> datetime | None:
        row = self.db.execute(
            "SELECT MIN(due_at) AS due FROM deliveries WHERE state IN ('pending', 'held', 'retrying')"
        ).fetchone()
        return _dt(row["due"]) if row else None

    def hold(self, ids: list[int], reason: str, until: datetime) -> None:
        self.db.executemany(
            "UPDATE deliveries SET state = 'held', hold_reason = ?, due_at = ? WHERE id = ?",
            [(reason, _utc(until), i) for i in ids],
        )

    def finish(self, ids: list[int], state: str, attempts: int, error: str | None, now: datetime) -> None:
        """The deliveries' end: sent, rejected (not retried) or failed (retried until too old)."""
        sent_at = _utc(now) if state == "sent" else None
        self.db.executemany(
            "UPDATE deliveries SET state = ?, attempts = attempts + ?, error = ?, sent_at = ? WHERE id = ?",
            [(state, attempts, error, sent_at, i) for i in ids],
        )

    def retry_later(self, ids: list[int], attempts: int, error: str, due_at: datetime) -> None:
        self.db.executemany(
            "UPDATE deliveries SET state = 'retrying', attempts = attempts + ?, error = ?, due_at = ?"
            " WHERE id = ?",
            [(attempts, error, _utc(due_at), i) for i in ids],
        )

    def record_send(self, channel: str, now: datetime) -> None:
        self.db.execute("INSERT INTO sends (channel, sent_at) VALUES (?, ?)", (channel, _utc(now)))

    def sends_since(self, channel: str, since: datetime) -> list[datetime]:
        rows = self.db.execute(
            "SELECT sent_at FROM sends WHERE channel = ? AND sent_at > ? ORDER BY sent_at",
            (channel, _utc(since)),
        ).fetchall()
        return [datetime.fromisoformat(row["sent_at"]) for row in rows]

    def counts(self) -> dict[str, dict[str, int]]:
        """channel -> delivery state -> how many (for health)."""
        out: dict[str, dict[str, int]] = {}
        for row in self.db.execute("SELECT channel, state, COUNT(*) AS n FROM deliveries GROUP BY 1, 2"):
            out.setdefault(row["channel"], {})[row["state"]] = row["n"]
        return out

    def last_delivery(self, channel: str) -> Delivery | None:
        row = self.db.execute(
            "SELECT * FROM deliveries WHERE channel = ? AND state NOT IN ('pending', 'held', 'silenced')"
            " ORDER BY id DESC LIMIT 1",
            (channel,),
        ).fetchone()
        return self._delivery(row) if row else None

    @staticmethod
    def _delivery(row: sqlite3.Row) -> Delivery:
        return Delivery(**{k: row[k] for k in row.keys()})

    # ---- silences -------------------------------------------------------------------------------

    def silence(self, kind: str, until: datetime, now: datetime) -> None:
        self.db.execute(
            "INSERT INTO silences (kind, until, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT(kind) DO UPDATE SET until = excluded.until, created_at = excluded.created_at",
            (kind, _utc(until), _utc(now)),
        )

    def silences(self, now: datetime) -> dict[str, datetime]:
        rows = self.db.execute("SELECT kind, until FROM silences").fetchall()
        return {row["kind"]: u for row in rows if (u := datetime.fromisoformat(row["until"])) > now}
