"""The IG mirror's journal and worker against the local IG stand-in (real SQLite, real httpx, real
sockets), with IG's faults on POST /positions/otc: no order is ever doubled.

Timers are shrunk: the client gives up on a call after CLIENT_TIMEOUT_S, the fake holds a delayed
answer (or deal) DELAY_S, and the worker looks an undecided order up again SETTLE_S after sending
it. SETTLE_S > DELAY_S is the mirror's one assumption (IG decides a deal within the settle time).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from services.clients.ig_client import IgClient, IgCredentials
from services.domain.ig_reconciliation import (
    ACCEPTED,
    FAILED,
    OPEN_STATES,
    PENDING,
    REJECTED,
    SKIPPED,
    UNKNOWN,
)
from services.domain.portfolio import Action, Fill
from services.paper_trading.ig_mirror import IgMirror, JournalRow, MirrorJournal, deal_reference
from services.paper_trading.trade_store import TradeStore
from tests.support import async_wait_until
from tests.unit._ig_helpers import API_KEY, OTC_FAULTS, PASSWORD, USERNAME, FakeIg

CLIENT_TIMEOUT_S = 0.2
DELAY_S = 0.3
SETTLE_S = 1.0
RECONCILE_S = 0.2
MAX_ATTEMPTS = 3
NOW = datetime(2024, 6, 17, 1, 0, tzinfo=UTC)
EPICS = {"CBA.AX": "AA.D.CBA.CASH.IP", "WBC.AX": "AA.D.WBC.CASH.IP"}
FINAL = (ACCEPTED, REJECTED, FAILED, SKIPPED)


@dataclass
class Desk:
    """A ledger with its journal, a fake IG and the mirror's worker (not started)."""

    store: TradeStore
    journal: MirrorJournal
    ig: FakeIg
    client: IgClient
    mirror: IgMirror
    events: list[tuple[str, dict]]

    def fill(self, symbol: str, action: str, quantity: int) -> JournalRow:
        record, _ = self.store.record_fill(
            Fill(symbol, Action(action), quantity, Decimal("100"), Decimal("10")),
            now=NOW,
            slippage=Decimal(0),
            reason="test",
            assumptions={},
            journal=self.journal.journal_fill,
        )
        (row,) = [r for r in self.journal.rows() if r.trade_id == record.trade_id]
        return row

    def states(self) -> list[str]:
        return [r.state for r in self.journal.rows()]

    def new_mirror(self) -> IgMirror:
        """Another worker on the same journal, as after a restart."""
        self.mirror = make_mirror(self.journal, self.client, self.store, self.events)
        return self.mirror


def make_mirror(journal: MirrorJournal, client: IgClient, store: TradeStore, events: list) -> IgMirror:
    async def publish(event_type: str, data: dict) -> None:
        events.append((event_type, data))

    return IgMirror(
        journal,
        lambda: client,
        lambda: {s: p.quantity for s, p in store.load_portfolio().positions.items()},
        publish,
        lambda: NOW,
        settle_s=SETTLE_S,
        reconcile_s=RECONCILE_S,
        max_attempts=MAX_ATTEMPTS,
    )


class desk_on:
    """`async with desk_on(path) as desk:` a fresh desk; the worker stopped and all closed after."""

    def __init__(self, path: Path, client_timeout_s: float = CLIENT_TIMEOUT_S):
        self.path = path
        self.client_timeout_s = client_timeout_s

    async def __aenter__(self) -> Desk:
        self.ig = FakeIg().__enter__()
        self.ig.state.otc_delay_s = DELAY_S
        store = TradeStore(self.path, Decimal(100_000), NOW)
        journal = MirrorJournal(store, EPICS)
        credentials = IgCredentials(API_KEY, USERNAME, PASSWORD, base_url=self.ig.url)
        client = IgClient(credentials, timeout_s=self.client_timeout_s, confirm_delay_s=0.02, backoff_s=0.01)
        events: list[tuple[str, dict]] = []
        self.desk = Desk(store, journal, self.ig, client, make_mirror(journal, client, store, events), events)
        return self.desk

    async def __aexit__(self, *exc: object) -> None:
        await self.desk.mirror.stop()
        await self.desk.client.aclose()
        self.desk.store.close()
        self.ig.__exit__()


