"""Daily history files kept up to date from Yahoo: rows as Yahoo exports them, the merge of a new
download into an existing file, and the check that refuses a download with holes. Pure.

`service_manager.py data fetch` and `train_models.py --source yfinance` download with
services.clients.yahoo_history and write through this module, so a file they write is the text a
Yahoo export would be (`Date,Open,High,Low,Close,Adj Close,Volume`, prices with six decimals,
`null` for a missing value) and market-data's csv source reads it unchanged.

An incremental fetch keeps every earlier row and appends only sessions after the file's last
date. Yahoo's `Adj Close` is re-based on every dividend (each earlier price is multiplied by the
dividend's factor), so the download overlaps the file by a few sessions: when the overlap's
adjusted closes differ by one common factor, the earlier rows are multiplied by it, as Yahoo
would have; when the raw `Close` differs (a split or a correction), nothing is merged and the
operator is told to fetch `--full`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

from services.domain.bars import trading_days_between
from services.domain.price_history import YAHOO_COLUMNS, parse_yahoo_csv

# One in this many sessions of a download may be missing before the download is refused: Yahoo's
# decade of ASX history has a handful of absent sessions, a fetch of a week must have none.
HOLE_TOLERANCE = 200
# Two prices agree when they are this close (Yahoo rounds to float32 and to six decimals).
_RELATIVE_TOLERANCE = 1e-4
_NULLS = frozenset({"", "null", "nan", "none", "n/a"})


@dataclass(frozen=True, slots=True)
class DailyRow:
    """One row of a Yahoo export; None for a `null` cell."""

    date: date
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    adj_close: float | None
    volume: float | None

    @property
    def is_null(self) -> bool:
        return self.close is None or self.adj_close is None


@dataclass(frozen=True, slots=True)
class DailyMerge:
    rows: tuple[DailyRow, ...]  # the file's rows after the merge, oldest first
    added: tuple[date, ...]  # sessions that were not in the file before
    rescaled_by: float | None  # the factor applied to earlier Adj Close (a dividend since), or None
    problem: str | None  # why nothing may be written (the file stays as it is)


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() in _NULLS:
            return None
        value = float(value)
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _day(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value).strip()[:10])


def daily_row(cells: Sequence[object]) -> DailyRow | None:
    """(Date, Open, High, Low, Close, Adj Close, Volume) cells -> a row; None for an unreadable
    date or number (such a row is not worth keeping: the cleaner would drop it too)."""
    try:
        numbers = [_number(v) for v in cells[1:7]]
        return DailyRow(_day(cells[0]), *numbers) if len(numbers) == 6 else None
    except (ValueError, TypeError, IndexError):
        return None


def rows_from_csv(text: str, name: str) -> list[DailyRow]:
    """The rows of a Yahoo export's text, oldest first, one per date (a later row wins).
    MarketDataError (price_history) for text that is not a Yahoo export."""
    return _by_date(daily_row(cells) for cells in parse_yahoo_csv(text, name))


def _by_date(rows: Iterable[DailyRow | None]) -> list[DailyRow]:
    found = {row.date: row for row in rows if row is not None}
    return [found[d] for d in sorted(found)]


def _cell(value: float | None, decimals: int) -> str:
    return "null" if value is None else f"{value:.{decimals}f}"


def format_yahoo_csv(rows: Iterable[DailyRow]) -> str:
    """Rows as a Yahoo export's text: header, six decimals for prices, whole volumes, `null`."""
    lines = [",".join(YAHOO_COLUMNS)]
    for row in rows:
        if row.is_null:  # Yahoo writes a row with any missing price as all null
            lines.append(f"{row.date.isoformat()}," + ",".join(["null"] * 6))
            continue
        prices = (row.open, row.high, row.low, row.close, row.adj_close)
        lines.append(
            ",".join([row.date.isoformat(), *(_cell(p, 6) for p in prices), _cell(row.volume or 0.0, 0)])
        )
    return "\n".join(lines) + "\n"


def holes(rows: Sequence[DailyRow], is_trading_day: Callable[[date], bool]) -> list[date]:
    """Trading days between the first and last row with no usable row (null rows count)."""
    usable = {row.date for row in rows if not row.is_null}
    if not usable:
        return []
    days = trading_days_between(min(usable), max(usable), is_trading_day)
    return [d for d in days if d not in usable]


def download_problem(
    symbol: str, rows: Sequence[DailyRow], is_trading_day: Callable[[date], bool]
) -> str | None:
    """Why a downloaded symbol must not be written (no rows, or more holes than tolerated)."""
    if not any(not row.is_null for row in rows):
        return f"{symbol}: Yahoo returned no rows"
    missing = holes(rows, is_trading_day)
    sessions = len(trading_days_between(rows[0].date, rows[-1].date, is_trading_day))
    if len(missing) > sessions // HOLE_TOLERANCE:
        shown = ", ".join(d.isoformat() for d in missing[:5]) + (" ..." if len(missing) > 5 else "")
        return (
            f"{symbol}: {len(missing)} of {sessions} sessions missing from the download "
            f"(at most {sessions // HOLE_TOLERANCE} tolerated): {shown}"
        )
    return None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _RELATIVE_TOLERANCE * max(abs(a), abs(b))


def _rescale_factor(old: Sequence[DailyRow], new: Sequence[DailyRow]) -> tuple[float | None, str | None]:
    """(factor for the earlier Adj Close, problem) from the sessions both have."""
    new_by_date = {row.date: row for row in new if not row.is_null}
    shared = [(o, new_by_date[o.date]) for o in old if not o.is_null and o.date in new_by_date]
    if not shared:
        return None, None
    for before, after in shared:
        if not _close(before.close, after.close):  # type: ignore[arg-type]
            return None, (
                f"Close on {before.date} changed from {before.close} to {after.close} (a split or "
                "a correction?): fetch again with --full"
            )
    factors = [after.adj_close / before.adj_close for before, after in shared]  # type: ignore[operator]
    if all(_close(f, 1.0) for f in factors):
        return None, None
    if not all(_close(f, factors[-1]) for f in factors):
        return None, "Adj Close of the overlapping sessions changed by different factors: fetch with --full"
    return factors[-1], None


def merge_rows(old: Sequence[DailyRow], new: Sequence[DailyRow], last_day: date) -> DailyMerge:
    """The file after appending the download `new` to the file's `old` rows.

    Rows after `last_day` (the last session final at the suite's now) are never written: today's
    bar during the session is not a day's bar yet. Earlier rows are kept; only sessions after
    the file's last date are added; a dividend since the last fetch rescales the earlier Adj
    Close (see the module doc)."""
    new = [row for row in new if row.date <= last_day]
    if not old:
        return DailyMerge(tuple(new), tuple(r.date for r in new), None, None)
    factor, problem = _rescale_factor(old, new)
    if problem is not None:
        return DailyMerge(tuple(old), (), None, problem)
    last = old[-1].date
    added = [row for row in new if row.date > last]
    kept = list(old)
    if factor is not None:
        kept = [
            row if row.adj_close is None else replace(row, adj_close=row.adj_close * factor) for row in kept
        ]
    return DailyMerge(tuple(kept + added), tuple(r.date for r in added), factor, None)
