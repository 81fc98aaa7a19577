"""The risk gate: every limit at, below and above its boundary; commission; daily-loss halt."""

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal as D
from types import MappingProxyType

import pytest

from services.domain.portfolio import ZERO, Action, Portfolio, Position
from services.domain.risk import (
    ExitReason,
    Order,
    Rejection,
    RiskRules,
    Rule,
    TradingDay,
    check_order,
    commission,
    daily_loss_hit,
    exit_reason,
    order_for_signal,
    size_buy,
)

NOW = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)
RULES = RiskRules()
CALM = TradingDay(ZERO)


def book(cash: str, **holdings: tuple[int, str]) -> Portfolio:
    """A portfolio with `cash` and holdings symbol=(quantity, cost basis)."""
    positions = {s: Position(s, q, D(c), ZERO, NOW) for s, (q, c) in holdings.items()}
    return Portfolio(D("100000"), D(cash), MappingProxyType(positions))


def gate(
    portfolio: Portfolio,
    action: Action,
    qty: int,
    price: str = "100",
    *,
    marks: dict | None = None,
    rules: RiskRules = RULES,
    day: TradingDay = CALM,
    market_open: bool = True,
) -> Rejection | None:
    marks = marks if marks is not None else {s: D("100") for s in portfolio.positions}
    order = Order("B", action, qty, D(price))
    return check_order(
        order, portfolio, marks, rules, day=day, now=NOW, is_market_open=lambda _now: market_open
    )


def rule_of(rejection: Rejection | None) -> Rule | None:
    return rejection.rule if rejection else None


@pytest.mark.parametrize(
    ("gross", "expected"),
    [
        ("0", "10.00"),
        ("1000", "11.00"),
        ("5000", "15.00"),
        ("1234.56", "11.23"),  # 11.23456 rounds down
        ("5005", "15.01"),  # 15.005 rounds half up, never half-even
        ("10000", "20.00"),
    ],
)
def test_commission_is_ten_dollars_plus_a_tenth_of_a_percent(gross, expected):
    assert commission(D(gross), RULES) == D(expected)


def test_commission_formula_is_recorded_in_words():
    assert RULES.commission_formula() == "$10 + 0.1% of trade value"


# $100,000 all cash: 5% of portfolio value is $5,000, i.e. 50 shares at $100.
@pytest.mark.parametrize(("qty", "expected"), [(49, None), (50, None), (51, Rule.POSITION_SIZE)])
def test_position_size_is_five_percent_of_portfolio_value(qty, expected):
    assert rule_of(gate(book("100000"), Action.BUY, qty)) == expected


def test_position_size_rejection_says_by_how_much():
    rejection = gate(book("100000"), Action.BUY, 51)
    assert (rejection.limit, rejection.attempted, rejection.excess) == (
        D("5000.00"),
        D("5100.00"),
        D("100.00"),
    )
    assert "5%" in rejection.detail and "$100.00" in rejection.detail


# Already 60 shares of B at $100: 40 more makes exactly $10,000.
@pytest.mark.parametrize(("qty", "expected"), [(39, None), (40, None), (41, Rule.MAX_POSITION)])
def test_max_position_is_ten_thousand_per_symbol(qty, expected):
    portfolio = book("94000", B=(60, "6000"))
    rejection = gate(portfolio, Action.BUY, qty)
    assert rule_of(rejection) == expected
    if rejection:
        assert rejection.excess == D("100.00")


def test_max_position_uses_the_current_price_not_the_cost():
    # 60 shares bought at $50 are worth $6,000 at $100: only 40 more fit.
    assert rule_of(gate(book("97000", B=(60, "3000")), Action.BUY, 41)) == Rule.MAX_POSITION


# Equity 100,011 with 79,000 in A. Buying 10 B at $100 (commission $11) leaves equity 100,000,
# 80% of which is exactly the 80,000 the positions would then be worth.
@pytest.mark.parametrize(("qty", "expected"), [(9, None), (10, None), (11, Rule.MAX_EXPOSURE)])
def test_max_exposure_is_eighty_percent_after_the_trade(qty, expected):
    portfolio = book("21011", A=(790, "79000"))
    assert rule_of(gate(portfolio, Action.BUY, qty)) == expected


