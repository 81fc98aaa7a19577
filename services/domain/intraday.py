"""Intraday bars and quotes: the value types, intervals, visibility (no look-ahead), resampling.

Pure: no I/O and no clock reads; callers pass `now`. Prices are floats, like the daily `Bar`
(money math on them happens in Decimal, in intraday_fills.py and portfolio.py).

Times: a bar's `start` is an aware datetime; arithmetic on instants is done in UTC, because
Python adds a timedelta to a zoneinfo datetime in wall-clock time (Sydney's DST changes fall at
2-3 a.m. on Sundays, never in a session, but a delay or a comparison must not depend on that).

Alignment: ASX normal trading runs 10:00-16:00 Sydney (14:10 on early-close days), and every
interval's bars are aligned to the 10:00 open, so a day's 60m bars start 10:00, 11:00, ... and
the last bar of an early-close day is short (14:00-14:10). A bar's end is therefore
min(start + interval, that day's close), and that end plus the source's delay is the instant the
bar may be shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from services.domain.asx_calendar import CLOSE_TIME, EARLY_CLOSE_TIME, OPEN_TIME, is_early_close
from services.domain.bars import SYDNEY

# Interval name -> length in seconds (Yahoo's and the RPC's names).
INTERVALS: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "60m": 3600}
PRICE_DECIMALS = 4  # as the daily bars: ASX ticks go to 0.001 below $2, one digit more is noise

# The Sydney wall time a day's session closes; injected so this module needs no calendar.
CloseTimeOf = Callable[[date], time]


def regular_close(day: date) -> time:
    """16:00 on every day: the default when early closes are not known (late, never early)."""
    return CLOSE_TIME


def asx_close_time(day: date) -> time:
    """The ASX close of `day`: 14:10 on early-close days, else 16:00."""
    return EARLY_CLOSE_TIME if is_early_close(day) else CLOSE_TIME


def interval_seconds(interval: str) -> int:
    """Seconds in `interval`, or ValueError naming it (the service answers -32602 `interval`)."""
    if not isinstance(interval, str) or interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}: expected one of {', '.join(INTERVALS)}")
    return INTERVALS[interval]


def _require_aware(moment: datetime, what: str) -> None:
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {moment!r}")


# --- the bar ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntradayBar:
    start: datetime  # aware; the bar covers [start, start + interval) capped at the close
    open: float
    high: float
    low: float
    close: float
    volume: int

    def __post_init__(self) -> None:
        _require_aware(self.start, "an intraday bar's start")

    def to_dict(self) -> dict:
        return {
            "start": self.start.isoformat(),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
        }

    @classmethod
    def from_dict(cls, d: dict) -> IntradayBar:
        """From `to_dict`'s shape; a start without an offset is refused (its instant is unknown)."""
        return cls(
            start=datetime.fromisoformat(str(d["start"])),
            open=float(d["open"]),
            high=float(d["high"]),
            low=float(d["low"]),
            close=float(d["close"]),
            volume=int(d["volume"]),
        )


def session_day(moment: datetime) -> date:
    """The Sydney date an instant belongs to (the session a bar or quote is part of)."""
    _require_aware(moment, "moment")
    return moment.astimezone(SYDNEY).date()


def session_open_at(day: date) -> datetime:
    return datetime.combine(day, OPEN_TIME, tzinfo=SYDNEY)


def session_close_at(day: date, close_time_of: CloseTimeOf = regular_close) -> datetime:
    return datetime.combine(day, close_time_of(day), tzinfo=SYDNEY)


def session_minutes(day: date, early_close: bool = False) -> list[datetime]:
    """The 1-minute bar starts of one ASX session, Sydney-aware: 10:00 to 15:59, or to 14:09.

    360 minutes on a normal day, 250 on an early-close day (10:00-14:10).
    """
    close = EARLY_CLOSE_TIME if early_close else CLOSE_TIME
    first = session_open_at(day)
    count = (datetime.combine(day, close) - datetime.combine(day, OPEN_TIME)) // timedelta(minutes=1)
    # No DST change ever falls inside a session, so wall-clock minute steps are real minutes.
    return [first + timedelta(minutes=i) for i in range(count)]


