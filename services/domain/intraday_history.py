"""Intraday history as the sources deliver it: CSV text parsed into bars, and a series of bars
with the lookups a quote needs (one session's bars, the previous session's close, the latest
bars visible at `now`).

Pure: no file, network or clock. market-data's csv source reads a file and passes its text here;
its yfinance source turns Yahoo's frames into bars and wraps them in the same series, so both
answer quotes and bar requests through one piece of code.

The CSV format, one file per symbol and interval (`CBA.AX_5m.csv`; the index `AXJO_5m.csv`):

    Datetime,Open,High,Low,Close,Volume
    2024-06-14 10:00:00+10:00,117.2,117.6,117.1,117.5,81234

Columns are found by header name (others, e.g. `Adj Close`, are ignored); each time must carry
its UTC offset (a time without one names no instant, so the row is dropped, never guessed).
"""

from __future__ import annotations

import csv
import io
import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from services.domain.asx_calendar import OPEN_TIME, holiday_name, is_trading_day
from services.domain.bars import FIRST_BAR_DATE, LAST_BAR_DATE, Bar, bar_visible_from
from services.domain.intraday import (
    CloseTimeOf,
    IntradayBar,
    NoIntradayData,
    Quote,
    QuoteBar,
    interval_seconds,
    price_change,
    quote_from_bars,
    regular_close,
    resample,
    session_close_at,
    session_day,
    session_open_at,
    visible_from,
    visible_intraday,
)
from services.domain.price_history import MarketDataError

INTRADAY_COLUMNS = ("Datetime", "Open", "High", "Low", "Close", "Volume")
_NULLS = frozenset({"", "null", "nan", "none", "n/a"})


def intraday_csv_file_name(symbol: str, interval: str) -> str:
    """`CBA.AX`, `5m` -> `CBA.AX_5m.csv`; the index `^AXJO` -> `AXJO_5m.csv` (as the daily files)."""
    interval_seconds(interval)  # ValueError for an interval not in INTERVALS
    return f"{symbol.lstrip('^')}_{interval}.csv"


# --- CSV text -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntradayParse:
    bars: tuple[IntradayBar, ...]  # oldest first, one per start (a later duplicate row wins)
    rows_read: int
    dropped: tuple[str, ...]  # "line N: why", in file order


def _number(text: str) -> float | None:
    """A finite float, or None for an empty/null cell; ValueError for text that is no number."""
    if text.strip().lower() in _NULLS:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _row_to_bar(cells: list[str]) -> tuple[IntradayBar | None, str | None]:
    """One row's bar, or why it is dropped."""
    try:
        start = datetime.fromisoformat(cells[0].strip())
    except ValueError:
        return None, f"unreadable time {cells[0]!r}"
    if start.tzinfo is None or start.utcoffset() is None:
        return None, f"time {cells[0]!r} has no UTC offset"
    if not FIRST_BAR_DATE <= start.date() <= LAST_BAR_DATE:
        # A typo (year 1, 9999): such a time may not even convert to UTC or Sydney time.
        return None, f"time {cells[0]!r} is outside {FIRST_BAR_DATE.year}-{LAST_BAR_DATE.year}"
    try:
        numbers = [_number(c) for c in cells[1:6]]
    except ValueError:
        return None, "a price or volume is not a number"
    o, h, lo, c, volume = numbers
    if o is None or h is None or lo is None or c is None or volume is None:
        return None, "empty (null) field"
    if min(o, h, lo, c) <= 0 or volume < 0:
        return None, "non-positive price or negative volume"
    if not lo <= min(o, c) <= max(o, c) <= h:
        return None, f"inconsistent prices (O={o} H={h} L={lo} C={c})"
    return IntradayBar(start, o, h, lo, c, int(volume)), None


