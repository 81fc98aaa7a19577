"""IG Markets' price formats as the suite's Quote and IntradayBar. Pure: callers pass `now`.

The shapes (shared/EXTERNAL-APIS.md; trading-ig tests/data/markets_epic.json and
historic_prices_num_points.json; field notes from IG's reference as transcribed in
Fuuzetsu/ig-trading-rest):

- GET /markets/{epic} v3 `snapshot`: marketStatus (TRADEABLE, CLOSED, EDITS_ONLY, OFFLINE,
  ON_AUCTION, ON_AUCTION_NO_EDITS, SUSPENDED), bid, offer, high, low (the day's), netChange,
  percentageChange (against the previous close), updateTime ("HH:mm:ss": a wall time without a
  date), delayTime (the price's delay, in minutes).
- GET /prices/{epic} v3 `prices[]`: snapshotTime (account-local "yyyy/MM/dd HH:mm:ss"),
  snapshotTimeUTC ("yyyy-MM-ddTHH:mm:ss", UTC without an offset), openPrice, highPrice, lowPrice,
  closePrice (each {bid, ask, lastTraded}; lastTraded "generally null for non exchange-traded
  instruments") and lastTradedVolume (likewise nullable). A point's time is its bar's start.

Two readings the documents leave open, decided here and named so they can be changed in one place:

- updateTime carries no date and no zone. Other IG times come in pairs, local and UTC (createdDate
  and createdDateUTC, updateTime and updateTimeUTC in /positions), and the session states the
  account's `timezoneOffset`, so updateTime is taken as the account's local wall time: Sydney for
  this suite's Australian account (`tz` says otherwise). Its date is the latest trading day on
  which that wall time is not after `now` (see `update_instant`).
- delayTime is taken in minutes (IG shows ASX prices delayed by 20 minutes to accounts without
  the exchange's live data; the fixtures only ever show 0): DELAY_TIME_UNIT_S.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from services.domain.asx_calendar import is_trading_day as asx_is_trading_day
from services.domain.bars import SYDNEY
from services.domain.intraday import (
    PRICE_DECIMALS,
    CloseTimeOf,
    IntradayBar,
    Quote,
    asx_close_time,
    interval_seconds,
    price_change,
    session_close_at,
    session_day,
    session_open_at,
)

SOURCE = "ig"
TRADEABLE = "TRADEABLE"
# Our interval names -> IG's v3 `resolution` values (the subset the suite serves).
RESOLUTIONS: dict[str, str] = {
    "1m": "MINUTE",
    "5m": "MINUTE_5",
    "15m": "MINUTE_15",
    "30m": "MINUTE_30",
    "60m": "HOUR",
}
INTERVAL_OF_RESOLUTION: dict[str, str] = {
    resolution: interval for interval, resolution in RESOLUTIONS.items()
}
DELAY_TIME_UNIT_S = 60  # snapshot.delayTime is in minutes
# An updateTime this far ahead of `now` is taken as our clock lagging IG's, and the quote is
# stamped `now`; further ahead, the time is a previous day's (not a price from the future).
CLOCK_SKEW_S = 300
MAX_DAYS_BACK = 14  # the longest run of non-trading days (Christmas and New Year) is far shorter


class IgPriceFormatError(ValueError):
    """IG sent something that cannot be priced (no bid, offer or last trade; a malformed time)."""


def resolution_for(interval: str) -> str:
    """IG's resolution for one of our intervals; ValueError naming it (-32602 `interval`)."""
    interval_seconds(interval)  # the same error, naming the interval, for any unknown one
    return RESOLUTIONS[interval]


def interval_for(resolution: str) -> str:
    """Our interval name for one of IG's resolutions; ValueError for one the suite does not serve."""
    if resolution not in INTERVAL_OF_RESOLUTION:
        raise ValueError(f"IG resolution {resolution!r} is not one of {', '.join(INTERVAL_OF_RESOLUTION)}")
    return INTERVAL_OF_RESOLUTION[resolution]


def _require_aware(moment: datetime, what: str) -> None:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {moment!r}")


def _positive(value: Any) -> float | None:
    """A usable price: a positive finite number (IG sends null for a side it does not quote)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _round(price: float) -> float:
    return round(price, PRICE_DECIMALS)


# --- times ------------------------------------------------------------------------------------


def parse_update_time(text: Any) -> time:
    """IG's "HH:mm:ss" (updateTime); IgPriceFormatError for anything else."""
    try:
        if not isinstance(text, str) or len(text) != 8:
            raise ValueError
        return time.fromisoformat(text)
    except ValueError:
        raise IgPriceFormatError(f"updateTime {text!r} is not HH:mm:ss") from None


