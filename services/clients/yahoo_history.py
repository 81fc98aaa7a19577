"""Yahoo Finance history into the market data folder: what `service_manager.py data fetch` and
`train_models.py --source yfinance` run.

One batched `yf.download` call for the universe and the index (inside it yfinance asks Yahoo
ticker by ticker), retried with exponential backoff; after the last failed attempt a plain HTTPS
request tells whether Yahoo answers at all, so the one line of error says "unreachable" when it
is the machine that is offline. Each symbol's file `<DIR>/<SYMBOL>.csv` is then merged (incremental: only new
sessions are appended, services.domain.history_merge) and written atomically (a temporary file
in the same folder, fsync, rename), so a fetch that fails or is killed part way leaves every
file either as it was or complete. A symbol whose download is empty or has holes is reported and
its file left untouched.

With intervals (`5m`, `15m`, ...) the intraday bars Yahoo keeps (5m-30m: 60 days, 60m: 730, 1m:
7) are merged into `<DIR>/<SYMBOL>_<interval>.csv` the same way: earlier bars kept, completed
bars after the file's last one appended.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from services.domain import asx_calendar
from services.domain.bars import SYDNEY, last_visible_date
from services.domain.data_quality import assess_quality
from services.domain.history_merge import (
    DailyRow,
    daily_row,
    download_problem,
    format_yahoo_csv,
    merge_rows,
    rows_from_csv,
)
from services.domain.intraday import IntradayBar, interval_seconds
from services.domain.intraday_history import INTRADAY_COLUMNS, intraday_csv_file_name, parse_intraday_csv
from services.domain.price_history import (
    MarketDataError,
    SourceUnavailableError,
    csv_file_name,
    history_from_csv,
)
from services.domain.yahoo_frames import intraday_bars, ticker_part

log = logging.getLogger("yahoo-history")

YAHOO_PROBE_URL = "https://query2.finance.yahoo.com/v8/finance/chart/%5EAXJO?range=1d&interval=1d"
# Sessions re-downloaded before a file's last date: the overlap that detects a dividend's
# re-based Adj Close (or a split) since the last fetch.
OVERLAP_DAYS = 10
YAHOO_INTRADAY_DAYS = {"1m": 7, "5m": 60, "15m": 60, "30m": 60, "60m": 730}


class YahooUnavailable(SourceUnavailableError):
    """Yahoo did not answer (or answered nothing) after every attempt: nothing was written."""


def yahoo_unreachable(timeout_s: float) -> str | None:
    """Why Yahoo cannot be reached (None when it answers at all), without importing yfinance.

    Any HTTP answer, even an error status, means reachable. Honours HTTPS_PROXY like yfinance.
    """
    try:
        with urllib.request.urlopen(YAHOO_PROBE_URL, timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"Yahoo unreachable: {getattr(exc, 'reason', exc)}"


def frame_to_rows(frame) -> list[tuple]:
    """A yfinance DataFrame (flat or (Price, Ticker) columns, tz-aware index) -> raw Yahoo rows."""
    if getattr(frame.columns, "nlevels", 1) > 1:
        frame = frame.droplevel(-1, axis=1)
    index = frame.index
    if getattr(index, "tz", None) is not None:
        index = index.tz_convert(SYDNEY)  # .AX bars are dated in exchange time
    close_column = "Adj Close" if "Adj Close" in frame.columns else "Close"
    columns = [frame[c].tolist() for c in ("Open", "High", "Low", "Close", close_column, "Volume")]
    return [(ts.date(), *values) for ts, *values in zip(index, *columns, strict=True)]


def symbol_frames(frame, symbols: Sequence[str]) -> dict[str, Any]:
    """A yf.download frame split per ticker (see services.domain.yahoo_frames). Tickers with no
    bar are left out (yfinance returns all-NaN columns for a ticker it could not get)."""
    found = {}
    for symbol in symbols:
        part = ticker_part(frame, symbol, symbols)
        if part is None:
            continue
        part = part.dropna(how="all")
        if not part.empty:
            found[symbol] = part
    return found


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int = 3
    backoff_s: float = 1.0  # doubles after each failed attempt
    timeout_s: float = 20.0  # one HTTP request
    sleep: Callable[[float], None] = time.sleep
    reachability: Callable[[float], str | None] = yahoo_unreachable
    note: Callable[[str], None] = log.info  # told about each failed attempt before the next


def _with_retries(what: str, retry: Retry, attempt: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    error = "no attempt made"
    for number in range(1, max(1, retry.attempts) + 1):
        try:
            found = attempt()
            if found:
                return found
            error = f"Yahoo returned no {what} for any symbol"
        except Exception as exc:  # yfinance raises many kinds; each is a failed attempt
            error = f"{type(exc).__name__}: {exc}"
        if number < retry.attempts:
            delay = retry.backoff_s * 2 ** (number - 1)
            retry.note(
                f"Yahoo {what}: attempt {number}/{retry.attempts} failed ({error}); retrying in {delay:g}s"
            )
            retry.sleep(delay)
    # Say why in the operator's terms: a machine that cannot reach Yahoo at all is the usual case.
    why = retry.reachability(min(retry.timeout_s, 5.0))
    raise YahooUnavailable(f"Yahoo {what} download failed after {retry.attempts} attempt(s): {why or error}")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _quiet_download(**kwargs: Any):
    """yf.download, whose per-ticker failures go to its log and stderr: kept out of the CLI's one
    line of error. The first of them becomes the exception's text when nothing came back."""
    yf = importlib.import_module("yfinance")  # lazy: pandas and yfinance only when fetching
    logger, collect = logging.getLogger("yfinance"), _Collect()
    logger.addHandler(collect)
    propagate, logger.propagate = logger.propagate, False
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            frame = yf.download(**kwargs)
    finally:
        logger.removeHandler(collect)
        logger.propagate = propagate
    if frame is None or frame.empty:
        raise YahooUnavailable(collect.messages[0][:300] if collect.messages else "empty answer")
    return frame


