"""Portfolio bookkeeping: fills, average cost, realised/unrealised P&L, valuation."""

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from services.domain.portfolio import (
    Action,
    Fill,
    Portfolio,
    PortfolioError,
    exposure_ratio,
    fill_price,
    to_money,
    to_price,
    trade_value,
    value,
)

NOW = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)


def buy(symbol: str, qty: int, price: str, commission: str = "0") -> Fill:
    return Fill(symbol, Action.BUY, qty, D(price), D(commission))


def sell(symbol: str, qty: int, price: str, commission: str = "0") -> Fill:
    return Fill(symbol, Action.SELL, qty, D(price), D(commission))


def run(*fills: Fill, capital: str = "100000") -> Portfolio:
    book = Portfolio.new(D(capital))
    for fill in fills:
        book = book.apply(fill, NOW).portfolio
    return book


def test_new_portfolio_is_all_cash():
    book = Portfolio.new(D("100000"))
    assert book.cash == D("100000.00")
    assert book.positions == {}
    assert value(book, {}).equity == D("100000.00")


@pytest.mark.parametrize("capital", ["0", "-1"])
def test_starting_capital_must_be_positive(capital):
    with pytest.raises(ValueError, match="positive"):
        Portfolio.new(D(capital))


def test_buy_moves_cash_into_shares_and_pays_commission():
    book = run(buy("CBA.AX", 10, "100.00", "11.00"))
    assert book.cash == D("100000") - D("1000") - D("11")
    position = book.positions["CBA.AX"]
    assert (position.quantity, position.cost_basis, position.avg_cost) == (10, D("1000.00"), D("100.0000"))
    assert book.commissions_paid == D("11.00")
    assert book.realized_pnl == 0


def test_adding_to_a_position_averages_the_cost():
    book = run(buy("CBA.AX", 10, "100"), buy("CBA.AX", 30, "120"))
    position = book.positions["CBA.AX"]
    # (10*100 + 30*120) / 40 = 115
    assert (position.quantity, position.avg_cost) == (40, D("115.0000"))


@pytest.mark.parametrize(
    ("fills", "realized", "net", "left"),
    [
        # Full close at a profit: (110-100)*10 gross; net also pays both commissions.
        ([buy("X", 10, "100", "11"), sell("X", 10, "110", "11.10")], "100.00", "77.90", 0),
        # Full close at a loss.
        ([buy("X", 10, "100", "11"), sell("X", 10, "90", "10.90")], "-100.00", "-121.90", 0),
        # Partial close: 4 of 10 shares take 40% of the cost and of the buy commission.
        ([buy("X", 10, "100", "11"), sell("X", 4, "105", "10.42")], "20.00", "5.18", 6),
        # Cost that does not split evenly: 3 shares cost 100.00, selling 1 removes 33.33.
        ([buy("X", 3, "33.3333", "0"), sell("X", 1, "40", "0")], "6.67", "6.67", 2),
    ],
)
def test_sell_realises_pnl_against_average_cost(fills, realized, net, left):
    book = run(*fills[:-1])
    result = book.apply(fills[-1], NOW)
    assert result.realized_pnl == D(realized)
    assert result.net_pnl == D(net)
    assert result.portfolio.quantity("X") == left


def test_uneven_split_leaves_the_remainder_for_the_last_sale():
    book = run(buy("X", 3, "33.3333"), sell("X", 1, "33.3333"), sell("X", 1, "33.3333"))
    # 99.9999 rounds to 100.00 of cost; 1/3 removes 33.33, then 1/2 of 66.67 removes 33.34
    # (half-up), so exactly 33.33 is left for the last share and nothing goes missing.
    assert book.positions["X"].cost_basis == D("33.33")
    book = book.apply(sell("X", 1, "33.3333"), NOW).portfolio
    assert book.positions == {}
    assert book.cash + book.cost_of_open_positions() == D("100000") + book.realized_pnl


@pytest.mark.parametrize(
    ("fill", "message"),
    [
        (sell("X", 1, "10"), "no short selling"),  # nothing held
        (buy("X", 0, "10"), "positive whole number"),
        (buy("X", 1001, "100"), "more cash"),  # 100,100 > 100,000
    ],
)
def test_fills_that_would_break_the_books_raise(fill, message):
    with pytest.raises(PortfolioError, match=message):
        run(fill)


def test_selling_more_than_held_raises():
    with pytest.raises(PortfolioError, match="5 held"):
        run(buy("X", 5, "10"), sell("X", 6, "10"))


def test_valuation_marks_positions_to_prices():
    book = run(buy("A", 100, "10", "11"), buy("B", 50, "20", "11"))
    marked = value(book, {"A": D("11"), "B": D("19")})
    assert marked.positions_value == D("2050.00")
    assert marked.unrealized_pnl == D("50.00")  # +100 on A, -50 on B
    assert marked.equity == book.cash + D("2050.00")
    assert marked.exposure == (D("2050") / marked.equity).quantize(D("0.000001"))


def test_valuation_refuses_to_guess_missing_prices():
    with pytest.raises(KeyError, match="A"):
        value(run(buy("A", 1, "10")), {})


@pytest.mark.parametrize(
    ("quote", "action", "bps", "expected"),
    [
        ("100", Action.BUY, "0", "100.0000"),
        ("100", Action.BUY, "5", "100.0500"),  # buyer pays up
        ("100", Action.SELL, "5", "99.9500"),  # seller receives less
        ("0.105", Action.BUY, "10", "0.1051"),  # 0.105105 rounds to 4 dp
    ],
)
def test_fill_price_applies_slippage_against_the_trader(quote, action, bps, expected):
    assert fill_price(D(quote), action, D(bps)) == D(expected)


@pytest.mark.parametrize(("quote", "bps"), [("0", "0"), ("-1", "0"), ("10", "-1")])
def test_fill_price_rejects_nonsense(quote, bps):
    with pytest.raises(ValueError):
        fill_price(D(quote), Action.BUY, D(bps))


@pytest.mark.parametrize(
    ("raw", "money", "price"),
    [
        (0.1, "0.10", "0.1000"),  # through str(): no binary float noise
        ("2.675", "2.68", "2.6750"),  # half-up, unlike float round()
        (3, "3.00", "3.0000"),
    ],
)
def test_rounding_helpers(raw, money, price):
    assert to_money(raw) == D(money)
    assert to_price(raw) == D(price)


def test_rounding_helpers_reject_non_finite_and_bool():
    with pytest.raises(ValueError):
        to_money(float("nan"))
    with pytest.raises(TypeError):
        to_money(True)


def test_trade_value_rounds_to_cents():
    assert trade_value(3, D("0.3333")) == D("1.00")


@pytest.mark.parametrize(
    ("positions", "equity", "expected"),
    [("0", "100", "0"), ("80", "100", "0.8"), ("5", "0", "1"), ("0", "0", "0")],
)
def test_exposure_ratio(positions, equity, expected):
    assert exposure_ratio(D(positions), D(equity)) == D(expected)
