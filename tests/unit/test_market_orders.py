"""paper-trading's pure order and exit decisions against market-data's quote."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal as D

import pytest

from services.domain.asx_calendar import SYDNEY
from services.domain.intraday_fills import ExitBasis, FillBasis
from services.domain.market_orders import (
    MarketQuote,
    UnusableQuote,
    exit_for,
    order_fill,
    priced_before,
    refusal,
)
from services.domain.portfolio import Action, Position
from services.domain.risk import ExitReason
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
    check = exit_for(position(avg_cost), quote(price=price), RULES)
    if reason is None:
        assert check.fill is None
    else:
        assert check.fill is not None
        assert (check.fill.reason, check.fill.price, check.fill.basis) == (reason, fill, ExitBasis.QUOTE)
    assert check.bar is None and check.checked_to == NOW - timedelta(seconds=60)  # the quote's time


def bar_wire(minute: int, o: float, h: float, lo: float, c: float, interval: str = "5m") -> dict:
    start = NOW + timedelta(minutes=minute)
    return {
        "interval": interval,
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=5)).isoformat(),
        "open": o,
        "high": h,
        "low": lo,
        "close": c,
    }


def bar_quote(minute: int, o: float, h: float, lo: float, c: float) -> MarketQuote:
    return quote(
        price=c,
        quote_time=(NOW + timedelta(minutes=minute + 5)).isoformat(),
        bar=bar_wire(minute, o, h, lo, c),
    )


@pytest.mark.parametrize(
    ("bar", "reason", "fill", "basis"),
    [
        ((99, 101, 96, 100), None, None, None),  # inside both levels: the close alone says nothing more
        ((99, 101, 94, 100), ExitReason.STOP_LOSS, D("95.0000"), ExitBasis.LEVEL),  # traded through
        ((93, 96, 92, 95.5), ExitReason.STOP_LOSS, D("93.0000"), ExitBasis.OPEN),  # opened through
        ((105, 111, 104, 106), ExitReason.TAKE_PROFIT, D("110.0000"), ExitBasis.LEVEL),
        ((96, 111, 94, 100), ExitReason.STOP_LOSS, D("95.0000"), ExitBasis.LEVEL),  # both: the stop
    ],
)
def test_exit_on_the_range_of_the_quotes_bar(bar, reason, fill, basis):
    # The quote's price (the bar's close) is inside the levels, but a resting stop saw the range.
    entry = NOW
    check = exit_for(position("100"), bar_quote(0, *bar), RULES, checked_to=entry)
    assert check.checked_to == NOW + timedelta(minutes=5)  # the bar's end
    if reason is None:
        assert check.fill is None and check.bar is None
    else:
        assert check.fill is not None and check.bar is not None
        assert (check.fill.reason, check.fill.price, check.fill.basis) == (reason, fill, basis)
        assert check.bar.start == NOW


def test_a_bar_from_before_the_checked_instant_is_not_checked_again():
    # The bar that ended at the entry (the entry filled at its close) lies before the position:
    # its low, below the stop, happened while nothing was held.
    before = bar_quote(-5, 99, 101, 90, 100)
    check = exit_for(position("100"), before, RULES, checked_to=NOW)
    assert check.fill is None and check.checked_to == NOW
    # A late quote (older than what has been checked) says nothing new, even through a level.
    late = quote(price=90.0, quote_time=(NOW - timedelta(minutes=1)).isoformat())
    assert exit_for(position("100"), late, RULES, checked_to=NOW).fill is None


def test_skipped_bars_are_checked_oldest_first():
    from services.domain.market_orders import RangeBar, skipped_bar_count

    latest = bar_quote(10, 99, 100, 98, 99)
    assert skipped_bar_count(latest, NOW) == 3  # 11:00 and 11:05 were skipped, then the quote's own
    assert skipped_bar_count(latest, NOW + timedelta(minutes=10)) == 0  # it follows on
    assert skipped_bar_count(quote(), NOW) == 0  # no bar: nothing to fetch by
    length = timedelta(minutes=5)
    skipped = [
        RangeBar.from_wire(bar_wire(0, 99, 100, 98, 99), "5m", length),
        RangeBar.from_wire(bar_wire(5, 99, 99.5, 94.5, 96), "5m", length),  # the stop traded here
    ]
    check = exit_for(position("100"), latest, RULES, checked_to=NOW, bars=[b for b in skipped if b])
    assert check.fill is not None and check.bar is not None
    assert (check.fill.price, check.bar.start) == (D("95.0000"), NOW + timedelta(minutes=5))
    assert check.checked_to == NOW + timedelta(minutes=10)


def test_a_malformed_bar_is_ignored_and_the_price_checked():
    broken = quote(price=94.0, bar={"start": "yesterday", "open": 1})
    assert broken.bar is None
    check = exit_for(position("100"), broken, RULES, checked_to=NOW - timedelta(minutes=5))
    assert check.fill is not None and check.fill.basis == ExitBasis.QUOTE


def test_no_exit_without_a_position():
    assert exit_for(None, quote(price=1.0), RULES).fill is None


# ---- market data silence ------------------------------------------------------------------------


def test_silence_counts_from_the_open_and_names_held_symbols_first():
    from services.domain.market_orders import market_data_silence

    opened = datetime(2024, 6, 17, 10, 0, tzinfo=SYDNEY)
    yesterday = opened - timedelta(hours=18)
    at = opened + timedelta(seconds=200)
    # Yesterday's quotes are not silence until the bound has passed since the open.
    assert market_data_silence(at, opened, {"CBA.AX": yesterday}, ["CBA.AX"], 300) is None
    later = opened + timedelta(seconds=400)
    silence = market_data_silence(later, opened, {"CBA.AX": yesterday}, ["CBA.AX"], 300)
    assert silence is not None and silence.symbols == ("CBA.AX",) and silence.silent_s == 400
    assert "no usable quote for CBA.AX for 400 s (more than 300 s)" in silence.reason
    # Fresh quotes for other symbols do not cover a held one that has none.
    seen = {"WBC.AX": later - timedelta(seconds=5), "NAB.AX": opened + timedelta(seconds=50)}
    silence = market_data_silence(later, opened, seen, ["NAB.AX", "WBC.AX"], 300)
    assert silence is not None and silence.symbols == ("NAB.AX",) and silence.silent_s == 350
    # Nothing held: any usable quote within the bound is market data arriving.
    assert market_data_silence(later, opened, seen, [], 300) is None
    quiet = market_data_silence(later + timedelta(seconds=400), opened, seen, [], 300)
    assert quiet is not None and quiet.symbols == () and quiet.silent_s == 405
    assert quiet.reason == "no usable quote from market-data for 405 s (more than 300 s)"
    assert market_data_silence(later, opened, {}, [], 300) is not None


def test_a_held_symbol_without_a_bar_today_is_not_silence_while_others_trade():
    """The source answering "nothing newer for WBC" (a day without its bar: nothing traded) is
    market data arriving; the feed answering nothing fresh for any symbol is not."""
    from services.domain.market_orders import market_data_silence

    opened = datetime(2019, 11, 4, 10, 0, tzinfo=SYDNEY)
    now = opened + timedelta(seconds=900)
    fresh = {"CBA.AX": now - timedelta(seconds=10)}
    answered = fresh | {"WBC.AX": now - timedelta(seconds=10)}  # stale, cause no_data
    assert market_data_silence(now, opened, fresh, ["WBC.AX"], 300, answered) is None
    silence = market_data_silence(now, opened, {}, ["WBC.AX"], 300, {"WBC.AX": now})
    assert (
        silence is not None and silence.symbols == () and "no usable quote from market-data" in silence.reason
    )
    # Without answered, held symbols are judged on fresh quotes alone (as before).
    assert market_data_silence(now, opened, fresh, ["WBC.AX"], 300) is not None


def test_stale_cause_reaches_the_quote_and_says_whether_the_source_answered():
    base = {"price": 100.0, "quote_time": "2024-06-17T11:00:00+10:00", "source": "csv", "stale": True}
    no_data = MarketQuote.from_wire("WBC.AX", base | {"stale_reason": "no bar", "stale_cause": "no_data"})
    down = MarketQuote.from_wire("WBC.AX", base | {"stale_reason": "timeout", "stale_cause": "unavailable"})
    fresh = MarketQuote.from_wire("WBC.AX", base | {"stale": False})
    older = MarketQuote.from_wire("WBC.AX", base | {"stale_reason": "?"})  # a market-data without the field
    assert (no_data.source_answered, down.source_answered, fresh.source_answered) == (True, False, True)
    assert older.source_answered is False


# ---- a signal on an earlier session's prices ------------------------------------------------


def made_on(basis: str, **market) -> dict:
    """A prediction's inputs as the prediction service stores them (market_data part only)."""
    return {"market_data": {"price_basis": basis, **market}}


