"""Intraday prices: intervals, visibility at the boundary, resampling, quotes, the synthetic path,
bid/ask fills and gap-aware exits. Tables of known answers, plus invariants with hypothesis."""

import hashlib
import json
import math
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain.bars import SYDNEY, Bar
from services.domain.intraday import (
    INTERVALS,
    IntradayBar,
    NoIntradayData,
    PricePoint,
    Quote,
    QuoteBar,
    QuoteDiscard,
    asx_close_time,
    bar_end,
    bucket_start,
    interval_seconds,
    last_visible_price,
    quote_from_bars,
    quote_problem,
    regular_close,
    resample,
    session_minutes,
    visible_from,
    visible_intraday,
)
from services.domain.intraday_fills import (
    ExitBasis,
    ExitFill,
    FillBasis,
    bar_exit_fill,
    exit_levels,
    market_fill_price,
    quote_exit_fill,
)
from services.domain.portfolio import ZERO, Action, Position
from services.domain.risk import ExitReason, RiskRules, exit_reason
from services.domain.synthetic_intraday import stable_seed, synthetic_intraday_bars

REPO = Path(__file__).resolve().parents[2]
DAY = date(2026, 3, 2)  # a Monday, AEDT (+11:00)
EARLY = date(2026, 12, 24)  # an ASX early close (14:10)
US = timedelta(microseconds=1)


def sydney(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SYDNEY)


def flat_bar(start: datetime, price: float = 10.0, volume: int = 100) -> IntradayBar:
    return IntradayBar(start, price, price, price, price, volume)


def daily(o, h, lo, c, volume=1_000_000, day=DAY) -> Bar:
    return Bar(day, o, h, lo, c, c, volume)


# --- intervals and the bar ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "seconds"), [("1m", 60), ("5m", 300), ("15m", 900), ("30m", 1800), ("60m", 3600)]
)
def test_interval_seconds(interval, seconds):
    assert interval_seconds(interval) == seconds


@pytest.mark.parametrize("interval", ["2m", "1h", "1d", "", "5M", None, 5])
def test_unknown_interval_is_named(interval):
    with pytest.raises(ValueError, match=f"unknown interval {interval!r}"):
        interval_seconds(interval)


def test_intraday_bar_round_trips_with_its_offset():
    bar = IntradayBar(sydney(DAY, 10, 5), 10.0, 10.5, 9.9, 10.2, 1234)
    wire = bar.to_dict()
    assert wire["start"] == "2026-03-02T10:05:00+11:00"
    assert IntradayBar.from_dict(json.loads(json.dumps(wire))) == bar


def test_intraday_bar_refuses_a_naive_start():
    with pytest.raises(ValueError, match="timezone-aware"):
        IntradayBar(datetime(2026, 3, 2, 10, 0), 1, 1, 1, 1, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        IntradayBar.from_dict(
            {"start": "2026-03-02T10:00:00", "open": 1, "high": 1, "low": 1, "close": 1, "volume": 0}
        )


# --- session minutes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "early", "count", "last", "offset_h"),
    [
        (DAY, False, 360, (15, 59), 11),
        (EARLY, True, 250, (14, 9), 11),  # 10:00-14:10
        (date(2026, 6, 15), False, 360, (15, 59), 10),  # AEST in winter
        (date(2025, 10, 6), False, 360, (15, 59), 11),  # the Monday after DST began (Sunday 2 a.m.)
        (date(2026, 4, 7), False, 360, (15, 59), 10),  # the Tuesday after DST ended
    ],
)
def test_session_minutes(day, early, count, last, offset_h):
    minutes = session_minutes(day, early_close=early)
    assert len(minutes) == count
    assert minutes[0] == sydney(day, 10) and minutes[-1] == sydney(day, *last)
    assert {m.utcoffset() for m in minutes} == {timedelta(hours=offset_h)}
    steps = {(b.astimezone(UTC) - a.astimezone(UTC)) for a, b in pairwise(minutes)}
    assert steps == {timedelta(minutes=1)}


