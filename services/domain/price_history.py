"""Daily price history as the suite's sources deliver it: the value type and its errors, Yahoo CSV
text parsed into bars, and the seeded synthetic walk.

Pure: no file, network or clock. Callers read a file themselves and pass its text, and pass `now`
(market-data's csv source caches what it parses; training and the replay report read a file
once). So market-data, ml-model's training and the replay driver share one parser and one
synthetic walk without importing each other's modules.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from services.domain.bars import (
    Bar,
    CleaningReport,
    IsTradingDay,
    bar_visible_from,
    clean_daily_rows,
    last_visible_date,
    trading_days_between,
    visible_bars,
)

_SYMBOL_RE = re.compile(r"^\^?[A-Z0-9][A-Z0-9.\-]{0,19}$")
YAHOO_COLUMNS = ("Date", "Open", "High", "Low", "Close", "Adj Close", "Volume")


class MarketDataError(Exception):
    """A source could not deliver data for a symbol."""


class UnknownSymbolError(MarketDataError):
    """The source has no such symbol (no file, or Yahoo returned nothing for it)."""


class SourceUnavailableError(MarketDataError):
    """The source failed for a reason that may pass (network, timeout, rate limit)."""


@dataclass(frozen=True, slots=True)
class History:
    symbol: str
    source: str
    bars: tuple[Bar, ...]
    cleaning: CleaningReport


def normalise_symbol(symbol: object) -> str:
    """Upper-cased symbol, or ValueError: also what keeps a symbol from naming a path."""
    if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol.strip().upper()):
        raise ValueError(f"not a valid symbol: {symbol!r} (expected e.g. CBA.AX or ^AXJO)")
    return symbol.strip().upper()


def visible_history(
    symbol: str, source: str, bars: Sequence[Bar], report: CleaningReport, now: datetime
) -> History:
    """The history a client at `now` may see: bars and cleaning reasons up to the last final bar."""
    cutoff = last_visible_date(now)
    return History(symbol, source, tuple(visible_bars(bars, now)), report.until(cutoff))


def close_summary(history: History) -> dict:
    """The last close's `price, change, change_pct, date, as_of` (market-data's reply and event,
    and the in-process replay's market reading: both price a closed market with this)."""
    bars = history.bars
    last = bars[-1]
    prev = bars[-2].close if len(bars) > 1 else None
    change = last.close - prev if prev else None
    return {
        "price": last.close,
        "change": change,
        "change_pct": change / prev * 100.0 if change is not None and prev else None,
        "date": last.date.isoformat(),
        "as_of": bar_visible_from(last.date).isoformat(),
    }


# --- Yahoo CSV text -----------------------------------------------------------------------------


def csv_file_name(symbol: str) -> str:
    """`CBA.AX` -> `CBA.AX.csv`; the index `^AXJO` -> `AXJO.csv` (a caret is awkward in file names)."""
    return f"{symbol.lstrip('^')}.csv"


def parse_yahoo_csv(text: str, name: str) -> list[list[str]]:
    """Rows of a Yahoo export's text as (Date, Open, High, Low, Close, Adj Close, Volume) strings.

    Columns are found by header name; a file without `Adj Close` uses `Close` for it. A leading
    byte-order mark is ignored. `name` (the file's name) is only for the error message:
    MarketDataError for a missing column or text that is not CSV.
    """
    try:
        # newline="": line ends as in a file opened for the csv module (a quoted field may span lines)
        reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in YAHOO_COLUMNS if c not in header and c != "Adj Close"]
        if missing:
            raise MarketDataError(f"{name}: missing column(s) {', '.join(missing)}")
        close_column = "Adj Close" if "Adj Close" in header else "Close"
        index = [header.index(c if c != "Adj Close" else close_column) for c in YAHOO_COLUMNS]
        return [[row[i] if i < len(row) else "" for i in index] for row in reader if any(row)]
    except csv.Error as exc:
        raise MarketDataError(f"{name} is unreadable: {exc}") from exc


def history_from_csv(
    symbol: str, text: str, now: datetime, is_trading_day: IsTradingDay | None = None
) -> History:
    """The cleaned history of `symbol` in the text of its CSV file, as visible at `now`."""
    bars, report = clean_daily_rows(parse_yahoo_csv(text, csv_file_name(symbol)), is_trading_day)
    return visible_history(symbol, "csv", bars, report, now)


