"""The SQLite prediction record: round trip, ordering, durability across reopen, refusals."""

import sqlite3
import threading

import pytest

from services.prediction.prediction_store import PredictionStore


def prediction(n: int, symbol: str = "CBA.AX", signal: str = "BUY", created_at: str | None = None) -> dict:
    return {
        "prediction_id": f"p-{n}",
        "symbol": symbol,
        "signal": signal,
        "confidence": 0.5,
        "created_at": created_at or f"2024-03-01T10:{n:02d}:00+11:00",
        "price": 101.25,
        "inputs": {
            "market_data": {"as_of": "2024-02-29", "source": "csv"},
            "technical": {"rsi": 41.5, "macd_histogram": None},
            "sentiment": {"score": 0.2, "source": "fallback", "reason": "not configured"},
            "model": {"members": [{"model_name": "rf", "version": "abc", "probability": 0.6, "weight": 1.0}]},
            "thresholds": {"buy": 0.2, "sell": -0.2},
        },
        "reasons": ["composite +0.300"],
    }


@pytest.fixture
def store(tmp_path):
    s = PredictionStore(tmp_path / "db" / "predictions.db")
    yield s
    s.close()


def test_round_trip_keeps_every_input(store):
    p = prediction(1)
    store.save(p)
    assert store.get("p-1") == p
    assert store.get("nope") is None


def test_recent_is_newest_first_and_filters_by_symbol(store):
    store.save_many([prediction(i, symbol="CBA.AX" if i % 2 else "NAB.AX") for i in range(6)])
    assert [p["prediction_id"] for p in store.recent(3)] == ["p-5", "p-4", "p-3"]
    assert [p["prediction_id"] for p in store.recent(10, symbol="NAB.AX")] == ["p-4", "p-2", "p-0"]


def test_recent_parses_each_document_once_and_sees_new_ones(store, monkeypatch):
    """Documents are kept parsed (a replay asks for the same latest ones many times a step); a
    prediction saved since is read, and what is kept is bounded."""
    import services.prediction.prediction_store as module

    monkeypatch.setattr(module, "PARSED_KEPT", 3)
    store.save_many([prediction(i) for i in range(5)])
    first = store.recent(2)
    assert store.recent(2) == first and store.recent(2)[0] is first[0]  # not parsed again
    store.save(prediction(5))
    assert [p["prediction_id"] for p in store.recent(6)] == [f"p-{i}" for i in range(5, -1, -1)]
    assert store.recent(6)[-1] == prediction(0) and len(store._parsed) == 3


def test_recent_orders_by_insertion_across_utc_offsets(store):
    # Sydney's clocks go back at 03:00+11:00 on 2024-04-07: 02:30+11:00 is 15:30Z and the later
    # 02:10+10:00 is 16:10Z, yet it sorts first as a string. Insertion order is the truth.
    store.save(prediction(1, created_at="2024-04-07T02:30:00+11:00"))
    store.save(prediction(2, created_at="2024-04-07T02:10:00+10:00"))
    assert [p["prediction_id"] for p in store.recent(2)] == ["p-2", "p-1"]


def test_recent_signals_oldest_first(store):
    store.save_many([prediction(i, signal=s) for i, s in enumerate(["BUY", "HOLD", "SELL", "BUY"])])
    assert store.recent_signals(3) == ["HOLD", "SELL", "BUY"]
    assert store.count() == 4


def test_survives_reopen(tmp_path):
    path = tmp_path / "p.db"
    first = PredictionStore(path)
    first.save(prediction(7))
    first.close()
    second = PredictionStore(path)
    assert second.get("p-7")["inputs"]["sentiment"]["source"] == "fallback"
    assert second.count() == 1
    second.close()


def test_duplicate_id_is_refused_and_batch_is_atomic(store):
    store.save(prediction(1))
    with pytest.raises(sqlite3.IntegrityError):
        store.save_many([prediction(2), prediction(1)])
    # p-2 was in the failed batch: nothing of it may remain.
    assert store.get("p-2") is None
    assert store.count() == 1


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"signal": "STRONG_BUY"}, sqlite3.IntegrityError),  # CHECK constraint
        ({"confidence": 1.5}, sqlite3.IntegrityError),
        ({"symbol": None}, ValueError),
        ({"price": float("nan")}, ValueError),  # JSON has no NaN: refuse rather than store junk
    ],
)
def test_invalid_predictions_are_refused(store, change, error):
    with pytest.raises(error):
        store.save({**prediction(1), **change})
    assert store.count() == 0


def test_concurrent_writers_from_threads(store):
    def write(start: int) -> None:
        for i in range(start, start + 25):
            store.save(prediction(i))

    threads = [threading.Thread(target=write, args=(k * 25,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 100


def test_the_outbox_holds_what_is_not_yet_on_the_bus(store):
    store.save_many([prediction(1), prediction(2), prediction(3)])
    assert [p["prediction_id"] for p in store.unpublished()] == ["p-1", "p-2", "p-3"]  # oldest first
    store.mark_published("p-2")
    assert [p["prediction_id"] for p in store.unpublished()] == ["p-1", "p-3"]
    assert store.unpublished_count() == 2
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_record_from_before_the_outbox_gets_the_column_with_its_rows_published(tmp_path):
    path = tmp_path / "predictions.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE predictions (prediction_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, signal TEXT NOT NULL,
            confidence REAL NOT NULL, created_at TEXT NOT NULL, price REAL, document TEXT NOT NULL);
        INSERT INTO predictions VALUES ('old', 'CBA.AX', 'BUY', 0.5, '2024-03-01T10:00:00+11:00', 1.0, '{}');
        """
    )
    old.close()
    store = PredictionStore(path)
    assert store.unpublished() == []  # made and sent before the outbox existed
    store.save(prediction(1))
    assert [p["prediction_id"] for p in store.unpublished()] == ["p-1"]
    store.close()