def test_asx_close_time_knows_early_closes():
    assert asx_close_time(EARLY).isoformat() == "14:10:00"
    assert asx_close_time(DAY).isoformat() == "16:00:00"
    assert regular_close(EARLY).isoformat() == "16:00:00"


# --- visibility: no look-ahead ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "interval", "delay_s", "close_of", "visible_at"),
    [
        (sydney(DAY, 10, 0), "1m", 0, regular_close, sydney(DAY, 10, 1)),
        (sydney(DAY, 10, 0), "1m", 1200, regular_close, sydney(DAY, 10, 21)),  # Yahoo's ~20 min
        (sydney(DAY, 10, 5), "5m", 0, regular_close, sydney(DAY, 10, 10)),
        (sydney(DAY, 15, 0), "60m", 0, regular_close, sydney(DAY, 16, 0)),
        (sydney(DAY, 15, 59), "1m", 1200, regular_close, sydney(DAY, 16, 20)),
        # the short last bar of an early close ends at 14:10, not at 15:00...
        (sydney(EARLY, 14, 0), "60m", 0, asx_close_time, sydney(EARLY, 14, 10)),
        (sydney(EARLY, 14, 0), "15m", 900, asx_close_time, sydney(EARLY, 14, 25)),
        # ...unless the caller does not know of it: later, never earlier
        (sydney(EARLY, 14, 0), "60m", 0, regular_close, sydney(EARLY, 15, 0)),
        # a closing-auction bar after the close still ends a full interval after its start
        (sydney(DAY, 16, 10), "1m", 0, regular_close, sydney(DAY, 16, 11)),
        # a start given in UTC is the same instant
        (sydney(DAY, 10, 0).astimezone(UTC), "5m", 60, regular_close, sydney(DAY, 10, 6)),
    ],
)
def test_a_bar_is_visible_from_its_end_plus_delay_and_not_a_microsecond_before(
    start, interval, delay_s, close_of, visible_at
):
    bar = flat_bar(start)
    assert visible_from(bar, interval, delay_s, close_of) == visible_at
    assert visible_intraday([bar], interval, visible_at - US, delay_s, close_of) == []
    assert visible_intraday([bar], interval, visible_at, delay_s, close_of) == [bar]
    # the same instant, asked in UTC
    assert visible_intraday([bar], interval, (visible_at - US).astimezone(UTC), delay_s, close_of) == []


def test_visibility_refuses_a_naive_now_and_a_negative_delay():
    bar = flat_bar(sydney(DAY, 10))
    with pytest.raises(ValueError, match="now"):
        visible_intraday([bar], "1m", datetime(2026, 3, 2, 12, 0))
    with pytest.raises(ValueError, match="delay_s"):
        visible_intraday([bar], "1m", sydney(DAY, 12), delay_s=-1)


def test_last_visible_price_for_a_delayed_source():
    bars = [flat_bar(m, price=10 + i / 100) for i, m in enumerate(session_minutes(DAY))]
    delay = 1200
    # Nothing before the first minute's end plus the delay.
    assert last_visible_price(bars, "1m", sydney(DAY, 10, 21) - US, delay) is None
    # At 10:25 a 20-minute-delayed client knows the minute 10:04-10:05, and it is of 10:05.
    point = last_visible_price(bars, "1m", sydney(DAY, 10, 25), delay)
    assert point == PricePoint(10.04, sydney(DAY, 10, 5).astimezone(UTC))
    # After the session, the last minute's close.
    assert last_visible_price(bars, "1m", sydney(DAY, 18), delay).price == bars[-1].close


# --- resampling -------------------------------------------------------------------------------


