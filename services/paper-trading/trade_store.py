"""Durable paper-trading ledger in SQLite.

The money lives here. WAL with synchronous=FULL so a committed trade survives power loss (each
pragma read back at open: one that does not take stops the service, LedgerMisconfigured);
every trade is one BEGIN IMMEDIATE transaction that re-reads the book, applies the fill
(pure `Portfolio.apply`), and writes the trade, the position, the cash and the prediction it
acted on together, so a crash leaves all of it or none of it. `prediction_id` is UNIQUE in
both the trades and the predictions tables: a prediction is acted on at most once, however
often it is delivered. Amounts are stored as decimal TEXT so nothing is lost to binary floats.
A write the storage fails (disk full, I/O error, read-only) raises LedgerWriteFailed with
nothing of it recorded, and `record_fill` returns the new book only after its COMMIT succeeded.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

from services.base.storage import (
    LedgerWriteFailed,
    apply_schema,
    set_pragmas,
    storage_failure,
    with_synchronous,
)
from services.domain.portfolio import Action, Fill, Portfolio, Position, to_money

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    ledger_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS account (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    starting_capital TEXT NOT NULL,
    cash TEXT NOT NULL,
    realized_pnl TEXT NOT NULL,
    commissions_paid TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trades (
    trade_id INTEGER PRIMARY KEY AUTOINCREMENT,
    symbol TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('BUY', 'SELL')),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    price TEXT NOT NULL,
    gross TEXT NOT NULL,
    commission TEXT NOT NULL,
    slippage TEXT NOT NULL,
    realized_pnl TEXT NOT NULL,
    net_pnl TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    prediction_id TEXT UNIQUE,
    reason TEXT NOT NULL,
    assumptions TEXT NOT NULL,
    closes_position INTEGER NOT NULL CHECK (closes_position IN (0, 1)),
    -- outbox flag: set once trade_executed (and position_closed) were handed to the event bus
    published INTEGER NOT NULL DEFAULT 0 CHECK (published IN (0, 1))
);
CREATE INDEX IF NOT EXISTS trades_symbol ON trades (symbol, trade_id);
CREATE INDEX IF NOT EXISTS trades_timestamp ON trades (timestamp);
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT PRIMARY KEY,
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    cost_basis TEXT NOT NULL,
    open_commission TEXT NOT NULL,
    opened_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS predictions (
    prediction_id TEXT PRIMARY KEY,
    outcome TEXT NOT NULL CHECK (outcome IN ('traded', 'rejected', 'ignored')),
    trade_id INTEGER UNIQUE REFERENCES trades (trade_id),
    detail TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    CHECK ((outcome = 'traded') = (trade_id IS NOT NULL))
);
CREATE TABLE IF NOT EXISTS marks (
    symbol TEXT PRIMARY KEY,
    price TEXT NOT NULL,
    as_of TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trading_days (
    day TEXT PRIMARY KEY,
    start_equity TEXT NOT NULL,
    halted INTEGER NOT NULL DEFAULT 0 CHECK (halted IN (0, 1)),
    halt_reason TEXT
);
-- paper-trading writes here while its storage is halted, to find out when writes succeed again
CREATE TABLE IF NOT EXISTS storage_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS equity_snapshots (
    day TEXT PRIMARY KEY,
    equity TEXT NOT NULL,
    cash TEXT NOT NULL,
    positions_value TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
"""


#: What the ledger's guarantees rest on; set_pragmas stops the service when one does not take.
PRAGMAS = {"journal_mode": "WAL", "synchronous": "FULL", "foreign_keys": "ON", "busy_timeout": 30000}


