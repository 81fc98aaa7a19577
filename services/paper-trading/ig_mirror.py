"""Mirroring paper fills to IG: a durable journal and one worker, so no IG order is ever ambiguous.

The journal is the table `ig_orders` in paper_trading.db. A fill's mirror order is written in
the fill's own transaction (`MirrorJournal.journal_fill`, handed to TradeStore.record_fill), so a
crash between the fill and the send loses nothing: the order is still `pending` at the next start.
Each order carries our own deterministic dealReference (`PT-<trade id>-<UTC time of the fill>`).

The worker (`IgMirror.run`) takes the journal's orders one at a time, oldest first:
1. An order that was sent and not decided (the POST timed out, lost its connection, answered
   5xx, or the process died after sending) is looked up before anything else, once the settle
   time (TRADING_PAPER_TRADING_IG_SETTLE_S) has passed since it was sent: its confirm, then GET
   /positions (`ig_reconciliation.decide_in_flight`). Made or rejected: recorded. Proved not made:
   sent again under the same reference (at most IG_MAX_ATTEMPTS sends, then `failed`). Neither:
   the order is `unknown` and mirroring halts; it is looked up again every IG_RECONCILE_S.
2. Before sending a new order, the journal and the paper book are reconciled with IG's positions
   (`ig_reconciliation.reconcile`; also at start, and on the `reconcile_ig` RPC). What can be
   corrected is (an open order whose deal IG holds was made); a divergence halts mirroring:
   orders stay `pending`, paper trading goes on, health is degraded with the reasons, and
   `ig_mirror_halted` is published. A later clean reconciliation publishes `ig_mirror_resumed`
   and the pending orders are sent in order. What no change at IG can mend (a deal cannot be
   reopened or grown there) the operator settles with `adopt_ig_state`: the journal takes IG's
   sizes of its own deals (`ig_reconciliation.adoptions`).
3. The order is sent (`IgClient.open_position`, which itself never resends: after an ambiguous
   failure it looks the reference up and says IgDealUnknown when nothing shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.base.storage import LedgerWriteFailed
from services.clients import ig_client
from services.clients.ig_epics import default_epic
from services.domain import ig_reconciliation as rec
from services.paper_trading.trade_store import TradeRecord, TradeStore

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS ig_orders (
    order_id INTEGER PRIMARY KEY AUTOINCREMENT,
    trade_id INTEGER NOT NULL UNIQUE REFERENCES trades (trade_id),
    deal_reference TEXT NOT NULL UNIQUE,
    symbol TEXT NOT NULL,
    epic TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('BUY', 'SELL')),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    size REAL,               -- sent to IG (a SELL: no more than the journal holds there)
    state TEXT NOT NULL CHECK (state IN ({", ".join(f"'{s}'" for s in rec.STATES)})),
    deal_id TEXT,
    filled_size REAL,
    level REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    in_flight INTEGER NOT NULL DEFAULT 0 CHECK (in_flight IN (0, 1)),  -- sent, not decided
    sent_epoch_s REAL,       -- wall clock of the last send (IG lives on the wall clock)
    last_error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT,
    decided_at TEXT,
    seen_at TEXT,            -- first reconciliation that saw IG hold its deal
    adopted_size REAL        -- the operator took IG's size of this deal as the truth (adopt_ig_state)
);
"""
REFERENCE = re.compile(r"^[A-Za-z0-9_-]{1,30}$")  # IG's rule for a dealReference
_COLUMNS = (
    "order_id, trade_id, deal_reference, symbol, epic, direction, quantity, size, state, deal_id,"
    " filled_size, level, attempts, in_flight, sent_epoch_s, last_error, created_at, sent_at,"
    " decided_at, seen_at, adopted_size"
)


def deal_reference(trade_id: int, timestamp: str) -> str:
    """Ours, deterministic and unique: the trade id and its UTC time to the second (a ledger
    restored from a backup reuses trade ids, never with the same second)."""
    digits = re.sub(r"\D", "", timestamp[:19])
    reference = f"PT-{trade_id}-{digits}"
    if not REFERENCE.match(reference):
        raise ValueError(f"deal reference {reference!r} breaks IG's rule (1-30 of A-Za-z0-9_-)")
    return reference