def test_resample_aggregates_a_bucket():
    minutes = session_minutes(DAY)[:7]
    rows = [(10, 11, 9.5, 10.5, 100), (10.5, 12, 10, 11, 200), (11, 11, 8, 9, 300), (9, 10, 9, 10, 400),
            (10, 10.2, 9.9, 10.1, 500), (10.1, 10.3, 10, 10.2, 1), (10.2, 10.2, 10.2, 10.2, 2)]  # fmt: skip
    bars = [IntradayBar(m, *row) for m, row in zip(minutes, rows, strict=True)]
    assert resample(bars, "5m") == [
        IntradayBar(sydney(DAY, 10, 0), 10, 12, 8, 10.1, 1500),
        IntradayBar(sydney(DAY, 10, 5), 10.1, 10.3, 10, 10.2, 3),
    ]


def test_resample_aligns_to_the_open_even_when_minutes_are_missing():
    # 10:03 and 10:07 only: one bucket each, starting at 10:00 and 10:05, not at the first minute.
    bars = [flat_bar(sydney(DAY, 10, 3)), flat_bar(sydney(DAY, 10, 7), price=11)]
    assert [b.start for b in resample(bars, "5m")] == [sydney(DAY, 10, 0), sydney(DAY, 10, 5)]
    # out of order in, oldest first out
    assert resample(list(reversed(bars)), "5m") == resample(bars, "5m")


@pytest.mark.parametrize(
    ("day", "early", "interval", "count", "last_start", "last_end"),
    [
        (DAY, False, "5m", 72, (15, 55), (16, 0)),
        (DAY, False, "15m", 24, (15, 45), (16, 0)),
        (DAY, False, "30m", 12, (15, 30), (16, 0)),
        (DAY, False, "60m", 6, (15, 0), (16, 0)),
        (EARLY, True, "5m", 50, (14, 5), (14, 10)),
        (EARLY, True, "15m", 17, (14, 0), (14, 10)),  # short: 10 minutes
        (EARLY, True, "30m", 9, (14, 0), (14, 10)),
        (EARLY, True, "60m", 5, (14, 0), (14, 10)),
    ],
)
def test_resample_a_whole_session(day, early, interval, count, last_start, last_end):
    minutes = session_minutes(day, early_close=early)
    one_minute = synthetic_intraday_bars("CBA.AX", daily(100, 102, 99, 101, day=day), minutes)
    bars = resample(one_minute, interval)
    assert len(bars) == count
    assert bars[-1].start == sydney(day, *last_start)
    assert bar_end(bars[-1], interval, asx_close_time) == sydney(day, *last_end)
    assert (bars[0].open, bars[-1].close) == (one_minute[0].open, one_minute[-1].close)
    assert max(b.high for b in bars) == 102 and min(b.low for b in bars) == 99
    assert sum(b.volume for b in bars) == sum(b.volume for b in one_minute)


def test_resampling_in_steps_equals_resampling_at_once():
    one_minute = synthetic_intraday_bars("NAB.AX", daily(33, 33.6, 32.7, 33.2), session_minutes(DAY))
    assert resample(resample(one_minute, "5m"), "15m", source_interval="5m") == resample(one_minute, "15m")
    assert resample(resample(one_minute, "30m"), "60m", source_interval="30m") == resample(one_minute, "60m")


@pytest.mark.parametrize(("interval", "source"), [("5m", "15m"), ("15m", "60m"), ("1m", "5m"), ("60m", "2m")])
def test_resample_refuses_what_cannot_be_built(interval, source):
    with pytest.raises(ValueError):
        resample([], interval, source_interval=source)


def test_bucket_start_before_the_open_is_its_own_bucket():
    # A pre-open print is not silently merged into the 10:00 bar.
    assert bucket_start(sydney(DAY, 9, 59), "5m") == sydney(DAY, 9, 55)


# --- quotes -----------------------------------------------------------------------------------

QUOTE_KEYS = {"symbol", "price", "bid", "ask", "day_open", "day_high", "day_low", "volume", "previous_close",
              "change", "change_pct", "quote_time", "delay_s", "source", "stale", "stale_reason", "stale_cause", "fallback_reason", "basis",
              "bar"}  # fmt: skip


