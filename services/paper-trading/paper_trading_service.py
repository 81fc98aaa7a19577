"""paper-trading service: a virtual ASX portfolio that follows the prediction service's signals.

The shell is thin: every order goes through the one risk gate (`services.domain.risk`), fills
at market-data's latest quote (`get_quote`: the ask for a buy, the bid for a sell, else the price
with slippage against the trader; a stale quote or one older than MAX_QUOTE_AGE_S is refused with
-32001), and is recorded by
`TradeStore` in one SQLite transaction together with the prediction it acted on. Then it
publishes `trade_executed` (and `position_closed` when a position ends) from a durable outbox:
a trade whose events were not handed to the bus before a crash is published at the next start.

- `prediction_generated` (durable): BUY opens or adds as much as the rules allow, SELL closes,
  HOLD does nothing; each prediction id is acted on at most once, even when delivered twice or
  when the process dies mid-way (the stream redelivers, the ledger says it was done).
- `market_data_updated`: marks the book to the new price and records the day's equity (a price
  it already holds for the symbol writes nothing, but the day's first event opens the day); when it
  carries a quote, closes a position on its stop-loss or take-profit (`market_orders.exit_for`).
- A timer every EXIT_CHECK_S suite seconds asks market-data for the quote of each open position
  and checks the same levels, so an exit never waits on pub/sub delivery. Both paths run under
  the trade lock and re-read the position, and the store refuses to sell shares no longer held:
  a position exits once.
- Storage: a ledger write that fails for the storage (disk full, I/O error, read-only) records
  nothing (one transaction) and halts trading: orders, signal trades and exits are refused with
  -32007, durable predictions wait unconsumed, health is degraded, `storage_halted` goes out. A
  committed probe write every STORAGE_PROBE_S seconds finds when writes succeed again; then the
  book is re-read from the ledger, `storage_resumed` goes out and trading goes on.
- IG Markets: `sync_with_ig_markets` compares the demo account with the paper book; mirroring
  paper trades to IG is opt-in (TRADING_PAPER_TRADING_IG_MIRROR=true): each fill's IG order is
  journaled in the fill's transaction and sent by one worker that never leaves an order
  ambiguous and halts on a divergence it cannot correct (`ig_mirror.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from time import monotonic
from typing import Any, Literal

from services.base import (
    BaseService,
    DependencyUnavailable,
    Event,
    InvalidParams,
    MarketClosed,
    NotConfigured,
    NotFound,
    RiskRejected,
    RpcError,
    ServiceError,
    StorageUnavailable,
    on_event,
    rpc,
    run_service,
)
from services.base.crashpoints import crashpoint
from services.base.knobs import read_knobs
from services.base.redaction import mask_identifier
from services.base.storage import LedgerWriteFailed, StorageKnobs
from services.clients import ig_client
from services.clients.ig_epics import epics_for
from services.domain import asx_calendar, ig_reconciliation, performance, risk
from services.domain.intraday import INTERVALS
from services.domain.intraday_fills import ExitFill
from services.domain.market_orders import (
    MarketQuote,
    RangeBar,
    Silence,
    UnusableQuote,
    exit_for,
    market_data_silence,
    order_fill,
    priced_before,
    refusal,
    skipped_bar_count,
)
from services.domain.portfolio import (
    ZERO,
    Action,
    Fill,
    PortfolioError,
    Valuation,
    to_decimal,
    to_money,
    trade_value,
    value,
)
from services.paper_trading.ig_mirror import IgMirror, MirrorJournal
from services.paper_trading.paper_trading_knobs import PaperTradingKnobs
from services.paper_trading.trade_store import DayRecord, Mark, TradeRecord, TradeStore

DB_NAME = "paper_trading.db"
PERIOD_DAYS = {"day": 1, "week": 7, "month": 30}
SIGNALS = ("BUY", "SELL", "HOLD")
MAX_HISTORY = 1000
MAX_EQUITY_DAYS = 3660
OUTBOX_CHECK_S = 2.0  # how often trades whose events did not reach Redis are sent again
#: While trading is halted for the storage, a committed probe write this often (real seconds:
#: the disk mends in real time, whatever the suite clock does).
STORAGE_PROBE_S = 1.0


def market_is_open(now: datetime) -> bool:
    """ASX continuous trading (10:00 to the close, Sydney time, trading days only)."""
    return asx_calendar.phase_at(now) is asx_calendar.Phase.OPEN


@dataclass(frozen=True, slots=True)
class StorageHalt:
    """Trading halted because a ledger write failed for the storage, since `since` (suite clock)."""

    reason: str  # "disk full: database or disk is full (SQLITE_FULL)"
    error: str  # SQLite's name for it
    since: datetime
    started: float  # time.monotonic(), for how long it lasted

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": "halted",
            "reason": self.reason,
            "error": self.error,
            "since": self.since.isoformat(),
        }

    def refusal(self) -> StorageUnavailable:
        return StorageUnavailable(
            f"storage unavailable: {self.reason}",
            data={"reason": self.reason, "error": self.error, "since": self.since.isoformat()},
        )


class QuoteRefused(DependencyUnavailable):
    """market-data's quote is stale or too old to fill at: wait for a fresh one (-32001)."""


def event_mark(data: dict[str, Any]) -> Mark | None:
    """The mark a market_data_updated event gives (its price on its basis), or None without a price."""
    price = data.get("price")
    if isinstance(price, bool) or not isinstance(price, int | float) or price <= 0:
        return None
    return Mark(to_decimal(price), str(data.get("as_of")), str(data.get("source")))


