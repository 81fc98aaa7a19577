"""Intraday sources behind one interface (`QuoteSource`): csv, synthetic and yfinance.

Every source answers, for a symbol of the universe and the suite clock's `now`:
- `await source.quote(symbol, now) -> Quote`: today's price from the bars visible at `now`
  (a bar shows from its end plus the source's delay, so a quote is never later than now);
- `await source.intraday_bars(symbol, interval, limit, now) -> list[IntradayBar]`: the latest
  `limit` visible bars of `interval` (1m, 5m, 15m, 30m, 60m), oldest first, across sessions.
They raise `NoIntradayData` when there is nothing to show (a holiday, before the first bar, a
missing file, Yahoo's limits), `SourceUnavailableError` when the source failed in a way that may
pass (network, timeout), and `MarketDataError` for anything else they cannot read.

A source may also batch: one with `prefetch(now)` (BatchedQuoteSource) is asked once per refresh
before its quotes, so the whole universe costs one request.

The IG Markets source (real-time bid/offer) plugs in here by having this shape; which source
serves quotes follows the daily source's choice (`quote_source_for`).

This module is the I/O: files, threads, the network. The parsing and the per-session lookups are
pure, in services.domain.intraday_history; visibility and quotes in services.domain.intraday.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

from services.domain import asx_calendar
from services.domain.bars import SYDNEY, Bar, clean_daily_rows
from services.domain.intraday import (
    INTERVALS,
    IntradayBar,
    NoIntradayData,
    Quote,
    asx_close_time,
    interval_seconds,
    quote_from_bars,
    session_day,
    session_minutes,
    visible_intraday,
)
from services.domain.intraday_history import (
    IntradaySeries,
    before_first_bar_reason,
    closed_day_reason,
    daily_bar_quote,
    intraday_csv_file_name,
    parse_intraday_csv,
)
from services.domain.price_history import (
    SYNTHETIC_EPOCH,
    MarketDataError,
    SourceUnavailableError,
    csv_file_name,
    parse_yahoo_csv,
    synthetic_bars,
    trading_sessions,
)
from services.domain.synthetic_intraday import synthetic_intraday_bars
from services.domain.yahoo_frames import intraday_bars, ticker_part
from services.market_data.providers import run_cpu

log = logging.getLogger("market-data.intraday")


class QuoteSource(Protocol):
    name: str  # labels every quote and bar reply
    delay_s: float  # how late the source's bars are, as it states it (0 for csv and synthetic)

    async def quote(self, symbol: str, now: datetime) -> Quote: ...

    async def intraday_bars(
        self, symbol: str, interval: str, limit: int, now: datetime
    ) -> list[IntradayBar]: ...


@runtime_checkable
class BatchedQuoteSource(Protocol):
    async def prefetch(self, now: datetime) -> None:
        """Fetch the whole universe's quotes in one request; `quote` then reads from it."""
        ...


def serving_intervals(interval: str) -> list[str]:
    """`interval`, then the finer intervals it can be resampled from, coarsest first."""
    target = interval_seconds(interval)
    finer = [i for i, s in INTERVALS.items() if s < target and target % s == 0]
    return [interval, *sorted(finer, key=INTERVALS.__getitem__, reverse=True)]


# --- csv ----------------------------------------------------------------------------------------