def day_bars() -> list[IntradayBar]:
    rows = [(50, 51, 49.5, 50.5, 10), (50.5, 52, 50.4, 51.8, 20), (51.8, 51.9, 48, 48.5, 30)]
    return [IntradayBar(m, *r) for m, r in zip(session_minutes(DAY), rows, strict=False)]


def test_quote_from_visible_bars():
    bars = day_bars()
    now = sydney(DAY, 10, 22)  # 20-minute delay: the minutes ending 10:01 and 10:02 are visible
    visible = visible_intraday(bars, "1m", now, 1200)
    assert len(visible) == 2
    quote = quote_from_bars("BHP.AX", visible, 50.0, 1200, "yfinance", now)
    so_far = (quote.price, quote.day_open, quote.day_high, quote.day_low, quote.volume)
    assert so_far == (51.8, 50, 52, 49.5, 30)
    assert (quote.change, quote.change_pct) == (1.8, 3.6)
    assert quote.quote_time == sydney(DAY, 10, 2)  # the end of the minute whose close it is
    assert quote.age_s(now) == 20 * 60
    assert (quote.bid, quote.ask, quote.stale, quote.stale_reason) == (None, None, False, None)
    assert quote_problem(quote, now) is None
    wire = quote.to_dict()
    assert set(wire) == QUOTE_KEYS
    assert wire["quote_time"] == "2026-03-02T10:02:00+11:00"
    # The last visible minute, whose whole range a resting stop order sees.
    assert wire["bar"] == {
        "interval": "1m", "start": "2026-03-02T10:01:00+11:00", "end": "2026-03-02T10:02:00+11:00",
        "open": 50.5, "high": 52, "low": 50.4, "close": 51.8,
    }  # fmt: skip
    assert json.loads(json.dumps(wire)) == wire


def test_a_quote_bar_covers_its_open_and_close_and_ends_after_it_starts():
    # A source's bar with its close above its high (a data error) is widened, never trusted.
    bar = QuoteBar.of("5m", sydney(DAY, 10), sydney(DAY, 10, 5), 50.0, 50.5, 49.8, 50.9)
    assert (bar.low, bar.high) == (49.8, 50.9)
    with pytest.raises(ValueError, match="outside"):
        QuoteBar("5m", sydney(DAY, 10), sydney(DAY, 10, 5), 50.0, 50.5, 49.8, 50.9)
    with pytest.raises(ValueError, match="end after"):
        QuoteBar.of("5m", sydney(DAY, 10, 5), sydney(DAY, 10, 5), 50.0, 50.0, 50.0, 50.0)


def test_quote_without_a_previous_close_has_no_change():
    quote = quote_from_bars("NEW.AX", day_bars()[:1], None, 0, "csv", sydney(DAY, 12))
    assert (quote.previous_close, quote.change, quote.change_pct) == (None, None, None)


def test_quote_refuses_bad_input():
    bars = day_bars()
    with pytest.raises(NoIntradayData):
        quote_from_bars("CBA.AX", [], 50.0, 0, "synthetic", sydney(DAY, 12))
    with pytest.raises(ValueError, match="not visible"):  # the caller looked ahead
        quote_from_bars("CBA.AX", bars, 50.0, 1200, "synthetic", sydney(DAY, 10, 22))
    two_days = [bars[0], flat_bar(sydney(DAY + timedelta(days=1), 10))]
    with pytest.raises(ValueError, match="one session"):
        quote_from_bars("CBA.AX", two_days, 50.0, 0, "synthetic", sydney(DAY, 23))


def test_a_stale_quote_keeps_its_price_and_says_why():
    quote = quote_from_bars("CBA.AX", day_bars(), 50.0, 0, "yfinance", sydney(DAY, 12))
    stale = quote.as_stale("no intraday data since 10:03")
    assert (stale.stale, stale.stale_reason) == (True, "no intraday data since 10:03")
    assert stale.price == quote.price


def quote_at(price: float, at: datetime) -> Quote:
    return Quote("CBA.AX", price, None, None, price, price, price, 0, None, None, None, at, 0, "ig")


NOW = sydney(DAY, 11, 30)


