"""IG's snapshot and price points as Quote and IntradayBar (services/domain/ig_quotes.py): pure tables."""

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from services.domain.ig_quotes import (
    CLOCK_SKEW_S,
    RESOLUTIONS,
    IgPriceFormatError,
    bar_from_ig_price,
    bar_starts_between,
    bars_from_ig_prices,
    interval_for,
    parse_update_time,
    quote_from_ig_snapshot,
    resolution_for,
    update_instant,
)
from services.domain.intraday import INTERVALS, quote_problem
from tests.unit._ig_helpers import market_snapshot, price_point

SYDNEY = ZoneInfo("Australia/Sydney")


def syd(*args: int) -> datetime:
    return datetime(*args, tzinfo=SYDNEY)


# --- intervals and resolutions ------------------------------------------------------------------


def test_every_interval_the_suite_serves_has_an_ig_resolution_and_back():
    assert set(RESOLUTIONS) == set(INTERVALS)
    assert [resolution_for(i) for i in ("1m", "5m", "15m", "30m", "60m")] == [
        "MINUTE",
        "MINUTE_5",
        "MINUTE_15",
        "MINUTE_30",
        "HOUR",
    ]
    assert all(interval_for(resolution_for(i)) == i for i in INTERVALS)


@pytest.mark.parametrize("interval", ["1h", "MINUTE_5", "", "2m"])
def test_an_unknown_interval_is_named(interval):
    with pytest.raises(ValueError, match="interval"):
        resolution_for(interval)


@pytest.mark.parametrize("resolution", ["DAY", "MINUTE_2", "5m"])
def test_a_resolution_the_suite_does_not_serve_is_refused(resolution):
    with pytest.raises(ValueError, match="resolution"):
        interval_for(resolution)


# --- updateTime: a wall time without a date ------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "update_time", "expected"),
    [
        # in the session: today's time
        (syd(2026, 3, 3, 11, 30, 5), "11:30:00", syd(2026, 3, 3, 11, 30, 0)),
        (syd(2026, 3, 3, 11, 30, 5), "11:30:05", syd(2026, 3, 3, 11, 30, 5)),  # exactly now
        # a little ahead of now is IG's clock ahead of ours: stamped now, never later
        (syd(2026, 3, 3, 11, 30, 5), "11:32:00", syd(2026, 3, 3, 11, 30, 5)),
        (syd(2026, 3, 3, 11, 30, 0), "11:35:00", syd(2026, 3, 3, 11, 30, 0)),  # 300 s: still skew
        (syd(2026, 3, 3, 11, 30, 0), "11:35:01", syd(2026, 3, 2, 11, 35, 1)),  # 301 s: yesterday's
        # before the open, yesterday's close
        (syd(2026, 3, 3, 9, 0), "16:11:30", syd(2026, 3, 2, 16, 11, 30)),
        # Monday before the open: Friday's close, not Sunday's
        (syd(2026, 3, 2, 9, 0), "16:11:30", syd(2026, 2, 27, 16, 11, 30)),
        # just after midnight: "23:59:59" is last night, "00:00:10" is tonight
        (syd(2026, 3, 4, 0, 0, 30), "23:59:59", syd(2026, 3, 3, 23, 59, 59)),
        (syd(2026, 3, 4, 0, 0, 30), "00:00:10", syd(2026, 3, 4, 0, 0, 10)),
        # after Easter (Good Friday 3 April, Easter Monday 6 April 2026) and across the end of
        # daylight saving (5 April): Thursday's close, at Thursday's offset (+11:00)
        (syd(2026, 4, 7, 9, 0), "16:10:00", syd(2026, 4, 2, 16, 10)),
        (syd(2026, 4, 7, 10, 30), "10:15:00", syd(2026, 4, 7, 10, 15)),  # +10:00 by then
        # `now` in UTC on the previous calendar day: the date is Sydney's (3 March), not UTC's
        (datetime(2026, 3, 2, 23, 30, tzinfo=UTC), "10:15:00", syd(2026, 3, 3, 10, 15)),
        # a Saturday: a time already passed today is today's, whatever the calendar says
        (syd(2026, 3, 7, 11, 0), "10:00:00", syd(2026, 3, 7, 10, 0)),
    ],
)
def test_update_instant(now, update_time, expected):
    instant = update_instant(parse_update_time(update_time), now)
    assert instant == expected
    assert instant.utcoffset() == expected.utcoffset()
    assert instant <= now