class CsvIntradaySource:
    """`<directory>/<SYMBOL>_<interval>.csv` files (see intraday_history), re-read when they change.

    History, not a feed: delay 0, and the suite clock decides what of it is visible. An interval
    without its own file is resampled from the coarsest finer file that divides it (15m from 5m,
    before 1m); a quote comes from the finest file there is. No intraday file: the quote comes
    from the daily file `<SYMBOL>.csv` (daily_bar_quote: the day's open from 10:00, basis
    "daily_open"; its close once the bar is final), and there are no intraday bars. Neither file:
    no data (a csv suite never falls back to synthetic prices).
    """

    name = "csv"
    delay_s = 0.0

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._files: dict[str, tuple[tuple[int, int], IntradaySeries]] = {}
        self._resampled: dict[tuple[str, str], tuple[IntradaySeries, IntradaySeries]] = {}
        self._daily: dict[str, tuple[tuple[int, int], list[Bar]]] = {}

    def _read_daily(self, symbol: str) -> list[Bar] | None:
        """The daily file's cleaned bars (parsed again only when it changed); None: no file."""
        path = self.directory / csv_file_name(symbol)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._daily.get(symbol)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MarketDataError(f"{path.name} is unreadable: {exc}") from exc
        bars, _ = clean_daily_rows(parse_yahoo_csv(text, path.name), asx_calendar.is_trading_day)
        self._daily[symbol] = (stamp, bars)
        return bars

    def _read(self, symbol: str, interval: str) -> IntradaySeries | None:
        """The file's series (parsed again only when its mtime or size changed); None: no file."""
        path = self.directory / intraday_csv_file_name(symbol, interval)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._files.get(path.name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MarketDataError(f"{path.name} is unreadable: {exc}") from exc
        parsed = parse_intraday_csv(text, path.name)
        if parsed.dropped:
            log.info(
                "%s: dropped %d of %d rows: %s",
                path.name,
                len(parsed.dropped),
                parsed.rows_read,
                "; ".join(parsed.dropped[:5]),
            )
        series = IntradaySeries(parsed.bars, interval)
        self._files[path.name] = (stamp, series)
        return series

    def _missing(self, symbol: str, interval: str) -> NoIntradayData:
        return NoIntradayData(
            f"no intraday CSV for {symbol} ({intraday_csv_file_name(symbol, interval)}, or a finer "
            f"interval's file) in {self.directory}"
        )

    def _series(self, symbol: str, interval: str) -> IntradaySeries:
        for candidate in serving_intervals(interval):
            series = self._read(symbol, candidate)
            if series is None:
                continue
            if candidate == interval:
                return series
            key = (symbol, interval)
            cached = self._resampled.get(key)
            if cached is None or cached[0] is not series:  # the finer file changed (or is new)
                cached = (series, series.resampled(interval))
                self._resampled[key] = cached
            return cached[1]
        raise self._missing(symbol, interval)

    def _finest(self, symbol: str) -> IntradaySeries | None:
        for interval in INTERVALS:  # finest first
            series = self._read(symbol, interval)
            if series is not None:
                return series
        return None

    def _quote(self, symbol: str, now: datetime) -> Quote:
        series = self._finest(symbol)
        if series is not None:
            return series.quote(symbol, now, self.delay_s, self.name, asx_close_time)
        daily = self._read_daily(symbol)
        if daily is None:
            missing = self._missing(symbol, "1m")
            raise NoIntradayData(f"{missing}, and no daily CSV ({csv_file_name(symbol)}) either")
        return daily_bar_quote(symbol, daily, now, self.name, asx_close_time)

    def _bars(self, symbol: str, interval: str, limit: int, now: datetime) -> list[IntradayBar]:
        bars = self._series(symbol, interval).latest_visible(limit, now, self.delay_s, asx_close_time)
        if not bars:
            raise NoIntradayData(
                f"no {interval} bar of {symbol} is visible at {now.astimezone(SYDNEY).isoformat()}"
            )
        return bars

    async def quote(self, symbol: str, now: datetime) -> Quote:
        return await run_cpu(self._quote, symbol, now)

    async def intraday_bars(self, symbol: str, interval: str, limit: int, now: datetime) -> list[IntradayBar]:
        return await run_cpu(self._bars, symbol, interval, limit, now)


# --- synthetic ----------------------------------------------------------------------------------


class SyntheticIntradaySource:
    """Each day's seeded 1m path through that day's synthetic daily bar (synthetic_intraday).

    The daily walk has today's bar before its 16:10 close; the path reveals it minute by minute
    as the suite clock passes each bar's end, so at the close the last price is the day's close
    and the day's high and low are the daily bar's. Delay 0; always labelled "synthetic".
    """

    name = "synthetic"
    delay_s = 0.0
    _PATHS_KEPT = 256  # 1m paths in memory: a day of the universe, or a long 60m request
    # Daily bars kept per symbol: the walk starts at the synthetic epoch (years of sessions), but
    # the paths need only recent days (1000 60m bars reach ~170 sessions back).
    _SESSIONS_KEPT = 400

    def __init__(self) -> None:
        # symbol -> (the day walked to, {day: (bar, previous close)} of the last sessions to it)
        self._walks: dict[str, tuple[date, dict[date, tuple[Bar, float | None]]]] = {}
        self._paths: OrderedDict[tuple[str, date], IntradaySeries] = OrderedDict()
        self._lock = threading.Lock()

    def _daily(self, symbol: str, day: date) -> tuple[Bar, float | None]:
        """The day's synthetic daily bar and the previous session's close (the same walk as daily)."""
        walked = self._walks.get(symbol)
        if walked is None or walked[0] < day or (walked[1] and day < min(walked[1])):
            sessions = trading_sessions(SYNTHETIC_EPOCH, day, asx_calendar.is_trading_day)
            kept = max(0, len(sessions) - self._SESSIONS_KEPT)
            first = max(0, kept - 1)  # one bar before the kept ones: the first one's previous close
            bars = synthetic_bars(symbol, sessions, first)
            previous = [None, *(b.close for b in bars)]
            walked = (day, {bars[i].date: (bars[i], previous[i]) for i in range(kept - first, len(bars))})
            self._walks[symbol] = walked
        if day not in walked[1]:
            raise NoIntradayData(f"the synthetic walk has no session on {day.isoformat()}")
        return walked[1][day]

    def _path(self, symbol: str, day: date) -> IntradaySeries:
        key = (symbol, day)
        with self._lock:  # symbols are computed in parallel threads; the LRU order is shared
            series = self._paths.get(key)
            if series is not None:
                self._paths.move_to_end(key)
                return series
        bar, _ = self._daily(symbol, day)
        minutes = session_minutes(day, asx_calendar.is_early_close(day))
        series = IntradaySeries(synthetic_intraday_bars(symbol, bar, minutes), "1m")
        with self._lock:
            self._paths[key] = series
            while len(self._paths) > self._PATHS_KEPT:
                self._paths.popitem(last=False)
        return series

    def _quote(self, symbol: str, now: datetime) -> Quote:
        day = session_day(now)
        closed = closed_day_reason(day)
        if closed:
            raise NoIntradayData(closed)
        visible = visible_intraday(self._path(symbol, day).bars, "1m", now, self.delay_s, asx_close_time)
        if not visible:
            raise NoIntradayData(before_first_bar_reason(symbol, day, "1m", self.delay_s))
        _, previous_close = self._daily(symbol, day)
        return quote_from_bars(
            symbol,
            visible,
            previous_close,
            self.delay_s,
            self.name,
            now,
            interval="1m",
            close_time_of=asx_close_time,
        )

    def _bars(self, symbol: str, interval: str, limit: int, now: datetime) -> list[IntradayBar]:
        chunks: list[list[IntradayBar]] = []  # newest session first
        count = 0
        day = session_day(now)
        while count < limit and day >= SYNTHETIC_EPOCH:
            if asx_calendar.is_trading_day(day):
                series = self._path(symbol, day).resampled(interval)
                chunk = series.latest_visible(limit - count, now, self.delay_s, asx_close_time)
                chunks.append(chunk)
                count += len(chunk)
            day -= timedelta(days=1)
        return [bar for chunk in reversed(chunks) for bar in chunk]

    async def quote(self, symbol: str, now: datetime) -> Quote:
        # A new day walks ~3000 daily bars per symbol: off the loop, as the daily source does.
        return await run_cpu(self._quote, symbol, now)

    async def intraday_bars(self, symbol: str, interval: str, limit: int, now: datetime) -> list[IntradayBar]:
        return await run_cpu(self._bars, symbol, interval, limit, now)


# --- yfinance -----------------------------------------------------------------------------------

# Yahoo shows ASX prices 20 minutes late (its exchange delay table lists the ASX at 20 min), so
# a yfinance bar is visible from its end + 20 min, and its quotes say delay_s 1200.
YAHOO_ASX_DELAY_S = 20 * 60
# How far back one intraday request may reach, in days, per interval (Yahoo refuses more: 1m at
# most 7 days a request, 5m-30m the last 60 days, 60m the last 730).
YAHOO_MAX_PERIOD_DAYS = {"1m": 7, "5m": 60, "15m": 60, "30m": 60, "60m": 730}
_SESSION_S = 6 * 3600  # a normal ASX session, 10:00-16:00


def yahoo_period(interval: str, limit: int) -> str:
    """The `period` that covers `limit` bars of `interval`, within Yahoo's limit for it.

    Sessions needed (plus today's, maybe partial), as calendar days with weekends and a long
    weekend's holidays, capped at YAHOO_MAX_PERIOD_DAYS: beyond it Yahoo has nothing, so fewer
    bars come back.
    """
    per_session = _SESSION_S // interval_seconds(interval)
    sessions = -(-limit // per_session) + 1
    days = sessions * 7 // 5 + 4
    return f"{min(days, YAHOO_MAX_PERIOD_DAYS[interval])}d"


# Quotes come from 1m bars: today's and the previous session's last close (previous_close).
QUOTE_INTERVAL = "1m"
QUOTE_PERIOD = yahoo_period(QUOTE_INTERVAL, 1)


def frame_to_series(frame, symbols: Sequence[str], interval: str) -> dict[str, IntradaySeries]:
    """A yf.download(group_by="ticker") frame -> a series per symbol that has bars in it
    (services.domain.yahoo_frames takes it apart)."""
    found: dict[str, IntradaySeries] = {}
    for symbol in symbols:
        part = ticker_part(frame, symbol, symbols)
        if part is None:
            continue
        bars = intraday_bars(part)
        if bars is None:  # not with ignore_tz=False
            raise SourceUnavailableError(f"Yahoo's {interval} bars for {symbol} have no time zone")
        if bars:
            found[symbol] = IntradaySeries(bars, interval)
    return found


class YFinanceIntradaySource:
    """Yahoo's intraday bars for the whole universe: one yf.download call per refresh and interval.

    The call runs off the event loop; inside it yfinance asks Yahoo ticker by ticker
    (threads=False: one at a time, each with `timeout_s`). A batch is reused for `fresh_s`
    seconds, and concurrent callers share one download. Bars show from their end + 20 minutes.
    """

    name = "yfinance"
    delay_s = float(YAHOO_ASX_DELAY_S)

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        fresh_s: float = 60.0,
    ):
        self.symbols = tuple(dict.fromkeys(symbols))
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.fresh_s = fresh_s
        self.downloads = 0  # yf.download calls made (each one for the whole universe)
        self._batches: dict[tuple[str, str], tuple[float, dict[str, IntradaySeries]]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Task] = {}

    def _download(self, interval: str, period: str) -> dict[str, IntradaySeries]:
        yf = importlib.import_module("yfinance")  # lazy: only this source needs it (and pandas)
        self.downloads += 1
        frame = yf.download(
            tickers=list(self.symbols),
            period=period,
            interval=interval,
            group_by="ticker",
            threads=False,
            progress=False,
            auto_adjust=False,
            ignore_tz=False,  # keep the instants (converted to the exchange's zone)
            timeout=self.timeout_s,
        )
        series = frame_to_series(frame, self.symbols, interval) if frame is not None else {}
        if not series:
            # yfinance logs per-ticker failures and returns empty columns: all empty is a failure
            # (even a holiday has the earlier sessions of the period).
            raise SourceUnavailableError(
                f"Yahoo returned no {interval} bars for any of {len(self.symbols)} symbols (period {period})"
            )
        return series

    async def _fetch(self, interval: str, period: str) -> dict[str, IntradaySeries]:
        budget_s = self.timeout_s * (len(self.symbols) + 1)  # one request per ticker, in turn
        for attempt in range(1, self.attempts + 1):
            try:
                series = await asyncio.wait_for(asyncio.to_thread(self._download, interval, period), budget_s)
                self._batches[(interval, period)] = (time.monotonic(), series)
                return series
            except TimeoutError:
                error: MarketDataError = SourceUnavailableError(
                    f"Yahoo's {interval} download did not finish within {budget_s:g}s"
                )
            except MarketDataError as exc:
                error = exc
            except Exception as exc:
                error = SourceUnavailableError(
                    f"Yahoo {interval} download failed: {type(exc).__name__}: {exc}"
                )
            if attempt == self.attempts:
                raise error
            delay = self.backoff_s * 2 ** (attempt - 1)
            log.warning(
                "yfinance %s attempt %d/%d failed (%s); retrying in %.2fs",
                interval,
                attempt,
                self.attempts,
                error,
                delay,
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _batch(self, interval: str, period: str, force: bool = False) -> dict[str, IntradaySeries]:
        key = (interval, period)
        cached = self._batches.get(key)
        if cached is not None and not force and time.monotonic() - cached[0] < self.fresh_s:
            return cached[1]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(interval, period))
            self._inflight[key] = task
            task.add_done_callback(lambda done, k=key: self._fetch_done(k, done))
        # shield: one caller giving up must not cancel the download the others wait for
        return await asyncio.shield(task)

    def _fetch_done(self, key: tuple[str, str], task: asyncio.Task) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up

    def _series(self, batch: dict[str, IntradaySeries], symbol: str, interval: str) -> IntradaySeries:
        series = batch.get(symbol)
        if series is None:
            raise NoIntradayData(
                f"Yahoo returned no {interval} bars for {symbol} (unknown, delisted, or outside Yahoo's "
                "window: 1m bars reach back 30 days, 5m-30m 60 days, 60m 730 days)"
            )
        return series

    async def prefetch(self, now: datetime) -> None:
        await self._batch(QUOTE_INTERVAL, QUOTE_PERIOD, force=True)

    async def quote(self, symbol: str, now: datetime) -> Quote:
        batch = await self._batch(QUOTE_INTERVAL, QUOTE_PERIOD)
        series = self._series(batch, symbol, QUOTE_INTERVAL)
        return series.quote(symbol, now, self.delay_s, self.name, asx_close_time)

    async def intraday_bars(self, symbol: str, interval: str, limit: int, now: datetime) -> list[IntradayBar]:
        batch = await self._batch(interval, yahoo_period(interval, limit))
        bars = self._series(batch, symbol, interval).latest_visible(limit, now, self.delay_s, asx_close_time)
        if not bars:
            raise NoIntradayData(
                f"none of Yahoo's {interval} bars for {symbol} is visible at {now.astimezone(SYDNEY).isoformat()} "
                f"(they show {YAHOO_ASX_DELAY_S // 60} minutes after their end)"
            )
        return bars


# --- the choice ---------------------------------------------------------------------------------


def quote_source_for(
    daily_source: str,
    directory: Path,
    symbols: Sequence[str],
    *,
    fresh_s: float = 60.0,
    timeout_s: float = 10.0,
    attempts: int = 3,
) -> QuoteSource:
    """The intraday source that goes with the daily source chosen by TRADING_MARKET_DATA_SOURCE."""
    if daily_source == "yfinance":
        return YFinanceIntradaySource(symbols, timeout_s=timeout_s, attempts=attempts, fresh_s=fresh_s)
    if daily_source == "csv":
        return CsvIntradaySource(directory)
    if daily_source == "synthetic":
        return SyntheticIntradaySource()
    raise ValueError(f"no intraday source goes with the daily source {daily_source!r}")
