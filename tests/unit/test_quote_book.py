"""market-data's quote book (last good quote, stale reasons, discards, what changed), the price
basis of get_market_data and its event, and when the quote loop wakes."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.domain.intraday import Quote
from services.domain.quote_book import QuoteBook, in_refresh_window, next_quote_refresh, price_view

SYD = ZoneInfo("Australia/Sydney")


def syd(y, m, d, hh, mm=0, ss=0):
    return datetime(y, m, d, hh, mm, ss, tzinfo=SYD)


def quote(price=10.0, at=None, source="csv") -> Quote:
    return Quote(
        symbol="X.AX",
        price=price,
        bid=None,
        ask=None,
        day_open=9.8,
        day_high=10.5,
        day_low=9.7,
        volume=1000,
        previous_close=9.9,
        change=round(price - 9.9, 4),
        change_pct=round((price - 9.9) / 9.9 * 100, 4),
        quote_time=at or syd(2024, 6, 14, 11),
        delay_s=0,
        source=source,
    )


NOW = syd(2024, 6, 14, 11, 0, 30)


def test_a_new_price_or_time_is_a_change_the_same_quote_is_not():
    book = QuoteBook()
    assert book.record("X.AX", quote(), NOW) is True  # the first quote
    assert book.record("X.AX", quote(), NOW) is False  # refreshed, nothing new
    assert book.record("X.AX", quote(at=syd(2024, 6, 14, 11, 0, 30)), NOW) is True  # a later minute
    assert book.record("X.AX", quote(10.1, at=syd(2024, 6, 14, 11, 0, 30)), NOW) is True  # a new price
    assert book.current("X.AX", NOW) == quote(10.1, at=syd(2024, 6, 14, 11, 0, 30))
    assert book.stale_symbols() == [] and book.failure("X.AX") is None


def test_no_new_quote_keeps_the_last_good_one_marked_stale_until_the_next():
    book = QuoteBook()
    book.record("X.AX", quote(), NOW)
    book.failed("X.AX", "no bars for X.AX on 2024-06-14")
    stale = book.current("X.AX", NOW)
    assert (
        stale.price == 10.0 and stale.stale is True and stale.stale_reason == "no bars for X.AX on 2024-06-14"
    )
    assert stale.stale_cause == "no_data"  # the source answered: nothing newer for X.AX
    assert book.stale_symbols() == ["X.AX"]
    book.failed("X.AX", "Yahoo is down", unavailable=True)
    assert book.current("X.AX", NOW).stale_cause == "unavailable"
    assert book.current("X.AX", NOW).to_dict()["stale_cause"] == "unavailable"
    assert book.record("X.AX", quote(), NOW) is False  # the same quote again: fresh, but no change
    assert book.current("X.AX", NOW).stale is False and book.stale_symbols() == []


def test_a_symbol_that_never_had_a_quote_has_only_its_failure():
    book = QuoteBook()
    book.failed("Y.AX", "Yahoo is down", unavailable=True)
    assert book.current("Y.AX", NOW) is None and book.stale_symbols() == []
    assert book.failure("Y.AX").unavailable is True and book.failure("Y.AX").reason == "Yahoo is down"


@pytest.mark.parametrize(
    ("bad", "reason", "detail"),
    [
        (quote(at=NOW + timedelta(seconds=1)), "future_time", "is after now"),  # a source ahead of our clock
        (quote(0.0), "non_positive_price", "price 0.0"),
        (quote(-1.0), "non_positive_price", "price -1.0"),
        (quote(float("nan")), "non_positive_price", "price nan"),
    ],
)
def test_a_bad_quote_is_discarded_counted_and_leaves_the_last_good_one_stale(bad, reason, detail):
    book = QuoteBook()
    book.record("X.AX", quote(), NOW)
    assert book.record("X.AX", bad, NOW) is False
    assert book.discarded[reason] == 1 and sum(book.discarded.values()) == 1
    kept = book.current("X.AX", NOW)
    assert kept.price == 10.0 and kept.stale is True
    assert reason in kept.stale_reason and detail in kept.stale_reason


def test_discard_counters_start_at_zero_for_every_reason():
    assert dict(QuoteBook().discarded) == {"future_time": 0, "non_positive_price": 0}


def test_a_quote_later_than_now_is_never_served():
    """The suite clock set back (a replay jumping): the book must not leak a later price."""
    book = QuoteBook()
    book.record("X.AX", quote(at=syd(2024, 6, 14, 15)), syd(2024, 6, 14, 15, 1))
    assert book.current("X.AX", syd(2024, 6, 14, 14)) is None
    assert book.current("X.AX", syd(2024, 6, 14, 15)).price == 10.0


CLOSE = {"price": 9.9, "change": 0.1, "change_pct": 1.0}


@pytest.mark.parametrize(
    ("now", "quoted_at", "basis"),
    [
        (syd(2024, 6, 14, 11), syd(2024, 6, 14, 10, 59), "quote"),  # in the session, today's quote
        (syd(2024, 6, 14, 10, 0, 30), syd(2024, 6, 13, 16), "close"),  # open, but only yesterday's quote
        (syd(2024, 6, 14, 9, 59), syd(2024, 6, 13, 16), "close"),  # pre-market
        (syd(2024, 6, 14, 16, 5), syd(2024, 6, 14, 16), "close"),  # after the close
        (syd(2024, 6, 10, 12), syd(2024, 6, 7, 16), "close"),  # a holiday (King's Birthday)
        (syd(2024, 12, 24, 14, 30), syd(2024, 12, 24, 14, 10), "close"),  # after a 14:10 early close
        (syd(2024, 6, 14, 11), None, "close"),  # no quote at all
    ],
)
def test_price_basis(now, quoted_at, basis):
    q = quote(10.4, at=quoted_at) if quoted_at else None
    view = price_view(CLOSE, q, now)
    assert view["price_basis"] == basis
    if basis == "quote":
        assert (view["price"], view["change"], view["change_pct"]) == (10.4, q.change, q.change_pct)
    else:
        assert (view["price"], view["change"], view["change_pct"]) == (9.9, 0.1, 1.0)


def test_a_stale_quote_of_today_is_still_the_basis_in_the_session():
    stale = quote(10.4, at=syd(2024, 6, 14, 10, 30)).as_stale("Yahoo is down")
    assert price_view(CLOSE, stale, syd(2024, 6, 14, 11))["price_basis"] == "quote"


@pytest.mark.parametrize(
    ("now", "every_s", "delay_s", "expected"),
    [
        (syd(2024, 6, 14, 3), 60, 0, syd(2024, 6, 14, 10)),  # night: the open
        (syd(2024, 6, 14, 9, 59, 59), 60, 0, syd(2024, 6, 14, 10)),
        (syd(2024, 6, 14, 10), 60, 0, syd(2024, 6, 14, 10, 1)),  # in the session: every_s later
        (syd(2024, 6, 14, 12, 30, 15), 300, 0, syd(2024, 6, 14, 12, 35, 15)),
        (syd(2024, 6, 14, 15, 59, 30), 60, 0, syd(2024, 6, 14, 16)),  # the close comes first
        (syd(2024, 6, 14, 15, 59, 30), 60, 1200, syd(2024, 6, 14, 16, 0, 30)),  # Yahoo: to 16:20
        (syd(2024, 6, 14, 16, 19, 30), 60, 1200, syd(2024, 6, 14, 16, 20)),  # its last bars show at 16:20
        (syd(2024, 6, 14, 16), 60, 0, syd(2024, 6, 14, 16, 10)),  # then once the day's bar is final
        (syd(2024, 6, 14, 16, 10), 60, 0, syd(2024, 6, 17, 10)),  # the final refresh done: Monday's open
        (syd(2024, 6, 14, 16, 20), 60, 1200, syd(2024, 6, 17, 10)),  # its window covered 16:10
        (syd(2024, 6, 8, 12), 60, 0, syd(2024, 6, 11, 10)),  # Saturday before the King's Birthday
        (syd(2024, 12, 24, 14, 9, 30), 60, 0, syd(2024, 12, 24, 14, 10)),  # an early close at 14:10
        (syd(2024, 12, 24, 14, 10), 60, 0, syd(2024, 12, 24, 16, 10)),  # the day's bar is final at 16:10
        (syd(2024, 12, 24, 16, 10), 60, 0, syd(2024, 12, 27, 10)),  # then after Christmas and Boxing Day
    ],
)
def test_next_quote_refresh(now, every_s, delay_s, expected):
    assert next_quote_refresh(now, every_s, delay_s) == expected


@pytest.mark.parametrize(
    ("moment", "delay_s", "inside"),
    [
        (syd(2024, 6, 14, 9, 59, 59), 0, False),
        (syd(2024, 6, 14, 10), 0, True),
        (syd(2024, 6, 14, 16), 0, True),  # the last bar (15:59-16:00) shows at 16:00: one more refresh
        (syd(2024, 6, 14, 16, 0, 1), 0, False),
        (syd(2024, 6, 14, 16, 10), 0, True),  # the day's bar is final: one refresh for its close
        (syd(2024, 6, 14, 16, 10, 1), 0, False),
        (syd(2024, 6, 14, 16, 20), 1200, True),
        (syd(2024, 6, 14, 16, 20, 1), 1200, False),
        (syd(2024, 6, 15, 12), 0, False),  # Saturday
    ],
)
def test_refresh_window(moment, delay_s, inside):
    assert in_refresh_window(moment, delay_s) is inside
