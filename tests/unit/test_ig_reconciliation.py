"""The IG mirror's pure checks: the five divergences, corrections, and deciding an order in flight."""

from dataclasses import replace

import pytest

from services.domain.ig_reconciliation import (
    ACCEPTED,
    FAILED,
    PENDING,
    REJECTED,
    SKIPPED,
    UNKNOWN,
    JournalOrder,
    Lookup,
    adoptions,
    decide_in_flight,
    expected_net,
    reconcile,
    remaining_by_deal,
    size_to_send,
)

CBA, NAB = "AA.D.CBA.CASH.IP", "AA.D.NAB.CASH.IP"


def order(order_id, direction="BUY", quantity=10, state=ACCEPTED, epic=CBA, symbol="CBA.AX", **fields):
    defaults = {
        "deal_reference": f"PT-{order_id}-20240617010000",
        "size": float(quantity),
        "deal_id": f"DI{order_id}" if state == ACCEPTED and direction == "BUY" else None,
        "attempts": 1,
        "seen": True,
    }
    return JournalOrder(order_id, symbol=symbol, epic=epic, direction=direction, quantity=quantity, state=state,
                        **(defaults | fields))  # fmt: skip


def position(deal_id, reference, size, epic=CBA, direction="BUY", level=100.0):
    return {
        "position": {"dealId": deal_id, "dealReference": reference, "size": size, "direction": direction,
                     "level": level},
        "market": {"epic": epic},
    }  # fmt: skip


def held(o: JournalOrder, size=None):
    return position(o.deal_id, o.deal_reference, o.size if size is None else size, o.epic)


BUY1 = order(1)
SELL2 = order(2, "SELL", deal_id=None)
BUY3 = order(3, quantity=5)


def kinds(orders, positions, paper=None):
    return [d.kind for d in reconcile(orders, paper or {}, positions).divergences]


@pytest.mark.parametrize(
    ("orders", "positions", "expected"),
    [
        ([], [], []),
        ([BUY1], [held(BUY1)], []),
        # Our sell closed it, and IG agrees.
        ([BUY1, SELL2], [], []),
        # A rejected, failed or skipped order holds nothing, and IG holds nothing of it.
        ([order(1, state=REJECTED), order(2, state=FAILED), order(3, "SELL", state=SKIPPED)], [], []),
        # missing_fill: accepted, never seen at IG, not there.
        ([replace(BUY1, seen=False)], [], ["missing_fill"]),
        # closed_at_ig: seen before, gone now, and we never sold it.
        ([BUY1], [], ["closed_at_ig"]),
        # closed_at_ig: one of two deals on the epic gone.
        ([BUY1, BUY3], [held(BUY3)], ["closed_at_ig"]),
        # partial_fill: IG holds 6 of the 10 we ordered.
        ([BUY1], [held(BUY1, 6.0)], ["partial_fill"]),
        # partial_fill the other way: more than ordered is a different size too.
        ([BUY1], [held(BUY1, 12.0)], ["partial_fill"]),
        # unknown_deal: a manual deal at IG, on a mapped epic or any other.
        ([BUY1], [held(BUY1), position("DIX", "MANUAL1", 7.0, NAB)], ["unknown_deal"]),
        ([], [position("DIY", None, 3.0, "IX.D.ASX.IFT.IP", "SELL")], ["unknown_deal"]),
        # extra_position: IG holds a deal whose order the journal says was rejected.
        ([order(1, state=REJECTED)], [position("DIPT1", BUY1.deal_reference, 10.0)], ["extra_position"]),
        # extra_position: our sell closed it by the journal, IG still holds it.
        ([BUY1, SELL2], [held(BUY1)], ["extra_position"]),
        # extra_position: a SELL of ours that opened a short under its reference.
        ([SELL2], [position("DIS", SELL2.deal_reference, 10.0, direction="SELL")], ["extra_position"]),
    ],
)
def test_reconcile_finds_each_divergence(orders, positions, expected):
    assert kinds(orders, positions) == expected


def test_a_partial_sell_takes_size_off_the_oldest_deal_first():
    sell = order(3, "SELL", quantity=4, deal_id=None)
    buy2 = order(2, quantity=5)
    assert remaining_by_deal([BUY1, buy2, sell]) == {1: 6.0, 2: 5.0}
    assert kinds([BUY1, buy2, sell], [held(BUY1, 6.0), held(buy2)]) == []
    assert expected_net([BUY1, buy2, sell], CBA) == 11.0


def test_igs_choice_of_which_deal_a_sell_reduced_is_not_a_divergence():
    sell = order(3, "SELL", quantity=4, deal_id=None)
    buy2 = order(2, quantity=5)
    # We reckon oldest first (6 and 5); IG took the 4 off the newest (10 and 1): same total.
    assert kinds([BUY1, buy2, sell], [held(BUY1, 10.0), held(buy2, 1.0)]) == []
    # IG holds 9 in all where our deals should hold 11: that stays a divergence, told per deal.
    assert kinds([BUY1, buy2, sell], [held(BUY1, 9.0)]) == ["partial_fill", "closed_at_ig"]
    # Without a sell of ours on the epic nothing netted: per-deal differences stand.
    assert kinds([BUY1, buy2], [held(BUY1, 12.0), held(buy2, 3.0)]) == ["partial_fill", "partial_fill"]


