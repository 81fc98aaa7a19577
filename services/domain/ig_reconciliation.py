"""The IG mirror's journal against IG's positions: what diverges, what an in-flight order did.

Pure functions over three inputs: the mirror journal (our orders, each with our own deal
reference, its state and what IG said of it), the paper book (quantities per symbol) and IG's
GET /positions v2 answer (each position with its dealId, dealReference, direction, size, epic).
No I/O; services/paper-trading/ig_mirror.py feeds them and acts on the answers.

What the journal expects IG to hold: every accepted BUY is a deal of its ordered size; accepted
SELLs (sent without forceOpen, so they net against open BUYs) take size off those deals, oldest
first. Which of several open deals IG's netting reduces is not in the facts we have: where our
sells netted and IG's deals add up to what ours should hold, none more than it was opened with,
per-deal differences are taken for IG's choice, not a divergence (`_netting_explains`).

The five divergences (`reconcile`), none of which the mirror can mend by itself:
- `missing_fill`: an accepted deal IG has never been seen holding, and does not hold;
- `closed_at_ig`: an accepted deal IG was seen holding and no longer holds, while the journal
  (no SELL of ours) still holds it: closed at IG (a stop, a manual close, a margin call);
- `partial_fill`: IG holds our deal at another size than we ordered (less our own sells);
- `unknown_deal`: an IG position whose dealId and dealReference our journal never recorded;
- `extra_position`: IG holds a deal of ours that the journal says holds nothing: an order
  recorded rejected, failed or skipped, a SELL that opened a position, or a deal our sells closed.
What it can mend it returns as corrections: an order still open (pending or unknown) whose deal
IG holds was made, and IG's position says with which dealId and size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

PENDING = "pending"  # journaled; not sent yet (attempts 0) or sent and not decided yet
ACCEPTED = "accepted"  # IG made the deal
REJECTED = "rejected"  # IG's confirm said REJECTED: no deal
FAILED = "failed"  # IG refused the request, or proved not to have made it every time: no deal
SKIPPED = "skipped"  # a SELL with nothing of ours held at IG to close: not sent
UNKNOWN = "unknown"  # sent, and what IG did could not be established: mirroring halts
STATES = (PENDING, ACCEPTED, REJECTED, FAILED, SKIPPED, UNKNOWN)
OPEN_STATES = frozenset({PENDING, UNKNOWN})
NO_DEAL_STATES = frozenset({REJECTED, FAILED, SKIPPED})
KINDS = ("missing_fill", "extra_position", "closed_at_ig", "partial_fill", "unknown_deal")
# IG sizes are decimals with up to 12 places; the mirror sends whole shares.
SIZE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class JournalOrder:
    """One mirror order as the journal holds it."""

    order_id: int
    deal_reference: str
    symbol: str
    epic: str
    direction: str  # BUY | SELL
    quantity: int  # the paper fill's shares
    size: float | None = None  # what was (or will be) sent to IG; None before the first send
    state: str = PENDING
    deal_id: str | None = None
    filled_size: float | None = None  # as IG's confirm (or position) stated it
    attempts: int = 0
    seen: bool = False  # IG was seen holding this order's deal at a reconciliation
    adopted_size: float | None = None  # the operator took IG's size of this deal as the truth

    @property
    def ordered(self) -> float:
        return float(self.size if self.size is not None else self.quantity)

    @property
    def held(self) -> float:
        """What an accepted BUY's deal is expected to hold at IG before our sells."""
        return float(self.adopted_size) if self.adopted_size is not None else self.ordered

    @property
    def netted(self) -> float:
        """How much an accepted SELL took off our deals at IG."""
        return float(self.filled_size if self.filled_size is not None else self.ordered)


@dataclass(frozen=True, slots=True)
class IgDeal:
    """One GET /positions v2 entry."""

    deal_id: str | None
    deal_reference: str | None
    epic: str
    direction: str
    size: float
    level: float | None

    @property
    def signed(self) -> float:
        return self.size if self.direction == "BUY" else -self.size


@dataclass(frozen=True, slots=True)
class Divergence:
    kind: str
    epic: str
    detail: str
    order_id: int | None = None
    deal_id: str | None = None
    deal_reference: str | None = None
    expected_size: float | None = None
    ig_size: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "epic": self.epic,
            "detail": self.detail,
            "order_id": self.order_id,
            "deal_id": self.deal_id,
            "deal_reference": self.deal_reference,
            "expected_size": self.expected_size,
            "ig_size": self.ig_size,
        }