def test_max_exposure_rejection_counts_the_commission():
    rejection = gate(book("21011", A=(790, "79000")), Action.BUY, 11)
    # 80,100 of positions against 80% of (100,011 - 11.10) = 79,999.92.
    assert (rejection.limit, rejection.attempted, rejection.excess) == (
        D("79999.92"),
        D("80100.00"),
        D("100.08"),
    )


# With a 100% exposure cap cash binds: 1,011 buys exactly 10 shares at $100 plus $11.
@pytest.mark.parametrize(("qty", "expected"), [(9, None), (10, None), (11, Rule.INSUFFICIENT_CASH)])
def test_cash_must_cover_the_trade_and_its_commission(qty, expected):
    rules = replace(
        RULES, max_exposure_fraction=D("1"), position_size_fraction=D("1"), max_position_value=D("1e9")
    )
    assert rule_of(gate(book("1011", A=(500, "50000")), Action.BUY, qty, rules=rules)) == expected


@pytest.mark.parametrize(
    ("day_pnl", "halted", "expected"),
    [
        ("-4999.99", False, None),  # a cent short of the limit
        ("-5000", False, Rule.MAX_DAILY_LOSS),  # losing exactly the limit hits it
        ("-5000.01", False, Rule.MAX_DAILY_LOSS),
        ("250", True, Rule.MAX_DAILY_LOSS),  # once tripped, a recovery does not lift the halt today
        ("0", False, None),
    ],
)
def test_daily_loss_halts_new_buys(day_pnl, halted, expected):
    day = TradingDay(D(day_pnl), halted)
    assert rule_of(gate(book("100000"), Action.BUY, 1, day=day)) == expected


def test_daily_loss_halt_still_allows_selling():
    day = TradingDay(D("-6000"), True)
    assert gate(book("90000", B=(10, "1000")), Action.SELL, 10, day=day) is None


def test_daily_loss_rejection_says_how_much_was_lost():
    rejection = gate(book("100000"), Action.BUY, 1, day=TradingDay(D("-5200")))
    assert (rejection.limit, rejection.attempted, rejection.excess) == (D("5000"), D("5200"), D("200"))


@pytest.mark.parametrize(
    ("day_pnl", "hit"), [("-4999.99", False), ("-5000", True), ("-5000.01", True), ("100", False)]
)
def test_daily_loss_hit(day_pnl, hit):
    assert daily_loss_hit(D(day_pnl), RULES) is hit


@pytest.mark.parametrize(("qty", "expected"), [(9, None), (10, None), (11, Rule.NO_SHORT_SELLING)])
def test_no_short_selling(qty, expected):
    rejection = gate(book("90000", B=(10, "1000")), Action.SELL, qty)
    assert rule_of(rejection) == expected
    if rejection:
        assert rejection.excess == D("1")


def test_selling_what_is_not_held_is_short_selling():
    assert rule_of(gate(book("100000"), Action.SELL, 1)) == Rule.NO_SHORT_SELLING


def test_a_sale_whose_commission_exceeds_cash_and_proceeds_is_refused():
    # Selling one $1 share costs $10.00 commission; with $5 cash that would leave -$4.
    rejection = gate(book("5", B=(1, "1")), Action.SELL, 1, price="1", marks={"B": D("1")})
    assert rule_of(rejection) == Rule.INSUFFICIENT_CASH
    assert rejection.excess == D("4.00")


@pytest.mark.parametrize("action", [Action.BUY, Action.SELL])
def test_market_hours_come_first(action):
    rejection = gate(book("90000", B=(10, "1000")), action, 1, market_open=False)
    assert rule_of(rejection) == Rule.MARKET_HOURS
    assert rejection.excess is None