def test_the_skew_allowance_is_five_minutes():
    assert CLOCK_SKEW_S == 300


def test_update_instant_with_another_zone_and_calendar():
    london = ZoneInfo("Europe/London")
    now = datetime(2026, 3, 3, 0, 30, tzinfo=UTC)  # 00:30 in London, 11:30 in Sydney
    every_day = lambda d: True  # noqa: E731
    assert update_instant(time(23, 0), now, london, every_day) == datetime(2026, 3, 2, 23, 0, tzinfo=london)
    assert update_instant(time(0, 15), now, london, every_day) == datetime(2026, 3, 3, 0, 15, tzinfo=london)


@pytest.mark.parametrize(
    "text", ["11:30", "11:30:00.000", "25:00:00", "", None, 113000, "2026-03-03T11:30:00"]
)
def test_a_malformed_update_time_is_refused(text):
    with pytest.raises(IgPriceFormatError, match="updateTime"):
        parse_update_time(text)


# --- the snapshot as a quote ---------------------------------------------------------------------

NOW = syd(2026, 3, 3, 11, 30, 20)


@pytest.mark.parametrize(
    ("changes", "last_traded", "price", "bid", "ask", "previous_close", "change"),
    [
        # mid of bid and offer; previous close = mid - netChange
        ({}, None, 100.01, 100.0, 100.02, 99.5, 0.51),
        # a last trade, when the caller has one, is the price; the change stays on IG's mid
        ({}, 100.05, 100.05, 100.0, 100.02, 99.5, 0.55),
        # crossed book (bid above offer, as in trading-ig's positions_v2.json): no side to fill at
        ({"bid": 100.05, "offer": 100.01}, None, 100.03, None, None, 99.52, 0.51),
        # one-sided books: the side quoted is the price, the other side None
        ({"offer": None}, None, 100.0, 100.0, None, 99.49, 0.51),
        ({"bid": None}, None, 100.02, None, 100.02, 99.51, 0.51),
        ({"bid": 0.0}, None, 100.02, None, 100.02, 99.51, 0.51),  # a zero side is no quote
        # no netChange: the percentage gives the previous close
        ({"net_change": None, "percentage_change": 1.0}, None, 100.01, 100.0, 100.02, 99.0198, 0.9902),
        # neither: no previous close, no change
        ({"net_change": None, "percentage_change": None}, None, 100.01, 100.0, 100.02, None, None),
    ],
)
def test_quote_prices(changes, last_traded, price, bid, ask, previous_close, change):
    quote = quote_from_ig_snapshot("CBA.AX", market_snapshot(**changes), NOW, last_traded=last_traded)
    assert (quote.price, quote.bid, quote.ask) == (price, bid, ask)
    assert (quote.previous_close, quote.change) == (previous_close, change)
    assert quote_problem(quote, NOW) is None


def test_a_quote_in_full():
    quote = quote_from_ig_snapshot(
        "CBA.AX", market_snapshot(delay_time=20), NOW, day_open=99.8, volume=123_456
    )
    assert quote.to_dict() == {
        "symbol": "CBA.AX",
        "price": 100.01,
        "bid": 100.0,
        "ask": 100.02,
        "day_open": 99.8,
        "day_high": 101.5,
        "day_low": 99.2,
        "volume": 123_456,
        "previous_close": 99.5,
        "change": 0.51,
        "change_pct": 0.5126,
        "quote_time": "2026-03-03T11:30:00+11:00",
        "delay_s": 1200.0,  # delayTime is minutes
        "source": "ig",
        "stale": False,
        "stale_reason": None,
        "stale_cause": None,
        "fallback_reason": None,
        "basis": "intraday",
        "bar": None,  # a snapshot: one price, no range behind it
    }