def download_daily(symbols: Sequence[str], start: date, end: date, retry: Retry) -> dict[str, list[DailyRow]]:
    """Daily rows per symbol in [start, end] from one yf.download call (retried)."""

    def attempt() -> dict[str, Any]:
        frame = _quiet_download(
            tickers=list(symbols),
            start=start.isoformat(),
            end=(end + timedelta(days=1)).isoformat(),  # Yahoo's end is exclusive
            interval="1d",
            group_by="ticker",
            auto_adjust=False,
            actions=False,
            threads=False,
            progress=False,
            timeout=retry.timeout_s,
        )
        return symbol_frames(frame, symbols)

    frames = _with_retries("daily bars", retry, attempt)
    return {
        symbol: sorted(
            (
                r
                for r in (daily_row(cells) for cells in frame_to_rows(part))
                if r is not None and r.date >= start
            ),
            key=lambda r: r.date,
        )
        for symbol, part in frames.items()
    }


def download_intraday(symbols: Sequence[str], interval: str, retry: Retry) -> dict[str, list[IntradayBar]]:
    """The intraday bars Yahoo keeps for `interval`, per symbol, from one yf.download call."""
    days = YAHOO_INTRADAY_DAYS[interval]

    def attempt() -> dict[str, Any]:
        frame = _quiet_download(
            tickers=list(symbols),
            period=f"{days}d",
            interval=interval,
            group_by="ticker",
            auto_adjust=False,
            threads=False,
            progress=False,
            ignore_tz=False,  # keep the instants
            timeout=retry.timeout_s,
        )
        return symbol_frames(frame, symbols)

    frames = _with_retries(f"{interval} bars", retry, attempt)
    found = {}
    for symbol, part in frames.items():
        bars = intraday_bars(part)
        if bars is not None:  # a naive time names no instant
            found[symbol] = bars
    return found


# ---- files -----------------------------------------------------------------------------------


def write_atomically(path: Path, text: str) -> None:
    """Temp file in the same folder, fsync, rename over `path`: readers see old or new, never half."""
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise


@dataclass
class FileReport:
    """One file after a fetch (or as `data status` finds it)."""

    symbol: str
    file: Path
    status: str  # written, up to date, refused, missing
    rows: int = 0
    first: str | None = None
    last: str | None = None
    added: int = 0
    detail: str = ""
    quality: dict = field(default_factory=dict)
    cleaning: dict = field(default_factory=dict)


def _read_rows(path: Path) -> list[DailyRow]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise MarketDataError(f"{path.name} is unreadable: {exc}") from exc
    return rows_from_csv(text, path.name)


