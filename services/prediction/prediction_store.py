"""SQLite record of every prediction with everything it was made from.

One row per prediction: the headline fields as columns (so they can be queried and evaluated
against later prices) and the full prediction dict, inputs included, as JSON (so it can be
explained exactly as it was served). WAL mode: readers never block the writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.base.storage import apply_schema, set_pragmas, with_synchronous

SCHEMA_VERSION = 1
PARSED_KEPT = 1024  # parsed documents recent() keeps
_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    prediction_id TEXT PRIMARY KEY,
    symbol        TEXT NOT NULL,
    signal        TEXT NOT NULL CHECK (signal IN ('BUY', 'HOLD', 'SELL')),
    confidence    REAL NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    created_at    TEXT NOT NULL,
    price         REAL,
    document      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_symbol ON predictions (symbol);
"""
# The outbox flag: 0 until prediction_generated is on the bus (XADD done). Rows from before the
# column existed were published when they were made: the column's default says so.
_OUTBOX = """
CREATE INDEX IF NOT EXISTS predictions_unpublished ON predictions (published) WHERE published = 0;
"""
_REQUIRED = ("prediction_id", "symbol", "signal", "confidence", "created_at")


class PredictionStore:
    """Synchronous and thread-safe; each call is one short transaction."""

    def __init__(self, path: Path, synchronous: str = "") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._parsed: OrderedDict[str, dict] = OrderedDict()  # recent(): documents by id, oldest first
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # FULL: a prediction the desk may trade on survives an OS crash too, once saved (unless
        # StorageKnobs.synchronous says NORMAL: a replay).
        pragmas = with_synchronous({"journal_mode": "WAL", "synchronous": "FULL"}, synchronous)
        set_pragmas(self._conn, path, pragmas)
        # One transaction of its own, outside _transaction; the DDL is idempotent.
        apply_schema(self._conn, _SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(predictions)")}
        if "published" not in columns:
            self._conn.execute("ALTER TABLE predictions ADD COLUMN published INTEGER NOT NULL DEFAULT 1")
        apply_schema(self._conn, _OUTBOX)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def save(self, prediction: dict) -> None:
        """Store one prediction; its id must be new (an id names exactly one decision)."""
        self.save_many([prediction])

    def save_many(self, predictions: list[dict]) -> None:
        rows = [_row(p) for p in predictions]
        with self._transaction() as cur:
            cur.executemany(
                "INSERT INTO predictions"
                " (prediction_id, symbol, signal, confidence, created_at, price, document, published)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                rows,
            )

    def unpublished(self, limit: int = 500) -> list[dict]:
        """Predictions saved but not yet on the bus, oldest first (the outbox)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT document FROM predictions WHERE published = 0 ORDER BY rowid LIMIT ?", (limit,)
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def unpublished_count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM predictions WHERE published = 0").fetchone()[0]

    def mark_published(self, prediction_id: str) -> None:
        with self._transaction() as cur:
            cur.execute("UPDATE predictions SET published = 1 WHERE prediction_id = ?", (prediction_id,))

    def get(self, prediction_id: str) -> dict | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT document FROM predictions WHERE prediction_id = ?", (prediction_id,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def recent(self, limit: int, symbol: str | None = None) -> list[dict]:
        """Newest first, by insertion order: ISO strings with different UTC offsets (daylight
        saving) do not sort chronologically, while rows are inserted as predictions are made.

        The documents are parsed once and kept (a stored prediction never changes; a replay asks
        for the same latest ones many times a day): callers must not modify them."""
        query = "SELECT prediction_id, document FROM predictions"
        params: tuple = ()
        if symbol is not None:
            query += " WHERE symbol = ?"
            params = (symbol,)
        query += " ORDER BY rowid DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(query, (*params, limit)).fetchall()
            documents = []
            for prediction_id, text in rows:
                document = self._parsed.get(prediction_id)
                if document is None:
                    document = self._parsed[prediction_id] = json.loads(text)
                    while len(self._parsed) > PARSED_KEPT:
                        self._parsed.popitem(last=False)
                documents.append(document)
        return documents

    def recent_signals(self, limit: int) -> list[str]:
        """The last ``limit`` signals, oldest first (to rebuild the buy-rate window on start)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT signal FROM predictions ORDER BY rowid DESC LIMIT ?", (limit,)
            ).fetchall()
        return [r[0] for r in reversed(rows)]

    def count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]

    def count_by_signal(self) -> dict[str, int]:
        """Stored predictions per signal, every signal named (0 when none)."""
        with self._lock:
            rows = self._conn.execute("SELECT signal, COUNT(*) FROM predictions GROUP BY signal").fetchall()
        return {"BUY": 0, "HOLD": 0, "SELL": 0, **dict(rows)}

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _row(p: dict) -> tuple:
    missing = [k for k in _REQUIRED if p.get(k) is None]
    if missing:
        raise ValueError(f"prediction lacks {', '.join(missing)}")
    return (
        p["prediction_id"],
        p["symbol"],
        p["signal"],
        float(p["confidence"]),
        p["created_at"],
        p.get("price"),
        json.dumps(p, allow_nan=False, separators=(",", ":")),
    )
