"""TradeStore on a real SQLite file: atomic trades, at-most-once predictions, durability."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest

from services.domain.portfolio import Action, Fill, PortfolioError, trade_value
from services.domain.risk import RiskRules, commission
from services.paper_trading.trade_store import DuplicatePrediction, TradeStore

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)
ASSUMPTIONS = {"price_source": "test", "slippage_bps": 5, "commission_formula": "$10 + 0.1% of trade value"}


@pytest.fixture
def store(tmp_path):
    opened = TradeStore(tmp_path / "paper.db", D("100000"), T0)
    yield opened
    opened.close()


def record(store: TradeStore, action: Action, qty: int, price: str, *, symbol="CBA.AX", pid=None, at=T0):
    fill = Fill(symbol, action, qty, D(price), commission(trade_value(qty, D(price)), RiskRules()))
    return store.record_fill(
        fill, now=at, slippage=D("0.50"), reason="test", assumptions=ASSUMPTIONS, prediction_id=pid
    )


def test_pragmas_give_durability(store):
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    assert store.pragma("foreign_keys") == 1


def test_a_trade_updates_book_and_ledger_together(store):
    trade, book = record(store, Action.BUY, 10, "100", pid="p-1")
    assert trade.as_dict() | {"assumptions": None} == {
        "trade_id": 1,
        "symbol": "CBA.AX",
        "action": "BUY",
        "quantity": 10,
        "price": 100.0,
        "gross": 1000.0,
        "commission": 11.0,
        "slippage": 0.5,
        "realized_pnl": 0.0,
        "net_pnl": 0.0,
        "timestamp": T0.isoformat(),
        "prediction_id": "p-1",
        "reason": "test",
        "assumptions": None,
        "closes_position": False,
    }
    assert trade.assumptions == ASSUMPTIONS
    assert book == store.load_portfolio()
    assert book.cash == D("98989.00")
    assert store.prediction_outcome("p-1")["trade_id"] == 1


def test_sell_realises_and_closes(store):
    record(store, Action.BUY, 10, "100")
    trade, book = record(store, Action.SELL, 10, "110")
    assert trade.realized_pnl == D("100.00")
    assert trade.net_pnl == D("100.00") - D("11.00") - D("11.10")
    assert book.positions == {}
    assert store.load_portfolio().positions == {}
    assert trade.closes_position is True


def test_outbox_lists_trades_until_marked_published(store):
    first, _ = record(store, Action.BUY, 10, "100")
    second, _ = record(store, Action.BUY, 5, "100")
    assert [t.trade_id for t in store.unpublished_trades()] == [first.trade_id, second.trade_id]
    store.mark_published(first.trade_id)
    assert [t.trade_id for t in store.unpublished_trades()] == [second.trade_id]


def test_the_book_survives_reopening(tmp_path):
    first = TradeStore(tmp_path / "paper.db", D("100000"), T0)
    record(first, Action.BUY, 10, "100")
    before = first.load_portfolio()
    first.close()
    # A different configured capital must not reset an existing book.
    again = TradeStore(tmp_path / "paper.db", D("50000"), T0)
    try:
        assert again.load_portfolio() == before
        assert again.load_portfolio().starting_capital == D("100000.00")
    finally:
        again.close()


def test_a_prediction_is_traded_at_most_once(store):
    record(store, Action.BUY, 10, "100", pid="p-1")
    with pytest.raises(DuplicatePrediction, match="p-1"):
        record(store, Action.BUY, 10, "100", pid="p-1")
    assert store.trade_count() == 1
    assert store.load_portfolio().quantity("CBA.AX") == 10


def test_a_prediction_that_was_ignored_is_not_traded_later(store):
    assert store.record_prediction_outcome("p-2", "ignored", "HOLD", T0) is True
    assert store.record_prediction_outcome("p-2", "ignored", "HOLD", T0) is False
    with pytest.raises(DuplicatePrediction) as raised:
        record(store, Action.BUY, 1, "100", pid="p-2")
    assert raised.value.outcome == "ignored"
    assert store.trade_count() == 0


def test_outcome_kind_is_validated(store):
    with pytest.raises(ValueError, match="outcome"):
        store.record_prediction_outcome("p", "traded", "", T0)


def test_a_fill_the_book_refuses_writes_nothing(store):
    with pytest.raises(PortfolioError):
        record(store, Action.SELL, 1, "100", pid="p-3")
    assert store.trade_count() == 0
    assert store.prediction_outcome("p-3") is None
    assert store.load_portfolio().cash == D("100000.00")


def test_a_failure_midway_rolls_the_whole_trade_back(store, monkeypatch):
    def explode(book):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "_write_account", explode)
    with pytest.raises(RuntimeError):
        record(store, Action.BUY, 10, "100", pid="p-4")
    monkeypatch.undo()
    # The trade row and position were written before the failure; none of it may remain.
    assert store.trade_count() == 0
    assert store.load_portfolio().positions == {}
    assert store.prediction_outcome("p-4") is None


def test_ledger_replay_matches_the_book(store):
    for action, qty, price in [
        (Action.BUY, 30, "33.3333"),
        (Action.SELL, 7, "35"),
        (Action.BUY, 5, "31.5"),
        (Action.SELL, 28, "30.01"),
    ]:
        record(store, action, qty, price)
    assert store.replay_ledger() == store.load_portfolio()


def test_trade_history_filters(store):
    record(store, Action.BUY, 1, "100", symbol="CBA.AX", at=T0)
    record(store, Action.BUY, 1, "30", symbol="WBC.AX", at=T0 + timedelta(days=1))
    record(store, Action.BUY, 1, "100", symbol="CBA.AX", at=T0 + timedelta(days=2))
    assert [t.trade_id for t in store.trades()] == [3, 2, 1]  # newest first
    assert [t.trade_id for t in store.trades(symbol="CBA.AX")] == [3, 1]
    assert [t.trade_id for t in store.trades(limit=1)] == [3]
    assert [t.trade_id for t in store.trades(since=T0 + timedelta(hours=12))] == [3, 2]


def test_marks_are_upserted(store):
    store.save_mark("CBA.AX", D("100.5"), "2026-03-02T10:00:00+11:00", "csv")
    store.save_mark("CBA.AX", D("101"), "2026-03-02T11:00:00+11:00", "csv")
    mark = store.marks()["CBA.AX"]
    assert (mark.price, mark.as_of, mark.source) == (D("101"), "2026-03-02T11:00:00+11:00", "csv")


def test_trading_day_start_equity_is_fixed_at_first_sight_and_halt_is_once(store):
    day = date(2026, 3, 2)
    assert store.open_trading_day(day, D("100000")).start_equity == D("100000")
    assert store.open_trading_day(day, D("90000")).start_equity == D("100000")
    assert store.halt_day(day, "loss") is True
    assert store.halt_day(day, "loss") is False
    record_ = store.open_trading_day(day, D("1"))
    assert (record_.halted, record_.halt_reason) == (True, "loss")
    assert store.open_trading_day(date(2026, 3, 3), D("95000")).halted is False


def test_equity_curve_keeps_the_last_value_of_each_day(store):
    store.record_equity(date(2026, 3, 3), D("101000"), D("1"), D("2"), T0)
    store.record_equity(date(2026, 3, 2), D("100000"), D("1"), D("2"), T0)
    store.record_equity(date(2026, 3, 3), D("102000"), D("1"), D("2"), T0)
    assert store.equity_curve() == [(date(2026, 3, 2), D("100000")), (date(2026, 3, 3), D("102000"))]
    assert store.equity_curve(since=date(2026, 3, 3)) == [(date(2026, 3, 3), D("102000"))]


def test_equity_history_gives_each_days_close_and_today_is_the_equity_now(store):
    from services.domain.portfolio import Valuation
    from services.paper_trading.paper_trading_service import equity_points

    store.record_equity(date(2026, 3, 2), D("100500.25"), D("90000"), D("10500.25"), T0)
    store.record_equity(date(2026, 3, 3), D("101000"), D("91000"), D("10000"), T0)
    store.record_equity(date(2026, 3, 4), D("99000"), D("89000"), D("10000"), T0)  # today's last snapshot
    rows = store.equity_history(since=date(2026, 3, 3))
    assert [(r["day"], r["equity"], r["cash"], r["positions_value"]) for r in rows] == [
        ("2026-03-03", 101000.0, 91000.0, 10000.0),
        ("2026-03-04", 99000.0, 89000.0, 10000.0),
    ]
    now = T0 + timedelta(days=2)
    live = Valuation(D("89000"), D("10250"), D("99250"), D("0"), D("0.1"))
    points = equity_points(rows, date(2026, 3, 4), live, now)
    assert [(p["day"], p["equity"]) for p in points] == [("2026-03-03", 101000.0), ("2026-03-04", 99250.0)]
    assert points[-1]["recorded_at"] == now.isoformat()


def test_two_connections_racing_on_one_prediction_trade_once(tmp_path):
    stores = [TradeStore(tmp_path / "paper.db", D("100000"), T0) for _ in range(2)]
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def attempt(s: TradeStore) -> None:
        barrier.wait()
        try:
            record(s, Action.BUY, 10, "100", pid="race")
            outcomes.append("traded")
        except DuplicatePrediction:
            outcomes.append("duplicate")

    threads = [threading.Thread(target=attempt, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["duplicate", "traded"]
    assert stores[0].trade_count() == 1
    for s in stores:
        s.close()


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from decimal import Decimal
    from services.paper_trading.trade_store import TradeStore
    from services.domain.portfolio import Action, Fill
    store = TradeStore(sys.argv[1], Decimal("100000"), datetime.now(UTC))
    n = 0
    while True:
        action = Action.BUY if n % 2 == 0 else Action.SELL
        fill = Fill("CBA.AX", action, 3, Decimal("33.3333"), Decimal("10.10"))
        store.record_fill(fill, now=datetime.now(UTC), slippage=Decimal("0"), reason="loop",
                          assumptions={}, prediction_id=f"p-{n}")
        n += 1
        if n == 20:
            print("ready", flush=True)
    """
)