def describe_daily(symbol: str, path: Path, now: datetime, status: str = "", detail: str = "") -> FileReport:
    """The file's dates, rows and the quality report market-data's csv source computes."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return FileReport(symbol, path, "missing", detail=detail or "no file")
    history = history_from_csv(symbol, text, now, asx_calendar.is_trading_day)
    bars = history.bars
    quality = assess_quality(
        bars, now, asx_calendar.is_trading_day, history.cleaning, is_index=symbol.startswith("^")
    )
    return FileReport(
        symbol,
        path,
        status or "present",
        rows=len(bars),
        first=bars[0].date.isoformat() if bars else None,
        last=bars[-1].date.isoformat() if bars else None,
        detail=detail,
        quality=quality,
        cleaning=history.cleaning.as_dict(),
    )


def fetch_daily(
    directory: Path,
    symbols: Sequence[str],
    now: datetime,
    *,
    years: float = 10.0,
    full: bool = False,
    retry: Retry = Retry(),
) -> list[FileReport]:
    """Bring `<directory>/<SYMBOL>.csv` up to the last session final at `now`, for each symbol.

    Raises YahooUnavailable (nothing written) when Yahoo does not answer after the retries."""
    directory.mkdir(parents=True, exist_ok=True)
    end = last_visible_date(now)
    earliest = end - timedelta(days=round(years * 365.25))
    existing = {s: ([] if full else _read_rows(directory / csv_file_name(s))) for s in symbols}
    starts = {
        s: (max(earliest, rows[-1].date - timedelta(days=OVERLAP_DAYS)) if rows else earliest)
        for s, rows in existing.items()
    }
    wanted = [s for s in symbols if full or not existing[s] or existing[s][-1].date < end]
    reports = {
        s: describe_daily(s, directory / csv_file_name(s), now, "up to date", "nothing new to fetch")
        for s in symbols
        if s not in wanted
    }
    if wanted:
        downloaded = download_daily(wanted, min(starts[s] for s in wanted), end, retry)
        for symbol in wanted:
            reports[symbol] = _store_daily(
                directory, symbol, existing[symbol], downloaded.get(symbol, []), starts[symbol], end, now
            )
    return [reports[s] for s in symbols]


def _store_daily(
    directory: Path,
    symbol: str,
    old: list[DailyRow],
    new: list[DailyRow],
    start: date,
    end: date,
    now: datetime,
) -> FileReport:
    path = directory / csv_file_name(symbol)
    new = [row for row in new if start <= row.date <= end]
    problem = download_problem(symbol, new, asx_calendar.is_trading_day)
    merge = merge_rows(old, new, end) if problem is None else None
    if merge is not None and merge.problem is not None:
        problem = f"{symbol}: {merge.problem}"
    if problem is not None or merge is None:
        return describe_daily(symbol, path, now, "refused", f"{problem}; file untouched")
    if not merge.added and merge.rescaled_by is None and old:
        return describe_daily(symbol, path, now, "up to date", "no new session")
    write_atomically(path, format_yahoo_csv(merge.rows))
    detail = f"{len(merge.added)} session(s) added" if old else f"{len(merge.rows)} rows"
    if merge.rescaled_by is not None:
        detail += (
            f"; earlier Adj Close multiplied by {merge.rescaled_by:.6f} (a dividend since the last fetch)"
        )
    report = describe_daily(symbol, path, now, "written", detail)
    report.added = len(merge.added)
    return report


# ---- intraday files ----------------------------------------------------------------------------


def format_intraday_csv(bars: Sequence[IntradayBar]) -> str:
    lines = [",".join(INTRADAY_COLUMNS)]
    for bar in bars:
        start = bar.start.astimezone(SYDNEY).isoformat(sep=" ")
        lines.append(f"{start},{bar.open:.6f},{bar.high:.6f},{bar.low:.6f},{bar.close:.6f},{bar.volume}")
    return "\n".join(lines) + "\n"


def fetch_intraday(
    directory: Path, symbols: Sequence[str], interval: str, now: datetime, retry: Retry = Retry()
) -> list[FileReport]:
    """Append the completed `interval` bars Yahoo has after each file's last bar."""
    step = timedelta(seconds=interval_seconds(interval))
    downloaded = download_intraday(symbols, interval, retry)
    reports = []
    for symbol in symbols:
        path = directory / intraday_csv_file_name(symbol, interval)
        try:
            old = list(parse_intraday_csv(path.read_text(encoding="utf-8"), path.name).bars)
        except FileNotFoundError:
            old = []
        last = old[-1].start if old else None
        new = [
            b
            for b in downloaded.get(symbol, [])
            if b.start + step <= now and (last is None or b.start > last)
        ]
        if not downloaded.get(symbol):
            reports.append(
                FileReport(
                    symbol, path, "refused", len(old), detail=f"no {interval} bars from Yahoo; file untouched"
                )
            )
            continue
        bars = old + new
        if new:
            write_atomically(path, format_intraday_csv(bars))
        reports.append(
            FileReport(
                symbol,
                path,
                "written" if new else "up to date",
                rows=len(bars),
                first=bars[0].start.isoformat() if bars else None,
                last=bars[-1].start.isoformat() if bars else None,
                added=len(new),
                detail=f"{len(new)} bar(s) added",
            )
        )
    return reports
