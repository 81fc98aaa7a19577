"""Every prediction the ml-model service serves, its later outcome, and live accuracy per model.

A row is one model's vote (or the ensemble's, model_name "ensemble") for a symbol's next day
after the bar dated `as_of`. The outcome is filled in once the next trading day's bar exists:
"up" when its adj close is above the `as_of` bar's (the training target exactly).

Live figures count each (model, version, symbol, as_of) once, using the latest vote served for
that day: a caller that asks five times on one day must not count five times.

SQLite calls are synchronous; each is a small indexed statement (well under a millisecond), so
they run on the event loop rather than hopping to a thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from services.base.storage import apply_schema, set_pragmas, with_synchronous
from services.domain.bars import Bar

ENSEMBLE = "ensemble"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS served_predictions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id  TEXT NOT NULL,   -- one per RPC call: an ensemble and its members share it
    created_at  TEXT NOT NULL,   -- suite clock, ISO-8601 with offset
    symbol      TEXT NOT NULL,
    model_name  TEXT NOT NULL,
    version     TEXT NOT NULL,
    as_of       TEXT NOT NULL,   -- date of the last bar the features describe
    probability REAL NOT NULL,   -- P(up)
    direction   TEXT NOT NULL CHECK (direction IN ('up', 'down')),
    outcome     TEXT CHECK (outcome IN ('up', 'down')),
    resolved_at TEXT,
    model_set   TEXT             -- the model set that served it (models/sets/<name>); NULL: flat folder
);
CREATE INDEX IF NOT EXISTS served_by_symbol ON served_predictions (symbol, outcome, as_of);
"""


@dataclass(frozen=True, slots=True)
class Vote:
    model_name: str
    version: str
    probability: float
    direction: str


@dataclass(frozen=True, slots=True)
class ResolvedVote:
    probability: float
    direction: str
    outcome: str


def outcome_after(as_of: date, bars: Sequence[Bar]) -> str | None:
    """'up'/'down' for the first trading day after `as_of`, or None while that bar is not out.

    The base is the last bar dated on or before `as_of` (as_of may be a holiday); bars are
    oldest first.
    """
    base = next((bar for bar in reversed(bars) if bar.date <= as_of), None)
    following = next((bar for bar in bars if bar.date > as_of), None)
    if base is None or following is None:
        return None
    return "up" if following.adj_close > base.adj_close else "down"


def live_metrics(votes: Iterable[ResolvedVote]) -> dict[str, float | int | None]:
    """Accuracy and Brier score of resolved votes (None when there are none yet)."""
    votes = list(votes)
    if not votes:
        return {"resolved": 0, "accuracy": None, "brier": None}
    hits = sum(vote.direction == vote.outcome for vote in votes)
    brier = sum((vote.probability - (vote.outcome == "up")) ** 2 for vote in votes) / len(votes)
    return {"resolved": len(votes), "accuracy": round(hits / len(votes), 4), "brier": round(brier, 4)}


class PredictionLog:
    """The SQLite file `<data dir>/ml_model.db` (WAL, so readers never block the writer)."""

    def __init__(self, path: Path, synchronous: str = "") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        set_pragmas(
            self.db, path, with_synchronous({"journal_mode": "WAL", "busy_timeout": 5000}, synchronous)
        )
        apply_schema(self.db, _SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(served_predictions)")}
        if "model_set" not in columns:  # a database from before model sets
            self.db.execute("ALTER TABLE served_predictions ADD COLUMN model_set TEXT")

    def close(self) -> None:
        self.db.close()

    def record(
        self,
        request_id: str,
        created_at: str,
        symbol: str,
        as_of: date,
        votes: Iterable[Vote],
        model_set: str | None = None,
    ) -> None:
        """Store one call's votes in one transaction (all of them or none)."""
        rows = [
            (
                request_id,
                created_at,
                symbol,
                v.model_name,
                v.version,
                as_of.isoformat(),
                v.probability,
                v.direction,
                model_set,
            )
            for v in votes
        ]
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO served_predictions (request_id, created_at, symbol, model_name, version, as_of,"
                " probability, direction, model_set) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def pending(self, symbols: list[str] | None = None) -> dict[str, list[date]]:
        """Per symbol (of `symbols`, default all), the as_of dates that still wait for their
        outcome, oldest first. For given symbols the (symbol, outcome, as_of) index serves it."""
        found: dict[str, list[date]] = {}
        if symbols is None:
            rows = self.db.execute(
                "SELECT DISTINCT symbol, as_of FROM served_predictions WHERE outcome IS NULL"
                " ORDER BY symbol, as_of"
            )
        else:
            marks = ", ".join("?" * len(symbols))
            rows = self.db.execute(
                "SELECT DISTINCT symbol, as_of FROM served_predictions WHERE outcome IS NULL"
                f" AND symbol IN ({marks}) ORDER BY symbol, as_of",
                list(symbols),
            )
        for symbol, as_of in rows:
            found.setdefault(symbol, []).append(date.fromisoformat(as_of))
        return found

    def resolve(self, symbol: str, as_of: date, outcome: str, resolved_at: str) -> int:
        """Set the outcome of every pending vote for (symbol, as_of); returns how many changed."""
        if outcome not in ("up", "down"):
            raise ValueError(f"outcome must be 'up' or 'down', got {outcome!r}")
        cursor = self.db.execute(
            "UPDATE served_predictions SET outcome = ?, resolved_at = ? "
            "WHERE symbol = ? AND as_of = ? AND outcome IS NULL",
            (outcome, resolved_at, symbol, as_of.isoformat()),
        )
        return cursor.rowcount

    def live(self, symbol: str) -> dict[tuple[str, str], dict]:
        """Per (model_name, version): served and pending counts, plus live accuracy and Brier."""
        stats: dict[tuple[str, str], dict] = {}
        for model_name, version, served, pending, days in self.db.execute(
            "SELECT model_name, version, COUNT(*), SUM(outcome IS NULL), COUNT(DISTINCT as_of) "
            "FROM served_predictions WHERE symbol = ? GROUP BY model_name, version",
            (symbol,),
        ):
            stats[(model_name, version)] = {"served": served, "pending": pending, "days": days}
        latest = self.db.execute(
            "SELECT p.model_name, p.version, p.probability, p.direction, p.outcome FROM served_predictions p "
            "JOIN (SELECT MAX(id) AS id FROM served_predictions WHERE symbol = ? AND outcome IS NOT NULL "
            "      GROUP BY model_name, version, as_of) last ON p.id = last.id",
            (symbol,),
        ).fetchall()
        for key in stats:
            votes = [ResolvedVote(p, d, o) for m, v, p, d, o in latest if (m, v) == key]
            stats[key].update(live_metrics(votes))
        return stats

    def recent_resolved(
        self, symbol: str, model_name: str, model_set: str | None, days: int
    ) -> list[ResolvedVote]:
        """The latest resolved vote of each of the last `days` resolved days of one model (or the
        ensemble) of one model set, newest day first."""
        rows = self.db.execute(
            "SELECT p.probability, p.direction, p.outcome FROM served_predictions p "
            "JOIN (SELECT MAX(id) AS id FROM served_predictions WHERE symbol = ? AND model_name = ? "
            "      AND model_set IS ? AND outcome IS NOT NULL GROUP BY as_of ORDER BY as_of DESC LIMIT ?) last "
            "ON p.id = last.id",
            (symbol, model_name, model_set, days),
        ).fetchall()
        return [ResolvedVote(p, d, o) for p, d, o in rows]
