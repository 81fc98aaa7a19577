"""ASX calendar: holidays, weekends, early closes, phases, DST and next open/close."""

from __future__ import annotations

import time as time_module
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain import asx_calendar as cal

# Every day the ASX is closed in 2025 and 2026 besides weekends, with the library's names.
# Source: ASX "trading hours and calendar" pages for 2025/2026.
ASX_HOLIDAYS = [
    (date(2025, 1, 1), "New Year's Day"),
    (date(2025, 1, 27), "Australia Day"),  # 26 Jan 2025 is a Sunday: moved to Monday
    (date(2025, 4, 18), "Good Friday"),
    (date(2025, 4, 21), "Easter Monday"),
    (date(2025, 4, 25), "ANZAC Day"),
    (date(2025, 6, 9), "King's Birthday"),
    (date(2025, 12, 25), "Christmas Day"),
    (date(2025, 12, 26), "Boxing Day"),
    (date(2026, 1, 1), "New Year's Day"),
    (date(2026, 1, 26), "Australia Day"),
    (date(2026, 4, 3), "Good Friday"),
    (date(2026, 4, 6), "Easter Monday"),
    (date(2026, 6, 8), "King's Birthday"),
    (date(2026, 12, 25), "Christmas Day"),
    (date(2026, 12, 28), "Boxing Day"),  # 26 Dec 2026 is a Saturday: moved to Monday
]

# Days that are public holidays somewhere in NSW (or look like it) but the ASX trades.
ASX_TRADES_ANYWAY = [
    date(2025, 1, 28),  # Tuesday after the Australia Day substitute: ordinary day
    date(2025, 8, 4),  # NSW Bank Holiday (first Monday of August)
    date(2025, 10, 6),  # NSW Labour Day
    date(2025, 11, 4),  # Melbourne Cup (Victoria only)
    date(2025, 12, 24),  # Christmas Eve: trades, early close
    date(2025, 12, 29),
    date(2025, 12, 31),  # New Year's Eve: trades, early close
    date(2026, 1, 2),
    date(2026, 4, 27),  # Anzac Day 2026 is a Saturday: the ASX does NOT substitute a Monday
    date(2026, 8, 3),  # NSW Bank Holiday
    date(2026, 10, 5),  # NSW Labour Day
    date(2026, 12, 29),  # Tuesday after the Boxing Day substitute
]


def _sydney(day: date, hour: int, minute: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=cal.SYDNEY)


EARLY_CLOSE_DAYS = [date(2025, 12, 24), date(2025, 12, 31), date(2026, 12, 24), date(2026, 12, 31)]


@pytest.mark.parametrize(("day", "name"), ASX_HOLIDAYS)
def test_every_asx_holiday_is_closed_with_its_name(day: date, name: str) -> None:
    assert day.weekday() < 5  # a weekday closure, not a weekend
    assert not cal.is_trading_day(day)
    assert cal.holiday_name(day) == name
    status = cal.market_status(datetime.combine(day, cal.OPEN_TIME, tzinfo=cal.SYDNEY))
    assert status["phase"] == "closed"
    assert status["holiday"] == name
    assert status["is_trading_day"] is False


@pytest.mark.parametrize("year", [2025, 2026])
def test_holiday_table_is_complete(year: int) -> None:
    # Every weekday closure in the year is in the table above: nothing extra, nothing missing.
    days = [date(year, 1, 1) + timedelta(days=i) for i in range(366)]
    closed = {d for d in days if d.year == year and d.weekday() < 5 and not cal.is_trading_day(d)}
    assert closed == {d for d, _ in ASX_HOLIDAYS if d.year == year}


@pytest.mark.parametrize("day", ASX_TRADES_ANYWAY)
def test_nsw_only_and_eve_days_are_trading_days(day: date) -> None:
    assert cal.is_trading_day(day)
    assert cal.holiday_name(day) is None


@pytest.mark.parametrize(
    "day",
    [date(2025, 1, 4), date(2025, 1, 5), date(2026, 4, 25), date(2026, 12, 26), date(2026, 3, 1)],
)
def test_weekends_are_closed_without_a_holiday_name(day: date) -> None:
    assert day.weekday() >= 5
    assert not cal.is_trading_day(day)
    # Weekend holidays are not ASX holidays (the substitute weekday is), so no name.
    assert cal.holiday_name(day) is None


@pytest.mark.parametrize("day", EARLY_CLOSE_DAYS)
def test_early_close_days_close_at_1410(day: date) -> None:
    assert cal.is_early_close(day)
    close = cal.session_close(day)
    assert (close.hour, close.minute) == (14, 10)
    assert cal.phase_at(_sydney(day, 14, 9)) == cal.Phase.OPEN
    assert cal.phase_at(_sydney(day, 14, 10)) == cal.Phase.POST_MARKET
    assert cal.market_status(_sydney(day, 12, 0))["early_close"] is True