@pytest.mark.parametrize("status", ["CLOSED", "EDITS_ONLY", "OFFLINE", "ON_AUCTION", "SUSPENDED"])
def test_a_market_not_tradeable_gives_a_stale_quote_naming_its_status(status):
    quote = quote_from_ig_snapshot("CBA.AX", market_snapshot(market_status=status), NOW)
    assert (quote.stale, quote.stale_reason) == (True, f"IG market status {status}")
    assert quote.price == 100.01  # still the last price IG had


def test_what_the_snapshot_lacks():
    quote = quote_from_ig_snapshot(
        "CBA.AX", market_snapshot(high=None, low=None, delay_time=None, net_change=None), NOW
    )
    assert (quote.day_high, quote.day_low) == (100.01, 100.01)  # the price stands in
    assert quote.delay_s == 0.0
    # no open and no volume in a snapshot: the previous close stands in for the open, volume 0
    assert (quote.day_open, quote.volume) == (quote.previous_close, 0) == (99.5025, 0)  # 100.01 / 1.0051


def test_yesterdays_update_time_gives_yesterdays_quote_time():
    quote = quote_from_ig_snapshot(
        "CBA.AX", market_snapshot(update_time="16:11:30", market_status="CLOSED"), syd(2026, 3, 3, 9, 0)
    )
    assert quote.quote_time == syd(2026, 3, 2, 16, 11, 30)
    assert quote.age_s(syd(2026, 3, 3, 9, 0)) == 60_510


@pytest.mark.parametrize(
    "changes",
    [
        {"bid": None, "offer": None},
        {"bid": 0, "offer": -1},
        {"bid": "100", "offer": None},  # a string is no price
    ],
)
def test_nothing_to_price_is_an_error(changes):
    with pytest.raises(IgPriceFormatError, match="no bid, offer or last trade"):
        quote_from_ig_snapshot("CBA.AX", market_snapshot(**changes), NOW)


def test_a_snapshot_without_a_time_is_an_error():
    with pytest.raises(IgPriceFormatError, match="updateTime"):
        quote_from_ig_snapshot("CBA.AX", market_snapshot(update_time=None), NOW)


# --- price points as bars ------------------------------------------------------------------------

# trading-ig's tests/data/historic_prices_num_points.json, first point, verbatim
FIXTURE_POINT = {
    "snapshotTime": "2020/08/10 00:00:00",
    "snapshotTimeUTC": "2020-08-09T23:00:00",
    "openPrice": {"bid": 2028.0, "ask": 2028.0, "lastTraded": None},
    "closePrice": {"bid": 1953.7, "ask": 1953.7, "lastTraded": None},
    "highPrice": {"bid": 2060.5, "ask": 2061.1, "lastTraded": None},
    "lowPrice": {"bid": 1874.3, "ask": 1874.9, "lastTraded": None},
    "lastTradedVolume": 1196283,
}


def point_with(**changes) -> dict:
    return FIXTURE_POINT | changes


@pytest.mark.parametrize(
    ("point", "ohlcv"),
    [
        (FIXTURE_POINT, (2028.0, 2060.8, 1874.6, 1953.7, 1196283)),  # mids
        (point_with(lastTradedVolume=None), (2028.0, 2060.8, 1874.6, 1953.7, 0)),  # no volume: 0
        # one side missing: the other side; no side: the last trade
        (point_with(highPrice={"bid": 2060.5, "ask": None, "lastTraded": None}), (2028.0, 2060.5, 1874.6, 1953.7, 1196283)),
        (point_with(closePrice={"bid": None, "ask": None, "lastTraded": 1950.0}), (2028.0, 2060.8, 1874.6, 1950.0, 1196283)),
    ],
)  # fmt: skip
def test_bar_from_ig_price(point, ohlcv):
    bar = bar_from_ig_price(point)
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == ohlcv
    # snapshotTimeUTC has no offset and is UTC; the bar starts there, shown in Sydney time
    assert bar.start == datetime(2020, 8, 9, 23, 0, tzinfo=UTC)
    assert bar.start.isoformat() == "2020-08-10T09:00:00+10:00"