def bar_end(bar: IntradayBar, interval: str, close_time_of: CloseTimeOf = regular_close) -> datetime:
    """The instant the bar's last trade could be: start + interval, or the close if that is sooner.

    Returned in UTC. A bar that starts at or after the close (e.g. a closing-auction bar some
    sources add at 16:10) ends a full interval after its start.
    """
    start = bar.start.astimezone(UTC)
    end = start + timedelta(seconds=interval_seconds(interval))
    close = session_close_at(session_day(bar.start), close_time_of).astimezone(UTC)
    return close if start < close < end else end


def visible_from(
    bar: IntradayBar, interval: str, delay_s: float, close_time_of: CloseTimeOf = regular_close
) -> datetime:
    """When a client may first see `bar`: its end plus the source's delay (UTC)."""
    if delay_s < 0:
        raise ValueError(f"delay_s must not be negative, got {delay_s}")
    return bar_end(bar, interval, close_time_of) + timedelta(seconds=delay_s)


def visible_intraday(
    bars: Iterable[IntradayBar],
    interval: str,
    now: datetime,
    delay_s: float = 0,
    close_time_of: CloseTimeOf = regular_close,
) -> list[IntradayBar]:
    """The bars a client at `now` may see: each from its end + delay on (at that instant, visible)."""
    _require_aware(now, "now")
    return [bar for bar in bars if visible_from(bar, interval, delay_s, close_time_of) <= now]


@dataclass(frozen=True, slots=True)
class PricePoint:
    price: float
    at: datetime  # the instant the price is of: the end of the bar whose close it is (UTC)


def last_visible_price(
    bars: Sequence[IntradayBar],
    interval: str,
    now: datetime,
    delay_s: float = 0,
    close_time_of: CloseTimeOf = regular_close,
) -> PricePoint | None:
    """The latest price a delayed source lets a client know at `now`, or None before any bar."""
    visible = visible_intraday(bars, interval, now, delay_s, close_time_of)
    if not visible:
        return None
    last = max(visible, key=lambda b: b.start)
    return PricePoint(last.close, bar_end(last, interval, close_time_of))


# --- resampling -------------------------------------------------------------------------------


def bucket_start(moment: datetime, interval: str) -> datetime:
    """The start of the `interval` bar holding `moment`, counted from that day's 10:00 open.

    Sydney-aware. A moment before the open belongs to a bucket before it (nothing is dropped).
    """
    step = timedelta(seconds=interval_seconds(interval))
    anchor = session_open_at(session_day(moment)).astimezone(UTC)
    buckets = (moment.astimezone(UTC) - anchor) // step  # floor, also for a moment before the open
    return (anchor + buckets * step).astimezone(SYDNEY)


def resample(bars: Iterable[IntradayBar], interval: str, source_interval: str = "1m") -> list[IntradayBar]:
    """Finer bars (1m by default) -> `interval` bars aligned to the session open, oldest first.

    Each output bar starts at its bucket's start (even when the bucket's first minute is
    missing) and takes the first open, the highest high, the lowest low, the last close and the
    summed volume of the bars in it. The day's last bucket is short on early-close days; its
    end is what `bar_end` reports.
    """
    target, source = interval_seconds(interval), interval_seconds(source_interval)
    if target < source or target % source:
        raise ValueError(f"cannot resample {source_interval} bars into {interval} bars")
    groups: dict[datetime, list[IntradayBar]] = {}
    for bar in sorted(bars, key=lambda b: b.start.astimezone(UTC)):
        groups.setdefault(bucket_start(bar.start, interval), []).append(bar)
    return [
        IntradayBar(
            start=start,
            open=group[0].open,
            high=max(b.high for b in group),
            low=min(b.low for b in group),
            close=group[-1].close,
            volume=sum(b.volume for b in group),
        )
        for start, group in groups.items()
    ]


