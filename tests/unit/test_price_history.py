"""services.domain.price_history: symbols, Yahoo CSV text, and the synthetic walk, without files.

The same parser serves market-data's csv source (tests/unit/test_market_providers.py reads real
files through it), training and the replay report; here it gets text.
"""

import os
import subprocess
import sys
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from services.domain.asx_calendar import is_trading_day
from services.domain.bars import weekday_calendar
from services.domain.price_history import (
    SYNTHETIC_EPOCH,
    MarketDataError,
    csv_file_name,
    history_from_csv,
    normalise_symbol,
    parse_yahoo_csv,
    synthetic_bars,
    trading_sessions,
)

SYD = ZoneInfo("Australia/Sydney")
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"


@pytest.mark.parametrize("bad", ["../etc/passwd", "CBA AX", "", "^", 42, "A" * 30])
def test_symbols_that_could_name_paths_are_refused(bad):
    with pytest.raises(ValueError):
        normalise_symbol(bad)


def test_symbols_are_normalised():
    assert normalise_symbol(" cba.ax ") == "CBA.AX"
    assert normalise_symbol("^axjo") == "^AXJO"


@pytest.mark.parametrize(
    ("symbol", "name"),
    [("CBA.AX", "CBA.AX.csv"), ("^AXJO", "AXJO.csv")],  # a caret is awkward in file names
)
def test_csv_file_name(symbol, name):
    assert csv_file_name(symbol) == name


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        (HEADER + "2024-06-07,1,2,0.5,1.5,1.4,10\n", [["2024-06-07", "1", "2", "0.5", "1.5", "1.4", "10"]]),
        # a byte-order mark and Windows line ends, as spreadsheet exports write them
        ("\ufeff" + HEADER.replace("\n", "\r\n") + "2024-06-07,1,2,0.5,1.5,1.4,10\r\n",
         [["2024-06-07", "1", "2", "0.5", "1.5", "1.4", "10"]]),
        # columns found by name, in any order; no Adj Close: Close stands in for it
        ("Volume,Close,Date,Low,High,Open\n10,1.5,2024-06-07,0.5,2,1\n",
         [["2024-06-07", "1", "2", "0.5", "1.5", "1.5", "10"]]),
        # blank lines skipped; a short row padded with empty cells (the cleaner drops it as null)
        (HEADER + "\n2024-06-07,1,2\n", [["2024-06-07", "1", "2", "", "", "", ""]]),
        (HEADER, []),
    ],
)  # fmt: skip
def test_parse_yahoo_csv(text, rows):
    assert parse_yahoo_csv(text, "X.csv") == rows


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("", "Date, Open, High, Low, Close, Volume"),
        ("Date,Price\n2024-06-07,1\n", "Open, High, Low, Close, Volume"),
    ],
)
def test_parse_yahoo_csv_names_the_file_and_the_missing_columns(text, missing):
    with pytest.raises(MarketDataError) as info:
        parse_yahoo_csv(text, "X.csv")
    assert str(info.value) == f"X.csv: missing column(s) {missing}"


def test_history_from_csv_cleans_and_hides_the_future():
    text = (
        HEADER
        + "2024-06-06,10,11,9,10.1,10.0,900\n"
        + "2024-06-08,10,11,9,10.3,10.2,500\n"  # a Saturday: not a session
        + "2024-06-11,10,11,9,10.6,10.5,1200\n"
        + "2024-06-12,10,11,9,10.7,10.6,1300\n"  # final only at 16:10 on the 12th
    )
    history = history_from_csv("A.AX", text, datetime(2024, 6, 12, 16, 9, tzinfo=SYD), is_trading_day)
    assert (history.symbol, history.source) == ("A.AX", "csv")
    assert [b.date.day for b in history.bars] == [6, 11]
    assert history.cleaning.non_trading_days == (date(2024, 6, 8),)
    # 7 June is a missing session; 10 June (King's Birthday) is a holiday, not a gap
    assert history.cleaning.missing_sessions == (date(2024, 6, 7),)


def test_synthetic_walk_starts_at_its_epoch_and_depends_only_on_the_sessions():
    sessions = trading_sessions(SYNTHETIC_EPOCH, date(2016, 1, 1), is_trading_day)
    assert sessions[0] == SYNTHETIC_EPOCH and all(is_trading_day(d) for d in sessions)
    longer = trading_sessions(SYNTHETIC_EPOCH, date(2017, 1, 1), is_trading_day)
    assert synthetic_bars("CBA.AX", longer)[: len(sessions)] == synthetic_bars("CBA.AX", sessions)


def test_a_walk_from_a_later_session_is_the_same_walk_not_a_new_one():
    sessions = trading_sessions(SYNTHETIC_EPOCH, date(2017, 1, 1), is_trading_day)
    for symbol in ("CBA.AX", "^AXJO", "XYZ.AX"):  # known profiles and a derived one
        whole = synthetic_bars(symbol, sessions)
        for first in (0, 1, len(sessions) // 2, len(sessions) - 1, len(sessions)):
            assert synthetic_bars(symbol, sessions, first) == whole[first:], (symbol, first)


def test_synthetic_is_identical_across_processes():
    # Python's hash() is salted per process; the seed must not be.
    code = (
        "from services.domain import price_history as p; from datetime import date;"
        "from services.domain.bars import weekday_calendar as c;"
        "s = p.trading_sessions(p.SYNTHETIC_EPOCH, date(2016, 1, 1), c);"
        "print(p.synthetic_bars('WBC.AX', s)[-1])"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outputs.add(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
    sessions = trading_sessions(SYNTHETIC_EPOCH, date(2016, 1, 1), weekday_calendar)
    assert outputs == {f"{synthetic_bars('WBC.AX', sessions)[-1]}\n"}