# --- synthetic ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyntheticProfile:
    level: float  # the price the walk reverts to
    daily_vol: float  # standard deviation of daily log returns
    volume: int  # typical daily volume


# Levels near the Big 4's recent prices; daily volatility in the 1.2-1.6% range of large
# Australian banks; the index at ~0.9%/day with Yahoo-style volumes.
KNOWN_PROFILES = {
    "CBA.AX": SyntheticProfile(115.0, 0.012, 2_000_000),
    "WBC.AX": SyntheticProfile(28.0, 0.014, 6_000_000),
    "ANZ.AX": SyntheticProfile(28.0, 0.014, 5_500_000),
    "NAB.AX": SyntheticProfile(33.0, 0.013, 5_000_000),
    "^AXJO": SyntheticProfile(7600.0, 0.009, 700_000_000),
}
SYNTHETIC_EPOCH = date(2015, 1, 2)  # every walk starts here, so a date's bar never depends on "now"
_REVERSION = 0.02  # per-day pull of log price to its level: keeps a decade-long walk plausible


def stable_seed(symbol: str) -> int:
    """A seed that is the same in every process (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "big")


def profile_for(symbol: str) -> SyntheticProfile:
    if symbol in KNOWN_PROFILES:
        return KNOWN_PROFILES[symbol]
    rng = random.Random(stable_seed("profile:" + symbol))
    return SyntheticProfile(
        level=round(rng.uniform(20.0, 40.0), 2),
        daily_vol=rng.uniform(0.012, 0.016),
        volume=int(rng.uniform(1_000_000, 6_000_000)),
    )


def _synthetic_bar(day: date, prev_close: float, profile: SyntheticProfile, rng: random.Random) -> Bar:
    sigma = profile.daily_vol
    pull = _REVERSION * (math.log(profile.level) - math.log(prev_close))
    ret = pull + rng.gauss(0.0, sigma)
    open_ = prev_close * math.exp(rng.gauss(0.0, sigma * 0.3))  # overnight gap
    close = prev_close * math.exp(ret)
    high = max(open_, close) * math.exp(abs(rng.gauss(0.0, sigma * 0.5)))
    low = min(open_, close) * math.exp(-abs(rng.gauss(0.0, sigma * 0.5)))
    # Volume rises on big moves, as real volume does.
    volume = int(profile.volume * math.exp(rng.gauss(0.0, 0.3)) * (1.0 + abs(ret) / sigma * 0.2))
    close = round(close, 4)
    return Bar(day, round(open_, 4), round(high, 4), round(low, 4), close, close, volume)


def trading_sessions(start: date, until: date, is_trading_day: IsTradingDay) -> list[date]:
    """The sessions a walk steps through: trading days in [start, until]."""
    return trading_days_between(start, until, is_trading_day)


def _walked_close(prev_close: float, profile: SyntheticProfile, rng: random.Random) -> float:
    """_synthetic_bar's close alone, drawing what it draws in the same order (the walk stays the
    same): a bar that is walked past but not kept."""
    sigma = profile.daily_vol
    gauss = rng.gauss
    ret = _REVERSION * (math.log(profile.level) - math.log(prev_close)) + gauss(0.0, sigma)
    gauss(0.0, sigma * 0.3)  # the overnight gap
    gauss(0.0, sigma * 0.5)  # the high's wick
    gauss(0.0, sigma * 0.5)  # the low's
    gauss(0.0, 0.3)  # the volume
    return round(prev_close * math.exp(ret), 4)


def synthetic_bars(symbol: str, sessions: Sequence[date], first: int = 0) -> list[Bar]:
    """The deterministic walk for `symbol` over `sessions` (trading days from SYNTHETIC_EPOCH on).

    The walk is a pure function of the symbol and the session list, so a date's bar is the same
    whatever day the suite starts on. adj_close equals close: the walk pays no dividends.
    `first`: the bars of sessions[first:] only; the walk still steps through the earlier sessions
    (a quote needs the last few hundred of ~3000: a third of the time).
    """
    profile = profile_for(symbol)
    rng = random.Random(stable_seed(symbol))
    price = profile.level
    for _ in sessions[:first]:
        price = _walked_close(price, profile, rng)
    bars: list[Bar] = []
    for day in sessions[first:]:
        bar = _synthetic_bar(day, price, profile, rng)
        bars.append(bar)
        price = bar.close
    return bars