# --- quotes -----------------------------------------------------------------------------------


class QuoteDiscard(StrEnum):
    """Why a quote was thrown away (the service counts each in `health`)."""

    FUTURE_TIME = "future_time"
    NON_POSITIVE_PRICE = "non_positive_price"


QUOTE_BASES = ("intraday", "daily_open", "daily_close")


@dataclass(frozen=True, slots=True)
class QuoteBar:
    """The last completed bar behind a quote: the price range traded from `start` to `end`.

    A resting stop or take-profit order is hit by any price in that range, not only by the
    quote's last price, so exits are checked on it (intraday_fills.bar_exit_fill). `interval` is
    an intraday interval, or "1d" for a whole session's daily bar (daily bars only).
    """

    interval: str
    start: datetime
    end: datetime
    open: float
    high: float
    low: float
    close: float

    def __post_init__(self) -> None:
        _require_aware(self.start, "a quote bar's start")
        _require_aware(self.end, "a quote bar's end")
        if not self.start < self.end:
            raise ValueError(f"a quote bar must end after it starts: {self.start} .. {self.end}")
        if not self.low <= min(self.open, self.close) <= max(self.open, self.close) <= self.high:
            raise ValueError(
                f"inconsistent quote bar: open {self.open} close {self.close} outside {self.low}..{self.high}"
            )

    @classmethod
    def of(
        cls,
        interval: str,
        start: datetime,
        end: datetime,
        open_: float,
        high: float,
        low: float,
        close: float,
    ) -> QuoteBar:
        """A quote bar whose range covers its open and close (a source's bar may not: data errors)."""
        return cls(interval, start, end, open_, max(high, open_, close), min(low, open_, close), close)

    def to_dict(self) -> dict:
        return {
            "interval": self.interval,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
        }


class NoIntradayData(ValueError):
    """No visible intraday bar to build a quote from (before the first bar of the day, a holiday)."""


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    price: float
    bid: float | None  # None when the source has no order book (bars, Yahoo)
    ask: float | None
    day_open: float
    day_high: float  # so far today
    day_low: float
    volume: int  # so far today
    previous_close: float | None  # None on a listing's first day
    change: float | None  # price - previous_close
    change_pct: float | None  # percent, e.g. 1.25 for +1.25%
    quote_time: datetime  # the instant of the price itself, never after `now`
    delay_s: float  # how old the price was when fetched, as the source states it
    source: str
    stale: bool = False
    stale_reason: str | None = None
    # Why stale: "unavailable" (the source failed: market data is not arriving) or "no_data" (the
    # source answered, with nothing newer for this symbol: no bar today, a bar it discarded).
    stale_cause: str | None = None
    # Served by the next source because the first one could not price it (e.g. "ig server_error")
    fallback_reason: str | None = None
    # What the price is: "intraday" (a live quote or intraday bars), "daily_open" (daily bars
    # only, during the session: the day's open, known from 10:00) or "daily_close" (daily bars
    # only, once the day's bar is final at 16:10). See QUOTE_BASES.
    basis: str = "intraday"
    # The completed bar the price comes from (None for a snapshot quote such as IG's, and for
    # the day's open when there are daily bars only).
    bar: QuoteBar | None = None

    def __post_init__(self) -> None:
        _require_aware(self.quote_time, "quote_time")
        if self.basis not in QUOTE_BASES:
            raise ValueError(f"unknown quote basis {self.basis!r}: expected one of {', '.join(QUOTE_BASES)}")

    def as_stale(self, reason: str, cause: str = "no_data") -> Quote:
        """This quote kept as the last good one, marked stale with why no newer one came."""
        return replace(self, stale=True, stale_reason=reason, stale_cause=cause)

    def age_s(self, now: datetime) -> float:
        """Seconds from the price's instant to `now` (what the fill-age limit compares)."""
        _require_aware(now, "now")
        return (now - self.quote_time).total_seconds()

    def to_dict(self) -> dict:
        return {
            "symbol": self.symbol,
            "price": self.price,
            "bid": self.bid,
            "ask": self.ask,
            "day_open": self.day_open,
            "day_high": self.day_high,
            "day_low": self.day_low,
            "volume": self.volume,
            "previous_close": self.previous_close,
            "change": self.change,
            "change_pct": self.change_pct,
            "quote_time": self.quote_time.isoformat(),
            "delay_s": self.delay_s,
            "source": self.source,
            "stale": self.stale,
            "stale_reason": self.stale_reason,
            "stale_cause": self.stale_cause,
            "fallback_reason": self.fallback_reason,
            "basis": self.basis,
            "bar": self.bar.to_dict() if self.bar else None,
        }