@pytest.mark.parametrize("day", [date(2025, 12, 23), date(2025, 12, 30), date(2026, 12, 23)])
def test_days_around_early_closes_close_at_1600(day: date) -> None:
    assert not cal.is_early_close(day)
    assert cal.session_close(day).time() == cal.CLOSE_TIME


def test_early_close_years_where_christmas_eve_is_a_weekend_follow_the_asx_calendar() -> None:
    # 24 Dec 2022 was a Saturday; ASX published normal hours for Friday 23 Dec 2022.
    assert not cal.is_early_close(date(2022, 12, 23))
    assert cal.is_early_close(date(2024, 12, 24))


@pytest.mark.parametrize(
    ("local", "phase"),
    [
        ("2025-06-10T06:59:59", "closed"),
        ("2025-06-10T07:00:00", "pre_market"),
        ("2025-06-10T09:59:59", "pre_market"),
        ("2025-06-10T10:00:00", "open"),
        ("2025-06-10T15:59:59", "open"),
        ("2025-06-10T16:00:00", "post_market"),
        ("2025-06-10T18:59:59", "post_market"),
        ("2025-06-10T19:00:00", "closed"),
        ("2025-06-10T23:30:00", "closed"),
        ("2025-06-14T12:00:00", "closed"),  # Saturday
        ("2025-06-09T12:00:00", "closed"),  # King's Birthday
        ("2025-12-31T15:00:00", "post_market"),  # after the 14:10 early close
    ],
)
def test_phase_boundaries(local: str, phase: str) -> None:
    now = datetime.fromisoformat(local).replace(tzinfo=cal.SYDNEY)
    assert cal.market_status(now)["phase"] == phase
    assert cal.is_market_open(now) == (phase == "open")


@pytest.mark.parametrize(
    ("now", "next_open", "next_close"),
    [
        # Thursday before Easter 2025 after the close: Good Friday, weekend, Easter Monday,
        # so the next session is Tuesday 22 April (and DST ended on 6 April: +10:00).
        ("2025-04-17T16:30:00+10:00", "2025-04-22T10:00:00+10:00", "2025-04-22T16:00:00+10:00"),
        # Easter 2026: Good Friday 3 Apr, DST ends Sunday 5 Apr, Easter Monday 6 Apr.
        ("2026-04-02T12:00:00+11:00", "2026-04-07T10:00:00+10:00", "2026-04-02T16:00:00+11:00"),
        # Friday before DST starts (Sunday 5 Oct 2025): close at +10, open Monday at +11.
        ("2025-10-03T12:00:00+10:00", "2025-10-06T10:00:00+11:00", "2025-10-03T16:00:00+10:00"),
        # Pre-market: today's open is the next open.
        ("2025-06-10T08:00:00+10:00", "2025-06-10T10:00:00+10:00", "2025-06-10T16:00:00+10:00"),
        # Christmas Eve early close, then Christmas + Boxing Day + weekend.
        ("2025-12-24T13:00:00+11:00", "2025-12-29T10:00:00+11:00", "2025-12-24T14:10:00+11:00"),
        # Asked in UTC: 23:00Z on 30 Dec 2025 is already 10:00 on the 31st in Sydney.
        ("2025-12-30T23:00:00+00:00", "2026-01-02T10:00:00+11:00", "2025-12-31T14:10:00+11:00"),
        # Boxing Day 2026 substitute on Monday 28 Dec.
        ("2026-12-24T15:00:00+11:00", "2026-12-29T10:00:00+11:00", "2026-12-29T16:00:00+11:00"),
    ],
)
def test_next_open_and_close(now: str, next_open: str, next_close: str) -> None:
    status = cal.market_status(datetime.fromisoformat(now))
    assert status["next_open"] == next_open
    assert status["next_close"] == next_close


@pytest.mark.parametrize(
    ("day", "open_offset_h"),
    [
        (date(2025, 4, 4), 11),  # last Friday of AEDT (DST ends Sunday 6 April 2025)
        (date(2025, 4, 7), 10),  # first Monday of AEST
        (date(2025, 10, 3), 10),  # last Friday of AEST (DST starts Sunday 5 October 2025)
        (date(2025, 10, 6), 11),  # first Monday of AEDT
        (date(2026, 4, 7), 10),  # DST ended Sunday 5 April 2026
        (date(2026, 10, 5), 11),  # DST started Sunday 4 October 2026
    ],
)
def test_session_times_follow_dst(day: date, open_offset_h: int) -> None:
    opening = cal.session_open(day)
    assert opening.utcoffset() == timedelta(hours=open_offset_h)
    # 10:00 Sydney is 00:00 UTC in AEST and 23:00 UTC the day before in AEDT.
    assert opening.astimezone(UTC).hour == (0 if open_offset_h == 10 else 23)