def undecidable(row: JournalRow) -> bool:
    """Halted on this order by what IG shows, not by IG being away (that heals by itself: on a
    loaded machine a lookup can time out too, and the worker looks again RECONCILE_S later)."""
    return row.state == UNKNOWN and "IG unreachable" not in (row.last_error or "")


async def until_settled(desk: Desk, timeout_s: float = 30.0) -> list[JournalRow]:
    """Every order decided, or the worker halted on an order IG's answers cannot decide."""

    def settled(rows: list[JournalRow]) -> bool:
        return all(r.state in FINAL for r in rows) or (
            desk.mirror.state == "halted" and any(undecidable(r) for r in rows)
        )

    return await async_wait_until(desk.journal.rows, timeout_s, 0.2, what="orders decided", until=settled)


# ---- the journal --------------------------------------------------------------------------


def test_deal_references_are_ours_deterministic_and_within_igs_rule():
    assert deal_reference(42, "2024-06-17T01:00:05.123456+00:00") == "PT-42-20240617010005"
    assert len(deal_reference(999_999_999_999, "2024-06-17T01:00:05+00:00")) == 30
    with pytest.raises(ValueError, match="IG's rule"):
        deal_reference(10**13, "2024-06-17T01:00:05+00:00")


async def test_an_order_is_journaled_in_the_fills_transaction(tmp_path):
    async with desk_on(tmp_path / "p.db") as desk:
        row = desk.fill("CBA.AX", "BUY", 10)
        assert (row.state, row.epic, row.direction, row.quantity, row.attempts) == (
            PENDING,
            "AA.D.CBA.CASH.IP",
            "BUY",
            10,
            0,
        )

        def refuse(db, record):
            raise RuntimeError("the process died here")

        with pytest.raises(RuntimeError):
            desk.store.record_fill(
                Fill("WBC.AX", Action.BUY, 5, Decimal("100"), Decimal("10")),
                now=NOW,
                slippage=Decimal(0),
                reason="test",
                assumptions={},
                journal=refuse,
            )
        # All or nothing: neither the fill nor its order.
        assert desk.store.trade_count() == 1 and len(desk.journal.rows()) == 1


# ---- each fault alone ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "sends"),
    [
        ("ok", 1),
        ("drop_after_deal", 1),  # made: the lookup finds the confirm, nothing resent
        ("delay_after_deal", 1),
        ("500_after_deal", 1),
        ("delay_before_deal", 1),  # made after the client gave up: found once settled
        ("drop_before_deal", 2),  # proved not made after the settle time: sent again, once
        ("500_before_deal", 2),
    ],
)
async def test_each_fault_ends_in_one_deal(tmp_path, fault, sends):
    async with desk_on(tmp_path / "p.db") as desk:
        desk.ig.state.otc_faults = [fault]
        row = desk.fill("CBA.AX", "BUY", 10)
        desk.mirror.start()
        (done,) = await until_settled(desk)
        assert done.state == ACCEPTED and done.deal_id == f"DI{row.deal_reference}"
        assert desk.ig.state.made == {row.deal_reference: 1}
        assert desk.ig.state.posted(row.deal_reference) == sends == done.attempts
        assert desk.ig.state.sizes() == {"AA.D.CBA.CASH.IP": 10}


async def test_a_sell_whose_confirm_is_lost_is_decided_by_igs_size(tmp_path):
    async with desk_on(tmp_path / "p.db") as desk:
        desk.fill("CBA.AX", "BUY", 10)
        sell = desk.fill("CBA.AX", "SELL", 10)
        desk.ig.state.otc_faults = ["ok", "drop_after_deal"]
        desk.ig.state.lost_confirms = {sell.deal_reference}
        desk.mirror.start()
        rows = await until_settled(desk)
        assert [r.state for r in rows] == [ACCEPTED, ACCEPTED]
        assert desk.ig.state.made[sell.deal_reference] == 1 and desk.ig.state.sizes() == {}
        assert "fell by 10" in (rows[1].last_error or "")