@pytest.mark.parametrize(
    ("price", "quote_time", "problem"),
    [
        (100.0, NOW, None),  # at now exactly: fine
        (100.0, NOW - timedelta(minutes=20), None),
        (100.0, NOW + US, QuoteDiscard.FUTURE_TIME),  # one microsecond ahead is already the future
        (100.0, (NOW + timedelta(seconds=5)).astimezone(UTC), QuoteDiscard.FUTURE_TIME),
        (0.0, NOW, QuoteDiscard.NON_POSITIVE_PRICE),
        (-1.5, NOW, QuoteDiscard.NON_POSITIVE_PRICE),
        (math.nan, NOW, QuoteDiscard.NON_POSITIVE_PRICE),  # NaN is no price either
        (0.0, NOW + US, QuoteDiscard.NON_POSITIVE_PRICE),  # the price is the first thing wrong
    ],
)
def test_quote_problem(price, quote_time, problem):
    assert quote_problem(quote_at(price, quote_time), NOW) == problem


# --- the synthetic path -----------------------------------------------------------------------


def assert_consistent(bars: list[IntradayBar], day: Bar, minutes: list[datetime]) -> None:
    assert [b.start for b in bars] == list(minutes)
    assert bars[0].open == day.open
    assert bars[-1].close == day.close
    assert max(b.high for b in bars) == day.high
    assert min(b.low for b in bars) == day.low
    assert sum(b.volume for b in bars) == day.volume
    for previous, bar in pairwise(bars):
        assert bar.open == previous.close  # one continuous path
    for bar in bars:
        assert isinstance(bar.volume, int) and bar.volume >= 0
        assert bar.low <= min(bar.open, bar.close) and max(bar.open, bar.close) <= bar.high


@pytest.mark.parametrize(
    ("o", "h", "lo", "c"),
    [
        (100, 102, 99, 101),  # an ordinary day
        (10, 10, 10, 10),  # no trade moved the price
        (10, 10.5, 9.5, 10),  # back to the open
        (10, 10, 9.5, 9.8),  # opened at the high
        (10, 10.4, 10, 10.2),  # opened at the low
        (10, 10.4, 9.6, 10.4),  # closed at the high
        (10, 10.4, 9.6, 9.6),  # closed at the low
        (10, 10, 9, 9),  # opened at the high, closed at the low: no room either way
        (9, 10, 9, 10),  # opened at the low, closed at the high
        (0.012, 0.013, 0.011, 0.0125),  # a penny stock
        (7600.1234, 7655.5, 7580.25, 7612.0),  # the index
        (33.123456789, 33.987654321, 32.111111111, 33.5555555),  # more decimals than the grid
        (10.00004, 10.00007, 10.00001, 10.00005),  # a range below the rounding grid
    ],
)
@pytest.mark.parametrize("n", [1, 2, 3, 250, 360])
def test_synthetic_path_matches_the_daily_bar(o, h, lo, c, n):
    day = daily(o, h, lo, c, volume=987_654)
    minutes = session_minutes(DAY)[:n]
    assert_consistent(synthetic_intraday_bars("CBA.AX", day, minutes), day, minutes)


@pytest.mark.parametrize("volume", [0, 1, 359, 360, 361, 10**15 + 7])
def test_synthetic_volume_sums_exactly(volume):
    day = daily(10, 11, 9, 10.5, volume=volume)
    bars = synthetic_intraday_bars("WBC.AX", day, session_minutes(DAY))
    assert sum(b.volume for b in bars) == volume


def test_synthetic_volume_is_heavier_at_the_open_and_close():
    day = daily(10, 11, 9, 10.5, volume=36_000_000)
    volumes = [b.volume for b in synthetic_intraday_bars("ANZ.AX", day, session_minutes(DAY))]
    assert sum(volumes[:30]) > 2 * sum(volumes[165:195])
    assert sum(volumes[-30:]) > 2 * sum(volumes[165:195])