def update_instant(
    wall_time: time,
    now: datetime,
    tz: tzinfo = SYDNEY,
    is_trading_day: Callable[[date], bool] = asx_is_trading_day,
) -> datetime:
    """The instant of a dateless wall time in `tz`, as of `now`, never after `now` (in `tz`).

    Today's if that is not after now (or after it by no more than CLOCK_SKEW_S, a clock
    difference: then now itself); else the latest earlier trading day's, since the price was
    last updated in an earlier session (09:00 on a Monday with "16:11:30" is Friday's close,
    not Sunday's). Today counts even when it is no trading day, as long as the time is not
    ahead of now: a price updated today was updated today, whatever the calendar says.
    """
    _require_aware(now, "now")
    local_now = now.astimezone(tz)
    today = datetime.combine(local_now.date(), wall_time, tzinfo=tz)
    ahead_s = (today.astimezone(UTC) - now.astimezone(UTC)).total_seconds()
    if ahead_s <= 0:
        return today
    if ahead_s <= CLOCK_SKEW_S:
        return local_now
    day = local_now.date()
    for _ in range(MAX_DAYS_BACK):
        day -= timedelta(days=1)
        if is_trading_day(day):
            return datetime.combine(day, wall_time, tzinfo=tz)
    raise IgPriceFormatError(f"no trading day in the {MAX_DAYS_BACK} days before {local_now.date()}")


def parse_snapshot_time_utc(text: Any) -> datetime:
    """IG's snapshotTimeUTC "yyyy-MM-ddTHH:mm:ss" (UTC, written without an offset) as an aware instant."""
    try:
        if not isinstance(text, str):
            raise ValueError
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise IgPriceFormatError(f"snapshotTimeUTC {text!r} is not yyyy-MM-ddTHH:mm:ss") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# --- the snapshot as a quote ------------------------------------------------------------------


def book_from_snapshot(snapshot: Mapping[str, Any]) -> tuple[float | None, float | None, float | None]:
    """(bid, ask, level) of a snapshot: the sides a fill may use, and the price between them.

    Both sides: the mid. One side only: that side, and the other None. A crossed book (bid above
    offer, which IG's own fixtures show) gives no side to fill at: both None, the mid as level.
    Neither side: level None.
    """
    bid, offer = _positive(snapshot.get("bid")), _positive(snapshot.get("offer"))
    if bid is not None and offer is not None:
        level = _round((bid + offer) / 2)
        return (None, None, level) if bid > offer else (bid, offer, level)
    return bid, offer, bid if bid is not None else offer


def previous_close_from_change(level: float, snapshot: Mapping[str, Any]) -> float | None:
    """The previous close behind IG's netChange (level - netChange), else its percentageChange."""
    net_change = _number(snapshot.get("netChange"))
    if net_change is not None:
        previous = level - net_change
    else:
        percentage = _number(snapshot.get("percentageChange"))
        if percentage is None or percentage <= -100:
            return None
        previous = level / (1 + percentage / 100)
    return _round(previous) if previous > 0 else None