class PaperTradingService(BaseService):
    name = "paper-trading"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Event handlers start before on_start finishes; they wait for the book to be open.
        self._open = asyncio.Event()
        self._closed = False
        self._loops: list[asyncio.Task] = []  # the trade outbox and the exit timer
        self.storage_halt: StorageHalt | None = None  # see _storage_failed
        self._storage_probe: asyncio.Task | None = None
        self.is_market_open: Callable[[datetime], bool] = market_is_open
        self._exits_checked_to: dict[str, datetime] = {}  # see _checked_to
        # Suite time of the latest usable (not stale) quote per symbol, from events and replies:
        # how long market data has been silent (market_orders.market_data_silence).
        self._quote_seen: dict[str, datetime] = {}
        self._quote_answered: dict[str, datetime] = {}  # fresh, or stale for no data (see source_answered)
        self._silence: Silence | None = None
        self._silence_announced: Silence | None = None  # the state last sent as market_data_stale
        # Read here, not in on_start, so a bad setting exits 2 with its reason before anything runs.
        self.knobs = read_knobs(PaperTradingKnobs, self.settings.environ)
        self.synchronous = read_knobs(StorageKnobs, self.settings.environ).synchronous
        self.rules = self.knobs.risk_rules()
        self.epics = epics_for(self.settings.symbols, self.knobs.ig_epics)

    def consumer_group(self) -> str:
        """`paper-trading@<ledger id>`: the predictions this book has acted on are acknowledged
        in a group of its own (a second copy with another data directory gets another group).
        The ledger is opened here, before the event bus starts (a ledger that cannot take its
        pragmas stops the service now, exit 78), and on_start reads the book from it."""
        self.store = TradeStore(
            self.settings.data_dir / DB_NAME, self.knobs.starting_capital, self.clock.now(), self.synchronous
        )
        return f"{self.name}@{self.store.ledger_id}"

    async def on_start(self) -> None:
        self.book = self.store.load_portfolio()
        self.marks: dict[str, Mark] = self.store.marks()
        self.day: DayRecord | None = None
        self.trade_lock = asyncio.Lock()
        self.ig_credentials = ig_client.IgCredentials.from_lookup(self._ig_setting, self.settings.ig_base_url)
        self._ig: ig_client.IgClient | None = None
        self.counters = dict.fromkeys(
            ("trades", "rejections", "predictions_traded", "predictions_skipped", "duplicates", "exits"), 0
        )
        self.counters |= {"exit_checks": 0, "quotes_refused": 0}
        # market_data_updated events that moved a mark, and those repeating a price already held
        self.counters |= {"marks_moved": 0, "marks_unchanged": 0}
        self.counters["outbox_resent"] = 0
        self.outbox_watch = self.make_outbox_watch("trades")
        self.counters |= {"storage_halts": 0, "storage_probes": 0}
        # A write past the file-size limit must fail (EFBIG, which SQLite reports), not kill the
        # process: CPython ignores SIGXFSZ at start already; said here since the halt relies on it.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        self.ig_mirror: IgMirror | None = None
        if self.knobs.ig_mirror and self.ig_credentials is not None:
            self.ig_mirror = IgMirror(
                MirrorJournal(self.store, self.epics),
                self._ig_client,
                self._paper_quantities,
                self.publish,
                self.clock.now,
                settle_s=self.knobs.ig_settle_s,
                reconcile_s=self.knobs.ig_reconcile_s,
                max_attempts=self.knobs.ig_max_attempts,
                log=self.log,
            )
            self.ig_mirror.start()  # reconciles with IG first, then sends what the journal holds
        self._open.set()
        self._loops = [
            asyncio.create_task(self._drain_outbox(), name="trade-outbox"),
            asyncio.create_task(self._check_exits_on_a_timer(), name="exit-timer"),
        ]

    async def on_stop(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._storage_probe is not None:
            self._storage_probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._storage_probe
        if self.ig_mirror is not None:
            await self.ig_mirror.stop()  # an order in flight stays so in the journal: looked up at start
        if self._ig is not None:
            await self._ig.aclose()
        # Event handlers may still be running: close the book between trades, never inside one.
        async with self.trade_lock:
            self._closed = True
            self.store.close()

    @contextlib.asynccontextmanager
    async def _trading(self, *, orders: bool = False) -> AsyncIterator[None]:
        """The trade lock, refused once the book is closed (a durable event then stays unacked).

        With `orders`, refused with -32007 while the storage is halted. A ledger write failing
        for the storage inside halts trading and answers -32007 (nothing of it was recorded)."""
        async with self.trade_lock:
            if self._closed:
                raise ServiceError("paper-trading is stopping")
            if orders and self.storage_halt is not None:
                raise self.storage_halt.refusal()
            try:
                yield
            except LedgerWriteFailed as exc:
                raise await self._storage_failed(exc) from None

    async def health_details(self) -> dict:
        valuation = self._valuation()
        halt = self.storage_halt
        ig_mirror_state, ig_mirror_warnings = self._ig_mirror_health()
        details: dict[str, Any] = {
            "storage": {"state": "ok"} if halt is None else halt.as_dict(),
            "equity": float(valuation.equity),
            "cash": float(valuation.cash),
            "open_positions": len(self.book.positions),
            "trading_halted": self._halted_today() or halt is not None,
            "follow_signals": self.knobs.follow_signals,
            "ig_configured": self.ig_credentials is not None,
            "ig_mirror": self.knobs.ig_mirror,
            "ig_mirror_state": ig_mirror_state,
            # Every prediction ends in one outcome: how today's ended (Sydney day, suite clock).
            "outcomes_today": self.store.outcome_counts(self._start_of_today()),
            "outbox": self.outbox_watch.size,
            "buys_halted": self._silence.reason if self._silence else None,
            **self.counters,
        }
        warnings = [] if halt is None else [halt.refusal().message]
        if self._silence is not None:
            warnings.append(f"new buys halted: {self._silence.reason}")
        warnings += ig_mirror_warnings
        if warnings:
            details["status"] = "degraded"
            details["warnings"] = warnings
        if (outbox_warning := self.outbox_watch.warning()) is not None:
            details["status"] = "degraded"
            details["warnings"] = [*details.get("warnings", []), outbox_warning]
        return details

    def _ig_mirror_health(self) -> tuple[dict[str, Any], list[str]]:
        """The mirror's state for health, and its warnings (a halt, or mirroring on without IG)."""
        if self.ig_mirror is None:
            if not self.knobs.ig_mirror:
                return {"state": "off", "why": "off"}, []
            why = "IG is not configured (IG_API_KEY, IG_USERNAME, IG_PASSWORD)"
            return {"state": "off", "why": why}, [f"IG mirror on, but {why}"]
        state = self.ig_mirror.status()
        return state, [f"IG mirror halted: {reason}" for reason in state["reasons"]] if state[
            "state"
        ] == "halted" else []

    def _paper_quantities(self) -> dict[str, int]:
        return {symbol: position.quantity for symbol, position in self.book.positions.items()}

    def _start_of_today(self) -> datetime:
        return asx_calendar.to_sydney(self.clock.now()).replace(hour=0, minute=0, second=0, microsecond=0)

    def _halted_today(self) -> bool:
        today = asx_calendar.to_sydney(self.clock.now()).date()
        return self.day is not None and self.day.day == today and self.day.halted

    def _ig_setting(self, name: str) -> str | None:
        return self.settings.secret(name) or self.settings.environ.get(name)

    # ---- RPC ------------------------------------------------------------------------------

    @rpc
    async def execute_trade(self, symbol: str, action: str, quantity: int) -> dict:
        """Buy or sell whole shares at the latest quote after the risk gate (-32003 rule, -32004 closed,
        -32001 no usable quote: market-data away, or its quote stale or older than MAX_QUOTE_AGE_S)."""
        symbol = self._symbol(symbol)
        side = action.strip().upper() if isinstance(action, str) else ""
        if side not in ("BUY", "SELL"):
            raise InvalidParams("action", f"must be BUY or SELL, got {action!r}")
        if not 0 < quantity <= 10_000_000:
            raise InvalidParams("quantity", f"must be a whole number of shares from 1, got {quantity}")
        async with self._trading(orders=True):
            record = await self._execute(symbol, Action(side), quantity, reason="manual")
        return record.as_dict()

    @rpc
    async def get_prediction_outcome(self, prediction_id: str) -> dict:
        """What became of a prediction: `traded` (with its trade_id), `rejected` (a risk rule) or
        `ignored` (HOLD, market closed, expired, stale quote, nothing to sell), with the reason
        and when; -32006 while there is none yet (still in the stream, or never published)."""
        if not isinstance(prediction_id, str) or not 0 < len(prediction_id.strip()) <= 200:
            raise InvalidParams(
                "prediction_id", f"must be a prediction id (1..200 characters), got {prediction_id!r}"
            )
        prediction_id = prediction_id.strip()
        outcome = self.store.prediction_outcome(prediction_id)
        if outcome is None:
            raise NotFound(
                f"no outcome recorded for prediction {prediction_id}: not received yet (still in the"
                " prediction_generated stream) or never published",
                data={"prediction_id": prediction_id},
            )
        return {"prediction_id": prediction_id, **outcome}

    @rpc
    async def check_exits(self) -> dict:
        """Check every open position's stop-loss and take-profit now, on market-data's current quote
        and the bars since the last check (as the timer does, and after the close too: a day's bar,
        final at 16:10, can show a level hit in the session). The exits taken, and the positions
        that could not be checked, with why. -32007 while trading is halted for the storage."""
        if self.storage_halt is not None:
            raise self.storage_halt.refusal()
        exits, unchecked = await self._check_exits("check_exits")
        return {
            "checked_at": self.clock.now().isoformat(),
            "exits": [record.as_dict() for record in exits],
            "unchecked": unchecked,
            "open_positions": sorted(self.book.positions),
        }

    @rpc
    async def get_positions(self) -> dict:
        """Open positions with average cost, market value, unrealised P&L and exit levels."""
        rules = self.rules
        positions = []
        for symbol, position in sorted(self.book.positions.items()):
            mark = self._mark(symbol)
            unrealized = position.unrealized_pnl(mark.price)
            positions.append(
                {
                    "symbol": symbol,
                    "quantity": position.quantity,
                    "avg_cost": float(position.avg_cost),
                    "cost_basis": float(position.cost_basis),
                    "market_price": float(mark.price),
                    "price_as_of": mark.as_of,
                    "price_source": mark.source,
                    "market_value": float(position.market_value(mark.price)),
                    "unrealized_pnl": float(unrealized),
                    "unrealized_pnl_pct": float(unrealized / position.cost_basis * 100),
                    "stop_loss_price": float(position.avg_cost * (1 - rules.stop_loss_fraction)),
                    "take_profit_price": float(position.avg_cost * (1 + rules.take_profit_fraction)),
                    "opened_at": position.opened_at.isoformat(),
                }
            )
        return {"positions": positions, "count": len(positions), "as_of": self.clock.now().isoformat()}

    @rpc
    async def get_portfolio_status(self) -> dict:
        """Cash, equity, exposure, realised/unrealised/day P&L and whether new buys are halted."""
        now = self.clock.now()
        async with self._trading():  # a consistent view, never half a trade
            day = self._day_state(now)
            valuation = self._valuation()
        halted = self.day is not None and self.day.halted
        halt_reason = self.day.halt_reason if halted and self.day else None
        if self.storage_halt is not None:  # no order of any kind goes through
            halted, halt_reason = True, self.storage_halt.refusal().message
        return {
            "cash": float(valuation.cash),
            "equity": float(valuation.equity),
            "positions_value": float(valuation.positions_value),
            "exposure_pct": float(valuation.exposure * 100),
            "realized_pnl": float(self.book.realized_pnl),
            "unrealized_pnl": float(valuation.unrealized_pnl),
            "day_pnl": float(day.day_pnl),
            "trading_halted": halted,
            "halt_reason": halt_reason,
            "storage": {"state": "ok"} if self.storage_halt is None else self.storage_halt.as_dict(),
            "starting_capital": float(self.book.starting_capital),
            "commissions_paid": float(self.book.commissions_paid),
            "total_return": performance.total_return(self.book.starting_capital, valuation.equity),
            "open_positions": len(self.book.positions),
            "market_open": self.is_market_open(now),
            "as_of": now.isoformat(),
        }

    @rpc
    async def get_trading_performance(self, period: Literal["day", "week", "month", "all"] = "all") -> dict:
        """Return, P&L, win rate, average win/loss, profit factor, Sharpe, max drawdown, trades, commissions."""
        now = self.clock.now()
        since = self._period_start(period, now)
        async with self._trading():
            await self._snapshot_equity(now)  # today's point is the equity now
            trades = await asyncio.to_thread(self.store.trades, since=since)
            curve = self._equity_curve(since)
            valuation = self._valuation()
        return performance_report(period, trades, curve, valuation, since)

    @rpc
    async def get_equity_history(self, days: int = 90) -> dict:
        """Each trading day's closing equity (its last snapshot) over the last `days` calendar days,
        oldest first, with today's point as the equity now (not written: a read changes nothing)."""
        if not 1 <= days <= MAX_EQUITY_DAYS:
            raise InvalidParams("days", f"must be between 1 and {MAX_EQUITY_DAYS}, got {days}")
        now = self.clock.now()
        today = asx_calendar.to_sydney(now).date()
        points = await asyncio.to_thread(self.store.equity_history, today - timedelta(days=days - 1))
        async with self._trading():  # a consistent view, never half a trade
            valuation = self._valuation()
        return {
            "points": equity_points(points, today, valuation, now),
            "starting_capital": float(self.book.starting_capital),
            "days": days,
            "as_of": now.isoformat(),
        }

    @rpc
    async def get_trade_history(self, limit: int = 50, symbol: str | None = None) -> dict:
        """The latest trades, newest first, optionally for one symbol."""
        if not 1 <= limit <= MAX_HISTORY:
            raise InvalidParams("limit", f"must be between 1 and {MAX_HISTORY}, got {limit}")
        symbol = self._symbol(symbol) if symbol is not None else None
        trades = await asyncio.to_thread(self.store.trades, limit=limit, symbol=symbol)
        return {"trades": [t.as_dict() for t in trades], "count": len(trades)}

    @rpc
    async def sync_with_ig_markets(self) -> dict:
        """Log in to IG, read the account's balance and positions, report differences from the paper book."""
        ig = self._ig_client()
        try:
            session_account = await ig.account()
            ig_positions = await ig.positions()
        except ig_client.IgError as exc:
            raise _rpc_error_for_ig(exc) from None
        valuation = self._valuation()
        balance = session_account.get("balance") or {}
        report = ig_client.reconcile(self._paper_quantities(), ig_positions, self.epics)
        mirror = (
            ig_reconciliation.reconcile(
                [row.order() for row in self.ig_mirror.journal.rows()], self._paper_quantities(), ig_positions
            )
            if self.ig_mirror is not None
            else None
        )
        ig_equity = (balance.get("balance") or 0) + (balance.get("profitLoss") or 0)
        return {
            "account_id": mask_identifier(session_account.get("accountId")),  # IG_ACCOUNT_ID is a secret
            "account_type": session_account.get("accountType"),
            "currency": session_account.get("currency"),
            "ig_balance": balance,
            "paper": {"cash": float(valuation.cash), "equity": float(valuation.equity)},
            "cash_difference": (balance.get("balance") or 0) - float(valuation.cash),
            "equity_difference": ig_equity - float(valuation.equity),
            **report,
            "mirror_enabled": self.knobs.ig_mirror,
            # The mirror journal against these positions (read-only: the worker corrects and halts);
            # null while mirroring is off.
            "divergences": [d.as_dict() for d in mirror.divergences] if mirror else None,
            "unmirrored": list(mirror.unmirrored) if mirror else None,
            "ig_mirror": self.ig_mirror.status() if self.ig_mirror is not None else {"state": "off"},
            "synced_at": self.clock.now().isoformat(),
        }

    @rpc
    async def reconcile_ig(self) -> dict:
        """Reconcile the IG mirror journal with IG now (an order in flight is looked up first once
        its settle time has passed); resumes a halted mirror when clean. -32002 when mirroring is off."""
        if self.ig_mirror is None:
            self._ig_client()  # -32002 naming the credentials when IG is not configured
            raise NotConfigured(
                "IG mirroring is off", detail="set TRADING_PAPER_TRADING_IG_MIRROR=true to mirror paper fills"
            )
        return await self.ig_mirror.reconcile_now()

    @rpc
    async def adopt_ig_state(self) -> dict:
        """The operator's word that IG's sizes of the mirror's deals are right (a partial fill, a
        deal closed at IG): the journal takes them, then reconciles, resuming when clean. IG
        positions the journal never recorded are left (close them at IG). -32002 when off."""
        if self.ig_mirror is None:
            self._ig_client()
            raise NotConfigured(
                "IG mirroring is off", detail="set TRADING_PAPER_TRADING_IG_MIRROR=true to mirror paper fills"
            )
        return await self.ig_mirror.adopt_ig_state()

    # ---- events ---------------------------------------------------------------------------

    @on_event("prediction_generated", durable=True)
    async def on_prediction(self, event: Event) -> None:
        """Act on a prediction at most once; a failure here leaves it unacknowledged for redelivery."""
        await self._open.wait()
        if not self.knobs.follow_signals:
            return
        prediction_id = event.data.get("prediction_id")
        if not isinstance(prediction_id, str) or not prediction_id:
            self.log.warning(
                "prediction_generated without prediction_id ignored", extra={"event_id": event.id}
            )
            return
        # While the storage is halted this raises -32007, which the bus treats as a dependency
        # away: the event stays pending, retried in place without spending a delivery.
        async with self._trading(orders=True):
            if self.store.prediction_outcome(prediction_id) is not None:
                self.counters["duplicates"] += 1
                return
            # Verified only when it asks for an order: a HOLD or a closed market needs no check.
            idle = self._nothing_to_do(event.data, self.clock.now())
            problem = None if idle is not None else await self._unverified(prediction_id, event.data)
            if idle is not None:
                outcome, detail = "ignored", idle
            elif problem is not None:
                outcome, detail = "ignored", problem
            else:
                outcome, detail = await self._act_on(prediction_id, event.data)
            if outcome != "traded":
                self.store.record_prediction_outcome(prediction_id, outcome, detail, self.clock.now())
                self.counters["predictions_skipped"] += 1
            crashpoint("paper_trading.after_outcome")  # recorded, not yet acknowledged on the stream
        self.log.info(
            "prediction %s: %s",
            prediction_id,
            outcome,
            extra={"prediction_id": prediction_id, "detail": detail},
        )

    @on_event("market_data_updated")
    async def on_market_data(self, event: Event) -> None:
        """Mark to the new price; on a quote, close the position at its stop-loss or take-profit."""
        await self._open.wait()
        symbol = event.data.get("symbol")
        if symbol not in self.settings.symbols or self.storage_halt is not None:
            return  # halted: the marks table cannot be written; the next price after resuming marks
        mark = event_mark(event.data)
        if mark is None:
            self.log.warning(
                "market_data_updated for %s without a usable price: %r", symbol, event.data.get("price")
            )
            return
        quote: MarketQuote | None = None
        if event.data.get("quote") is not None:
            try:
                quote = MarketQuote.from_wire(symbol, event.data["quote"])
            except UnusableQuote as exc:
                self.log.warning("market_data_updated: %s", exc)
        if quote is not None:
            self._saw_quote(quote)
        skipped = await self._skipped_bars(quote) if quote is not None else []
        try:
            async with self._trading(orders=True):
                # A price seen before (a refresh repeating it) changes no mark and no equity: only
                # the day's first event writes then, opening the day's record.
                now = self.clock.now()
                moved = self.marks.get(symbol) != mark
                self.counters["marks_moved" if moved else "marks_unchanged"] += 1
                if moved:
                    self._save_mark(symbol, mark)
                if moved or self.day is None or self.day.day != asx_calendar.to_sydney(now).date():
                    await self._snapshot_equity(now)
                if quote is not None:
                    await self._exit_if_due(quote, trigger="quote event", skipped=skipped)
        except StorageUnavailable as exc:  # halted now; health, the log and the alert say so
            self.log.warning("market_data_updated for %s not applied: %s", symbol, exc.message)

    async def _check_exits_on_a_timer(self) -> None:
        """Every EXIT_CHECK_S suite seconds in the session: each open position against its quote."""
        while True:
            await self.clock.sleep(self.knobs.exit_check_s)
            if self._closed or self.storage_halt is not None or not self.is_market_open(self.clock.now()):
                continue
            try:
                await self._check_exits("timer")
                await self._watch_market_data()
            except Exception:
                if self._closed:  # the book closed under us: stopping
                    return
                self.log.exception("timed exit check failed")

    async def _watch_market_data(self) -> None:
        """After the timed exit check: with nothing held, ask for one quote (is market data
        arriving at all?), then update the buy halt and say when it starts or ends."""
        now = self.clock.now()
        latest = max(self._quote_seen.values(), default=None)
        if not self.book.positions and (
            latest is None or (now - latest).total_seconds() >= self.knobs.exit_check_s
        ):
            with contextlib.suppress(RpcError, OSError):
                await self._fetch_quote(self.settings.symbols[0])
        self._update_silence(self.clock.now())
        await self._announce_silence()

    def _saw_quote(self, quote: MarketQuote) -> None:
        """Market data arrived for quote.symbol now (see market_orders.market_data_silence)."""
        now = self.clock.now()
        if not quote.stale:
            self._quote_seen[quote.symbol] = now
        if quote.source_answered:
            self._quote_answered[quote.symbol] = now

    def _update_silence(self, now: datetime) -> Silence | None:
        """Whether new buys must wait for market data now (only while the market is open)."""
        silence = None
        if self.is_market_open(now):
            opened = asx_calendar.session_open(asx_calendar.to_sydney(now).date())
            silence = market_data_silence(
                now,
                opened,
                self._quote_seen,
                self.book.positions,
                self.knobs.market_data_silent_s,
                self._quote_answered,
            )
        if (silence is None) != (self._silence is None):
            if silence is not None:
                self.log.warning("new buys halted: %s", silence.reason)
            else:
                self.log.info("market data is arriving again: new buys resume")
        self._silence = silence
        return silence

    async def _announce_silence(self) -> None:
        """market_data_stale when the halt starts ("stale") or ends ("fresh"); one that Redis did
        not take is sent at the next check."""
        if (self._silence is None) == (self._silence_announced is None):
            return
        silence = self._silence or self._silence_announced
        assert silence is not None
        data = {
            "service": self.name,
            "state": "stale" if self._silence is not None else "fresh",
            "reason": silence.reason,
            "symbols": list(silence.symbols),
            "silent_s": round(silence.silent_s, 1),
            "bound_s": self.knobs.market_data_silent_s,
        }
        if await self.announce("market_data_stale", data):
            self._silence_announced = self._silence

    async def _refuse_buys_while_silent(self, now: datetime) -> None:
        """New buys wait while market data is silent (DependencyUnavailable: a prediction stays
        pending, a manual order gets -32001). The silent symbols are asked for once first: a
        quote that comes now is market data arriving."""
        silence = self._update_silence(now)
        if silence is None:
            return
        for symbol in silence.symbols or self.settings.symbols[:1]:
            with contextlib.suppress(RpcError, OSError):
                await self._fetch_quote(symbol)
        silence = self._update_silence(self.clock.now())
        if silence is None:
            return
        raise DependencyUnavailable(
            f"new buys halted: {silence.reason}",
            data={
                "rule": "market_data_silent",
                "symbols": list(silence.symbols),
                "silent_s": silence.silent_s,
            },
        )

    async def _check_exits(self, trigger: str) -> tuple[list[TradeRecord], dict[str, str]]:
        """Each open position against market-data's quote (and skipped bars): (exits, unchecked)."""
        exits: list[TradeRecord] = []
        unchecked: dict[str, str] = {}
        for symbol in sorted(self.book.positions):
            try:
                quote = await self._fetch_quote(symbol)
            except RpcError as exc:
                self.log.warning("exit check of %s (%s): no quote: %s", symbol, trigger, exc.message)
                unchecked[symbol] = exc.message
                continue
            skipped = await self._skipped_bars(quote)
            try:
                async with self._trading(orders=True):
                    self.counters["exit_checks"] += 1
                    self._save_mark(symbol, Mark(quote.price, quote.as_of, quote.source))
                    record = await self._exit_if_due(quote, trigger=trigger, skipped=skipped)
            except StorageUnavailable as exc:  # the levels are checked again after resuming
                unchecked[symbol] = exc.message
                continue
            except Exception as exc:
                if self._closed:  # the book closed under us: stopping
                    raise
                self.log.exception("exit check of %s (%s) failed", symbol, trigger)
                unchecked[symbol] = f"internal error ({type(exc).__name__})"
                continue
            if record is not None:
                exits.append(record)
        return exits, unchecked

    def _checked_to(self, symbol: str) -> datetime | None:
        """The instant a held position's prices have been checked up to (see market_orders.exit_for).

        Kept in memory and moved on by every check; after a restart it starts again from the
        latest buy's quote time (its entry price), so bars seen before the restart are checked
        again: harmless, a level they did not reach then they do not reach now.
        """
        if symbol not in self._exits_checked_to:
            position = self.book.positions.get(symbol)
            if position is None:
                return None
            entry: datetime = position.opened_at
            for trade in self.store.trades(limit=50, symbol=symbol):
                if trade.action == Action.BUY:
                    with contextlib.suppress(TypeError, ValueError):
                        entry = datetime.fromisoformat(str(trade.assumptions.get("quote_time")))
                    break
            self._exits_checked_to[symbol] = entry
        return self._exits_checked_to[symbol]

    async def _skipped_bars(self, quote: MarketQuote) -> list[RangeBar]:
        """The bars between the last exit check and this quote's bar, when a refresh skipped some
        (a slow refresh, a missed event): a stop they traded through must not go unseen."""
        position = self.book.positions.get(quote.symbol)
        if position is None or quote.bar is None:
            return []
        count = skipped_bar_count(quote, self._checked_to(quote.symbol))
        if count == 0:
            return []
        interval = quote.bar.interval
        try:
            reply = await self.call_service(
                "market-data",
                "get_intraday_bars",
                timeout=self.knobs.quote_timeout_s,
                symbol=quote.symbol,
                interval=interval,
                limit=count,
            )
        except RpcError as exc:
            self.log.warning("exit check of %s: skipped bars unavailable: %s", quote.symbol, exc.message)
            return []
        length = timedelta(seconds=INTERVALS[interval])
        bars = (RangeBar.from_wire(b, interval, length) for b in reply.get("bars") or [])
        return [b for b in bars if b is not None]

    async def _exit_if_due(
        self, quote: MarketQuote, *, trigger: str, skipped: Sequence[RangeBar] = ()
    ) -> TradeRecord | None:
        """Sell the whole position at its exit when its prices reached a level (caller holds the lock).

        The position is read here, under the lock, so an exit the timer and a quote event both
        saw is done by whichever came first; the other finds nothing held.
        """
        symbol = quote.symbol
        position = self.book.positions.get(symbol)
        check = exit_for(position, quote, self.rules, self._checked_to(symbol), skipped)
        if position is None or check.fill is None:
            if position is not None and check.checked_to is not None:
                self._exits_checked_to[symbol] = check.checked_to
            return None
        problem = refusal(quote, self.clock.now(), self.knobs.max_quote_age_s)
        if problem is not None:
            # Not lost: the next fresh quote (event or timer) checks the levels again.
            self.counters["quotes_refused"] += 1
            self.log.warning("%s exit for %s waits: %s", check.fill.reason, symbol, problem)
            return None
        try:
            record = await self._execute(
                symbol,
                Action.SELL,
                position.quantity,
                reason=str(check.fill.reason),
                quote=quote,
                exit_fill=check.fill,
                exit_bar=check.bar,
                trigger=trigger,
            )
            self.counters["exits"] += 1
            return record
        except (MarketClosed, RiskRejected, PortfolioError) as exc:
            self.log.warning("%s exit for %s not executed: %s", check.fill.reason, symbol, exc)
            return None

    async def _unverified(self, prediction_id: str, data: dict[str, Any]) -> str | None:
        """Why the event must not be acted on as the prediction service did not make it so, or None.

        The prediction service saves a prediction before it publishes it, so an unknown id or a
        different symbol or signal is a forged or corrupted event. The prediction service away
        raises DependencyUnavailable: the event waits (it is not the event's fault).
        """
        if not self.knobs.verify_predictions:
            return None
        try:
            stored = await self.call_service(
                "prediction",
                "get_prediction",
                timeout=self.knobs.quote_timeout_s,
                prediction_id=prediction_id,
            )
        except NotFound:
            return "unknown to the prediction service: not acted on (a forged or foreign event?)"
        differs = [k for k in ("symbol", "signal") if stored.get(k) != data.get(k)]
        if differs:
            said = ", ".join(f"{k} {data.get(k)!r} vs {stored.get(k)!r}" for k in differs)
            return f"does not match the prediction service's record ({said}): not acted on"
        return None

    # ---- the trade path (callers hold trade_lock) -----------------------------------------

    def _nothing_to_do(self, data: dict[str, Any], now: datetime) -> str | None:
        """Why an event asks for nothing, whoever sent it (then `ignored` with this reason, without
        asking the prediction service about it): a symbol outside the universe, an unknown
        signal, HOLD, too old, or the market closed. None: a BUY or SELL to act on now."""
        symbol, signal = data.get("symbol"), data.get("signal")
        if symbol not in self.settings.symbols:
            return f"symbol {symbol!r} is not in the trading universe"
        if signal not in SIGNALS:
            return f"unknown signal {signal!r}"
        if signal == "HOLD":
            return "HOLD: nothing to do"
        age_s = _age_s(data.get("created_at"), now)
        if age_s is None or age_s > self.knobs.signal_max_age_s:
            return f"expired: prediction too old or undated to act on (age {age_s} s)"
        if not self.is_market_open(now):
            return f"market_hours: the market is closed at {now.isoformat()}"
        return None

    async def _act_on(self, prediction_id: str, data: dict[str, Any]) -> tuple[str, str]:
        """Trade on a prediction, or say why not: (outcome, detail)."""
        symbol, signal = data.get("symbol"), data.get("signal")
        now = self.clock.now()
        if (idle := self._nothing_to_do(data, now)) is not None:
            return "ignored", idle
        try:
            quote = await self._usable_quote(symbol, now)
        except QuoteRefused as exc:  # an answer about this moment's market: not retried later
            return "ignored", exc.message
        # Any other DependencyUnavailable propagates: unacknowledged, redelivered.
        if (earlier := priced_before(data.get("inputs"), quote)) is not None:
            return "ignored", f"{signal}: {earlier}"
        if signal == "BUY" and (bought := await asyncio.to_thread(self._bought_on, quote)) is not None:
            return "ignored", (
                f"BUY: {symbol} was already bought on its {quote.as_of} quote (trade #{bought}); "
                "a position is added to only on a newer quote"
            )
        await self._book_at_quotes(quote)
        side = Action.BUY if signal == "BUY" else Action.SELL
        price, _ = order_fill(side, quote, self.knobs.slippage_bps)
        order = risk.order_for_signal(signal, symbol, price, self.book, self._prices(), self.rules)
        if order is None:
            if side is Action.BUY:  # the position and exposure limits leave no room: a risk rule
                return "rejected", f"{signal}: nothing the rules allow to buy"
            return "ignored", "SELL: nothing held"
        try:
            reason = f"signal {signal} (confidence {data.get('confidence')})"
            await self._execute(
                symbol, side, order.quantity, reason=reason, prediction_id=prediction_id, quote=quote
            )
        except RiskRejected as exc:
            return "rejected", exc.message
        except MarketClosed as exc:
            return "ignored", exc.message
        self.counters["predictions_traded"] += 1
        return "traded", reason

    def _bought_on(self, quote: MarketQuote) -> int | None:
        """The trade id when the symbol's newest trade is a signal's BUY filled at this very quote.

        Predictions on one quote are one view of one price: the open's re-prediction and the
        monitoring task's can both say BUY, and a second buy would only top the position up by
        what the first fill's marks moved, a number that depends on the order events arrive in.
        Selling is never refused this way, nor is a buy on a newer quote or after a manual buy.
        """
        newest = self.store.trades(limit=1, symbol=quote.symbol)
        if not newest or newest[0].action is not Action.BUY or newest[0].prediction_id is None:
            return None
        record = newest[0].assumptions
        same = record.get("quote_time") == quote.as_of and record.get("quote_source") == quote.source
        return newest[0].trade_id if same else None

    async def _book_at_quotes(self, quote: MarketQuote) -> None:
        """Before an order (caller holds the lock): every held position marked at its quote of
        this moment, and closed if those prices reached its stop-loss or take-profit.

        The prices since the last check first: a buy resets the levels from its entry, so a stop
        hit in between must be taken now, at the old levels, or never. And the other positions
        too: market_data_updated (pub/sub) and prediction_generated (a stream) arrive in either
        order, so an order sized on a book still marked at the last close, or still holding a
        position the open went through a stop of, would get another quantity than one sized
        after the quote events; a replay would then trade differently under load or faults.
        """
        for symbol in sorted(self.book.positions):
            current = quote if symbol == quote.symbol else await self._fetch_quote(symbol)
            if symbol != quote.symbol:
                self._save_mark(symbol, Mark(current.price, current.as_of, current.source))
            await self._exit_if_due(
                current, trigger="before order", skipped=await self._skipped_bars(current)
            )

    async def _execute(
        self,
        symbol: str,
        action: Action,
        quantity: int,
        *,
        reason: str,
        prediction_id: str | None = None,
        quote: MarketQuote | None = None,
        exit_fill: ExitFill | None = None,
        exit_bar: RangeBar | None = None,
        trigger: str = "order",
    ) -> TradeRecord:
        now = self.clock.now()
        # A stop or take-profit hit inside a completed bar was a resting order that filled while
        # the market traded through its level: it is booked when the bar is seen, which for a
        # day's bar (daily bars only) is after the close. The market must have been open then.
        traded_at = exit_bar.start if exit_bar is not None else now
        if not self.is_market_open(traded_at):
            raise MarketClosed(
                f"the market is closed at {asx_calendar.to_sydney(now).isoformat()}",
                data={"rule": "market_hours", "next_open": asx_calendar.next_open(now).isoformat()},
            )
        if action is Action.BUY:
            await self._refuse_buys_while_silent(now)
        quote = quote or await self._usable_quote(symbol, now)
        if exit_fill is not None:
            price, basis = exit_fill.price, f"{exit_fill.reason}:{exit_fill.basis}"
        else:
            fill, fill_basis = order_fill(action, quote, self.knobs.slippage_bps)
            price, basis = fill, str(fill_basis)
        order = risk.Order(symbol, action, quantity, price)
        day = self._day_state(now)
        rejection = risk.check_order(
            order,
            self.book,
            self._prices(),
            self.rules,
            day=day,
            now=now,
            is_market_open=lambda _now: self.is_market_open(traded_at),
        )
        if rejection is not None:
            await self._reject(rejection, order)
        gross = trade_value(quantity, price)
        fill = Fill(symbol, action, quantity, price, risk.commission(gross, self.rules))
        record, self.book = await asyncio.to_thread(
            self.store.record_fill,
            fill,
            now=now,
            slippage=to_money(abs(price - quote.price) * quantity),
            reason=reason,
            assumptions=self._assumptions(quote, price, basis, trigger, now, exit_bar),
            prediction_id=prediction_id,
            journal=self.ig_mirror.journal.journal_fill if self.ig_mirror is not None else None,
        )
        if action is Action.BUY:
            # The new average cost's levels apply from this entry price on.
            self._exits_checked_to[symbol] = quote.quote_time
        elif symbol not in self.book.positions:
            self._exits_checked_to.pop(symbol, None)
        self.counters["trades"] += 1
        try:
            await self._publish_trade(record)
            await self._snapshot_equity(now)
        except LedgerWriteFailed as exc:
            # The trade is committed and stands; only the bookkeeping after it failed: halt for
            # what comes next, but answer this order with its trade.
            await self._storage_failed(exc)
        self._mirror(record)
        return record

    def _assumptions(
        self,
        quote: MarketQuote,
        price: Decimal,
        basis: str,
        trigger: str,
        now: datetime,
        exit_bar: RangeBar | None = None,
    ) -> dict[str, Any]:
        return {
            **({"exit_bar": exit_bar.as_record()} if exit_bar is not None else {}),
            "price_source": quote.source,
            "price_as_of": quote.as_of,
            **quote.as_record(),
            "quote_age_s": round(quote.age_s(now), 3),
            "fill_basis": basis,
            "trigger": trigger,
            "slippage_bps": float(self.knobs.slippage_bps),
            "fill_price": float(price),
            "commission_formula": self.rules.commission_formula(),
            "filled_at": now.isoformat(),
        }

    async def _reject(self, rejection: risk.Rejection, order: risk.Order) -> None:
        if rejection.rule is risk.Rule.MARKET_HOURS:
            raise MarketClosed(rejection.detail, data={"rule": "market_hours"})
        self.counters["rejections"] += 1
        details = rejection.as_dict() | {
            "symbol": order.symbol,
            "action": str(order.action),
            "quantity": order.quantity,
        }
        await self.publish("risk_limit_hit", details)
        raise RiskRejected(
            f"rejected by rule {rejection.rule}: {rejection.detail}", detail=rejection.detail, data=details
        )

    async def _fetch_quote(self, symbol: str) -> MarketQuote:
        """market-data's latest quote; DependencyUnavailable when there is none to be had."""
        try:
            data = await self.call_service(
                "market-data", "get_quote", timeout=self.knobs.quote_timeout_s, symbol=symbol
            )
            quote = MarketQuote.from_wire(symbol, data)
            self._saw_quote(quote)
            return quote
        except NotFound as exc:  # market-data has never had a quote for it (no intraday data)
            raise DependencyUnavailable(
                f"market-data has no quote for {symbol}: {exc.message}", data={"symbol": symbol}
            ) from None
        except UnusableQuote as exc:
            raise DependencyUnavailable(str(exc), data={"symbol": symbol}) from None

    async def _usable_quote(self, symbol: str, now: datetime) -> MarketQuote:
        """The quote to fill at, marked; QuoteRefused (-32001) naming why when stale or too old."""
        quote = await self._fetch_quote(symbol)
        self._save_mark(symbol, Mark(quote.price, quote.as_of, quote.source))
        problem = refusal(quote, now, self.knobs.max_quote_age_s)
        if problem is not None:
            self.counters["quotes_refused"] += 1
            raise QuoteRefused(
                f"no order at this quote: {problem}",
                data={
                    "symbol": symbol,
                    "quote_age_s": round(quote.age_s(now), 3),
                    "max_quote_age_s": self.knobs.max_quote_age_s,
                    "quote_time": quote.as_of,
                    "source": quote.source,
                    "stale": quote.stale,
                    "stale_reason": quote.stale_reason,
                },
            )
        return quote

    # ---- marks, days, equity --------------------------------------------------------------

    def _save_mark(self, symbol: str, mark: Mark) -> None:
        # Open today's record first, so the day starts from the equity before this price moved.
        self._day_state(self.clock.now())
        self.store.save_mark(symbol, mark.price, mark.as_of, mark.source)
        self.marks[symbol] = mark

    def _mark(self, symbol: str) -> Mark:
        # Every buy saves its quote as a mark, so a held symbol without one means a lost marks
        # table; valuing it at cost is the honest fallback, and says so in its source.
        return self.marks.get(symbol) or Mark(
            self.book.positions[symbol].avg_cost, "", "cost (no price seen)"
        )

    def _prices(self) -> dict[str, Decimal]:
        return {s: self._mark(s).price for s in self.book.positions} | {
            s: m.price for s, m in self.marks.items()
        }

    def _valuation(self) -> Valuation:
        return value(self.book, self._prices())

    def _day_state(self, now: datetime) -> risk.TradingDay:
        """Today's P&L against the equity first seen today, and whether the daily-loss halt tripped."""
        today = asx_calendar.to_sydney(now).date()
        if self.day is None or self.day.day != today:
            self.day = self.store.open_trading_day(today, self._valuation().equity)
        return risk.TradingDay(self._valuation().equity - self.day.start_equity, self.day.halted)

    async def _snapshot_equity(self, now: datetime) -> None:
        """Record today's equity (the last one of a day is its close) and trip the daily-loss halt.
        Not while the storage is halted (nothing can be written; resuming re-reads the ledger)."""
        if self.storage_halt is not None:
            return
        valuation = self._valuation()
        day = self._day_state(now)
        assert self.day is not None
        self.store.record_equity(
            self.day.day, valuation.equity, valuation.cash, valuation.positions_value, now
        )
        if day.halted or not risk.daily_loss_hit(day.day_pnl, self.rules):
            return
        reason = f"daily loss ${-day.day_pnl} reached the ${self.rules.max_daily_loss} limit"
        if self.store.halt_day(self.day.day, reason):
            self.day = self.store.open_trading_day(self.day.day, valuation.equity)
            next_open = asx_calendar.session_open(asx_calendar.next_trading_day(self.day.day))
            await self.publish(
                "risk_limit_hit",
                {
                    "rule": str(risk.Rule.MAX_DAILY_LOSS),
                    "detail": f"new buys halted until the next trading day: {reason}",
                    "limit": float(self.rules.max_daily_loss),
                    "attempted": float(-day.day_pnl),
                    "excess": float(-day.day_pnl - self.rules.max_daily_loss),
                    "halted_until": next_open.isoformat(),
                },
            )

    def _period_start(self, period: str, now: datetime) -> datetime | None:
        days = PERIOD_DAYS.get(period)
        if days is None:
            return None
        first_day = asx_calendar.to_sydney(now).date() - timedelta(days=days - 1)
        return datetime.combine(first_day, time(0), asx_calendar.SYDNEY)

    def _equity_curve(self, since: datetime | None) -> list[Decimal]:
        """Equity at the start of the period, then each day's close within it."""
        snapshots = self.store.equity_curve()
        if since is None:
            return [self.book.starting_capital] + [e for _, e in snapshots]
        first_day = since.date()
        before = [e for d, e in snapshots if d < first_day]
        base = before[-1] if before else self.book.starting_capital
        return [base] + [e for d, e in snapshots if d >= first_day]

    # ---- storage halt ---------------------------------------------------------------------

    async def _storage_failed(self, exc: LedgerWriteFailed) -> StorageUnavailable:
        """Halt trading for the storage (once: a halt already on stays as it began); the -32007
        to answer with. The probe then looks for the first write that succeeds."""
        if self.storage_halt is None:
            failure = exc.failure
            self.storage_halt = StorageHalt(str(failure), failure.error, self.clock.now(), monotonic())
            self.counters["storage_halts"] += 1
            self.log.error("trading halted: a ledger write failed for the storage: %s", exc)
            await self.publish(
                "storage_halted",
                {"service": self.name, "error": failure.error, **self.storage_halt.as_dict()},
            )
            self._storage_probe = asyncio.create_task(self._probe_storage())
        return self.storage_halt.refusal()

    async def _probe_storage(self) -> None:
        """Every STORAGE_PROBE_S while halted: a committed probe write; the first to succeed resumes."""
        while True:
            await asyncio.sleep(STORAGE_PROBE_S)
            self.counters["storage_probes"] += 1
            try:
                await asyncio.to_thread(self.store.probe_write, self.clock.now())
                await self._resume_storage()
                return
            except LedgerWriteFailed:
                continue
            except Exception:  # e.g. re-reading the book failed: still halted, probe again
                self.log.exception("storage probe failed")

    async def _resume_storage(self) -> None:
        """Writes succeed again: re-read the book from the ledger (the truth) and trade on."""
        async with self.trade_lock:
            halt = self.storage_halt
            if self._closed or halt is None:
                return
            self.book = self.store.load_portfolio()
            self.marks = self.store.marks()
            self.day = None  # re-read with the next order
            self.storage_halt = None
        halted_s = round(monotonic() - halt.started, 3)
        self.log.warning("trading resumed: the ledger can be written again after %.1f s", halted_s)
        await self.publish(
            "storage_resumed", {"service": self.name, "halted_s": halted_s, "reason": halt.reason}
        )

    # ---- publishing -----------------------------------------------------------------------

    async def _publish_trade(self, record: TradeRecord) -> bool:
        """Send the trade's events; the trade is marked published only once Redis has them all.

        The trades table is the outbox: a trade left unmarked (Redis away, or a crash before the
        mark) is sent again by `_drain_outbox` within OUTBOX_CHECK_S of Redis taking writes, and
        at the next start; its events may then reach Redis twice (at least once: trade_id is the
        key), never not at all.
        """
        assert self.bus is not None
        for event_type, data in self._trade_events(record):
            if not await self.bus.publish_now(self.bus.make_event(event_type, data)):
                return False
        self.store.mark_published(record.trade_id)
        return True

    def _trade_events(self, record: TradeRecord) -> list[tuple[str, dict]]:
        events = [("trade_executed", record.as_dict())]
        if record.closes_position:
            events.append(
                (
                    "position_closed",
                    {
                        "symbol": record.symbol,
                        "quantity": record.quantity,
                        "price": float(record.price),
                        "reason": record.reason,
                        "trade_id": record.trade_id,
                        "prediction_id": record.prediction_id,
                        "realized_pnl": float(record.realized_pnl),
                        "net_pnl": float(record.net_pnl),
                        "timestamp": record.timestamp,
                    },
                )
            )
        return events

    async def _drain_outbox(self) -> None:
        """Every OUTBOX_CHECK_S (and at start): send the events of trades not yet marked published,
        oldest first, and say when that backlog grows past its bound (outbox_backlog)."""
        while True:
            try:
                size = await asyncio.to_thread(self.store.unpublished_count)
                if size and self.storage_halt is None and self.bus is not None and self.bus.connected:
                    # Under the trade lock: a trade sends its own events before letting go of it.
                    # (A published flag that cannot be written halts for the storage, as any
                    # ledger write does; the probe resumes, and this sends them again then.)
                    async with self._trading():
                        for record in self.store.unpublished_trades():
                            if not await self._publish_trade(record):
                                break  # Redis went away again: next round
                            self.counters["outbox_resent"] += 1
                            self.log.info("sent the events of trade %d again (outbox)", record.trade_id)
                        size = self.store.unpublished_count()
                await self.outbox_watch.check(size, self.clock.now(), self._announce_outbox)
            except StorageUnavailable:
                pass  # halted for the storage: health, the log and storage_halted say so
            except Exception:
                if self._closed:
                    return
                self.log.exception("sending the trade outbox failed")
            await asyncio.sleep(OUTBOX_CHECK_S)

    async def _announce_outbox(self, data: dict) -> bool:
        sent = await self.announce("outbox_backlog", data)
        if sent:
            log = self.log.warning if data["state"] == "growing" else self.log.info
            log("trade outbox %s: %d unsent", data["state"], data["size"], extra=data)
        return sent

    # ---- IG Markets -----------------------------------------------------------------------

    def _ig_client(self) -> ig_client.IgClient:
        if self.ig_credentials is None:
            raise NotConfigured(
                "IG Markets is not configured",
                detail="set IG_API_KEY, IG_USERNAME and IG_PASSWORD (environment or TRADING_SECRETS_FILE)",
            )
        if self._ig is None:
            self._ig = ig_client.IgClient(
                self.ig_credentials,
                timeout_s=self.knobs.ig_timeout_s,
                confirm_delay_s=self.knobs.ig_confirm_delay_s,
            )
        return self._ig

    def _mirror(self, record: TradeRecord) -> None:
        """The fill's IG order is in the journal (same transaction): wake the mirror's worker."""
        if self.ig_mirror is not None:
            self.ig_mirror.wake()

    # ---- params ---------------------------------------------------------------------------

    def _symbol(self, symbol: str) -> str:
        name = symbol.strip().upper()
        if name not in self.settings.symbols:
            raise InvalidParams(
                "symbol", f"unknown symbol {symbol!r}; trading {', '.join(self.settings.symbols)}"
            )
        return name


def performance_report(
    period: str, trades: list[TradeRecord], curve: list[Decimal], valuation: Valuation, since: datetime | None
) -> dict[str, Any]:
    """The numbers behind get_trading_performance, from the period's trades and equity closes."""
    summary = performance.summarise_trades([t.net_pnl for t in trades if t.action is Action.SELL])
    return {
        "period": period,
        "since": since.isoformat() if since else None,
        **performance.equity_report(curve),
        "realized_pnl": float(sum((t.realized_pnl for t in trades), ZERO)),
        "unrealized_pnl": float(valuation.unrealized_pnl),
        "win_rate": summary["win_rate"],
        "average_win": summary["average_win"],
        "average_loss": summary["average_loss"],
        "profit_factor": summary["profit_factor"],
        "number_of_trades": len(trades),
        "closed_trades": summary["number_of_trades"],
        "winning_trades": summary["winning_trades"],
        "losing_trades": summary["losing_trades"],
        "commissions_paid": float(sum((t.commission for t in trades), ZERO)),
        "equity": float(valuation.equity),
    }


def equity_points(points: list[dict], today: date, valuation: Valuation, now: datetime) -> list[dict]:
    """The stored closes with today's replaced by (or added as) the equity now."""
    live = {
        "day": today.isoformat(),
        "equity": float(valuation.equity),
        "cash": float(valuation.cash),
        "positions_value": float(valuation.positions_value),
        "recorded_at": now.isoformat(),
    }
    return [p for p in points if p["day"] < live["day"]] + [live]


def _age_s(created_at: Any, now: datetime) -> float | None:
    if not isinstance(created_at, str):
        return None
    try:
        created = datetime.fromisoformat(created_at)
    except ValueError:
        return None
    if created.tzinfo is None:
        return None
    return (now - created).total_seconds()


def _rpc_error_for_ig(exc: ig_client.IgError) -> Exception:
    data = {"error_code": exc.error_code, "service": "ig-markets"}
    if isinstance(exc, ig_client.IgAuthError):
        return NotConfigured(f"IG refused the configured credentials: {exc}", data=data)
    if isinstance(
        exc,
        ig_client.IgUnavailable
        | ig_client.IgServerError
        | ig_client.IgRateLimited
        | ig_client.IgTokenInvalid,
    ):
        return DependencyUnavailable(f"IG Markets unavailable: {exc}", data=data)
    return ServiceError(f"IG Markets refused the request: {exc}", data=data)


if __name__ == "__main__":
    run_service(PaperTradingService)