def parse_intraday_csv(text: str, name: str) -> IntradayParse:
    """The bars in an intraday CSV's text, cleaned; never raises on a bad row, only on a bad file.

    Dropped (and listed in `dropped`): unreadable or offset-less times, times outside the years
    bars.FIRST_BAR_DATE..LAST_BAR_DATE, empty/null fields,
    non-positive prices or negative volume, open or close outside [low, high], and the earlier of
    two rows with the same start. A leading byte-order mark is ignored. MarketDataError names the
    file (`name`) for a missing column or text that is not CSV.
    """
    try:
        reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in INTRADAY_COLUMNS if c not in header]
        if missing:
            raise MarketDataError(f"{name}: missing column(s) {', '.join(missing)}")
        index = [header.index(c) for c in INTRADAY_COLUMNS]
        by_start: dict[datetime, IntradayBar] = {}
        dropped: list[str] = []
        rows_read = 0
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            rows_read += 1
            line = reader.line_num
            bar, problem = _row_to_bar([row[i] if i < len(row) else "" for i in index])
            if bar is None:
                dropped.append(f"line {line}: {problem}")
                continue
            key = bar.start.astimezone(UTC)
            if key in by_start:
                dropped.append(f"line {line}: repeats the start {bar.start.isoformat()} (this row kept)")
            by_start[key] = bar  # exports append corrections: the later row wins
    except csv.Error as exc:
        raise MarketDataError(f"{name} is unreadable: {exc}") from exc
    bars = tuple(by_start[k] for k in sorted(by_start))
    return IntradayParse(bars, rows_read, tuple(dropped))


# --- a series of bars ---------------------------------------------------------------------------


def closed_day_reason(day: date) -> str | None:
    """Why the ASX has no session on `day` (a weekend, a holiday), or None on a trading day."""
    if is_trading_day(day):
        return None
    holiday = holiday_name(day)
    return (
        f"{day.isoformat()} is {'an ASX holiday (' + holiday + ')' if holiday else 'a weekend'}: no session"
    )


class IntradaySeries:
    """One symbol's bars of one interval, sorted, with per-session lookups (built once per read)."""

    def __init__(self, bars: Iterable[IntradayBar], interval: str):
        interval_seconds(interval)
        self.interval = interval
        self.bars = sorted(bars, key=lambda b: b.start.astimezone(UTC))
        self._starts = [b.start.astimezone(UTC) for b in self.bars]
        self._sessions: dict[date, tuple[int, int]] = {}  # day -> [first, last + 1) in self.bars
        for i, bar in enumerate(self.bars):
            day = session_day(bar.start)
            first, _ = self._sessions.get(day, (i, i))
            self._sessions[day] = (first, i + 1)
        self.days = sorted(self._sessions)

    def __len__(self) -> int:
        return len(self.bars)

    def session(self, day: date) -> list[IntradayBar]:
        first, end = self._sessions.get(day, (0, 0))
        return self.bars[first:end]

    def previous_close(self, day: date) -> float | None:
        """The last close of the latest session before `day` in the series (None if none)."""
        earlier = [d for d in self.days if d < day]
        return self.session(earlier[-1])[-1].close if earlier else None

    def resampled(self, interval: str) -> IntradaySeries:
        """The same bars as coarser `interval` bars (ValueError when `interval` is not a multiple)."""
        if interval == self.interval:
            return self
        return IntradaySeries(resample(self.bars, interval, self.interval), interval)

    def latest_visible(
        self, limit: int, now: datetime, delay_s: float = 0, close_time_of: CloseTimeOf = regular_close
    ) -> list[IntradayBar]:
        """The latest `limit` bars a client at `now` may see (end + delay <= now), oldest first."""
        picked: list[IntradayBar] = []
        i = bisect_right(self._starts, now.astimezone(UTC)) - 1  # bars that had started by now
        while i >= 0 and len(picked) < limit:
            bar = self.bars[i]
            if visible_from(bar, self.interval, delay_s, close_time_of) <= now:
                picked.append(bar)
            i -= 1
        return picked[::-1]

    def quote(
        self,
        symbol: str,
        now: datetime,
        delay_s: float,
        source: str,
        close_time_of: CloseTimeOf = regular_close,
    ) -> Quote:
        """The quote at `now` from today's visible bars; NoIntradayData saying why there is none."""
        day = session_day(now)
        bars = self.session(day)
        if not bars:
            why = closed_day_reason(day) or (
                f"no {self.interval} bars for {symbol} on {day.isoformat()}"
                + (f" (its data ends on {self.days[-1].isoformat()})" if self.days else " (no data)")
            )
            raise NoIntradayData(why)
        visible = visible_intraday(bars, self.interval, now, delay_s, close_time_of)
        if not visible:
            raise NoIntradayData(before_first_bar_reason(symbol, day, self.interval, delay_s))
        return quote_from_bars(
            symbol,
            visible,
            self.previous_close(day),
            delay_s,
            source,
            now,
            interval=self.interval,
            close_time_of=close_time_of,
        )