def test_sigkill_mid_write_leaves_a_consistent_ledger(tmp_path):
    path = tmp_path / "paper.db"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # The writer keeps committing after it says ready, so the kill lands mid-stream.
        assert child.stdout.readline().strip() == "ready"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    store = TradeStore(path, D("100000"), T0)
    try:
        assert store.pragma("integrity_check") == "ok"
        count = store.trade_count()
        assert count >= 20
        assert store.replay_ledger() == store.load_portfolio()
        # Every trade has its prediction recorded, and nothing else was.
        assert all(store.prediction_outcome(f"p-{n}")["outcome"] == "traded" for n in range(count))
        assert store.prediction_outcome(f"p-{count}") is None
    finally:
        store.close()


def test_a_ledger_from_before_the_outcome_words_is_migrated_in_place(tmp_path):
    # The old table said `skipped`, and `rejected` for a closed market or a stale quote.
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE predictions (
            prediction_id TEXT PRIMARY KEY,
            outcome TEXT NOT NULL CHECK (outcome IN ('traded', 'skipped', 'rejected')),
            trade_id INTEGER UNIQUE,
            detail TEXT NOT NULL,
            processed_at TEXT NOT NULL,
            CHECK ((outcome = 'traded') = (trade_id IS NOT NULL))
        );
        INSERT INTO predictions VALUES ('hold', 'skipped', NULL, 'HOLD: nothing to do', '2024-06-17T01:00:00+00:00');
        INSERT INTO predictions VALUES ('closed', 'rejected', NULL, 'market_hours: the market is closed at x', '2024-06-17T01:00:00+00:00');
        INSERT INTO predictions VALUES ('stale', 'rejected', NULL, 'no order at this quote: it is old', '2024-06-17T01:00:00+00:00');
        INSERT INTO predictions VALUES ('rule', 'rejected', NULL, 'rejected by rule max_position: too big', '2024-06-17T01:00:00+00:00');
        """
    )
    db.close()
    store = TradeStore(path, D(100_000), T0)
    outcomes = {p: store.prediction_outcome(p)["outcome"] for p in ("hold", "closed", "stale", "rule")}
    assert outcomes == {"hold": "ignored", "closed": "ignored", "stale": "ignored", "rule": "rejected"}
    with pytest.raises(ValueError, match="rejected or ignored"):
        store.record_prediction_outcome("new", "skipped", "HOLD", T0)
    assert store.record_prediction_outcome("new", "ignored", "HOLD", T0) is True
    assert store.outcome_counts(datetime(2024, 6, 1, tzinfo=UTC)) == {
        "traded": 0,
        "rejected": 1,
        "ignored": 4,
    }
    assert store.outcome_counts(T0) == {"traded": 0, "rejected": 0, "ignored": 1}  # today's only
    store.close()
    reopened = TradeStore(path, D(100_000), T0)  # migrating twice changes nothing
    assert reopened.prediction_outcome("rule")["outcome"] == "rejected"
    plan = reopened._db.execute(
        "EXPLAIN QUERY PLAN SELECT outcome, COUNT(*) FROM predictions WHERE processed_at >= ? GROUP BY outcome",
        ("2024",),
    ).fetchall()
    assert "predictions_processed_at" in str(plan)  # the health count uses the index, not a scan
    reopened.close()


FULL_DISK = textwrap.dedent(
    """
    import json, resource, sys
    from datetime import UTC, datetime
    from decimal import Decimal
    from services.base.storage import LedgerWriteFailed
    from services.domain.portfolio import Action, Fill
    from services.paper_trading.trade_store import TradeStore

    T0 = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)
    store = TradeStore(sys.argv[1], Decimal("100000"), T0)

    def buy(pid):
        fill = Fill("CBA.AX", Action.BUY, 10, Decimal("100"), Decimal("11.00"))
        return store.record_fill(fill, now=T0, slippage=Decimal("0.50"), reason="test",
                                 assumptions={}, prediction_id=pid)

    def failure(write):
        try:
            write()
        except LedgerWriteFailed as exc:
            return str(exc.failure)
        return None

    seen = {"first": str(buy("p-1")[0].trade_id)}
    before = store.load_portfolio()
    # Below one WAL frame (a 4 KiB page and its 24-byte header, after the WAL's 32-byte header):
    # the next write of any transaction lands past the limit. The hard limit stays, so it can be
    # raised again without privileges. CPython ignores SIGXFSZ: the write fails with EFBIG.
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    seen["fill"] = failure(lambda: buy("p-2"))
    seen["outcome"] = failure(lambda: store.record_prediction_outcome("p-3", "ignored", "HOLD", T0))
    seen["probe"] = failure(lambda: store.probe_write(T0))
    seen["book_unchanged"] = store.load_portfolio() == before
    seen["trades"] = store.trade_count()
    seen["p-2"] = store.prediction_outcome("p-2")
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    seen["probe_after"] = failure(lambda: store.probe_write(T0))
    trade, book = buy("p-2")
    seen["retried"] = [trade.trade_id, book == store.load_portfolio(), str(book.cash)]
    seen["integrity"] = store.pragma("integrity_check")
    seen["replay_matches"] = store.replay_ledger() == store.load_portfolio()
    print(json.dumps(seen))
    """
)


def test_a_write_the_disk_refuses_records_nothing_and_raises_ledger_write_failed(tmp_path):
    """A real fault: the process's file-size limit (RLIMIT_FSIZE) set below the next WAL write.
    SQLite reports EFBIG as an I/O error on COMMIT and rolls back: no row of the fill, its
    position, its cash or its prediction remains; the book on disk is the one before it."""
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path / "paper.db")],
        capture_output=True,  # pipes: not files, so the limit does not apply to them
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(result.stdout)
    io_error = "I/O error: disk I/O error (SQLITE_IOERR_WRITE)"
    assert seen["first"] == "1"
    assert (seen["fill"], seen["outcome"], seen["probe"]) == (io_error, io_error, io_error)
    assert seen["book_unchanged"] is True and seen["trades"] == 1 and seen["p-2"] is None
    assert seen["probe_after"] is None  # the limit raised again: writes succeed
    # The same prediction trades once the disk takes writes again: nothing of the failed one left.
    assert seen["retried"] == [2, True, str(D("100000") - 2 * D("1011.00"))]
    assert seen["integrity"] == "ok" and seen["replay_matches"] is True
