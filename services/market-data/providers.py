"""Market-data sources behind one interface: csv, synthetic, yfinance, and the `auto` choice.

Every source answers `await source.fetch(symbol, now) -> History`: cleaned daily bars, oldest
first, that were final at `now` (a bar appears at its day's 16:10 Sydney close; nothing dated
after `now` is ever returned), the cleaning report, and the source's name.

This module is the I/O: files, threads, the network. What the sources compute (Yahoo CSV
parsing, the synthetic walk, History and its errors) is pure and lives in
services.domain.price_history, which training and the replay use too.

pandas and yfinance are imported only inside the yfinance source, on first use, so a suite
running on csv or synthetic data never loads them.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Protocol

from services.base.cpu_lane import run_cpu
from services.clients.yahoo_history import frame_to_rows, yahoo_unreachable
from services.domain.bars import (
    Bar,
    CleaningReport,
    IsTradingDay,
    clean_daily_rows,
    last_visible_date,
    weekday_calendar,
)
from services.domain.price_history import (
    SYNTHETIC_EPOCH,
    History,
    MarketDataError,
    SourceUnavailableError,
    UnknownSymbolError,
    csv_file_name,
    parse_yahoo_csv,
    synthetic_bars,
    trading_sessions,
    visible_history,
)

log = logging.getLogger("market-data.providers")

SOURCE_NAMES = ("yfinance", "csv", "synthetic", "auto")


class MarketDataSource(Protocol):
    name: str

    async def fetch(self, symbol: str, now: datetime) -> History: ...


# --- csv ----------------------------------------------------------------------------------------


class CsvSource:
    """`<directory>/<SYMBOL>.csv` files in Yahoo's export format, re-read when they change."""

    name = "csv"

    def __init__(self, directory: Path, is_trading_day: IsTradingDay | None = None):
        self.directory = Path(directory)
        self.is_trading_day = is_trading_day
        self._parsed: dict[str, tuple[tuple[int, int], list[Bar], CleaningReport]] = {}

    def has_files(self) -> bool:
        return self.directory.is_dir() and any(self.directory.glob("*.csv"))

    def _load(self, symbol: str) -> tuple[list[Bar], CleaningReport]:
        path = self.directory / csv_file_name(symbol)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise UnknownSymbolError(
                f"no CSV file for {symbol} ({path.name}) in the market data directory"
            ) from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._parsed.get(symbol)
        if cached is None or cached[0] != stamp:
            try:
                text = path.read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise MarketDataError(f"{path.name} is unreadable: {exc}") from exc
            bars, report = clean_daily_rows(parse_yahoo_csv(text, path.name), self.is_trading_day)
            cached = (stamp, bars, report)
            self._parsed[symbol] = cached
            if report.dropped_count:
                log.info("cleaned %s: %s", path.name, report.as_dict())
        return cached[1], cached[2]

    def _unchanged(self, symbol: str) -> tuple[list[Bar], CleaningReport] | None:
        """The parsed file when it has not changed since (one stat, no thread hop), else None."""
        cached = self._parsed.get(symbol)
        if cached is None:
            return None
        try:
            stat = (self.directory / csv_file_name(symbol)).stat()
        except OSError:
            return None  # _load says why
        return (cached[1], cached[2]) if cached[0] == (stat.st_mtime_ns, stat.st_size) else None

    async def fetch(self, symbol: str, now: datetime) -> History:
        # Reading and parsing a changed file runs in a thread; an unchanged one is at hand (a
        # replay refreshes every symbol four times a day: each thread hop was a context switch).
        loaded = self._unchanged(symbol) or await run_cpu(self._load, symbol)
        bars, report = loaded
        return visible_history(symbol, self.name, bars, report, now)


# --- synthetic ------------------------------------------------------------------------------


class SyntheticSource:
    """Seeded random walks: the same history on every start, always labelled "synthetic"."""

    name = "synthetic"

    def __init__(self, is_trading_day: IsTradingDay = weekday_calendar):
        self.is_trading_day = is_trading_day
        self._sessions: tuple[date, list[date]] | None = None

    def _sessions_until(self, until: date) -> list[date]:
        # The calendar walk costs more than the price walk; every symbol shares it.
        if self._sessions is None or self._sessions[0] != until:
            self._sessions = (until, trading_sessions(SYNTHETIC_EPOCH, until, self.is_trading_day))
        return self._sessions[1]

    def _generate(self, symbol: str, until: date) -> list[Bar]:
        return synthetic_bars(symbol, self._sessions_until(until))

    async def fetch(self, symbol: str, now: datetime) -> History:
        # ~3000 bars of Python arithmetic: off the loop so health checks stay prompt.
        bars = await run_cpu(self._generate, symbol, last_visible_date(now))
        return History(symbol, self.name, tuple(bars), CleaningReport(rows_read=len(bars)))


