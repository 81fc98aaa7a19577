"""ASX trading calendar: trading days, holidays, early closes and session phases.

Pure: no clock reads, every function takes the instant or date it is asked about.
All wall times are Sydney local (zoneinfo "Australia/Sydney", AEST/AEDT), whatever the
host's time zone, so a host in UTC and a host in Sydney give the same answers.

Holidays come from the `holidays` library's ASX market calendar
(`holidays.financial_holidays("XASX")`), not hand-written rules: it is maintained against
the ASX's published trading calendars, knows the ASX-specific substitution rules (Anzac Day
on a weekend is NOT moved; Christmas/Boxing Day on a weekend move to Mon/Tue), one-off
closures (e.g. the 2022 National Day of Mourning), and leaves out the NSW-only public
holidays the ASX trades through (Labour Day, Bank Holiday). Its HALF_DAY category gives
the 14:10 early closes: the last business day before Christmas and the last business day
of the year, only when 24 and 31 December are weekdays (per the ASX calendars it cites,
e.g. 2022 and 2023 had no early close).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from services.domain import asx_holiday_table

SYDNEY = ZoneInfo("Australia/Sydney")

PRE_OPEN_TIME = time(7, 0)
OPEN_TIME = time(10, 0)
CLOSE_TIME = time(16, 0)
EARLY_CLOSE_TIME = time(14, 10)
# CommSec's after-hours adjust phase ends ~18:50-19:00; after that the system is unavailable.
POST_MARKET_END_TIME = time(19, 0)

# No trading day is ever more than a long weekend away; this bounds searches so a
# calendar bug cannot become an infinite loop.
_MAX_SEARCH_DAYS = 30


class Phase(StrEnum):
    PRE_MARKET = "pre_market"
    OPEN = "open"
    POST_MARKET = "post_market"
    CLOSED = "closed"


def library_holidays(year: int, category: str) -> dict[date, str]:
    """The `holidays` library's XASX calendar for one year ("public" or "half_day").

    Importing `holidays` loads every country it knows (~19 MB per process), so the services read
    the table generated from it (asx_holiday_table.py, checked against the library by a test) and
    fall back to the library only for years outside that table.
    """
    import holidays
    from holidays.constants import HALF_DAY, PUBLIC

    chosen = {"public": PUBLIC, "half_day": HALF_DAY}[category]
    return dict(holidays.financial_holidays("XASX", years=year, categories=(chosen,)))


def _from_table(year: int, table: dict[str, str], category: str) -> dict[date, str]:
    if asx_holiday_table.FIRST_YEAR <= year <= asx_holiday_table.LAST_YEAR:
        prefix = f"{year:04d}-"
        return {date.fromisoformat(k): v for k, v in table.items() if k.startswith(prefix)}
    return library_holidays(year, category)


@lru_cache(maxsize=256)  # every year a daily file may span (bars.FIRST_BAR_DATE..LAST_BAR_DATE)
def _public_holidays(year: int) -> dict[date, str]:
    return _from_table(year, asx_holiday_table.PUBLIC, "public")


@lru_cache(maxsize=64)
def _early_closes(year: int) -> dict[date, str]:
    return _from_table(year, asx_holiday_table.HALF_DAY, "half_day")


def holiday_table_source(first_year: int, last_year: int) -> str:
    """The Python source of asx_holiday_table.py, generated from the library."""
    import holidays

    def entries(category: str) -> str:
        rows = []
        for year in range(first_year, last_year + 1):
            for day, name in sorted(library_holidays(year, category).items()):
                rows.append(f"    {day.isoformat()!r}: {name!r},")
        return "\n".join(rows)

    return (
        '"""ASX holidays and early closes, generated from the `holidays` library (do not edit).\n\n'
        "Regenerate with: python -m services.domain.asx_calendar (tests/unit/test_asx_calendar.py\n"
        'checks this table against the installed library, so a library update that changes it fails).\n"""\n\n'
        f"GENERATED_FROM = {f'holidays {holidays.__version__}: financial_holidays(XASX)'!r}\n"
        f"FIRST_YEAR = {first_year}\nLAST_YEAR = {last_year}\n\n"
        f"PUBLIC: dict[str, str] = {{\n{entries('public')}\n}}\n\n"
        f"HALF_DAY: dict[str, str] = {{\n{entries('half_day')}\n}}\n"
    )