@pytest.mark.parametrize(
    ("utc", "phase"),
    [
        # The DST-end Sunday itself and the Monday after, asked in UTC.
        ("2025-04-05T23:00:00+00:00", "closed"),  # Sunday 09:00 AEST
        ("2025-04-07T00:00:00+00:00", "open"),  # Monday 10:00 AEST
        ("2025-04-06T23:59:59+00:00", "pre_market"),  # Monday 09:59:59 AEST
        ("2025-10-05T23:00:00+00:00", "open"),  # Monday 10:00 AEDT
        ("2025-10-05T22:59:59+00:00", "pre_market"),
    ],
)
def test_phases_around_dst_asked_in_utc(utc: str, phase: str) -> None:
    assert cal.phase_at(datetime.fromisoformat(utc)) == phase


@pytest.fixture
def host_tz(monkeypatch: pytest.MonkeyPatch):
    def set_tz(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time_module.tzset()

    yield set_tz
    monkeypatch.undo()
    time_module.tzset()


@pytest.mark.parametrize("host", ["UTC", "America/New_York", "Australia/Sydney"])
def test_answers_do_not_depend_on_host_time_zone(host_tz, host: str) -> None:
    host_tz(host)
    now = datetime(2025, 12, 30, 23, 0, tzinfo=UTC)
    assert cal.market_status(now) == {
        "now": "2025-12-31T10:00:00+11:00",
        "phase": "open",
        "is_trading_day": True,
        "holiday": None,
        "early_close": True,
        "next_open": "2026-01-02T10:00:00+11:00",
        "next_close": "2025-12-31T14:10:00+11:00",
    }


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.market_status(datetime(2025, 6, 10, 12, 0))


def test_session_times_refuse_non_trading_days() -> None:
    with pytest.raises(ValueError, match="not an ASX trading day"):
        cal.session_close(date(2025, 12, 25))


@pytest.mark.parametrize(
    ("start", "end", "count"),
    [
        (date(2025, 4, 14), date(2025, 4, 25), 7),  # Easter week + Anzac Day: 10 weekdays - 3
        (date(2025, 12, 22), date(2026, 1, 2), 7),  # Christmas/New Year: 10 weekdays - 3
        (date(2025, 1, 1), date(2025, 12, 31), 253),  # 261 weekdays - 8 holidays
        (date(2026, 1, 1), date(2026, 12, 31), 254),  # 261 weekdays - 7 (Anzac on Saturday)
        (date(2025, 6, 9), date(2025, 6, 9), 0),  # a single holiday
        (date(2025, 6, 10), date(2025, 6, 10), 1),  # a single trading day: inclusive
        (date(2025, 6, 10), date(2025, 6, 1), 0),  # reversed range is empty
    ],
)
def test_trading_days_between(start: date, end: date, count: int) -> None:
    assert len(cal.trading_days_between(start, end)) == count


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 1)))
def test_next_open_and_close_invariants(naive: datetime) -> None:
    now = naive.replace(tzinfo=UTC)
    opening, closing = cal.next_open(now), cal.next_close(now)
    assert opening > now
    assert closing > now
    assert cal.is_trading_day(opening.date()) and cal.is_trading_day(closing.date())
    # While the market is open the next close comes before the next open; otherwise after.
    assert (closing < opening) == (cal.phase_at(now) == cal.Phase.OPEN)
    assert (opening - now) < timedelta(days=6)


# --- the generated table --------------------------------------------------------------------------


def test_generated_table_matches_the_library_every_year():
    """The services read asx_holiday_table.py; the `holidays` library stays the source of truth."""
    from services.domain import asx_calendar, asx_holiday_table

    for year in range(asx_holiday_table.FIRST_YEAR, asx_holiday_table.LAST_YEAR + 1):
        for category, table in (
            ("public", asx_holiday_table.PUBLIC),
            ("half_day", asx_holiday_table.HALF_DAY),
        ):
            expected = {
                d.isoformat(): name for d, name in asx_calendar.library_holidays(year, category).items()
            }
            actual = {k: v for k, v in table.items() if k.startswith(f"{year:04d}-")}
            assert actual == expected, (year, category)


def test_years_outside_the_table_come_from_the_library():
    from services.domain import asx_calendar

    assert asx_calendar.holiday_name(date(1999, 12, 27)) == asx_calendar.library_holidays(1999, "public").get(
        date(1999, 12, 27)
    )
    assert not asx_calendar.is_trading_day(date(2045, 12, 25))


def test_the_calendar_does_not_import_the_holidays_library():
    import subprocess
    import sys

    code = (
        "import sys; from services.domain import asx_calendar as c; from datetime import date; "
        "c.is_trading_day(date(2026, 4, 3)); print('holidays' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "False"