class DuplicatePrediction(Exception):
    """This prediction was already acted on; acting again would double a trade."""

    def __init__(self, prediction_id: str, outcome: str):
        super().__init__(f"prediction {prediction_id} was already processed ({outcome})")
        self.prediction_id = prediction_id
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class TradeRecord:
    trade_id: int
    symbol: str
    action: Action
    quantity: int
    price: Decimal
    gross: Decimal
    commission: Decimal
    slippage: Decimal  # money lost to slippage on this fill (quote vs fill price x quantity)
    realized_pnl: Decimal
    net_pnl: Decimal
    timestamp: str
    prediction_id: str | None
    reason: str
    assumptions: Mapping[str, object]
    closes_position: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "trade_id": self.trade_id,
            "symbol": self.symbol,
            "action": str(self.action),
            "quantity": self.quantity,
            "price": float(self.price),
            "gross": float(self.gross),
            "commission": float(self.commission),
            "slippage": float(self.slippage),
            "realized_pnl": float(self.realized_pnl),
            "net_pnl": float(self.net_pnl),
            "timestamp": self.timestamp,
            "prediction_id": self.prediction_id,
            "reason": self.reason,
            "assumptions": dict(self.assumptions),
            "closes_position": self.closes_position,
        }


@dataclass(frozen=True, slots=True)
class Mark:
    price: Decimal
    as_of: str
    source: str


@dataclass(frozen=True, slots=True)
class DayRecord:
    day: date
    start_equity: Decimal
    halted: bool
    halt_reason: str | None