def quote_from_ig_snapshot(
    symbol: str,
    snapshot: Mapping[str, Any],
    now: datetime,
    *,
    last_traded: float | None = None,
    day_open: float | None = None,
    volume: int = 0,
    tz: tzinfo = SYDNEY,
    is_trading_day: Callable[[date], bool] = asx_is_trading_day,
) -> Quote:
    """A Quote from a /markets/{epic} v3 snapshot, as known at `now`.

    price: `last_traded` when the caller has one (the snapshot carries none), else the mid of
    bid and offer (one side when only one is quoted); bid and ask as `book_from_snapshot`.
    previous_close from netChange against that mid (IG's change is on its quote, not on a trade).
    day_high/day_low: the snapshot's high/low (the price when absent). quote_time: updateTime
    (see `update_instant`), never after now. delay_s: delayTime minutes in seconds.
    day_open and volume: the snapshot has neither; the caller passes them from the day's bars,
    else the previous close (the price when unknown) stands in for the open and volume is 0.
    A market that is not TRADEABLE gives a stale quote whose reason names the status.
    Raises IgPriceFormatError when there is nothing to price or the time is malformed.
    """
    _require_aware(now, "now")
    bid, ask, level = book_from_snapshot(snapshot)
    traded = _positive(last_traded)
    if level is None and traded is None:
        raise IgPriceFormatError(f"IG's snapshot for {symbol} has no bid, offer or last trade")
    price = traded if traded is not None else level
    assert price is not None
    previous_close = previous_close_from_change(level if level is not None else price, snapshot)
    change, change_pct = price_change(price, previous_close)
    quote_time = update_instant(parse_update_time(snapshot.get("updateTime")), now, tz, is_trading_day)
    delay_minutes = _number(snapshot.get("delayTime"))
    status = str(snapshot.get("marketStatus") or "UNKNOWN")
    high, low = _positive(snapshot.get("high")), _positive(snapshot.get("low"))
    return Quote(
        symbol=symbol,
        price=_round(price),
        bid=bid,
        ask=ask,
        day_open=_round(day_open if day_open is not None else previous_close or price),
        day_high=high if high is not None else _round(price),
        day_low=low if low is not None else _round(price),
        volume=int(volume),
        previous_close=previous_close,
        change=change,
        change_pct=change_pct,
        quote_time=quote_time,
        delay_s=max(0.0, delay_minutes or 0.0) * DELAY_TIME_UNIT_S,
        source=SOURCE,
        stale=status != TRADEABLE,
        stale_reason=None if status == TRADEABLE else f"IG market status {status}",
    )


# --- price points as bars ---------------------------------------------------------------------


def _level(price: Any) -> float | None:
    """One of a point's prices: the mid of bid and ask, else the side given, else lastTraded."""
    if not isinstance(price, Mapping):
        return None
    bid, ask = _positive(price.get("bid")), _positive(price.get("ask"))
    if bid is not None and ask is not None:
        return _round((bid + ask) / 2)
    if bid is not None or ask is not None:
        return bid if bid is not None else ask
    return _positive(price.get("lastTraded"))


def bar_from_ig_price(point: Mapping[str, Any]) -> IntradayBar | None:
    """One /prices v3 point as a bar starting at its snapshotTimeUTC (shown in Sydney time).

    O/H/L/C are the mids of bid and ask; volume is lastTradedVolume (0 when null). None when a
    price is missing altogether (IG sends nulls for an interval without prices); a malformed
    time raises IgPriceFormatError.
    """
    start = parse_snapshot_time_utc(point.get("snapshotTimeUTC")).astimezone(SYDNEY)
    prices = [_level(point.get(name)) for name in ("openPrice", "highPrice", "lowPrice", "closePrice")]
    if any(p is None for p in prices):
        return None
    open_, high, low, close = (p for p in prices if p is not None)
    volume = _number(point.get("lastTradedVolume"))
    return IntradayBar(
        start=start,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=int(volume) if volume is not None and volume > 0 else 0,
    )


def bars_from_ig_prices(points: Iterable[Mapping[str, Any]]) -> list[IntradayBar]:
    """Bars from /prices points, oldest first, one per start (the later point wins), unpriced ones left out."""
    by_start: dict[datetime, IntradayBar] = {}
    for point in points:
        bar = bar_from_ig_price(point)
        if bar is not None:
            by_start[bar.start.astimezone(UTC)] = bar
    return [by_start[start] for start in sorted(by_start)]


def bar_starts_between(
    after: datetime,
    until: datetime,
    interval: str,
    is_trading_day: Callable[[date], bool] = asx_is_trading_day,
    close_time_of: CloseTimeOf = asx_close_time,
) -> int:
    """How many `interval` bars of ASX sessions start in (after, until]: the points to ask IG for
    to bring bars known up to `after` up to date (IG answers the latest `max` points, and each
    one served costs historical allowance, so the count leaves out nights, weekends, holidays).

    Bars align to each session's 10:00 open and end at its close (early closes included).
    """
    _require_aware(after, "after")
    _require_aware(until, "until")
    step = interval_seconds(interval)
    after_utc, until_utc = after.astimezone(UTC), until.astimezone(UTC)
    count, day = 0, session_day(after)
    while day <= session_day(until):
        if is_trading_day(day):
            open_ = session_open_at(day).astimezone(UTC)
            close = session_close_at(day, close_time_of).astimezone(UTC)
            per_day = math.ceil((close - open_).total_seconds() / step)
            first = 0 if after_utc < open_ else math.floor((after_utc - open_).total_seconds() / step) + 1
            last = min(math.floor((until_utc - open_).total_seconds() / step), per_day - 1)
            count += max(0, last - first + 1)
        day += timedelta(days=1)
    return count