def test_a_point_without_prices_is_left_out():
    empty = {"bid": None, "ask": None, "lastTraded": None}
    assert bar_from_ig_price(point_with(openPrice=empty)) is None
    assert bar_from_ig_price(point_with(lowPrice=None)) is None


@pytest.mark.parametrize("when", ["2020/08/10 00:00:00", None, "yesterday"])
def test_a_malformed_point_time_is_an_error(when):
    with pytest.raises(IgPriceFormatError, match="snapshotTimeUTC"):
        bar_from_ig_price(point_with(snapshotTimeUTC=when))


def test_bars_are_oldest_first_one_per_start():
    first = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
    later = datetime(2026, 3, 2, 23, 5, tzinfo=UTC)
    points = [
        price_point(later, 101, 102, 100, 101.5),
        price_point(first, 100, 101, 99, 100.5),
        price_point(later, 101, 102.5, 100, 102),  # IG's later answer for the same bar wins
        point_with(snapshotTimeUTC="2026-03-02T23:10:00", openPrice=None),  # no prices: left out
    ]
    bars = bars_from_ig_prices(points)
    assert [(b.start.isoformat(), b.close) for b in bars] == [
        ("2026-03-03T10:00:00+11:00", 100.5),
        ("2026-03-03T10:05:00+11:00", 102.0),
    ]


# --- how many bars IG can have added since the last one known ---------------------------------


@pytest.mark.parametrize(
    ("after", "until", "interval", "count"),
    [
        (syd(2026, 3, 3, 10, 0), syd(2026, 3, 3, 10, 30), "5m", 6),  # 10:05 ... 10:30
        (syd(2026, 3, 3, 10, 0), syd(2026, 3, 3, 10, 34, 59), "5m", 6),  # 10:35 not started yet
        (syd(2026, 3, 3, 10, 0), syd(2026, 3, 3, 10, 0), "5m", 0),
        (syd(2026, 3, 3, 9, 0), syd(2026, 3, 3, 10, 0), "5m", 1),  # the open's own bar
        (syd(2026, 3, 3, 10, 2), syd(2026, 3, 3, 10, 7), "5m", 1),  # `after` inside a bar: the next one
        # overnight: yesterday's last 5m bar (15:55) to today 10:12 -> 10:00, 10:05, 10:10
        (syd(2026, 3, 2, 15, 55), syd(2026, 3, 3, 10, 12), "5m", 3),
        # a whole session: 72 five-minute bars, 6 hours (the last 15:00-16:00), 360 minutes
        (syd(2026, 3, 2, 16, 0), syd(2026, 3, 3, 17, 0), "5m", 72),
        (syd(2026, 3, 2, 16, 0), syd(2026, 3, 3, 17, 0), "60m", 6),
        (syd(2026, 3, 2, 16, 0), syd(2026, 3, 3, 17, 0), "1m", 360),
        # Friday 15:55 to Monday 10:07: the weekend has no bars
        (syd(2026, 2, 27, 15, 55), syd(2026, 3, 2, 10, 7), "5m", 2),
        # Easter: Thursday's close to Tuesday 10:00 (Good Friday and Easter Monday closed)
        (syd(2026, 4, 2, 15, 55), syd(2026, 4, 7, 10, 0), "5m", 1),
        # Christmas Eve closes at 14:10: 10:00 ... 14:00, the last bar short (14:00-14:10)
        (syd(2026, 12, 23, 16, 0), syd(2026, 12, 24, 16, 0), "60m", 5),
        (syd(2026, 12, 23, 16, 0), syd(2026, 12, 24, 16, 0), "30m", 9),
    ],
)
def test_bar_starts_between(after, until, interval, count):
    assert bar_starts_between(after, until, interval) == count