def test_synthetic_path_moves_through_the_day():
    day = daily(100, 102, 98, 101)
    closes = [b.close for b in synthetic_intraday_bars("CBA.AX", day, session_minutes(DAY))]
    assert len(set(closes)) > 100  # a path, not a step from open to close
    assert max(closes) - min(closes) > 2  # it travels most of the range


@st.composite
def daily_bars(draw):
    """Daily bars of every shape, degenerate ones drawn often."""
    low = draw(st.floats(0.01, 5000, allow_nan=False))
    high = draw(st.one_of(st.just(low), st.floats(low, low * 1.3)))
    o = draw(st.one_of(st.sampled_from([low, high]), st.floats(low, high)))
    c = draw(st.one_of(st.sampled_from([low, high, o]), st.floats(low, high)))
    volume = draw(st.one_of(st.just(0), st.integers(0, 10**10)))
    day = draw(st.dates(date(2015, 1, 1), date(2035, 12, 31)))
    return Bar(day, o, high, low, c, c, volume)


@settings(max_examples=200, deadline=None)
@given(
    symbol=st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.^"), min_size=1, max_size=8),
    day=daily_bars(),
    n=st.one_of(st.integers(1, 5), st.sampled_from([250, 360])),
)
def test_synthetic_path_is_consistent_for_any_symbol_and_day(symbol, day, n):
    minutes = session_minutes(day.date)[:n]
    assert_consistent(synthetic_intraday_bars(symbol, day, minutes), day, minutes)


def test_synthetic_path_is_seeded_by_symbol_and_day():
    day = daily(100, 102, 99, 101)
    minutes = session_minutes(DAY)
    path = synthetic_intraday_bars("CBA.AX", day, minutes)
    assert synthetic_intraday_bars("CBA.AX", day, minutes) == path
    assert synthetic_intraday_bars("WBC.AX", day, minutes) != path
    next_day = DAY + timedelta(days=1)
    other_day = synthetic_intraday_bars(
        "CBA.AX", daily(100, 102, 99, 101, day=next_day), session_minutes(next_day)
    )
    assert [b.close for b in other_day] != [b.close for b in path]


def test_synthetic_path_refuses_bad_input():
    minutes = session_minutes(DAY)
    with pytest.raises(ValueError, match="inconsistent daily bar"):
        synthetic_intraday_bars("CBA.AX", daily(10, 9, 8, 9.5), minutes)  # open above the high
    with pytest.raises(ValueError, match="inconsistent daily bar"):
        synthetic_intraday_bars("CBA.AX", daily(0, 0, 0, 0), minutes)
    with pytest.raises(ValueError, match="empty"):
        synthetic_intraday_bars("CBA.AX", daily(10, 11, 9, 10), [])
    with pytest.raises(ValueError, match="not on the daily bar's day"):
        synthetic_intraday_bars("CBA.AX", daily(10, 11, 9, 10), session_minutes(DAY + timedelta(days=1)))


def path_digests() -> dict[str, str]:
    """A digest of the synthetic minutes of a few symbols and days (one a normal, one an early close)."""
    out = {}
    for symbol in ("CBA.AX", "WBC.AX", "^AXJO", "XYZ.AX"):
        for day in (DAY, EARLY):
            bars = synthetic_intraday_bars(
                symbol, daily(100.0, 103.25, 98.5, 101.75, 2_345_678, day), session_minutes(day, day == EARLY)
            )
            text = json.dumps([b.to_dict() for b in bars])
            out[f"{symbol}:{day}"] = hashlib.sha256(text.encode()).hexdigest()
    return out


def path_digests_in_a_process(hash_seed: str) -> dict[str, str]:
    code = "import json; from tests.unit.test_intraday import path_digests; print(json.dumps(path_digests()))"
    # PYTHONPATH: this tree's code, not whichever checkout the virtualenv was installed from.
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout)


def test_synthetic_path_is_identical_in_every_process():
    # Two processes with different string-hash salts, and this one: the same minutes everywhere.
    here = path_digests()
    assert path_digests_in_a_process("1") == path_digests_in_a_process("4242") == here
    assert len(set(here.values())) == len(here)  # every symbol and day has its own path


