"""Daily OHLCV bars: the value type, its wire form, visibility (no look-ahead) and cleaning.

Pure: no I/O and no clock reads. Callers pass `now` and, where a calendar matters, an
`is_trading_day(date) -> bool` callable, so this module does not depend on any calendar.

Cleaning turns raw rows in Yahoo's export shape (strings or numbers, possibly `null`/NaN)
into bars and a `CleaningReport` saying what was dropped and why; the data-quality score
reads that report. Both the CSV and the yfinance sources go through the same cleaner.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

SYDNEY = ZoneInfo("Australia/Sydney")
# ASX closing single price auction finishes ~16:10; a daily bar is final (and visible) from then.
BAR_VISIBLE_AT = time(16, 10)
_NULLS = frozenset({"", "null", "nan", "none", "n/a"})

IsTradingDay = Callable[[date], bool]
# A daily bar dated outside these is a typo, not history (the ASX opened in 1987): dropped as
# invalid, so one such row cannot stretch the missing-session scan over centuries.
FIRST_BAR_DATE = date(1980, 1, 1)
LAST_BAR_DATE = date(2099, 12, 31)
RawRow = Sequence[object]  # (date, open, high, low, close, adj_close, volume)


@dataclass(frozen=True, slots=True)
class Bar:
    date: date
    open: float
    high: float
    low: float
    close: float
    adj_close: float
    volume: int


def bar_to_dict(bar: Bar) -> dict:
    return {
        "date": bar.date.isoformat(),
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "adj_close": bar.adj_close,
        "volume": bar.volume,
    }


def bar_from_dict(d: dict) -> Bar:
    return Bar(
        date=date.fromisoformat(d["date"]),
        open=float(d["open"]),
        high=float(d["high"]),
        low=float(d["low"]),
        close=float(d["close"]),
        adj_close=float(d.get("adj_close", d["close"])),
        volume=int(d["volume"]),
    )


def weekday_calendar(d: date) -> bool:
    """Fallback calendar (Mon-Fri) for callers that have no exchange calendar."""
    return d.weekday() < 5


# --- visibility: no look-ahead --------------------------------------------------------------


def bar_visible_from(d: date) -> datetime:
    """The instant the bar dated `d` becomes final: that day's 16:10 in Sydney."""
    return datetime.combine(d, BAR_VISIBLE_AT, tzinfo=SYDNEY)


def last_visible_date(now: datetime) -> date:
    """The latest bar date that may be served at `now` (today once past 16:10 Sydney)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    local = now.astimezone(SYDNEY)
    return local.date() if local.time() >= BAR_VISIBLE_AT else local.date() - timedelta(days=1)


def visible_bars(bars: Sequence[Bar], now: datetime) -> list[Bar]:
    """The bars a client at `now` may see: nothing dated after now, and today's only after the close."""
    cutoff = last_visible_date(now)
    return [bar for bar in bars if bar.date <= cutoff]


def latest_session(now: datetime, is_trading_day: IsTradingDay) -> date:
    """The most recent trading day whose bar is visible at `now` (what fresh data should reach)."""
    d = last_visible_date(now)
    for _ in range(31):  # never more than a long holiday away; bounds a broken calendar
        if is_trading_day(d):
            return d
        d -= timedelta(days=1)
    raise ValueError(f"no trading day in the 31 days up to {d + timedelta(days=31)}")


def trading_days_between(start: date, end: date, is_trading_day: IsTradingDay) -> list[date]:
    """Trading days in [start, end], inclusive."""
    days: list[date] = []
    for year in range(start.year, end.year + 1):
        of_year = _trading_days_of_year(is_trading_day, year)
        first = bisect_left(of_year, start) if year == start.year else 0
        last = bisect_right(of_year, end) if year == end.year else len(of_year)
        days.extend(of_year[first:last])
    return days


@lru_cache(maxsize=512)
def _trading_days_of_year(is_trading_day: IsTradingDay, year: int) -> tuple[date, ...]:
    # Cached by calendar and year (a calendar is a pure function of the date): the cleaner asks
    # for every session between a file's first and last bar each time it reads the file, and a
    # span of decades would otherwise cost one calendar call per day per read.
    first, last = date(year, 1, 1).toordinal(), date(year, 12, 31).toordinal()
    return tuple(filter(is_trading_day, map(date.fromordinal, range(first, last + 1))))