def test_market_hours_callable_receives_now():
    seen = []
    check_order(
        Order("B", Action.BUY, 1, D("100")),
        book("100000"),
        {},
        RULES,
        day=CALM,
        now=NOW,
        is_market_open=lambda now: seen.append(now) or True,
    )
    assert seen == [NOW]


@pytest.mark.parametrize("qty", [0, -1, 1.5, True])
def test_quantity_must_be_a_positive_whole_number(qty):
    assert rule_of(gate(book("100000"), Action.BUY, qty)) == Rule.QUANTITY


def test_rejection_as_dict():
    as_dict = gate(book("100000"), Action.BUY, 51).as_dict()
    assert as_dict["rule"] == "position_size"
    assert (as_dict["limit"], as_dict["attempted"], as_dict["excess"]) == (5000.0, 5100.0, 100.0)


@pytest.mark.parametrize(
    ("portfolio", "price", "marks", "expected"),
    [
        (book("100000"), "100", {}, 50),  # 5% of 100,000
        (book("100000"), "33.33", {}, 150),  # 5,000 / 33.33 = 150.015
        (book("90500", B=(95, "9500")), "100", {}, 5),  # only 500 left under the $10,000 cap
        (book("21011", A=(790, "79000")), "100", {"A": D("100")}, 10),  # exposure binds
        (book("100000", B=(100, "10000")), "100", {}, 0),  # symbol already full
        (book("5"), "1", {}, 0),  # cash cannot even pay the fixed commission
    ],
)
def test_size_buy_takes_the_most_the_rules_allow(portfolio, price, marks, expected):
    marks = marks or {s: D(price) for s in portfolio.positions}
    quantity = size_buy(portfolio, "B", D(price), marks, RULES)
    assert quantity == expected
    marks = {**marks, "B": D(price)}
    if quantity:
        assert gate(portfolio, Action.BUY, quantity, price, marks=marks) is None
    assert gate(portfolio, Action.BUY, quantity + 1, price, marks=marks) is not None


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        ("95.01", None),
        ("95", ExitReason.STOP_LOSS),  # exactly 5% down triggers
        ("94.99", ExitReason.STOP_LOSS),
        ("109.99", None),
        ("110", ExitReason.TAKE_PROFIT),  # exactly 10% up triggers
        ("110.01", ExitReason.TAKE_PROFIT),
        ("100", None),
    ],
)
def test_stop_loss_and_take_profit_against_average_cost(price, expected):
    position = Position("B", 10, D("1000"), ZERO, NOW)
    assert exit_reason(position, D(price), RULES) == expected


@pytest.mark.parametrize(
    "field_value",
    [
        {"position_size_fraction": D("0")},
        {"max_exposure_fraction": D("1.01")},
        {"max_position_value": D("0")},
        {"max_daily_loss": D("-1")},
        {"commission_rate": D("-0.001")},
    ],
)
def test_rules_validate_their_values(field_value):
    with pytest.raises(ValueError):
        RiskRules(**field_value)


@pytest.mark.parametrize(
    ("signal", "portfolio", "expected"),
    [
        ("BUY", book("100000"), Order("B", Action.BUY, 50, D("100"))),  # sized at 5%
        ("BUY", book("90000", B=(100, "10000")), None),  # symbol full: nothing to buy
        ("SELL", book("99000", B=(10, "1000")), Order("B", Action.SELL, 10, D("100"))),  # closes all
        ("SELL", book("100000"), None),  # nothing held: nothing to sell, never a short
        ("HOLD", book("99000", B=(10, "1000")), None),
    ],
)
def test_order_for_signal(signal, portfolio, expected):
    marks = {s: D("100") for s in portfolio.positions}
    assert order_for_signal(signal, "B", D("100"), portfolio, marks, RULES) == expected


def test_order_for_signal_rejects_unknown_signals():
    with pytest.raises(ValueError, match="signal"):
        order_for_signal("SHORT", "B", D("100"), book("100000"), {}, RULES)