def price_change(price: float, previous_close: float | None) -> tuple[float | None, float | None]:
    """(change, change_pct) against the previous close, rounded; (None, None) without one."""
    if previous_close is None or not previous_close > 0:
        return None, None
    change = price - previous_close
    return round(change, PRICE_DECIMALS), round(change / previous_close * 100, 4)


def quote_from_bars(
    symbol: str,
    day_bars_visible: Sequence[IntradayBar],
    previous_close: float | None,
    delay_s: float,
    source: str,
    now: datetime,
    *,
    interval: str = "1m",
    close_time_of: CloseTimeOf = regular_close,
    bid: float | None = None,
    ask: float | None = None,
) -> Quote:
    """The quote a client at `now` may have, from today's bars visible at `now` (oldest first).

    price is the last visible close, and quote_time the end of that bar; day high/low/volume
    are over the visible bars. Bars that are not yet visible at `now` are refused, not skipped:
    passing them is a look-ahead bug in the caller. NoIntradayData when there are none.
    """
    _require_aware(now, "now")
    if not day_bars_visible:
        raise NoIntradayData(f"no intraday bar for {symbol} is visible at {now.isoformat()}")
    days = {session_day(b.start) for b in day_bars_visible}
    if len(days) > 1:
        raise ValueError(f"bars of one session expected, got {len(days)} days: {sorted(days)}")
    bars = sorted(day_bars_visible, key=lambda b: b.start.astimezone(UTC))
    last = bars[-1]
    if visible_from(last, interval, delay_s, close_time_of) > now:
        raise ValueError(f"the bar starting {last.start.isoformat()} is not visible at {now.isoformat()}")
    change, change_pct = price_change(last.close, previous_close)
    end = bar_end(last, interval, close_time_of).astimezone(SYDNEY)
    return Quote(
        symbol=symbol,
        price=last.close,
        bid=bid,
        ask=ask,
        day_open=bars[0].open,
        day_high=max(b.high for b in bars),
        day_low=min(b.low for b in bars),
        volume=sum(b.volume for b in bars),
        previous_close=previous_close,
        change=change,
        change_pct=change_pct,
        quote_time=end,
        delay_s=delay_s,
        source=source,
        bar=QuoteBar.of(
            interval, last.start.astimezone(SYDNEY), end, last.open, last.high, last.low, last.close
        ),
    )


def quote_problem(quote: Quote, now: datetime) -> QuoteDiscard | None:
    """Why `quote` must be discarded at `now`, or None when it may be used.

    A quote time after `now` would be a look-ahead (or a source's clock ahead of ours); a price
    that is not positive (zero, negative, NaN) is a source error, never a market price.
    """
    _require_aware(now, "now")
    if not quote.price > 0:  # also catches NaN
        return QuoteDiscard.NON_POSITIVE_PRICE
    if quote.quote_time > now:
        return QuoteDiscard.FUTURE_TIME
    return None