@dataclass(frozen=True, slots=True)
class JournalRow:
    order_id: int
    trade_id: int
    deal_reference: str
    symbol: str
    epic: str
    direction: str
    quantity: int
    size: float | None
    state: str
    deal_id: str | None
    filled_size: float | None
    level: float | None
    attempts: int
    in_flight: bool
    sent_epoch_s: float | None
    last_error: str | None
    created_at: str
    sent_at: str | None
    decided_at: str | None
    seen_at: str | None
    adopted_size: float | None

    def order(self) -> rec.JournalOrder:
        return rec.JournalOrder(
            order_id=self.order_id,
            deal_reference=self.deal_reference,
            symbol=self.symbol,
            epic=self.epic,
            direction=self.direction,
            quantity=self.quantity,
            size=self.size,
            state=self.state,
            deal_id=self.deal_id,
            filled_size=self.filled_size,
            attempts=self.attempts,
            seen=self.seen_at is not None,
            adopted_size=self.adopted_size,
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        size = self.size if self.size is not None else self.quantity
        return f"order {self.deal_reference} ({self.direction} {size:g} {self.epic})"


class MirrorJournal:
    """The `ig_orders` table beside the ledger, in its transactions."""

    def __init__(self, store: TradeStore, epics: Mapping[str, str]):
        self.store = store
        self.epics = epics
        with store.transaction() as db:
            db.execute(SCHEMA.strip().rstrip(";"))

    def journal_fill(self, db: sqlite3.Connection, record: TradeRecord) -> None:
        """The fill's mirror order, written inside record_fill's transaction."""
        db.execute(
            "INSERT INTO ig_orders (trade_id, deal_reference, symbol, epic, direction, quantity, state,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.trade_id,
                deal_reference(record.trade_id, record.timestamp),
                record.symbol,
                self.epics.get(record.symbol) or default_epic(record.symbol),
                str(record.action),
                record.quantity,
                rec.PENDING,
                record.timestamp,
            ),
        )

    def rows(self) -> list[JournalRow]:
        """Every order, oldest first."""
        return [
            JournalRow(*row)
            for row in self.store.query(f"SELECT {_COLUMNS} FROM ig_orders ORDER BY order_id")
        ]

    def head(self) -> JournalRow | None:
        """The oldest order not decided yet: the one the worker is on."""
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM ig_orders WHERE state IN (?, ?) ORDER BY order_id LIMIT 1",
            (rec.PENDING, rec.UNKNOWN),
        )
        return JournalRow(*rows[0]) if rows else None

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(rec.STATES, 0)
        counts.update(
            {s: n for s, n in self.store.query("SELECT state, COUNT(*) FROM ig_orders GROUP BY state")}
        )
        return counts

    def record_attempt(self, order_id: int, size: float, now: datetime, epoch_s: float) -> None:
        """Durably before the POST: whatever happens next, the order is known to be in flight."""
        self._update(
            order_id,
            "size = ?, attempts = attempts + 1, in_flight = 1, sent_epoch_s = ?, sent_at = ?, state = ?",
            (size, epoch_s, now.isoformat(), rec.PENDING),
        )

    def decide(
        self,
        order_id: int,
        state: str,
        now: datetime,
        *,
        deal_id: str | None = None,
        filled_size: float | None = None,
        level: float | None = None,
        error: str | None = None,
    ) -> None:
        self._update(
            order_id,
            "state = ?, in_flight = 0, deal_id = COALESCE(?, deal_id), filled_size = COALESCE(?, filled_size),"
            " level = COALESCE(?, level), last_error = COALESCE(?, last_error), decided_at = ?",
            (state, deal_id, filled_size, level, error, now.isoformat()),
        )

    def not_made(self, order_id: int, detail: str) -> None:
        """Proved not made: no longer in flight, so it may be sent again."""
        self._update(order_id, "in_flight = 0, state = ?, last_error = ?", (rec.PENDING, detail))

    def unknown(self, order_id: int, detail: str) -> None:
        self._update(order_id, "state = ?, last_error = ?", (rec.UNKNOWN, detail))

    def unsend(self, order_id: int, detail: str) -> None:
        """The send never left (the login before it failed): not an attempt, not in flight."""
        self._update(order_id, "attempts = attempts - 1, in_flight = 0, last_error = ?", (detail,))

    def note_error(self, order_id: int, detail: str) -> None:
        self._update(order_id, "last_error = ?", (detail,))

    def adopt(self, adoption: rec.Adoption, now: datetime) -> None:
        self._update(
            adoption.order_id,
            "state = ?, in_flight = 0, adopted_size = ?, deal_id = COALESCE(?, deal_id),"
            " last_error = ?, decided_at = COALESCE(decided_at, ?), seen_at = COALESCE(seen_at, ?)",
            (
                rec.ACCEPTED,
                adoption.adopted_size,
                adoption.deal_id,
                f"adopted IG's size {adoption.adopted_size:g} ({adoption.kind})",
                now.isoformat(),
                now.isoformat(),
            ),
        )

    def seen(self, order_ids: tuple[int, ...], now: datetime) -> None:
        for order_id in order_ids:
            self._update(order_id, "seen_at = COALESCE(seen_at, ?)", (now.isoformat(),))

    def _update(self, order_id: int, assignments: str, args: tuple) -> None:
        with self.store.transaction() as db:
            db.execute(f"UPDATE ig_orders SET {assignments} WHERE order_id = ?", (*args, order_id))