async def test_a_sell_never_sells_more_at_ig_than_the_journal_holds_there(tmp_path):
    async with desk_on(tmp_path / "p.db") as desk:
        desk.ig.state.reject_epics["AA.D.WBC.CASH.IP"] = "MARKET_CLOSED_WITH_EDITS"
        desk.fill("WBC.AX", "BUY", 10)
        sell = desk.fill("WBC.AX", "SELL", 10)
        desk.mirror.start()
        rows = await until_settled(desk)
        assert [r.state for r in rows] == [REJECTED, SKIPPED]
        assert desk.ig.state.posted(sell.deal_reference) == 0 and desk.ig.state.deals == []


async def test_a_restart_mid_order_looks_the_order_up_and_never_doubles_it(tmp_path):
    async with desk_on(tmp_path / "p.db", client_timeout_s=60) as desk:
        desk.ig.state.otc_delay_s = 30  # IG makes the deal and holds the answer past the stop
        desk.ig.state.otc_faults = ["delay_after_deal"]
        row = desk.fill("CBA.AX", "BUY", 10)
        desk.mirror.start()
        await async_wait_until(lambda: desk.ig.state.made, 10, what="the deal made at IG")
        await desk.mirror.stop()  # the process is gone, the order in flight in the journal
        (in_flight,) = desk.journal.rows()
        assert (in_flight.state, in_flight.in_flight, in_flight.attempts) == (PENDING, True, 1)
        desk.new_mirror().start()
        (done,) = await until_settled(desk)
        assert done.state == ACCEPTED and desk.ig.state.made == {row.deal_reference: 1}
        assert desk.ig.state.posted(row.deal_reference) == 1


async def test_an_unreachable_ig_halts_with_the_event_then_resumes(tmp_path):
    async with desk_on(tmp_path / "p.db") as desk:
        desk.ig.state.server_errors = 3  # the start's reconciliation fails, twice more after it
        desk.fill("CBA.AX", "BUY", 10)
        desk.mirror.start()
        rows = await until_settled(desk)
        assert [r.state for r in rows] == [ACCEPTED]
        kinds = [kind for kind, _ in desk.events]
        assert kinds[0] == "ig_mirror_halted" and kinds[-1] == "ig_mirror_resumed"
        assert "IG unreachable" in desk.events[0][1]["reasons"][0]


# ---- randomized: 200 runs ------------------------------------------------------------------

# "ok" as often as all faults together, so runs get far enough to meet several.
FAULT_WEIGHTS = [len(OTC_FAULTS) - 1] + [1] * (len(OTC_FAULTS) - 1)


def paper_program(rnd: random.Random) -> list[tuple[str, str, int]]:
    """2 to 5 paper fills the ledger accepts: buys, and sells of part or all of what is held."""
    held = dict.fromkeys(EPICS, 0)
    program = []
    for _ in range(rnd.randint(2, 5)):
        symbol = rnd.choice(sorted(EPICS))
        if held[symbol] and rnd.random() < 0.5:
            quantity = rnd.choice([held[symbol], rnd.randint(1, held[symbol])])
            program.append((symbol, "SELL", quantity))
            held[symbol] -= quantity
        else:
            quantity = rnd.randint(1, 20)
            program.append((symbol, "BUY", quantity))
            held[symbol] += quantity
    return program