def test_a_signal_on_yesterdays_close_is_not_filled_at_todays_quote():
    today = quote()  # 10:59 on 2024-06-12
    why = priced_before(made_on("close", date="2024-06-11"), today)
    assert why == (
        "made on the 2024-06-11 close, before CBA.AX's quote of 2024-06-12T10:59:00+10:00:"
        " a prediction on this session's prices decides"
    )
    # On today's quote, even an earlier one of the session: filled.
    assert priced_before(made_on("quote", quote_time="2024-06-12T10:00:00+10:00"), today) is None
    # A quote of an earlier session (the quote of a day without a bar today): not filled at today's.
    assert "2024-06-11 session's quote" in priced_before(
        made_on("quote", quote_time="2024-06-11T15:55:00+10:00"), today
    )


def test_a_close_of_the_quotes_own_session_or_inputs_it_cannot_read_are_not_judged():
    # A symbol without a bar today: its stale quote is from the day of the close the signal saw.
    stale = quote(quote_time="2024-06-11T10:00:00+10:00", stale=True, stale_cause="no_data")
    assert priced_before(made_on("close", date="2024-06-11"), stale) is None
    for inputs in (
        None,
        {},
        {"market_data": None},
        made_on("close"),
        made_on("close", date="June"),
        made_on("quote", quote_time=None),
        made_on("bar", date="2024-06-11"),
    ):
        assert priced_before(inputs, quote()) is None, inputs