def to_sydney(moment: datetime) -> datetime:
    """The same instant in Sydney time. Naive datetimes are refused: their zone is unknowable."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware (naive times are ambiguous)")
    return moment.astimezone(SYDNEY)


def holiday_name(d: date) -> str | None:
    """The ASX holiday on this date (market closed), or None."""
    return _public_holidays(d.year).get(d)


def is_trading_day(d: date) -> bool:
    """True when the ASX cash market trades on this (Sydney) date."""
    return d.weekday() < 5 and d not in _public_holidays(d.year)


def is_early_close(d: date) -> bool:
    """True when this trading day closes at 14:10 instead of 16:00."""
    return is_trading_day(d) and d in _early_closes(d.year)


def session_open(d: date) -> datetime:
    """Normal-trading start (10:00 Sydney) of trading day `d`."""
    _require_trading_day(d)
    return datetime.combine(d, OPEN_TIME, tzinfo=SYDNEY)


def session_close(d: date) -> datetime:
    """Normal-trading end of trading day `d`: 16:00, or 14:10 on early-close days."""
    _require_trading_day(d)
    close = EARLY_CLOSE_TIME if is_early_close(d) else CLOSE_TIME
    return datetime.combine(d, close, tzinfo=SYDNEY)


def _require_trading_day(d: date) -> None:
    if not is_trading_day(d):
        raise ValueError(f"{d.isoformat()} is not an ASX trading day")


def next_trading_day(d: date) -> date:
    """The first trading day strictly after `d`."""
    for offset in range(1, _MAX_SEARCH_DAYS + 1):
        candidate = d + timedelta(days=offset)
        if is_trading_day(candidate):
            return candidate
    raise RuntimeError(f"no ASX trading day within {_MAX_SEARCH_DAYS} days after {d}")


def previous_trading_day(d: date) -> date:
    """The last trading day strictly before `d`."""
    for offset in range(1, _MAX_SEARCH_DAYS + 1):
        candidate = d - timedelta(days=offset)
        if is_trading_day(candidate):
            return candidate
    raise RuntimeError(f"no ASX trading day within {_MAX_SEARCH_DAYS} days before {d}")


def trading_days_between(start: date, end: date) -> list[date]:
    """Trading days d with start <= d <= end (both inclusive), oldest first."""
    days = (end - start).days
    candidates = (start + timedelta(days=i) for i in range(days + 1))
    return [d for d in candidates if is_trading_day(d)]


def phase_at(now: datetime) -> Phase:
    """The ASX trading phase at instant `now`."""
    local = to_sydney(now)
    d = local.date()
    if not is_trading_day(d):
        return Phase.CLOSED
    wall = local.timetz().replace(tzinfo=None)
    if wall < PRE_OPEN_TIME or wall >= POST_MARKET_END_TIME:
        return Phase.CLOSED
    if wall < OPEN_TIME:
        return Phase.PRE_MARKET
    if local < session_close(d):
        return Phase.OPEN
    return Phase.POST_MARKET


def is_market_open(now: datetime) -> bool:
    """True during normal (continuous) trading: 10:00 to the session close on trading days."""
    return phase_at(now) is Phase.OPEN


def _next_edge(now: datetime, edge) -> datetime:
    """Today's `edge` (session_open or session_close) if still ahead, else the next session's."""
    local = to_sydney(now)
    d = local.date()
    if is_trading_day(d) and local < edge(d):
        return edge(d)
    return edge(next_trading_day(d))


def next_open(now: datetime) -> datetime:
    """The first session open strictly after `now` (so while open, tomorrow's)."""
    return _next_edge(now, session_open)


def next_close(now: datetime) -> datetime:
    """The close of the current session if open, else of the next session."""
    return _next_edge(now, session_close)


def market_status(now: datetime) -> dict:
    """Everything a caller needs to know about the market at `now` (JSON-ready)."""
    local = to_sydney(now)
    d = local.date()
    return {
        "now": local.isoformat(),
        "phase": str(phase_at(local)),
        "is_trading_day": is_trading_day(d),
        "holiday": holiday_name(d),
        "early_close": is_early_close(d),
        "next_open": next_open(local).isoformat(),
        "next_close": next_close(local).isoformat(),
    }


if __name__ == "__main__":
    from pathlib import Path

    target = Path(__file__).with_name("asx_holiday_table.py")
    target.write_text(holiday_table_source(2000, 2040))
    print(f"wrote {target}")