async def one_run(seed: int, directory: Path) -> dict[str, int]:
    rnd = random.Random(seed)
    async with desk_on(directory / f"run-{seed}.db") as desk:
        program = paper_program(rnd)
        references = [deal_reference(trade_id, NOW.isoformat()) for trade_id in range(1, len(program) + 1)]
        desk.ig.state.otc_faults = rnd.choices(OTC_FAULTS, FAULT_WEIGHTS, k=len(program) * MAX_ATTEMPTS)
        desk.ig.state.lost_confirms = {r for r in references if rnd.random() < 0.25}
        desk.ig.state.confirm_not_ready = rnd.choice([0, 0, 1, 2])
        desk.ig.state.lookup_errors = rnd.choice([0, 0, 0, 1, 3])  # confirms and positions answering 500
        if rnd.random() < 0.15:
            desk.ig.state.reject_epics[rnd.choice(sorted(EPICS.values()))] = "MARKET_CLOSED_WITH_EDITS"
        # Some fills are journaled before the worker starts (a restart with orders waiting), the
        # rest while it works; in some runs the worker is stopped at a random moment, as a
        # crash would stop it, and a new one takes over the journal.
        before = rnd.randint(1, len(program))
        for step in program[:before]:
            desk.fill(*step)
        desk.mirror.start()
        for step in program[before:]:
            await asyncio.sleep(rnd.uniform(0, 0.8))
            desk.fill(*step)
            desk.mirror.wake()
        restarted = rnd.random() < 0.3
        if restarted:
            await asyncio.sleep(rnd.uniform(0, 2.0))
            await desk.mirror.stop()
            desk.new_mirror().start()
        rows = await until_settled(desk, 300)  # 40 runs share one loop: generous on busy cores
        assert [r.deal_reference for r in rows] == references
        made = desk.ig.state.made
        duplicates = sum(1 for n in made.values() if n > 1)
        for row in rows:
            assert made.get(row.deal_reference, 0) <= 1, f"seed {seed}: {row.deal_reference} made twice"
            if row.state == ACCEPTED:
                assert made.get(row.deal_reference) == 1, f"seed {seed}: accepted, not made: {row}"
            elif row.state in (REJECTED, FAILED, SKIPPED):
                assert row.deal_reference not in made, f"seed {seed}: {row.state} but made: {row}"
        if all(r.state in FINAL for r in rows):
            # IG holds exactly what the journal's accepted orders say, nothing more.
            net: dict[str, float] = {}
            for row in rows:
                if row.state == ACCEPTED:
                    signed = row.size if row.direction == "BUY" else -(row.filled_size or row.size or 0)
                    net[row.epic] = net.get(row.epic, 0.0) + (signed or 0.0)
            assert desk.ig.state.sizes() == {e: n for e, n in net.items() if n}, f"seed {seed}"
        outcome = {state: sum(r.state == state for r in rows) for state in (*FINAL, *OPEN_STATES)}
        resends = sum(max(0, r.attempts - 1) for r in rows)
        return outcome | {"duplicates": duplicates, "resends": resends, "restarts": int(restarted)}


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_200_randomized_runs_make_no_duplicate_deal(tmp_path):
    """IG accepts and drops the answer, answers late, answers 5xx before or after the deal, loses
    confirms, says not-found a while, fails lookups, rejects; fills arrive while the worker works, and the worker
    is stopped and replaced mid-run: 0 duplicate positions, every order decided or the mirror
    halted on it. 40 runs at a time, each with its own ledger, IG and worker."""
    slots = asyncio.Semaphore(40)

    async def run(seed: int) -> dict[str, int]:
        async with slots:
            return await one_run(seed, tmp_path)

    totals: dict[str, int] = {}
    for result in await asyncio.gather(*(run(seed) for seed in range(200))):
        for key, n in result.items():
            totals[key] = totals.get(key, 0) + n
    assert totals["duplicates"] == 0, totals
    # The runs did meet what they are about: deals made, resent after a proof, rejected, skipped.
    assert totals[ACCEPTED] > 300 and totals["resends"] > 20, totals
    assert totals[REJECTED] > 0 and totals[SKIPPED] > 0 and totals[FAILED] > 0 and totals["restarts"] > 30, (
        totals
    )