class TradeStore:
    """One SQLite file; thread-safe (the service calls it from worker threads, one at a time)."""

    def __init__(self, path: Path, starting_capital: Decimal, now: datetime, synchronous: str = ""):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves, nothing implicit.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._lock = threading.RLock()
        # synchronous: StorageKnobs.synchronous (NORMAL in a replay), else FULL.
        set_pragmas(self._db, self.path, with_synchronous(PRAGMAS, synchronous))
        # One transaction; every statement in SCHEMA is idempotent.
        apply_schema(self._db, SCHEMA)
        self._migrate_outcomes()
        # health counts today's outcomes on every poll: a range scan, not the whole table.
        self._db.execute("CREATE INDEX IF NOT EXISTS predictions_processed_at ON predictions (processed_at)")
        # The outbox is read every few seconds: only the unsent trades, not the whole table.
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS trades_unpublished ON trades (trade_id) WHERE published = 0"
        )
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO account VALUES (1, ?, ?, '0', '0', ?)",
                (str(to_money(starting_capital)), str(to_money(starting_capital)), now.isoformat()),
            )
            self._db.execute(
                "INSERT OR IGNORE INTO ledger VALUES (1, ?, ?)", (uuid.uuid4().hex[:16], now.isoformat())
            )
        #: This ledger's identity, made when the file is first opened and kept with the book.
        #: paper-trading names its consumer group after it, so a second paper-trading with another
        #: data directory on the same Redis reads the predictions through a group of its own, and a
        #: ledger never finds that another book acknowledged its events.
        self.ledger_id = str(self._db.execute("SELECT ledger_id FROM ledger WHERE id = 1").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def pragma(self, name: str) -> object:
        return self._db.execute(f"PRAGMA {name}").fetchone()[0]

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction on the ledger (for tables kept beside it: the IG journal)."""
        return self._transaction()

    def query(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        """Rows of one read, under the store's lock."""
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it or none. A write the storage failed (disk full, I/O
        error, read-only) raises LedgerWriteFailed, anything else as it came.

        SQLite rolls a transaction back by itself when a write fails for the storage (the
        COMMIT of a full disk reports SQLITE_IOERR or SQLITE_FULL with no transaction left
        open), so ROLLBACK is issued only while one is still open."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                failure = storage_failure(exc)
                if failure is None:
                    raise
                raise LedgerWriteFailed(failure, self.path) from exc

    def probe_write(self, now: datetime) -> None:
        """A small committed write (one row of its own table): LedgerWriteFailed while the storage
        still fails. A write that is rolled back would not tell: it may never reach the disk."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO storage_probe VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                (_utc(now),),
            )

    # -- the book -------------------------------------------------------------------------

    def load_portfolio(self) -> Portfolio:
        with self._lock:
            return self._load()

    def _load(self) -> Portfolio:
        capital, cash, realized, commissions = self._db.execute(
            "SELECT starting_capital, cash, realized_pnl, commissions_paid FROM account"
        ).fetchone()
        rows = self._db.execute(
            "SELECT symbol, quantity, cost_basis, open_commission, opened_at FROM positions"
        )
        positions = {
            s: Position(s, q, Decimal(c), Decimal(oc), datetime.fromisoformat(t)) for s, q, c, oc, t in rows
        }
        return Portfolio(
            Decimal(capital),
            Decimal(cash),
            MappingProxyType(positions),
            Decimal(realized),
            Decimal(commissions),
        )

    def record_fill(
        self,
        fill: Fill,
        *,
        now: datetime,
        slippage: Decimal,
        reason: str,
        assumptions: Mapping[str, object],
        prediction_id: str | None = None,
        journal: Callable[[sqlite3.Connection, TradeRecord], None] | None = None,
    ) -> tuple[TradeRecord, Portfolio]:
        """Apply and persist one fill atomically; raises DuplicatePrediction or PortfolioError.

        `journal` writes what must commit with the fill (the IG mirror's order) in its transaction.
        """
        with self._transaction() as db:
            if prediction_id is not None:
                self._refuse_processed(prediction_id)
            result = self._load().apply(fill, now)
            cursor = db.execute(
                "INSERT INTO trades (symbol, action, quantity, price, gross, commission, slippage,"
                " realized_pnl, net_pnl, timestamp, prediction_id, reason, assumptions, closes_position)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    fill.symbol,
                    str(fill.action),
                    fill.quantity,
                    str(fill.price),
                    str(fill.gross),
                    str(fill.commission),
                    str(slippage),
                    str(result.realized_pnl),
                    str(result.net_pnl),
                    _utc(now),
                    prediction_id,
                    reason,
                    json.dumps(assumptions, sort_keys=True),
                    int(fill.symbol not in result.portfolio.positions),
                ),
            )
            trade_id = cursor.lastrowid
            self._write_position(fill.symbol, result.portfolio)
            self._write_account(result.portfolio)
            if prediction_id is not None:
                db.execute(
                    "INSERT INTO predictions VALUES (?, 'traded', ?, ?, ?)",
                    (prediction_id, trade_id, reason, _utc(now)),
                )
            record = self._trade(trade_id)
            if journal is not None:
                journal(db, record)
        return record, result.portfolio

    def _refuse_processed(self, prediction_id: str) -> None:
        row = self._db.execute(
            "SELECT outcome FROM predictions WHERE prediction_id = ?", (prediction_id,)
        ).fetchone()
        if row is not None:
            raise DuplicatePrediction(prediction_id, row[0])

    def _write_position(self, symbol: str, book: Portfolio) -> None:
        position = book.positions.get(symbol)
        if position is None:
            self._db.execute("DELETE FROM positions WHERE symbol = ?", (symbol,))
            return
        self._db.execute(
            "INSERT INTO positions VALUES (?, ?, ?, ?, ?) ON CONFLICT (symbol) DO UPDATE SET"
            " quantity = excluded.quantity, cost_basis = excluded.cost_basis,"
            " open_commission = excluded.open_commission",
            (
                symbol,
                position.quantity,
                str(position.cost_basis),
                str(position.open_commission),
                position.opened_at.isoformat(),
            ),
        )

    def _write_account(self, book: Portfolio) -> None:
        self._db.execute(
            "UPDATE account SET cash = ?, realized_pnl = ?, commissions_paid = ? WHERE id = 1",
            (str(book.cash), str(book.realized_pnl), str(book.commissions_paid)),
        )

    def _migrate_outcomes(self) -> None:
        """Ledgers from before the outcomes traded / rejected / ignored said `skipped`, and
        `rejected` for a closed market or a stale quote: rebuild the table (its CHECK names the
        words) with those read as `ignored`, in one transaction."""
        row = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'predictions'"
        ).fetchone()
        if row is None or "'skipped'" not in row[0]:
            return
        new_table = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS predictions") :]
        new_table = new_table[: new_table.index(");") + 2].replace(
            "IF NOT EXISTS predictions", "predictions_v2"
        )
        with self._transaction() as db:
            db.execute(new_table)
            db.execute(
                "INSERT INTO predictions_v2 SELECT prediction_id,"
                " CASE WHEN outcome = 'skipped' THEN 'ignored'"
                "  WHEN outcome = 'rejected' AND (detail LIKE 'market_hours:%'"
                "   OR detail LIKE 'no order at this quote:%') THEN 'ignored'"
                "  ELSE outcome END,"
                " trade_id, detail, processed_at FROM predictions"
            )
            db.execute("DROP TABLE predictions")
            db.execute("ALTER TABLE predictions_v2 RENAME TO predictions")

    # -- predictions ----------------------------------------------------------------------

    def record_prediction_outcome(self, prediction_id: str, outcome: str, detail: str, now: datetime) -> bool:
        """Remember a prediction that led to no trade: `rejected` by a risk rule, or `ignored`
        (HOLD, market closed, too old, stale quote, nothing to sell). False if already processed."""
        if outcome not in ("rejected", "ignored"):
            raise ValueError(f"outcome must be rejected or ignored, got {outcome!r}")
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO predictions VALUES (?, ?, NULL, ?, ?)",
                (prediction_id, outcome, detail, _utc(now)),
            )
        return cursor.rowcount == 1

    def outcome_counts(self, since: datetime) -> dict[str, int]:
        """How many predictions ended in each outcome since `since` (processed_at, UTC)."""
        counts = dict.fromkeys(("traded", "rejected", "ignored"), 0)
        with self._lock:
            rows = self._db.execute(
                "SELECT outcome, COUNT(*) FROM predictions WHERE processed_at >= ? GROUP BY outcome",
                (_utc(since),),
            ).fetchall()
        counts.update({str(outcome): int(n) for outcome, n in rows})
        return counts

    def prediction_outcome(self, prediction_id: str) -> dict[str, object] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT outcome, trade_id, detail, processed_at FROM predictions WHERE prediction_id = ?",
                (prediction_id,),
            ).fetchone()
        if row is None:
            return None
        return {"outcome": row[0], "trade_id": row[1], "detail": row[2], "processed_at": row[3]}

    # -- trades ---------------------------------------------------------------------------

    _TRADE_COLUMNS = (
        "trade_id, symbol, action, quantity, price, gross, commission, slippage, realized_pnl,"
        " net_pnl, timestamp, prediction_id, reason, assumptions, closes_position"
    )

    def _trade(self, trade_id: int) -> TradeRecord:
        row = self._db.execute(
            f"SELECT {self._TRADE_COLUMNS} FROM trades WHERE trade_id = ?", (trade_id,)
        ).fetchone()
        return _trade_from_row(row)

    def trades(
        self, *, limit: int | None = None, symbol: str | None = None, since: datetime | None = None
    ) -> list[TradeRecord]:
        """Newest first."""
        sql = f"SELECT {self._TRADE_COLUMNS} FROM trades WHERE 1 = 1"
        args: list[object] = []
        if symbol is not None:
            sql += " AND symbol = ?"
            args.append(symbol)
        if since is not None:
            sql += " AND timestamp >= ?"
            args.append(_utc(since))
        sql += " ORDER BY trade_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            return [_trade_from_row(row) for row in self._db.execute(sql, args)]

    def unpublished_trades(self) -> list[TradeRecord]:
        """Trades whose events have not all reached Redis (it was away, or the process died first), oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._TRADE_COLUMNS} FROM trades WHERE published = 0 ORDER BY trade_id"
            ).fetchall()
        return [_trade_from_row(row) for row in rows]

    def unpublished_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM trades WHERE published = 0").fetchone()[0])

    def mark_published(self, trade_id: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE trades SET published = 1 WHERE trade_id = ?", (trade_id,))

    def trade_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM trades").fetchone()[0]

    def replay_ledger(self) -> Portfolio:
        """Rebuild the book from the trades alone: must equal `load_portfolio()` (an audit)."""
        with self._lock:
            book = Portfolio.new(
                Decimal(self._db.execute("SELECT starting_capital FROM account").fetchone()[0])
            )
            for trade in reversed(self.trades()):
                fill = Fill(trade.symbol, trade.action, trade.quantity, trade.price, trade.commission)
                book = book.apply(fill, datetime.fromisoformat(trade.timestamp)).portfolio
        return book

    # -- marks, trading days, equity ------------------------------------------------------

    def save_mark(self, symbol: str, price: Decimal, as_of: str, source: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO marks VALUES (?, ?, ?, ?) ON CONFLICT (symbol) DO UPDATE SET"
                " price = excluded.price, as_of = excluded.as_of, source = excluded.source",
                (symbol, str(price), as_of, source),
            )

    def marks(self) -> dict[str, Mark]:
        with self._lock:
            rows = self._db.execute("SELECT symbol, price, as_of, source FROM marks").fetchall()
        return {s: Mark(Decimal(p), a, src) for s, p, a, src in rows}

    def open_trading_day(self, day: date, start_equity: Decimal) -> DayRecord:
        """The day's record, created with `start_equity` the first time the day is seen."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO trading_days (day, start_equity) VALUES (?, ?)",
                (day.isoformat(), str(start_equity)),
            )
            row = db.execute(
                "SELECT day, start_equity, halted, halt_reason FROM trading_days WHERE day = ?",
                (day.isoformat(),),
            ).fetchone()
        return DayRecord(date.fromisoformat(row[0]), Decimal(row[1]), bool(row[2]), row[3])

    def halt_day(self, day: date, reason: str) -> bool:
        """Mark the day halted; True only for the call that actually halted it."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE trading_days SET halted = 1, halt_reason = ? WHERE day = ? AND halted = 0",
                (reason, day.isoformat()),
            )
        return cursor.rowcount == 1

    def record_equity(
        self, day: date, equity: Decimal, cash: Decimal, positions_value: Decimal, now: datetime
    ) -> None:
        """The day's latest equity; the last write of a day is its close."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO equity_snapshots VALUES (?, ?, ?, ?, ?) ON CONFLICT (day) DO UPDATE SET"
                " equity = excluded.equity, cash = excluded.cash,"
                " positions_value = excluded.positions_value, recorded_at = excluded.recorded_at",
                (day.isoformat(), str(equity), str(cash), str(positions_value), now.isoformat()),
            )

    def equity_curve(self, since: date | None = None) -> list[tuple[date, Decimal]]:
        """(day, equity) oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT day, equity FROM equity_snapshots WHERE day >= ? ORDER BY day",
                ((since or date.min).isoformat(),),
            ).fetchall()
        return [(date.fromisoformat(d), Decimal(e)) for d, e in rows]

    def equity_history(self, since: date) -> list[dict]:
        """Each day's last equity snapshot from `since`, oldest first: `day, equity, cash,
        positions_value` (numbers) and `recorded_at`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT day, equity, cash, positions_value, recorded_at FROM equity_snapshots"
                " WHERE day >= ? ORDER BY day",
                (since.isoformat(),),
            ).fetchall()
        return [
            {
                "day": day,
                "equity": float(Decimal(equity)),
                "cash": float(Decimal(cash)),
                "positions_value": float(Decimal(held)),
                "recorded_at": recorded_at,
            }
            for day, equity, cash, held, recorded_at in rows
        ]


def _trade_from_row(row: tuple) -> TradeRecord:
    (
        trade_id,
        symbol,
        action,
        qty,
        price,
        gross,
        commission,
        slippage,
        realized,
        net,
        ts,
        pid,
        reason,
        raw,
        closes,
    ) = row
    return TradeRecord(
        trade_id=trade_id,
        symbol=symbol,
        action=Action(action),
        quantity=qty,
        price=Decimal(price),
        gross=Decimal(gross),
        commission=Decimal(commission),
        slippage=Decimal(slippage),
        realized_pnl=Decimal(realized),
        net_pnl=Decimal(net),
        timestamp=ts,
        prediction_id=pid,
        reason=reason,
        assumptions=MappingProxyType(json.loads(raw)),
        closes_position=bool(closes),
    )


def _utc(moment: datetime) -> str:
    """Stored instants are UTC ISO strings, so text order is time order."""
    return moment.astimezone(UTC).isoformat()