def test_an_open_order_ig_holds_is_corrected_to_made_and_marked_seen():
    pending = replace(BUY1, state=PENDING, deal_id=None, seen=False)
    report = reconcile(
        [pending], {"CBA.AX": 10}, [position("DIZ", pending.deal_reference, 10.0, level=101.0)]
    )
    assert report.clean and report.unmirrored == ()
    (correction,) = report.corrections
    assert (correction.order_id, correction.deal_id, correction.size, correction.level) == (
        1,
        "DIZ",
        10.0,
        101.0,
    )
    # unknown too: the order was sent, nobody could tell; IG's position settles it.
    assert reconcile([replace(pending, state=UNKNOWN)], {}, [held(replace(BUY1, deal_id="DIZ"))]).corrections


def test_first_sighting_is_reported_once():
    unseen = replace(BUY1, seen=False)
    assert reconcile([unseen], {}, [held(unseen)]).seen == (1,)
    assert reconcile([BUY1], {}, [held(BUY1)]).seen == ()


def test_paper_shares_the_journal_does_not_hold_are_listed_not_a_divergence():
    report = reconcile([BUY1], {"CBA.AX": 10, "WBC.AX": 30}, [held(BUY1)])
    assert report.clean
    assert report.unmirrored == ({"symbol": "WBC.AX", "paper_quantity": 30, "mirrored": 0.0},)


@pytest.mark.parametrize(
    ("direction", "quantity", "earlier", "expected"),
    [
        ("BUY", 10, [], 10.0),
        ("SELL", 10, [BUY1], 10.0),
        # IG holds only 5 of ours (the other buy was rejected): sell 5, never open a short.
        ("SELL", 15, [BUY3, order(4, state=REJECTED)], 5.0),
        ("SELL", 10, [], 0.0),
        ("SELL", 10, [order(1, epic=NAB)], 0.0),
    ],
)
def test_size_to_send(direction, quantity, earlier, expected):
    sell = order(9, direction, quantity=quantity, state=PENDING, size=None, attempts=0)
    assert size_to_send(sell, earlier) == expected


IN_FLIGHT_BUY = order(5, state=PENDING, quantity=4, deal_id=None, seen=False)
IN_FLIGHT_SELL = order(5, "SELL", state=PENDING, quantity=10, deal_id=None, seen=False)


@pytest.mark.parametrize(
    ("case", "order_", "lookup", "positions", "outcome"),
    [
        ("confirm accepted", IN_FLIGHT_BUY, Lookup("ACCEPTED", "DI5", 4.0, 100.0, "SUCCESS"), [held(BUY1)], "made"),
        ("confirm rejected", IN_FLIGHT_BUY, Lookup("REJECTED", None, None, None, "MARKET_CLOSED"), [], "rejected"),
        ("no confirm, position under its reference", IN_FLIGHT_BUY, None,
         [held(BUY1), position("DI5", IN_FLIGHT_BUY.deal_reference, 4.0)], "made"),
        ("no confirm, IG as before", IN_FLIGHT_BUY, None, [held(BUY1)], "not_made"),
        # IG holds 4 more on the epic without our reference: something, not provably ours.
        ("no confirm, IG holds more", IN_FLIGHT_BUY, None, [held(BUY1), position("DIQ", "OTHER", 4.0)], "undecidable"),
        ("no confirm, IG holds less", IN_FLIGHT_BUY, None, [], "undecidable"),
        # A SELL opens no position: its confirm gone, IG's size tells.
        ("sell: IG as before", IN_FLIGHT_SELL, None, [held(BUY1)], "not_made"),
        ("sell: IG's size fell by it", IN_FLIGHT_SELL, None, [], "made"),
        ("sell: IG's size fell by another amount", IN_FLIGHT_SELL, None, [held(BUY1, 3.0)], "undecidable"),
    ],
)  # fmt: skip
def test_decide_in_flight(case, order_, lookup, positions, outcome):
    decision = decide_in_flight(order_, lookup, positions, [BUY1])
    assert decision.outcome == outcome, (case, decision.detail)
    if case == "no confirm, position under its reference":
        assert (decision.deal_id, decision.size) == ("DI5", 4.0)


def adopt(orders, adopted):
    by_id = {a.order_id: a for a in adopted}
    return [
        replace(o, state=ACCEPTED, adopted_size=a.adopted_size, deal_id=a.deal_id or o.deal_id)
        if (a := by_id.get(o.order_id))
        else o
        for o in orders
    ]


@pytest.mark.parametrize(
    ("orders", "positions", "kinds_adopted"),
    [
        ([replace(BUY1, seen=False)], [], ["missing_fill"]),
        ([BUY1], [], ["closed_at_ig"]),
        # One deal of two closed at IG, after a sell took 4 from the oldest.
        ([BUY1, BUY3, order(4, "SELL", quantity=4, deal_id=None)], [held(BUY3)], ["closed_at_ig"]),
        ([BUY1], [held(BUY1, 6.0)], ["partial_fill"]),
        ([BUY1, order(2, "SELL", quantity=4, deal_id=None)], [held(BUY1, 3.0)], ["partial_fill"]),
        ([order(1, state=REJECTED)], [position("DIPT1", BUY1.deal_reference, 10.0)], ["extra_position"]),
        ([BUY1, SELL2], [held(BUY1)], ["extra_position"]),
    ],
)
def test_adopting_igs_sizes_leaves_a_clean_reconciliation(orders, positions, kinds_adopted):
    adopted = adoptions(orders, positions)
    assert [a.kind for a in adopted] == kinds_adopted
    assert reconcile(adopt(orders, adopted), {}, positions).clean


def test_what_the_journal_never_recorded_is_not_adopted():
    manual = position("DIX", "MANUAL1", 7.0, NAB)
    short = position("DIS", SELL2.deal_reference, 10.0, direction="SELL")
    assert adoptions([BUY1], [held(BUY1), manual]) == []
    assert adoptions([SELL2], [short]) == []
    assert kinds(adopt([SELL2], adoptions([SELL2], [short])), [short]) == ["extra_position"]
