"""The sentiment service's store: the last good reading per key, so fallbacks survive a restart."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson

from services.base.storage import set_pragmas, with_synchronous

# --- readings: what a successful refresh produced for one key ------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    key: str  # a symbol, or MARKET_KEY
    score: float
    confidence: float
    news_count: int
    signal_count: int
    articles: list[dict] = field(hash=False)
    fetched_at: datetime


class SentimentReadingStore:
    """SQLite table of the last good reading per key, so fallbacks survive a restart."""

    def __init__(self, path: Path, synchronous: str = ""):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        set_pragmas(self._db, path, with_synchronous({"journal_mode": "WAL"}, synchronous))
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS readings (key TEXT PRIMARY KEY, score REAL NOT NULL, "
            "confidence REAL NOT NULL, news_count INTEGER NOT NULL, signal_count INTEGER NOT NULL, "
            "articles TEXT NOT NULL, fetched_at TEXT NOT NULL)"
        )

    def load_all(self) -> dict[str, Reading]:
        rows = self._db.execute(
            "SELECT key, score, confidence, news_count, signal_count, articles, fetched_at FROM readings"
        )
        return {
            row[0]: Reading(
                row[0], row[1], row[2], row[3], row[4], orjson.loads(row[5]), datetime.fromisoformat(row[6])
            )
            for row in rows
        }

    def save(self, reading: Reading) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO readings VALUES (?, ?, ?, ?, ?, ?, ?)",
            (reading.key, reading.score, reading.confidence, reading.news_count, reading.signal_count,
             orjson.dumps(reading.articles).decode(), reading.fetched_at.isoformat()),
        )  # fmt: skip

    def close(self) -> None:
        self._db.close()