# --- yfinance -----------------------------------------------------------------------------------


def _is_unknown_symbol_error(exc: Exception) -> bool:
    # yfinance raises YFTickerMissingError (and subclasses) for unknown/delisted tickers; matched
    # by class name so this module does not import yfinance to classify errors.
    return any(cls.__name__ == "YFTickerMissingError" for cls in type(exc).__mro__)


class YFinanceSource:
    """Yahoo Finance via the yfinance client, off the event loop, with timeout and retries."""

    name = "yfinance"

    def __init__(
        self,
        is_trading_day: IsTradingDay | None = None,
        *,
        timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        history_days: int = 5 * 365,
    ):
        self.is_trading_day = is_trading_day
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.history_days = history_days

    def _download(self, symbol: str, end: date) -> list[tuple]:
        yf = importlib.import_module("yfinance")  # lazy: only this source needs it (and pandas)
        frame = yf.Ticker(symbol).history(
            start=(end - timedelta(days=self.history_days)).isoformat(),
            end=(end + timedelta(days=1)).isoformat(),  # Yahoo's end is exclusive
            interval="1d",
            auto_adjust=False,
            actions=False,
            timeout=self.timeout_s,
            raise_errors=True,
        )
        if frame is None or frame.empty:
            raise UnknownSymbolError(f"Yahoo returned no daily bars for {symbol} (unknown or delisted?)")
        return frame_to_rows(frame)

    async def _attempt(self, symbol: str, end: date) -> list[tuple]:
        try:
            # yfinance makes up to two requests (time zone, then chart), each with `timeout_s`.
            # The thread cannot be cancelled; on timeout it finishes in the background, unused.
            return await asyncio.wait_for(asyncio.to_thread(self._download, symbol, end), 2 * self.timeout_s)
        except TimeoutError:
            raise SourceUnavailableError(
                f"Yahoo did not answer for {symbol} within {2 * self.timeout_s:g}s"
            ) from None
        except MarketDataError:
            raise
        except Exception as exc:
            if _is_unknown_symbol_error(exc):
                raise UnknownSymbolError(f"Yahoo has no data for {symbol}: {exc}") from exc
            raise SourceUnavailableError(
                f"Yahoo request for {symbol} failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def fetch(self, symbol: str, now: datetime) -> History:
        end = last_visible_date(now)
        for attempt in range(1, self.attempts + 1):
            try:
                rows = await self._attempt(symbol, end)
                break
            except SourceUnavailableError as exc:
                if attempt == self.attempts:
                    raise
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "yfinance %s attempt %d/%d failed (%s); retrying in %.2fs",
                    symbol,
                    attempt,
                    self.attempts,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
        bars, report = clean_daily_rows(rows, self.is_trading_day)
        return visible_history(symbol, self.name, bars, report, now)


# --- auto ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceChoice:
    source: MarketDataSource
    reason: str


async def choose_source(
    requested: str,
    csv_dir: Path,
    now: datetime,
    *,
    is_trading_day: IsTradingDay | None = None,
    probe_symbol: str = "^AXJO",
    probe_timeout_s: float = 5.0,
    yfinance_factory: Callable[..., YFinanceSource] = YFinanceSource,
    reachability: Callable[[float], str | None] = yahoo_unreachable,
) -> SourceChoice:
    """The source for `requested` (one of SOURCE_NAMES); `auto` probes yfinance, then csv, then synthetic."""
    calendar = is_trading_day or weekday_calendar
    if requested == "yfinance":
        return SourceChoice(yfinance_factory(is_trading_day), "configured: yfinance")
    if requested == "csv":
        return SourceChoice(CsvSource(csv_dir, is_trading_day), f"configured: csv files in {csv_dir}")
    if requested == "synthetic":
        return SourceChoice(SyntheticSource(calendar), "configured: synthetic (not real prices)")
    if requested != "auto":
        raise ValueError(f"unknown market data source {requested!r}; expected one of {SOURCE_NAMES}")
    why = await asyncio.to_thread(reachability, probe_timeout_s)
    if why is not None:
        why = f"yfinance probe failed ({why})"
    else:
        probe = yfinance_factory(is_trading_day, timeout_s=probe_timeout_s, attempts=1, history_days=14)
        try:
            await probe.fetch(probe_symbol, now)
            return SourceChoice(
                yfinance_factory(is_trading_day), f"auto: yfinance probe of {probe_symbol} succeeded"
            )
        except MarketDataError as exc:
            why = f"yfinance probe failed ({exc})"
    csv_source = CsvSource(csv_dir, is_trading_day)
    if csv_source.has_files():
        return SourceChoice(csv_source, f"auto: {why}; using csv files in {csv_dir}")
    return SourceChoice(
        SyntheticSource(calendar), f"auto: {why}; no csv files in {csv_dir}; using synthetic data"
    )
