"""paper-trading's pure order and exit decisions against market-data's quote."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal as D

import pytest

from services.domain.asx_calendar import SYDNEY
from services.domain.intraday_fills import ExitBasis, FillBasis
from services.domain.portfolio import Action, Position
from services.domain.risk import ExitReason
from services.paper_trading.market_orders import MarketQuote, UnusableQuote, exit_for, order_fill, refusal
from services.paper_trading.paper_trading_knobs import PaperTradingKnobs

NOW = datetime(2024, 6, 12, 11, 0, tzinfo=SYDNEY)
RULES = PaperTradingKnobs().risk_rules()  # stop 5%, take-profit 10%


def wire(**overrides) -> dict:
    """get_quote's reply shape (csv/synthetic/yfinance: no book)."""
    return {
        "symbol": "CBA.AX",
        "price": 100.0,
        "bid": None,
        "ask": None,
        "quote_time": (NOW - timedelta(seconds=60)).isoformat(),
        "delay_s": 0.0,
        "source": "synthetic",
        "stale": False,
        "stale_reason": None,
    } | overrides


def quote(**overrides) -> MarketQuote:
    return MarketQuote.from_wire("CBA.AX", wire(**overrides))


def position(avg_cost: str, quantity: int = 10) -> Position:
    return Position("CBA.AX", quantity, D(avg_cost) * quantity, D(11), NOW)


def test_from_wire_reads_money_as_decimal_without_float_noise():
    q = quote(price=0.1, bid=0.095, ask=0.105)
    assert (q.price, q.bid, q.ask) == (D("0.1"), D("0.095"), D("0.105"))
    assert q.quote_time == NOW - timedelta(seconds=60)
    assert q.as_record() == {
        "quote_price": 0.1,
        "quote_bid": 0.095,
        "quote_ask": 0.105,
        "quote_time": (NOW - timedelta(seconds=60)).isoformat(),
        "quote_delay_s": 0.0,
        "quote_source": "synthetic",
        "quote_stale": False,
        "quote_basis": "intraday",
    }


def test_a_daily_only_quote_is_recorded_with_its_basis():
    # With daily bars only, market-data quotes the day's open: the fill says so.
    assert quote(basis="daily_open").as_record()["quote_basis"] == "daily_open"


@pytest.mark.parametrize(
    "overrides",
    [
        {"price": 0},
        {"price": -1.0},
        {"price": None},
        {"price": True},  # a bool is not a price
        {"quote_time": None},
        {"quote_time": "2024-06-12T11:00:00"},  # no offset: the instant is unknown
    ],
)
def test_from_wire_refuses_what_cannot_be_filled_at(overrides):
    with pytest.raises(UnusableQuote):
        quote(**overrides)


def test_from_wire_refuses_a_missing_quote():
    with pytest.raises(UnusableQuote):
        MarketQuote.from_wire("CBA.AX", None)


@pytest.mark.parametrize(
    ("overrides", "max_age_s", "says"),
    [
        ({}, 1500, None),
        ({"quote_time": (NOW - timedelta(seconds=1500)).isoformat()}, 1500, None),  # at the limit: usable
        ({"quote_time": (NOW - timedelta(seconds=1501)).isoformat()}, 1500, "1501 s old"),
        ({"quote_time": (NOW - timedelta(seconds=2700)).isoformat()}, 1500, "2700 s old"),
        ({"stale": True, "stale_reason": "no 5m bars today"}, 1500, "stale: no 5m bars today"),
        ({"quote_time": (NOW + timedelta(seconds=5)).isoformat()}, 1500, "in the future"),
    ],
)
def test_refusal_names_the_age_or_the_stale_reason(overrides, max_age_s, says):
    reason = refusal(quote(**overrides), NOW, max_age_s)
    assert reason is None if says is None else says in (reason or "")


@pytest.mark.parametrize(
    ("action", "bid", "ask", "price", "basis"),
    [
        (Action.BUY, None, None, D("100.05"), FillBasis.PRICE_PLUS_SLIPPAGE),  # 5 bps against the buyer
        (Action.SELL, None, None, D("99.95"), FillBasis.PRICE_MINUS_SLIPPAGE),
        (Action.BUY, 99.98, 100.02, D("100.02"), FillBasis.ASK),
        (Action.SELL, 99.98, 100.02, D("99.98"), FillBasis.BID),
        (Action.BUY, 99.98, None, D("100.05"), FillBasis.PRICE_PLUS_SLIPPAGE),  # one-sided book: not used
        (Action.BUY, 100.02, 99.98, D("100.05"), FillBasis.PRICE_PLUS_SLIPPAGE),  # crossed book: not used
    ],
)
def test_order_fill_at_the_book_else_with_slippage(action, bid, ask, price, basis):
    assert order_fill(action, quote(bid=bid, ask=ask), D(5)) == (price, basis)


@pytest.mark.parametrize(
    ("avg_cost", "price", "reason", "fill"),
    [
        ("100", 95.01, None, None),  # above the stop (95.00)
        ("100", 95.0, ExitReason.STOP_LOSS, D("95.0000")),  # touches the stop: fills at the level
        ("100", 93.5, ExitReason.STOP_LOSS, D("93.5000")),  # gapped through: fills at the quote
        ("100", 109.99, None, None),
        ("100", 110.0, ExitReason.TAKE_PROFIT, D("110.0000")),
        ("100", 112.0, ExitReason.TAKE_PROFIT, D("112.0000")),  # gapped up: the better price
    ],
)
def test_exit_for_a_position_on_a_quote(avg_cost, price, reason, fill):
    exit_fill = exit_for(position(avg_cost), quote(price=price), RULES)
    if reason is None:
        assert exit_fill is None
    else:
        assert exit_fill is not None
        assert (exit_fill.reason, exit_fill.price, exit_fill.basis) == (reason, fill, ExitBasis.QUOTE)


def test_no_exit_without_a_position():
    assert exit_for(None, quote(price=1.0), RULES) is None