def before_first_bar_reason(symbol: str, day: date, interval: str, delay_s: float) -> str:
    """Why a trading day has no quote yet: its first bar shows at the open + interval + delay."""
    shows = datetime.combine(day, OPEN_TIME) + timedelta(seconds=interval_seconds(interval) + delay_s)
    return (
        f"no {interval} bar of {symbol} on {day.isoformat()} is visible yet "
        f"(the first one shows at {shows.strftime('%H:%M')} Sydney time)"
    )


# --- daily bars only ----------------------------------------------------------------------------


def daily_bar_quote(
    symbol: str,
    bars: Sequence[Bar],
    now: datetime,
    source: str,
    close_time_of: CloseTimeOf = regular_close,
) -> Quote:
    """The quote a client at `now` may have when a symbol has daily bars only (oldest first).

    During day D's session (from the 10:00 open, on a trading day with a bar for D) the only
    price known is D's open: price = day_open = day_high = day_low = the open (the day's range is
    not known yet), volume 0, quote_time the open, basis "daily_open". Once D's bar is final
    (16:10) its close is known: price = the close, with the day's real range and volume,
    quote_time the close, basis "daily_close". previous_close is the bar before D's. Delay 0:
    the file is history and the suite clock decides what of it is visible.

    NoIntradayData (no quote, saying why) on a closed day, before the open, or when the bars
    have no bar for D (the file ends earlier). The bars after D are never looked at.
    """
    day = session_day(now)
    closed = closed_day_reason(day)
    if closed:
        raise NoIntradayData(closed)
    opens = session_open_at(day)
    if now < opens:
        raise NoIntradayData(
            f"{symbol} has daily bars only: its first quote of {day.isoformat()} is the day's open, "
            "known from 10:00 Sydney time"
        )
    # Found by bisection on the bars themselves: a list of every date was most of a quote's cost.
    i = bisect_right(bars, day, key=_bar_date) - 1
    if i < 0 or bars[i].date != day:
        ends = f" (they end on {bars[-1].date.isoformat()})" if bars else " (there are none)"
        raise NoIntradayData(f"the daily bars of {symbol} have no bar for {day.isoformat()}{ends}")
    bar = bars[i]
    previous_close = bars[i - 1].close if i > 0 else None
    whole_day: QuoteBar | None = None
    if now >= bar_visible_from(day):
        price, high, low, volume, basis = bar.close, bar.high, bar.low, bar.volume, "daily_close"
        at = session_close_at(day, close_time_of)
        whole_day = QuoteBar.of("1d", opens, at, bar.open, bar.high, bar.low, bar.close)
    else:
        price, high, low, volume, basis = bar.open, bar.open, bar.open, 0, "daily_open"
        at = opens
    change, change_pct = price_change(price, previous_close)
    return Quote(
        symbol=symbol,
        price=price,
        bid=None,
        ask=None,
        day_open=bar.open,
        day_high=high,
        day_low=low,
        volume=int(volume),
        previous_close=previous_close,
        change=change,
        change_pct=change_pct,
        quote_time=at,
        delay_s=0.0,
        source=source,
        basis=basis,
        bar=whole_day,
    )


def _bar_date(bar: Bar) -> date:
    return bar.date