def test_stable_seed_is_sha256_based():
    assert stable_seed("intraday:CBA.AX:2026-03-02") == int.from_bytes(
        hashlib.sha256(b"intraday:CBA.AX:2026-03-02").digest()[:8], "big"
    )


# --- market fills -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "price", "bid", "ask", "expected", "basis"),
    [
        (Action.BUY, 100, 99.98, 100.02, D("100.02"), FillBasis.ASK),
        (Action.SELL, 100, 99.98, 100.02, D("99.98"), FillBasis.BID),
        (Action.BUY, 100, 100, 100, D("100"), FillBasis.ASK),  # a locked book is still a book
        # one side unknown: the price moves 10 bps against the trader
        (Action.BUY, 100, None, 100.02, D("100.10"), FillBasis.PRICE_PLUS_SLIPPAGE),
        (Action.SELL, 100, 99.98, None, D("99.90"), FillBasis.PRICE_MINUS_SLIPPAGE),
        (Action.BUY, 100, None, None, D("100.10"), FillBasis.PRICE_PLUS_SLIPPAGE),
        (Action.SELL, 100, None, None, D("99.90"), FillBasis.PRICE_MINUS_SLIPPAGE),
        # a crossed or empty book is not trusted
        (Action.BUY, 100, 100.05, 100.01, D("100.10"), FillBasis.PRICE_PLUS_SLIPPAGE),
        (Action.SELL, 100, 0, 100.01, D("99.90"), FillBasis.PRICE_MINUS_SLIPPAGE),
        # JSON floats keep their decimal value (no binary noise), quantised to 0.0001
        (Action.BUY, 0.1, 0.0995, 0.1005, D("0.1005"), FillBasis.ASK),
        (Action.BUY, "28.123456", None, None, D("28.1516"), FillBasis.PRICE_PLUS_SLIPPAGE),
    ],
)
def test_market_fill_price(action, price, bid, ask, expected, basis):
    assert market_fill_price(action, price, bid, ask, D("10")) == (expected, basis)


def test_market_fill_price_refuses_nonsense():
    with pytest.raises(ValueError):
        market_fill_price(Action.BUY, 0, None, None, 10)
    with pytest.raises(ValueError):
        market_fill_price(Action.BUY, 100, None, None, -1)


# --- gap-aware exits --------------------------------------------------------------------------

STOP, TP = D("95"), D("110")


@pytest.mark.parametrize(
    ("open_", "high", "low", "expected"),
    [
        (100, 105, 97, None),  # inside both levels
        (100, 101, 95, ExitFill(ExitReason.STOP_LOSS, D("95"), ExitBasis.LEVEL)),  # touched: triggers
        (100, 101, 90, ExitFill(ExitReason.STOP_LOSS, D("95"), ExitBasis.LEVEL)),  # traded through
        (93, 96, 91, ExitFill(ExitReason.STOP_LOSS, D("93"), ExitBasis.OPEN)),  # gapped through: the open
        (95, 99, 94, ExitFill(ExitReason.STOP_LOSS, D("95"), ExitBasis.OPEN)),  # opened on the stop
        (100, 110, 99, ExitFill(ExitReason.TAKE_PROFIT, D("110"), ExitBasis.LEVEL)),
        (100, 115, 99, ExitFill(ExitReason.TAKE_PROFIT, D("110"), ExitBasis.LEVEL)),
        (112, 114, 111, ExitFill(ExitReason.TAKE_PROFIT, D("112"), ExitBasis.OPEN)),  # gapped up: the open
        (112, 114, 90, ExitFill(ExitReason.TAKE_PROFIT, D("112"), ExitBasis.OPEN)),  # the open comes first
        (92, 114, 90, ExitFill(ExitReason.STOP_LOSS, D("92"), ExitBasis.OPEN)),
        # both touched, no gap: which came first is unknowable, the stop is assumed (conservative)
        (100, 111, 94, ExitFill(ExitReason.STOP_LOSS, D("95"), ExitBasis.LEVEL)),
        (100.00001, 100.00001, 100.00001, None),
    ],
)
def test_bar_exit_fill(open_, high, low, expected):
    assert bar_exit_fill(STOP, TP, open_, high, low) == expected