# --- cleaning ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CleaningReport:
    """What the cleaner dropped, by reason, and which sessions are absent. Dates sorted."""

    rows_read: int = 0
    null_rows: tuple[date, ...] = ()
    non_trading_days: tuple[date, ...] = ()
    filler_rows: tuple[date, ...] = ()
    invalid_rows: tuple[str, ...] = ()  # unparseable or inconsistent; kept as text (the date may be bad)
    duplicate_dates: tuple[date, ...] = ()
    missing_sessions: tuple[date, ...] = ()  # trading days between first and last bar with no row

    @property
    def dropped_count(self) -> int:
        return (
            len(self.null_rows)
            + len(self.non_trading_days)
            + len(self.filler_rows)
            + len(self.invalid_rows)
            + len(self.duplicate_dates)
        )

    def until(self, cutoff: date) -> CleaningReport:
        """The report as seen on `cutoff`: what a client then could know (no look-ahead via reasons)."""

        def upto(days: tuple[date, ...]) -> tuple[date, ...]:
            return tuple(d for d in days if d <= cutoff)

        return CleaningReport(
            rows_read=self.rows_read,
            null_rows=upto(self.null_rows),
            non_trading_days=upto(self.non_trading_days),
            filler_rows=upto(self.filler_rows),
            invalid_rows=self.invalid_rows,
            duplicate_dates=upto(self.duplicate_dates),
            missing_sessions=upto(self.missing_sessions),
        )

    def as_dict(self) -> dict:
        def iso(days: Iterable[date]) -> list[str]:
            return [d.isoformat() for d in days]

        return {
            "rows_read": self.rows_read,
            "dropped": self.dropped_count,
            "null_rows": iso(self.null_rows),
            "non_trading_days": iso(self.non_trading_days),
            "filler_rows": iso(self.filler_rows),
            "invalid_rows": list(self.invalid_rows),
            "duplicate_dates": iso(self.duplicate_dates),
            "missing_sessions": iso(self.missing_sessions),
        }


@dataclass
class _Tally:
    null_rows: list[date] = field(default_factory=list)
    non_trading_days: list[date] = field(default_factory=list)
    filler_rows: list[date] = field(default_factory=list)
    invalid_rows: list[str] = field(default_factory=list)
    duplicate_dates: list[date] = field(default_factory=list)


def _parse_number(value: object) -> float | None:
    """A finite float, or None for Yahoo's null markers, empty cells and NaN."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() in _NULLS:
            return None
        number = float(value)
    else:
        number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _parse_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value).strip()[:10])


def _row_to_bar(row: RawRow, tally: _Tally) -> Bar | None:
    """One raw row to a Bar, or None after recording why it was dropped."""
    try:
        day = _parse_date(row[0])
        numbers = [_parse_number(v) for v in row[1:7]]
    except (ValueError, TypeError, IndexError):
        tally.invalid_rows.append(str(row[0]) if row else "")
        return None
    values = [n for n in numbers if n is not None]
    if len(values) < 6:  # a short row, or an empty (null) field
        tally.null_rows.append(day)
        return None
    o, h, lo, c, adj, vol = values
    if min(o, h, lo, c) <= 0 or vol < 0 or h < lo or not FIRST_BAR_DATE <= day <= LAST_BAR_DATE:
        tally.invalid_rows.append(day.isoformat())
        return None
    return Bar(day, o, h, lo, c, adj, int(vol))


def _is_filler(bar: Bar, prev_close: float | None) -> bool:
    """Yahoo's holiday filler: no trades, and every price equal to the previous close."""
    return (
        prev_close is not None
        and bar.volume == 0
        and bar.open == bar.high == bar.low == bar.close == prev_close
    )


def _dedupe_sorted(bars: Iterable[Bar], tally: _Tally) -> list[Bar]:
    by_date: dict[date, Bar] = {}
    for bar in bars:
        if bar.date in by_date:
            tally.duplicate_dates.append(bar.date)
        by_date[bar.date] = bar  # the later row wins: exports append corrections
    return [by_date[d] for d in sorted(by_date)]


def clean_daily_rows(
    rows: Iterable[RawRow], is_trading_day: IsTradingDay | None = None
) -> tuple[list[Bar], CleaningReport]:
    """Raw Yahoo-shaped rows -> (bars oldest first, report). Never raises on bad rows.

    Dropped: rows with a null/NaN field, unparseable or inconsistent rows (high < low,
    non-positive prices), duplicate dates (last kept), rows on non-trading days (when a
    calendar is given), and zero-volume filler rows whose O=H=L=C equals the previous close.
    """
    tally = _Tally()
    rows_read = 0
    parsed = []
    for row in rows:
        rows_read += 1
        bar = _row_to_bar(row, tally)
        if bar is not None:
            parsed.append(bar)
    kept: list[Bar] = []
    prev_close: float | None = None
    for bar in _dedupe_sorted(parsed, tally):
        if is_trading_day is not None and not is_trading_day(bar.date):
            tally.non_trading_days.append(bar.date)
        elif _is_filler(bar, prev_close):
            tally.filler_rows.append(bar.date)
        else:
            kept.append(bar)
            prev_close = bar.close
    missing: tuple[date, ...] = ()
    if is_trading_day is not None and kept:
        present = {bar.date for bar in kept}
        expected = trading_days_between(kept[0].date, kept[-1].date, is_trading_day)
        missing = tuple(sorted(set(expected).difference(present)))
    report = CleaningReport(
        rows_read=rows_read,
        null_rows=tuple(sorted(tally.null_rows)),
        non_trading_days=tuple(tally.non_trading_days),
        filler_rows=tuple(tally.filler_rows),
        invalid_rows=tuple(tally.invalid_rows),
        duplicate_dates=tuple(sorted(tally.duplicate_dates)),
        missing_sessions=missing,
    )
    return kept, report
