"""Quality score: freshness against a trading calendar, gaps, cleaned rows, stale prices."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.domain.asx_calendar import is_trading_day as asx_trading_day
from services.domain.bars import Bar, CleaningReport, clean_daily_rows, latest_session, weekday_calendar
from services.domain.data_quality import QualityParams, assess_quality

SYD = ZoneInfo("Australia/Sydney")


def sydney(y, m, d, hh=12, mm=0):
    return datetime(y, m, d, hh, mm, tzinfo=SYD)


def bars_until(last: date, n: int = 30, calendar=weekday_calendar, closes=None) -> list[Bar]:
    days = []
    d = last
    while len(days) < n:
        if calendar(d):
            days.append(d)
        d -= timedelta(days=1)
    days.reverse()
    closes = closes or [100.0 + i * 0.1 for i in range(n)]
    return [Bar(day, c, c + 1, c - 1, c, c, 1000) for day, c in zip(days, closes, strict=True)]


@pytest.mark.parametrize(
    ("now", "last_bar", "behind"),
    [
        (sydney(2024, 6, 14, 16, 30), date(2024, 6, 14), 0),  # Friday after the close: today's bar is due
        (sydney(2024, 6, 14, 15, 0), date(2024, 6, 13), 0),  # Friday before the close: yesterday's is enough
        (sydney(2024, 6, 17, 9, 0), date(2024, 6, 14), 0),  # Monday morning: Friday's bar is current
        (sydney(2024, 6, 11, 9, 0), date(2024, 6, 7), 0),  # 10 June 2024 was King's Birthday (ASX closed)
        (sydney(2024, 6, 19, 17, 0), date(2024, 6, 14), 3),  # Mon, Tue, Wed missing
        (sydney(2024, 12, 27, 17, 0), date(2024, 12, 24), 1),  # Christmas/Boxing Day skipped: only the 27th
    ],
)
def test_freshness_follows_the_trading_calendar(now, last_bar, behind):
    result = assess_quality(bars_until(last_bar, calendar=asx_trading_day), now, asx_trading_day)
    assert result["sessions_behind"] == behind
    assert result["score"] == pytest.approx(1.0 - min(0.6, 0.15 * behind))
    assert any("behind" in r for r in result["reasons"]) == (behind > 0)


def test_calendar_is_a_parameter():
    # Under a Mon-Fri calendar the King's Birthday counts as a missed session.
    bars = bars_until(date(2024, 6, 7))
    assert assess_quality(bars, sydney(2024, 6, 11, 9), weekday_calendar)["sessions_behind"] == 1
    assert assess_quality(bars, sydney(2024, 6, 11, 9), asx_trading_day)["sessions_behind"] == 0


def test_freshness_penalty_is_capped():
    result = assess_quality(bars_until(date(2024, 1, 5)), sydney(2024, 6, 14, 17), weekday_calendar)
    assert result["score"] == pytest.approx(0.4)


def test_gaps_and_cleaned_rows_in_the_window_count_older_ones_do_not():
    now = sydney(2024, 6, 14, 17)
    report = CleaningReport(
        rows_read=40,
        null_rows=(date(2024, 5, 1),),
        filler_rows=(date(2020, 1, 2),),  # older than the 365-day window
        missing_sessions=(date(2024, 5, 1), date(2024, 5, 2), date(2019, 3, 4)),
    )
    result = assess_quality(bars_until(date(2024, 6, 14)), now, weekday_calendar, report)
    assert result["gaps"] == 2
    assert result["cleaned_rows"] == 1
    assert result["score"] == pytest.approx(1.0 - 2 * 0.05 - 0.02)
    assert any("2024-05-01, 2024-05-02" in r for r in result["reasons"])


def test_stale_prices_and_zero_volume():
    now = sydney(2024, 6, 14, 17)
    frozen = bars_until(date(2024, 6, 14), closes=[100.0] * 26 + [101.0] + [99.5] * 3)
    result = assess_quality(frozen, now, weekday_calendar)
    assert result["stale_run"] == 3
    assert result["score"] == pytest.approx(0.9)
    last = frozen[-1]
    no_volume = [*frozen[:-1], Bar(last.date, 98.0, 99.0, 97.0, 98.0, 98.0, 0)]
    assert assess_quality(no_volume, now, weekday_calendar)["score"] == pytest.approx(0.9)
    # An index often reports no volume: not a quality problem there.
    assert assess_quality(no_volume, now, weekday_calendar, is_index=True)["score"] == 1.0


def test_no_bars_scores_zero():
    assert assess_quality([], sydney(2024, 6, 14), weekday_calendar) == {
        "score": 0.0,
        "reasons": ["no data"],
        "sessions_behind": None,
        "gaps": 0,
        "cleaned_rows": 0,
    }


def test_score_never_below_zero():
    params = QualityParams(
        per_session_behind=1.0, max_freshness_penalty=1.0, per_gap=1.0, max_gap_penalty=1.0
    )
    report = CleaningReport(missing_sessions=(date(2024, 1, 3),))
    result = assess_quality(
        bars_until(date(2024, 1, 5)), sydney(2024, 6, 14, 17), weekday_calendar, report, params=params
    )
    assert result["score"] == 0.0


def test_latest_session_needs_a_timezone():
    with pytest.raises(ValueError):
        latest_session(datetime(2024, 6, 14, 17), weekday_calendar)


def test_cleaner_report_feeds_the_score():
    rows = [
        ("2024-06-10", "10", "11", "9", "10.5", "10.5", "100"),
        ("2024-06-11", "null", "null", "null", "null", "null", "null"),  # Yahoo null row
        ("2024-06-12", "10.5", "10.5", "10.5", "10.5", "10.5", "0"),  # filler: O=H=L=C=prev close, vol 0
        ("2024-06-13", "10", "11", "9", "10.2", "10.2", "100"),
        ("2024-06-14", "10", "11", "9", "10.4", "10.4", "100"),
    ]
    bars, report = clean_daily_rows(rows, weekday_calendar)
    result = assess_quality(bars, datetime(2024, 6, 14, 7, tzinfo=UTC), weekday_calendar, report)
    assert [b.date.day for b in bars] == [10, 13, 14]
    assert result["gaps"] == 2 and result["cleaned_rows"] == 2
    assert result["score"] == pytest.approx(1.0 - 0.1 - 0.04)


def test_real_cba_export_scores_its_filler_rows():
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "asx" / "CBA.AX.csv"
    if not shared.exists():
        pytest.skip("shared ASX data (../shared/data/asx) not present")
    rows = [line.split(",") for line in shared.read_text().splitlines()[1:]]
    now = sydney(2015, 9, 14, 17)  # Monday after the close, before any later row is visible
    bars, report = clean_daily_rows((r for r in rows if r[0] <= "2015-09-14"), asx_trading_day)
    result = assess_quality(bars, now, asx_trading_day, report)
    # Yahoo's zero-volume fillers on 12-14 Aug and 11 Sep 2015: four rows cleaned, four sessions missing.
    assert (result["gaps"], result["cleaned_rows"], result["sessions_behind"]) == (4, 4, 0)
    assert result["score"] == pytest.approx(1.0 - 4 * 0.05 - 4 * 0.02)