@pytest.mark.parametrize(
    ("stop", "tp", "bar", "expected"),
    [
        (None, TP, (100, 101, 50), None),  # no stop set
        (STOP, None, (100, 200, 99), None),  # no take-profit set
        (None, None, (100, 200, 1), None),
        (D("95.12345"), None, (100, 101, 90), ExitFill(ExitReason.STOP_LOSS, D("95.1235"), ExitBasis.LEVEL)),
    ],
)
def test_bar_exit_fill_with_missing_levels(stop, tp, bar, expected):
    assert bar_exit_fill(stop, tp, *bar) == expected


@pytest.mark.parametrize(
    ("price", "expected"),
    [
        (100, None),
        (95, ExitFill(ExitReason.STOP_LOSS, D("95"), ExitBasis.QUOTE)),  # on the level: the level
        (93.5, ExitFill(ExitReason.STOP_LOSS, D("93.5"), ExitBasis.QUOTE)),  # gapped: the quote
        (110, ExitFill(ExitReason.TAKE_PROFIT, D("110"), ExitBasis.QUOTE)),
        (111.25, ExitFill(ExitReason.TAKE_PROFIT, D("111.25"), ExitBasis.QUOTE)),
        (95.0001, None),
        (109.9999, None),
    ],
)
def test_quote_exit_fill(price, expected):
    assert quote_exit_fill(STOP, TP, price) == expected


@pytest.mark.parametrize(
    "call",
    [
        lambda: bar_exit_fill(110, 95, 100, 101, 99),  # stop above take-profit
        lambda: bar_exit_fill(95, 110, 100, 99, 98),  # open above the high
        lambda: quote_exit_fill(95, 110, 0),
        lambda: quote_exit_fill(100, 100, 100),
    ],
)
def test_exit_fill_refuses_nonsense(call):
    with pytest.raises(ValueError):
        call()


def test_exit_fill_as_dict():
    assert ExitFill(ExitReason.STOP_LOSS, D("93.5"), ExitBasis.OPEN).as_dict() == {
        "reason": "stop_loss",
        "price": 93.5,
        "basis": "open",
    }


prices = st.decimals(D("1"), D("200"), places=2)


@settings(max_examples=300, deadline=None)
@given(avg_cost=prices, open_=prices, up=prices, down=prices)
def test_bar_exits_never_fill_better_than_the_market_allowed(avg_cost, open_, up, down):
    stop, tp = exit_levels(avg_cost, RiskRules())
    high, low = open_ + up / 10, max(open_ - down / 10, D("0.01"))
    fill = bar_exit_fill(stop, tp, open_, high, low)
    if fill is None:
        assert low > stop and high < tp
        return
    assert low <= fill.price <= high  # a price the bar traded at
    if fill.reason is ExitReason.STOP_LOSS:
        assert fill.price <= stop.quantize(D("0.0001")) and low <= stop
    else:
        assert fill.price >= tp.quantize(D("0.0001")) and high >= tp
        # the stop was not touched first: either the bar opened through the take-profit, or it never fell to the stop
        assert fill.basis is ExitBasis.OPEN or low > stop


@settings(max_examples=300, deadline=None)
@given(avg_cost=prices, price=prices)
def test_quote_exits_trigger_where_the_risk_rule_does(avg_cost, price):
    rules = RiskRules()
    position = Position("CBA.AX", 100, avg_cost * 100, ZERO, NOW)
    stop, tp = exit_levels(position.avg_cost, rules)
    fill = quote_exit_fill(stop, tp, price)
    assert (fill.reason if fill else None) == exit_reason(position, price, rules)
    if fill:
        assert fill.price == price


def test_intervals_are_the_issue_list():
    assert INTERVALS == {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "60m": 3600}