@dataclass(frozen=True, slots=True)
class Correction:
    """An open order whose deal IG holds: it was made, with this dealId and size."""

    order_id: int
    deal_id: str | None
    size: float
    level: float | None


@dataclass(frozen=True, slots=True)
class Reconciliation:
    divergences: tuple[Divergence, ...] = ()
    corrections: tuple[Correction, ...] = ()
    seen: tuple[int, ...] = ()  # accepted orders whose deal IG was seen holding for the first time
    unmirrored: tuple[dict[str, Any], ...] = field(default=())  # paper vs journal, informational

    @property
    def clean(self) -> bool:
        return not self.divergences

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "divergences": [d.as_dict() for d in self.divergences],
            "corrected_orders": [c.order_id for c in self.corrections],
            "unmirrored": list(self.unmirrored),
        }


@dataclass(frozen=True, slots=True)
class Lookup:
    """What GET /confirms/{dealReference} said (None fields when IG had no confirm)."""

    deal_status: str | None = None  # ACCEPTED | REJECTED
    deal_id: str | None = None
    size: float | None = None
    level: float | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What became of an order that was sent and not decided: `made`, `rejected`, `not_made`
    (proved: it may be sent again under the same reference) or `undecidable` (halt)."""

    outcome: str
    detail: str
    deal_id: str | None = None
    size: float | None = None
    level: float | None = None


def ig_deals(positions: Iterable[Mapping[str, Any]]) -> list[IgDeal]:
    """GET /positions entries as deals (v2 fields; v1's dealSize / openLevel accepted)."""
    deals = []
    for item in positions:
        position, market = item.get("position") or {}, item.get("market") or {}
        size = position.get("size", position.get("dealSize"))
        deals.append(
            IgDeal(
                deal_id=position.get("dealId"),
                deal_reference=position.get("dealReference"),
                epic=market.get("epic") or position.get("epic") or "?",
                direction=position.get("direction") or "BUY",
                size=float(size or 0),
                level=position.get("level", position.get("openLevel")),
            )
        )
    return deals


def same_size(a: float, b: float) -> bool:
    return abs(a - b) <= SIZE_TOLERANCE


def expected_net(orders: Iterable[JournalOrder], epic: str) -> float:
    """What the journal's accepted orders hold at IG on `epic` (BUY positive)."""
    net = 0.0
    for order in orders:
        if order.epic == epic and order.state == ACCEPTED:
            net += order.held if order.direction == "BUY" else -order.netted
    return net


def size_to_send(order: JournalOrder, earlier: Iterable[JournalOrder]) -> float:
    """A BUY sends its shares; a SELL no more than the journal's accepted orders hold at IG on
    its epic (a SELL without forceOpen beyond that would open a short position there). 0: skip."""
    if order.direction == "BUY":
        return float(order.quantity)
    return max(0.0, min(float(order.quantity), expected_net(earlier, order.epic)))


def remaining_by_deal(orders: Sequence[JournalOrder]) -> dict[int, float]:
    """Each accepted BUY's size still held at IG by the journal's reckoning (order id -> size)."""
    remaining: dict[int, float] = {}
    open_buys: dict[str, list[int]] = {}
    for order in sorted(orders, key=lambda o: o.order_id):
        if order.state != ACCEPTED:
            continue
        if order.direction == "BUY":
            remaining[order.order_id] = order.held
            open_buys.setdefault(order.epic, []).append(order.order_id)
            continue
        to_close = order.netted
        for order_id in open_buys.get(order.epic, []):  # oldest first: an assumption, see above
            taken = min(remaining[order_id], to_close)
            remaining[order_id] -= taken
            to_close -= taken
    return remaining


def reconcile(
    orders: Sequence[JournalOrder],
    paper_quantities: Mapping[str, int],
    positions: Iterable[Mapping[str, Any]],
) -> Reconciliation:
    """The journal and the paper book against IG's positions: divergences, corrections, sightings."""
    by_reference = {o.deal_reference: o for o in orders}
    by_deal_id = {o.deal_id: o for o in orders if o.deal_id}
    divergences: list[Divergence] = []
    corrections: dict[int, Correction] = {}
    held: dict[int, list[IgDeal]] = {}
    for deal in ig_deals(positions):
        order = (deal.deal_id and by_deal_id.get(deal.deal_id)) or (
            deal.deal_reference and by_reference.get(deal.deal_reference)
        )
        if not order:
            divergences.append(
                Divergence(
                    "unknown_deal",
                    deal.epic,
                    f"IG holds {deal.direction} {deal.size:g} on {deal.epic} (dealId {deal.deal_id},"
                    f" dealReference {deal.deal_reference}) that the mirror journal never recorded",
                    deal_id=deal.deal_id,
                    deal_reference=deal.deal_reference,
                    ig_size=deal.signed,
                )
            )
            continue
        held.setdefault(order.order_id, []).append(deal)
        if order.state in OPEN_STATES and order.direction == "BUY":
            corrections[order.order_id] = Correction(order.order_id, deal.deal_id, deal.size, deal.level)
    effective = [
        replace(o, state=ACCEPTED, deal_id=c.deal_id, filled_size=c.size)
        if (c := corrections.get(o.order_id))
        else o
        for o in orders
    ]
    remaining = remaining_by_deal(effective)
    netted = _netting_explains(effective, remaining, held)
    seen: list[int] = []
    for order in effective:
        deals = held.get(order.order_id, [])
        at_ig = sum(d.signed for d in deals)
        if order.order_id in remaining:
            expected = remaining[order.order_id]
            divergence = _deal_divergence(order, expected, at_ig if deals else None)
            if divergence is not None and order.epic not in netted:
                divergences.append(divergence)
            if deals and not order.seen:
                seen.append(order.order_id)
        elif deals:  # a deal of ours the journal says holds nothing
            why = (
                f"the order is recorded {order.state}"
                if order.state in NO_DEAL_STATES
                else "a SELL of ours opened a position"
            )
            divergences.append(
                Divergence(
                    "extra_position",
                    order.epic,
                    f"IG holds {at_ig:g} on {order.epic} under our reference {order.deal_reference},"
                    f" but {why}: IG holds more than the journal explains",
                    order_id=order.order_id,
                    deal_id=deals[0].deal_id,
                    deal_reference=order.deal_reference,
                    expected_size=0.0,
                    ig_size=at_ig,
                )
            )
    return Reconciliation(
        tuple(divergences),
        tuple(corrections.values()),
        tuple(seen),
        tuple(_unmirrored(effective, paper_quantities)),
    )


def _netting_explains(
    orders: Sequence[JournalOrder], remaining: Mapping[int, float], held: Mapping[int, list[IgDeal]]
) -> set[str]:
    """Epics where our sells netted against our deals in another order than oldest first, and
    nothing else differs: a sell of ours was accepted there, IG holds in all exactly what our deals
    should hold, and no deal more than it was opened with (netting only takes away). Per-deal
    differences there are IG's choice of which deal a sell reduced, not a divergence."""
    explained = set()
    for epic in {o.epic for o in orders if o.state == ACCEPTED and o.direction == "SELL"}:
        buys = [o for o in orders if o.epic == epic and o.order_id in remaining]
        at_ig = {o.order_id: sum(d.signed for d in held.get(o.order_id, [])) for o in buys}
        if same_size(sum(at_ig.values()), sum(remaining[o.order_id] for o in buys)) and all(
            -SIZE_TOLERANCE <= at_ig[o.order_id] <= o.held + SIZE_TOLERANCE for o in buys
        ):
            explained.add(epic)
    return explained


def _deal_divergence(order: JournalOrder, expected: float, at_ig: float | None) -> Divergence | None:

    def divergence(kind: str, detail: str) -> Divergence:
        return Divergence(
            kind, order.epic, detail, order.order_id, order.deal_id, order.deal_reference, expected, at_ig
        )

    if at_ig is None:
        if same_size(expected, 0.0):
            return None  # our sells closed it, and IG agrees
        if order.seen:
            detail = (
                f"our deal {order.deal_id} ({order.deal_reference}, {expected:g} on {order.epic}) is"
                " gone at IG though we never closed it: closed at IG"
            )
            return divergence("closed_at_ig", detail)
        detail = (
            f"IG accepted {order.deal_reference} ({order.direction} {order.ordered:g} on {order.epic},"
            f" dealId {order.deal_id}) but has never held it"
        )
        return divergence("missing_fill", detail)
    if same_size(expected, 0.0):
        detail = (
            f"IG still holds {at_ig:g} of our deal {order.deal_id} ({order.deal_reference}) that our"
            " sells closed: IG holds more than the journal explains"
        )
        return divergence("extra_position", detail)
    if not same_size(expected, at_ig):
        detail = (
            f"IG holds {at_ig:g} of our deal {order.deal_id} ({order.deal_reference}) on {order.epic};"
            f" we ordered {order.ordered:g} and expect {expected:g}: a partial fill"
        )
        return divergence("partial_fill", detail)
    return None


def _unmirrored(orders: Sequence[JournalOrder], paper: Mapping[str, int]) -> list[dict[str, Any]]:
    """Per symbol, paper shares against what the journal holds or has queued at IG: trades made
    while mirroring was off, or that IG rejected, differ here. Reported, not a divergence: a SELL
    is sized to what the journal holds, so it never sells at IG what IG does not hold for us."""
    journal: dict[str, float] = {}
    for order in orders:
        if order.state == ACCEPTED:
            signed = order.held if order.direction == "BUY" else -order.netted
        elif order.state in OPEN_STATES:
            signed = order.ordered if order.direction == "BUY" else -order.ordered
        else:
            continue
        journal[order.symbol] = journal.get(order.symbol, 0.0) + signed
    rows = []
    for symbol in sorted(set(paper) | set(journal)):
        mirrored = journal.get(symbol, 0.0)
        if not same_size(float(paper.get(symbol, 0)), mirrored):
            rows.append({"symbol": symbol, "paper_quantity": paper.get(symbol, 0), "mirrored": mirrored})
    return rows


def decide_in_flight(
    order: JournalOrder,
    lookup: Lookup | None,
    positions: Iterable[Mapping[str, Any]],
    orders: Iterable[JournalOrder],
) -> Decision:
    """What an order that was sent and not decided did, from its confirm (None: IG has none) and
    IG's positions, read after the settle time. `orders` are the journal's other orders.

    Proof that it was not made needs both: no confirm and no position with its reference, and
    IG's size on the epic exactly what the journal's accepted orders explain without it. That
    IG decides a deal within the settle time is the assumption this rests on (IG documents no
    bound); a deal that lands later shows up at the next reconciliation as a divergence.
    """
    if lookup is not None and lookup.deal_status == "ACCEPTED":
        return Decision("made", "IG's confirm says ACCEPTED", lookup.deal_id, lookup.size, lookup.level)
    if lookup is not None and lookup.deal_status == "REJECTED":
        return Decision("rejected", f"IG's confirm says REJECTED: {lookup.reason}")
    deals = ig_deals(positions)
    for deal in deals:
        if deal.deal_reference == order.deal_reference:
            return Decision(
                "made", "IG holds a position under its reference", deal.deal_id, deal.size, deal.level
            )
    before = expected_net((o for o in orders if o.order_id != order.order_id), order.epic)
    at_ig = sum(d.signed for d in deals if d.epic == order.epic)
    size = order.ordered
    if same_size(at_ig, before):
        return Decision(
            "not_made", f"no confirm, no position, and IG holds {at_ig:g} on {order.epic} as before"
        )
    if order.direction == "SELL" and same_size(at_ig, before - size):
        return Decision("made", f"no confirm, but IG's size on {order.epic} fell by {size:g}", size=size)
    return Decision(
        "undecidable",
        f"no confirm and no position under {order.deal_reference}, and IG holds {at_ig:g} on {order.epic}"
        f" where the journal explains {before:g} before this {order.direction} of {size:g}",
    )


@dataclass(frozen=True, slots=True)
class Adoption:
    """The operator takes IG's size of one of our deals as the truth: the order becomes accepted
    (if it was not) and its deal is expected to hold `adopted_size` before our sells."""

    order_id: int
    adopted_size: float
    deal_id: str | None
    kind: str  # the divergence it settles


def adoptions(orders: Sequence[JournalOrder], positions: Iterable[Mapping[str, Any]]) -> list[Adoption]:
    """What `adopt` would write so the journal's deals match IG's: for each divergence about a BUY
    deal of ours (missing_fill, closed_at_ig, partial_fill, extra_position), the deal's expected
    size moves by what IG holds more or less. A position the journal never recorded
    (unknown_deal) and a SELL that opened a position are not ours to adopt: close them at IG."""
    report = reconcile(orders, {}, positions)
    by_id = {o.order_id: o for o in orders}
    result = []
    for divergence in report.divergences:
        order = by_id.get(divergence.order_id) if divergence.order_id is not None else None
        if order is None or order.direction != "BUY" or divergence.kind == "unknown_deal":
            continue
        at_ig = divergence.ig_size or 0.0
        if order.state == ACCEPTED:
            # Sells are taken from the oldest deal first, and never more than it held: moving
            # this deal by (IG - expected) leaves what the sells took from it, and every other deal.
            expected = divergence.expected_size or 0.0
            adopted = order.held + (at_ig - expected)
        else:  # recorded as no deal, and IG holds it: it was made at this size
            adopted = at_ig
        result.append(
            Adoption(order.order_id, max(0.0, adopted), divergence.deal_id or order.deal_id, divergence.kind)
        )
    return result