Publish = Callable[[str, dict], Awaitable[Any]]


class IgMirror:
    """The one worker that sends the journal's orders to IG, in order (see the module's doc)."""

    def __init__(
        self,
        journal: MirrorJournal,
        client: Callable[[], ig_client.IgClient],
        paper_quantities: Callable[[], Mapping[str, int]],
        publish: Publish,
        now: Callable[[], datetime],
        *,
        settle_s: float,
        reconcile_s: float,
        max_attempts: int,
        log: logging.Logger | logging.LoggerAdapter | None = None,
        wall: Callable[[], float] = time.time,
    ):
        self.journal = journal
        self._client = client
        self._paper = paper_quantities
        self._publish = publish
        self._now = now
        self.settle_s = settle_s
        self.reconcile_s = reconcile_s
        self.max_attempts = max_attempts
        self.log = log or logging.getLogger("ig_mirror")
        self._wall = wall
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.state = "starting"  # then running | halted
        self.reasons: list[str] = []
        self.divergences: tuple[rec.Divergence, ...] = ()
        self.halted_since: str | None = None
        self.last: rec.Reconciliation | None = None
        self.last_reconciled_at: str | None = None

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="ig-mirror")

    async def stop(self) -> None:
        """Stop between or inside IG calls: an order in flight stays in flight in the journal,
        and the next start looks it up before anything else."""
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller itself is being cancelled: not ours to swallow

    def wake(self) -> None:
        """A new order was journaled (or the operator asked): look now."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                wait_s = await self.step()
            except asyncio.CancelledError:
                raise
            except LedgerWriteFailed as exc:  # the disk: the journal keeps what it had, try again later
                self.log.warning("IG mirror: the journal cannot be written: %s", exc)
                await self._halt([f"the ledger cannot be written, the IG journal waits: {exc}"])
                wait_s = self.reconcile_s
            except Exception as exc:  # a bug: keep the journal as it is, say so, try again later
                self.log.exception("IG mirror step failed")
                await self._halt([f"internal error in the IG mirror ({type(exc).__name__}); see the log"])
                wait_s = self.reconcile_s
            if wait_s == 0:
                continue
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that lands as
            # the wake does, and stop() would then wait for a worker that never ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()

    async def step(self) -> float | None:
        """One move: decide the order in flight, or reconcile and send the next one. Answers how
        long to wait before the next move (0: at once; None: until woken)."""
        async with self._lock:
            # The order first, then the reconciliation: one that ran before the order was
            # journaled says nothing about IG at the time the order is sent.
            head = self.journal.head()
            wait_s = await self._check()
            if wait_s is not None:
                return wait_s
            if head is None:
                return None
            now_head = self.journal.head()
            if now_head is None or now_head.order_id != head.order_id or now_head.in_flight:
                return 0  # corrected meanwhile (IG held it): look again
            await self._send(now_head)
            return 0

    async def reconcile_now(self) -> dict[str, Any]:
        """Decide an order in flight when due, reconcile with IG, resume when clean (the RPC)."""
        async with self._lock:
            await self._check()
        self.wake()
        return self.status() | {"reconciliation": self.last.as_dict() if self.last else None}

    async def adopt_ig_state(self) -> dict[str, Any]:
        """The operator's word that IG's sizes of our deals are right: the journal takes them
        (`ig_reconciliation.adoptions`), then reconciles; resumes when that is clean. Positions the
        journal never recorded, or a SELL's, are left: close them at IG."""
        async with self._lock:
            try:
                positions = await self._client().positions()
            except ig_client.IgError as exc:
                await self._halt([f"IG unreachable, cannot reconcile: {exc}"])
                return self.status() | {"adopted": [], "reconciliation": None}
            adopted = rec.adoptions([r.order() for r in self.journal.rows()], positions)
            now = self._now()
            for adoption in adopted:
                self.journal.adopt(adoption, now)
                self.log.warning(
                    "IG mirror: order %d adopts IG's size %g (%s), by the operator",
                    adoption.order_id,
                    adoption.adopted_size,
                    adoption.kind,
                )
            await self._check()
        self.wake()
        return self.status() | {
            "adopted": [dataclasses.asdict(a) for a in adopted],
            "reconciliation": self.last.as_dict() if self.last else None,
        }

    def status(self) -> dict[str, Any]:
        head = self.journal.head()
        return {
            "state": self.state,
            "reasons": list(self.reasons),
            "divergences": [d.as_dict() for d in self.divergences],
            "halted_since": self.halted_since,
            "last_reconciled_at": self.last_reconciled_at,
            "orders": self.journal.counts(),
            "head": head.as_dict() if head is not None else None,
        }

    # -- the moves -------------------------------------------------------------------------

    async def _check(self) -> float | None:
        """None when the next order may be sent, else how long to wait."""
        head = self.journal.head()
        if head is not None and head.in_flight:
            due_in_s = self.settle_s - (self._wall() - (head.sent_epoch_s or 0.0))
            if due_in_s > 0:
                return due_in_s
            return 0 if await self._decide(head) else self.reconcile_s
        report = await self._reconcile()
        if report is None or not report.clean:
            return self.reconcile_s
        await self._resume()
        return None

    async def _decide(self, head: JournalRow) -> bool:
        """Establish what an order in flight did; False (halted) when it cannot be established."""
        ig = self._client()
        try:
            lookup = await _lookup(ig, head.deal_reference)
            positions = await ig.positions()
        except ig_client.IgError as exc:
            detail = f"IG unreachable while looking it up: {exc}"
            self.journal.unknown(head.order_id, detail)
            await self._halt([f"{head.describe()} was sent and its outcome is unknown: {detail}"])
            return False
        others = [r.order() for r in self.journal.rows() if r.order_id != head.order_id]
        decision = rec.decide_in_flight(head.order(), lookup, positions, others)
        now = self._now()
        if decision.outcome == "made":
            self.journal.decide(
                head.order_id,
                rec.ACCEPTED,
                now,
                deal_id=decision.deal_id,
                filled_size=decision.size,
                level=decision.level,
                error=decision.detail,
            )
            self.log.info("IG mirror: %s made (%s)", head.describe(), decision.detail)
        elif decision.outcome == "rejected":
            self.journal.decide(head.order_id, rec.REJECTED, now, error=decision.detail)
            self.log.warning("IG mirror: %s rejected (%s)", head.describe(), decision.detail)
        elif decision.outcome == "not_made" and head.attempts >= self.max_attempts:
            detail = f"IG did not make it in {head.attempts} sends ({decision.detail})"
            self.journal.decide(head.order_id, rec.FAILED, now, error=detail)
            self.log.warning("IG mirror: %s failed: %s", head.describe(), detail)
        elif decision.outcome == "not_made":
            self.journal.not_made(head.order_id, decision.detail)
            self.log.info(
                "IG mirror: %s proved not made (%s); sending it again", head.describe(), decision.detail
            )
        else:
            self.journal.unknown(head.order_id, decision.detail)
            await self._halt([f"{head.describe()} was sent and its outcome is unknown: {decision.detail}"])
            return False
        return True

    async def _reconcile(self) -> rec.Reconciliation | None:
        try:
            positions = await self._client().positions()
        except ig_client.IgError as exc:
            await self._halt([f"IG unreachable, cannot reconcile: {exc}"])
            return None
        report = rec.reconcile([r.order() for r in self.journal.rows()], self._paper(), positions)
        now = self._now()
        for correction in report.corrections:
            self.journal.decide(
                correction.order_id,
                rec.ACCEPTED,
                now,
                deal_id=correction.deal_id,
                filled_size=correction.size,
                level=correction.level,
                error="IG holds a position under its reference (found at reconciliation)",
            )
        self.journal.seen(report.seen + tuple(c.order_id for c in report.corrections), now)
        self.last, self.last_reconciled_at = report, now.isoformat()
        if not report.clean:
            await self._halt([d.detail for d in report.divergences], report.divergences)
        return report

    async def _send(self, head: JournalRow) -> None:
        earlier = [r.order() for r in self.journal.rows() if r.order_id < head.order_id]
        size = head.size if head.size is not None else rec.size_to_send(head.order(), earlier)
        now = self._now()
        if size <= 0:
            self.journal.decide(
                head.order_id, rec.SKIPPED, now, error="nothing of ours held at IG on this epic to sell"
            )
            return
        self.journal.record_attempt(head.order_id, size, now, self._wall())
        try:
            confirmation = await self._client().open_position(
                epic=head.epic, direction=head.direction, size=size, deal_reference=head.deal_reference
            )
        except ig_client.IgDealRejected as exc:
            self.journal.decide(head.order_id, rec.REJECTED, self._now(), error=str(exc))
            self.log.warning("IG mirror: %s rejected: %s", head.describe(), exc.confirmation.reason)
            return
        except ig_client.IgDealUnknown as exc:
            # Sent, and nothing shows what IG did: decided after the settle time by looking it
            # up again; never by sending it again now.
            self.journal.note_error(head.order_id, str(exc))
            self.log.warning("IG mirror: %s outcome unknown for now: %s", head.describe(), exc)
            return
        except ig_client.IgError as exc:
            if exc.path == "/session":  # the login before the POST failed: nothing was sent
                self.journal.unsend(head.order_id, str(exc))
                self.log.warning("IG mirror: %s not sent, IG login failed: %s", head.describe(), exc)
            elif isinstance(exc, ig_client.IgRequestError):  # IG refused the request (4xx): no deal
                self.journal.decide(head.order_id, rec.FAILED, self._now(), error=str(exc))
                self.log.warning("IG mirror: %s refused by IG: %s", head.describe(), exc)
            else:  # rate limited or token refused through the retries: looked up after the settle time
                self.journal.note_error(head.order_id, str(exc))
                self.log.warning("IG mirror: %s not confirmed sent: %s", head.describe(), exc)
            return
        self.journal.decide(
            head.order_id,
            rec.ACCEPTED,
            self._now(),
            deal_id=confirmation.deal_id,
            filled_size=confirmation.size,
            level=confirmation.level,
        )
        self.log.info("IG mirror: %s accepted as deal %s", head.describe(), confirmation.deal_id)

    # -- halting ---------------------------------------------------------------------------

    async def _halt(self, reasons: list[str], divergences: tuple[rec.Divergence, ...] = ()) -> None:
        changed = self.state != "halted" or reasons != self.reasons
        if self.state != "halted":
            self.halted_since = self._now().isoformat()
        self.state, self.reasons, self.divergences = "halted", reasons, divergences
        if not changed:
            return
        self.log.warning("IG mirror halted: %s", "; ".join(reasons))
        head = self.journal.head()
        await self._emit(
            "ig_mirror_halted",
            {
                "reasons": reasons,
                "divergences": [d.as_dict() for d in divergences],
                "halted_since": self.halted_since,
                "waiting_orders": self.journal.counts()[rec.PENDING] + self.journal.counts()[rec.UNKNOWN],
                "head": head.as_dict() if head is not None else None,
            },
        )

    async def _emit(self, event_type: str, data: dict) -> None:
        """An alert is not worth stopping the mirror for: health says the same."""
        try:
            await self._publish(event_type, data)
        except Exception:
            self.log.exception("could not publish %s", event_type)

    async def _resume(self) -> None:
        if self.state == "halted":
            self.log.info("IG mirror resumed: reconciliation clean")
            await self._emit(
                "ig_mirror_resumed",
                {
                    "halted_since": self.halted_since,
                    "cleared": self.reasons,
                    "resumed_at": self._now().isoformat(),
                },
            )
        self.state, self.reasons, self.divergences, self.halted_since = "running", [], (), None


async def _lookup(ig: ig_client.IgClient, reference: str) -> rec.Lookup | None:
    """The deal's confirm, or None while (after the client's retries) IG says it has none."""
    try:
        confirmation = await ig.confirm(reference)
    except ig_client.IgRequestError as exc:
        if exc.error_code in ig_client.CONFIRM_NOT_READY:
            return None
        raise
    return rec.Lookup(
        confirmation.deal_status,
        confirmation.deal_id,
        confirmation.size,
        confirmation.level,
        confirmation.reason,
    )
