"""History files kept up to date from Yahoo: the export text, the incremental merge, holes."""

from __future__ import annotations

from datetime import date

import pytest

from services.domain.asx_calendar import is_trading_day
from services.domain.bars import clean_daily_rows
from services.domain.history_merge import (
    DailyRow,
    download_problem,
    format_yahoo_csv,
    holes,
    merge_rows,
    rows_from_csv,
)
from services.domain.price_history import parse_yahoo_csv


def row(day: str, close: float, adj: float | None = None, volume: float = 1000.0) -> DailyRow:
    return DailyRow(
        date.fromisoformat(day), close, close + 1, close - 1, close, close if adj is None else adj, volume
    )


JUNE = [row("2024-06-06", 10.0), row("2024-06-07", 11.0), row("2024-06-11", 12.0)]  # 06-10: King's Birthday


def test_export_text_is_yahoos_and_reads_back():
    text = format_yahoo_csv([*JUNE, DailyRow(date(2024, 6, 12), None, None, None, None, None, None)])
    lines = text.splitlines()
    assert lines[0] == "Date,Open,High,Low,Close,Adj Close,Volume"
    assert lines[1] == "2024-06-06,10.000000,11.000000,9.000000,10.000000,10.000000,1000"
    assert lines[-1] == "2024-06-12,null,null,null,null,null,null"
    assert rows_from_csv(text, "X.csv")[:3] == JUNE
    bars, report = clean_daily_rows(parse_yahoo_csv(text, "X.csv"), is_trading_day)
    assert [b.close for b in bars] == [10.0, 11.0, 12.0] and report.null_rows == (date(2024, 6, 12),)


def test_merge_into_nothing_writes_the_download_up_to_the_last_final_day():
    merge = merge_rows([], [*JUNE, row("2024-06-12", 13.0)], last_day=date(2024, 6, 11))
    assert merge.rows == tuple(JUNE) and merge.problem is None  # 06-12 not final yet: not written


def test_incremental_merge_keeps_earlier_rows_and_adds_only_new_sessions():
    old = JUNE[:2]
    new = [row("2024-06-07", 11.0), row("2024-06-11", 12.0), row("2024-06-12", 13.0)]
    merge = merge_rows(old, new, last_day=date(2024, 6, 12))
    assert merge.added == (date(2024, 6, 11), date(2024, 6, 12))
    assert merge.rows[:2] == tuple(old) and merge.rescaled_by is None


def test_a_dividend_since_the_last_fetch_rescales_earlier_adj_close():
    old = [row("2024-06-06", 10.0, adj=10.0), row("2024-06-07", 11.0, adj=11.0)]
    new = [row("2024-06-07", 11.0, adj=11.0 * 0.97), row("2024-06-11", 12.0, adj=12.0)]
    merge = merge_rows(old, new, last_day=date(2024, 6, 11))
    assert merge.rescaled_by == pytest.approx(0.97)
    assert [r.adj_close for r in merge.rows] == pytest.approx([9.7, 11.0 * 0.97, 12.0])
    assert [r.close for r in merge.rows] == [10.0, 11.0, 12.0]  # raw closes never change


def test_a_changed_close_on_the_overlap_is_refused():
    old = [row("2024-06-06", 10.0), row("2024-06-07", 11.0)]
    new = [row("2024-06-07", 5.5), row("2024-06-11", 6.0)]  # a 2:1 split since the last fetch
    merge = merge_rows(old, new, last_day=date(2024, 6, 11))
    assert merge.problem is not None and "--full" in merge.problem and merge.rows == tuple(old)


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([], "no rows"),
        ([DailyRow(date(2024, 6, 6), None, None, None, None, None, None)], "no rows"),
        (JUNE, None),  # 2024-06-10 is a holiday, not a hole
        # a week with 06-12 missing: 1 hole in 5 sessions, none tolerated in so few
        ([row("2024-06-06", 1), row("2024-06-07", 1), row("2024-06-11", 1), row("2024-06-13", 1)], "1 of 5"),
    ],
)
def test_download_problem(rows, problem):
    found = download_problem("CBA.AX", rows, is_trading_day)
    assert (found is None) if problem is None else (problem in found)


def test_holes_count_null_rows_and_ignore_holidays():
    nulls = [JUNE[0], DailyRow(date(2024, 6, 7), None, None, None, None, None, None), JUNE[2]]
    assert holes(nulls, is_trading_day) == [date(2024, 6, 7)]
    assert holes(JUNE, is_trading_day) == []
