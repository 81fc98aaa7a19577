"""Market-data sources: CSV quirks (real files when present), synthetic walks, yfinance against a
fake that returns yfinance-shaped DataFrames, the auto choice, and no look-ahead."""

import itertools
import math
import os
import statistics
import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.asx_calendar import is_trading_day
from services.domain.bars import (
    Bar,
    CleaningReport,
    bar_from_dict,
    bar_to_dict,
    clean_daily_rows,
    trading_days_between,
    weekday_calendar,
)
from services.market_data import providers

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "asx"
SYD = ZoneInfo("Australia/Sydney")
HEADER = "Date,Open,High,Low,Close,Adj Close,Volume\n"


def need_shared_data():
    if not (SHARED / "CBA.AX.csv").exists():
        pytest.skip("shared ASX data (../shared/data/asx) not present")


def syd(y, m, d, hh=12, mm=0):
    return datetime(y, m, d, hh, mm, tzinfo=SYD)


# --- csv: the real files -------------------------------------------------------------------------


async def test_real_cba_file_is_cleaned_and_reported():
    need_shared_data()
    source = providers.CsvSource(SHARED, is_trading_day)
    history = await source.fetch("CBA.AX", syd(2020, 6, 1))
    report = history.cleaning
    assert history.source == "csv"
    assert (history.bars[0].date, history.bars[-1].date) == (date(2015, 5, 20), date(2020, 5, 20))
    assert len(history.bars) == 1268 - 5
    # Boxing Day substitute 2015-12-28 (ASX closed) is Yahoo filler: dropped as a non-trading day.
    assert report.non_trading_days == (date(2015, 12, 28),)
    # Zero-volume rows on real sessions with O=H=L=C=previous close are filler too.
    assert report.filler_rows == (date(2015, 8, 12), date(2015, 8, 13), date(2015, 8, 14), date(2015, 9, 11))
    assert report.missing_sessions == report.filler_rows
    assert all(is_trading_day(b.date) for b in history.bars)


async def test_real_index_file_null_rows():
    need_shared_data()
    history = await providers.CsvSource(SHARED, is_trading_day).fetch("^AXJO", syd(2020, 6, 1))
    # `null` in every field on the Boxing Day substitute and on 2017-09-04 (a real session).
    assert history.cleaning.null_rows == (date(2015, 12, 28), date(2017, 9, 4))
    assert history.cleaning.missing_sessions == (date(2017, 9, 4),)
    assert len(history.bars) == 1266
    assert 4000 < history.bars[-1].close < 7500


@pytest.mark.parametrize(
    ("now", "last_date"),
    [
        (syd(2018, 3, 15, 16, 9), date(2018, 3, 14)),  # a minute before the bar is final
        (syd(2018, 3, 15, 16, 10), date(2018, 3, 15)),  # at 16:10 Sydney the day's bar appears
        (datetime(2018, 3, 15, 5, 10, tzinfo=UTC), date(2018, 3, 15)),  # same instant in UTC (AEDT, +11)
        (syd(2018, 3, 17, 10), date(2018, 3, 16)),  # Saturday: Friday's bar
        (syd(2015, 1, 1), None),  # before the file starts: nothing
    ],
)
async def test_no_look_ahead_inside_the_csv_range(now, last_date):
    need_shared_data()
    history = await providers.CsvSource(SHARED, is_trading_day).fetch("WBC.AX", now)
    assert (history.bars[-1].date if history.bars else None) == last_date
    # The cleaning report must not leak later dates either (2019-11-04 filler is in the future).
    assert all(d <= now.date() for d in history.cleaning.filler_rows + history.cleaning.missing_sessions)


# --- csv: quirks in hand-written files ------------------------------------------------------


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text, encoding="utf-8")


async def test_quirky_file(tmp_path):
    write(
        tmp_path,
        "XYZ.AX.csv",
        "\ufeff"  # a byte-order mark, as some spreadsheet exports add
        + HEADER
        + "2024-06-03,10,11,9,10.5,10.4,1000\n"
        + "2024-06-04,null,null,null,null,null,null\n"  # Yahoo null row
        + "\n"  # blank line
        + "2024-06-05,10.5,10.5,10.5,10.5,10.4,0\n"  # filler: O=H=L=C=prev close, no volume
        + "2024-06-06,10,9,11,10.2,10.1,1000\n"  # high < low: inconsistent
        + "not-a-date,1,1,1,1,1,1\n"
        + "2024-06-08,10,11,9,10.3,10.2,500\n"  # a Saturday row
        + "2024-06-07,10,11,9,10.1,10.0,900\n"  # out of order
        + "2024-06-07,10,11,9,10.2,10.1,950\n"  # duplicate date: the later row wins
        + "2024-06-11,10,11,9,10.6,10.5,1200",  # no trailing newline; 10 June 2024 is missing (holiday)
    )
    history = await providers.CsvSource(tmp_path, is_trading_day).fetch("xyz.ax".upper(), syd(2024, 6, 12))
    report = history.cleaning
    assert [(b.date.day, b.close, b.volume) for b in history.bars] == [
        (3, 10.5, 1000),
        (7, 10.2, 950),
        (11, 10.6, 1200),
    ]
    assert report.null_rows == (date(2024, 6, 4),)
    assert report.filler_rows == (date(2024, 6, 5),)
    assert report.invalid_rows == ("2024-06-06", "not-a-date")
    assert report.duplicate_dates == (date(2024, 6, 7),)
    assert report.non_trading_days == (date(2024, 6, 8),)
    # 10 June 2024 was the King's Birthday holiday: not a gap. The 4th-6th are.
    assert report.missing_sessions == (date(2024, 6, 4), date(2024, 6, 5), date(2024, 6, 6))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (date(2024, 6, 13), date(2024, 6, 13)),  # one day
        (date(2024, 6, 14), date(2024, 6, 13)),  # an empty range
        (date(2023, 12, 20), date(2024, 1, 10)),  # across a year's end (the per-year cache)
        (date(1999, 12, 31), date(2001, 1, 2)),  # the library's year, then the table's
        (date(2038, 3, 1), date(2042, 2, 1)),  # past the generated table's last year
    ],
)
def test_trading_days_between_equals_a_day_by_day_walk(start, end):
    walk, d = [], start
    while d <= end:
        if is_trading_day(d):
            walk.append(d)
        d += timedelta(days=1)
    assert trading_days_between(start, end, is_trading_day) == walk
    assert trading_days_between(start, end, weekday_calendar) == [
        day for day in (start + timedelta(days=i) for i in range((end - start).days + 1)) if day.weekday() < 5
    ]


def test_a_row_dated_centuries_away_is_invalid_and_the_gap_scan_stays_short():
    # Found by fuzzing (yahoo_csv): one typo row dated 4539 made the missing-session scan walk
    # 2,500 years of calendar (seconds of CPU in market-data for one file read).
    rows = [
        ["2024-06-13", "1", "2", "1", "1.5", "1.5", "10"],
        ["4539-06-01", "1", "2", "1", "1.5", "1.5", "10"],
        ["1066-10-14", "1", "2", "1", "1.5", "1.5", "10"],
        ["2024-06-14", "1", "2", "1", "1.6", "1.6", "10"],
    ]
    bars, report = clean_daily_rows(rows, is_trading_day)
    assert [b.date for b in bars] == [date(2024, 6, 13), date(2024, 6, 14)]
    assert report.invalid_rows == ("4539-06-01", "1066-10-14")
    assert report.missing_sessions == ()


async def test_without_a_calendar_weekend_rows_stay_but_filler_goes(tmp_path):
    write(
        tmp_path,
        "A.AX.csv",
        HEADER + "2024-06-07,10,11,9,10,10,5\n2024-06-08,10,10,10,10,10,0\n2024-06-09,9,11,8,9.5,9.5,7\n",
    )
    history = await providers.CsvSource(tmp_path).fetch("A.AX", syd(2024, 6, 12))
    assert [b.date.day for b in history.bars] == [7, 9]
    assert history.cleaning.filler_rows == (date(2024, 6, 8),)
    assert history.cleaning.missing_sessions == ()  # no calendar, no notion of a gap


async def test_index_file_name_and_missing_adj_close_column(tmp_path):
    write(tmp_path, "AXJO.csv", "Date,Open,High,Low,Close,Volume\n2024-06-07,7800,7850,7790,7820,0\n")
    history = await providers.CsvSource(tmp_path).fetch("^AXJO", syd(2024, 6, 12))
    assert history.bars[0].adj_close == history.bars[0].close == 7820.0


async def test_unknown_symbol_and_bad_header(tmp_path):
    source = providers.CsvSource(tmp_path)
    with pytest.raises(providers.UnknownSymbolError, match=r"NOPE\.AX\.csv"):
        await source.fetch("NOPE.AX", syd(2024, 6, 12))
    write(tmp_path, "BAD.AX.csv", "Date,Price\n2024-06-07,1\n")
    with pytest.raises(providers.MarketDataError, match="missing column"):
        await source.fetch("BAD.AX", syd(2024, 6, 12))


async def test_binary_file_is_a_clear_error(tmp_path):
    (tmp_path / "BIN.AX.csv").write_bytes(b"Date,Open,High,Low,Close,Adj Close,Volume\n\xff\xfe\x00garbage")
    with pytest.raises(providers.MarketDataError, match="unreadable"):
        await providers.CsvSource(tmp_path).fetch("BIN.AX", syd(2024, 6, 12))


async def test_changed_file_is_read_again(tmp_path):
    write(tmp_path, "A.AX.csv", HEADER + "2024-06-07,10,11,9,10,10,5\n")
    source = providers.CsvSource(tmp_path)
    assert len((await source.fetch("A.AX", syd(2024, 6, 12))).bars) == 1
    write(tmp_path, "A.AX.csv", HEADER + "2024-06-07,10,11,9,10,10,5\n2024-06-11,10,11,9,10.5,10.5,6\n")
    assert len((await source.fetch("A.AX", syd(2024, 6, 12))).bars) == 2


# --- synthetic ------------------------------------------------------------------------------------


def daily_vol(bars) -> float:
    closes = [b.close for b in bars]
    return statistics.stdev(math.log(b / a) for a, b in itertools.pairwise(closes))


@pytest.mark.parametrize(
    ("symbol", "low", "high"),
    [
        ("CBA.AX", 80, 160),  # CBA trades ~100+
        ("WBC.AX", 18, 40),
        ("NAB.AX", 20, 48),
        ("^AXJO", 5500, 10000),  # index points
        ("ZZZ.AX", 12, 60),  # unknown symbols get a hash-derived level of 20-40
    ],
)
async def test_synthetic_levels_and_volatility_are_plausible(symbol, low, high):
    history = await providers.SyntheticSource(is_trading_day).fetch(symbol, syd(2026, 6, 1, 17))
    assert history.source == "synthetic"
    assert all(
        low < b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high < high for b in history.bars
    )
    vol = daily_vol(history.bars)
    assert (0.007 < vol < 0.011) if symbol == "^AXJO" else (0.0115 < vol < 0.0165)
    assert all(b.volume > 0 for b in history.bars)
    assert all(is_trading_day(b.date) for b in history.bars)


async def test_synthetic_history_does_not_depend_on_when_it_is_asked():
    source = providers.SyntheticSource(is_trading_day)
    early = await source.fetch("ANZ.AX", syd(2020, 3, 2, 17))
    late = await providers.SyntheticSource(is_trading_day).fetch("ANZ.AX", syd(2024, 1, 2, 17))
    assert late.bars[: len(early.bars)] == early.bars
    assert early.bars[-1].date == date(2020, 3, 2)
    before_close = await source.fetch("ANZ.AX", syd(2020, 3, 2, 15))
    assert before_close.bars[-1].date == date(2020, 2, 28)  # no look-ahead for synthetic either


def test_csv_and_synthetic_do_not_import_pandas_or_yfinance(tmp_path):
    write(tmp_path, "A.AX.csv", HEADER + "2024-06-07,10,11,9,10,10,5\n")
    code = (
        "import asyncio, sys; from services.market_data import providers; from pathlib import Path; from datetime import datetime, UTC;"
        f"now = datetime(2024, 6, 12, tzinfo=UTC);"
        f"asyncio.run(providers.CsvSource(Path({str(tmp_path)!r})).fetch('A.AX', now));"
        "asyncio.run(providers.SyntheticSource().fetch('A.AX', now));"
        "print(sorted(m for m in ('pandas', 'yfinance', 'numpy') if m in sys.modules))"
    )
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# --- yfinance, against a fake Ticker returning yfinance-shaped frames ------------------------------


def yahoo_frame(rows, multi_index_symbol=None):
    """A frame shaped like yfinance's history(auto_adjust=False, actions=False) for an .AX ticker."""
    import pandas as pd

    index = pd.DatetimeIndex([pd.Timestamp(d, tz="Australia/Sydney") for d, *_ in rows], name="Date")
    columns = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]
    frame = pd.DataFrame([r[1:] for r in rows], index=index, columns=columns)
    if multi_index_symbol:  # yf.download's (Price, Ticker) columns
        frame.columns = pd.MultiIndex.from_product([columns, [multi_index_symbol]], names=["Price", "Ticker"])
    return frame


NAN = float("nan")
ROWS = [
    ("2024-06-06", 117.0, 118.5, 116.8, 118.2, 114.0, 1_900_000),
    ("2024-06-07", 118.2, 119.0, 117.5, 118.9, 114.7, 2_100_000),
    ("2024-06-10", NAN, NAN, NAN, NAN, NAN, NAN),  # holiday row Yahoo sometimes returns as NaN
    ("2024-06-11", 118.9, 119.9, 118.1, 119.5, 115.3, 2_000_000),  # intraday: final at 16:10
]


class FakeTicker:
    """Stands in for yfinance.Ticker: scripted outcomes per call, recording the call arguments."""

    script: ClassVar[list] = []
    calls: ClassVar[list] = []

    def __init__(self, symbol):
        self.symbol = symbol

    def history(self, **kwargs):
        FakeTicker.calls.append((self.symbol, kwargs))
        outcome = FakeTicker.script.pop(0) if len(FakeTicker.script) > 1 else FakeTicker.script[0]
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            return outcome()
        return outcome


@pytest.fixture
def fake_yf(monkeypatch):
    yfinance = pytest.importorskip("yfinance")
    monkeypatch.setattr(yfinance, "Ticker", FakeTicker)
    FakeTicker.calls = []
    return yfinance


def yf_source(**kw):
    return providers.YFinanceSource(
        is_trading_day, **{"timeout_s": 0.5, "attempts": 3, "backoff_s": 0.01, **kw}
    )


async def test_yfinance_frame_is_cleaned_and_cut_at_the_close(fake_yf):
    FakeTicker.script = [yahoo_frame(ROWS)]
    history = await yf_source().fetch("CBA.AX", syd(2024, 6, 11, 15, 30))
    assert history.source == "yfinance"
    assert [b.date for b in history.bars] == [date(2024, 6, 6), date(2024, 6, 7)]  # today's bar not final yet
    assert history.bars[1].adj_close == 114.7 and history.bars[1].volume == 2_100_000
    # 10 June 2024 was a holiday: the NaN row goes as null, and it is no gap.
    assert history.cleaning.null_rows == (date(2024, 6, 10),) and history.cleaning.missing_sessions == ()
    symbol, kwargs = FakeTicker.calls[0]
    assert symbol == "CBA.AX" and kwargs["auto_adjust"] is False and kwargs["interval"] == "1d"
    assert kwargs["end"] == "2024-06-11" and kwargs["raise_errors"] is True  # end exclusive: up to 10 June
    after_close = await yf_source().fetch("CBA.AX", syd(2024, 6, 11, 16, 10))
    assert after_close.bars[-1].date == date(2024, 6, 11)


async def test_yfinance_download_shaped_frame(fake_yf):
    FakeTicker.script = [yahoo_frame(ROWS[:2], multi_index_symbol="CBA.AX")]
    history = await yf_source().fetch("CBA.AX", syd(2024, 6, 12))
    assert [b.close for b in history.bars] == [118.2, 118.9]


async def test_yfinance_retries_transient_failures(fake_yf):
    FakeTicker.script = [ConnectionError("reset"), RuntimeError("HTTP 502"), yahoo_frame(ROWS[:2])]
    history = await yf_source().fetch("CBA.AX", syd(2024, 6, 12))
    assert len(history.bars) == 2 and len(FakeTicker.calls) == 3


async def test_yfinance_gives_up_after_the_attempts(fake_yf):
    FakeTicker.script = [ConnectionError("network unreachable")]
    with pytest.raises(providers.SourceUnavailableError, match="network unreachable"):
        await yf_source(attempts=2).fetch("CBA.AX", syd(2024, 6, 12))
    assert len(FakeTicker.calls) == 2


async def test_yfinance_unknown_symbol_is_not_retried(fake_yf):
    from yfinance.exceptions import YFPricesMissingError

    FakeTicker.script = [YFPricesMissingError("NOPE.AX", "")]
    with pytest.raises(providers.UnknownSymbolError, match=r"NOPE\.AX"):
        await yf_source().fetch("NOPE.AX", syd(2024, 6, 12))
    assert len(FakeTicker.calls) == 1


async def test_yfinance_empty_frame_is_a_clear_error(fake_yf):
    FakeTicker.script = [yahoo_frame([])]
    with pytest.raises(providers.UnknownSymbolError, match=r"no daily bars for ZZZ\.AX"):
        await yf_source().fetch("ZZZ.AX", syd(2024, 6, 12))


async def test_yfinance_hang_times_out(fake_yf):
    release = threading.Event()

    def hang():
        release.wait(10)  # released below so the worker thread ends with the test
        return yahoo_frame(ROWS[:2])

    FakeTicker.script = [hang]
    try:
        with pytest.raises(providers.SourceUnavailableError, match="did not answer"):
            await yf_source(timeout_s=0.05, attempts=1).fetch("CBA.AX", syd(2024, 6, 12))
    finally:
        release.set()


# --- auto ---------------------------------------------------------------------------------------


def probe_factory(outcome):
    def factory(is_trading_day=None, **kwargs):
        source = providers.YFinanceSource(is_trading_day, **kwargs)
        FakeTicker.script = [outcome]
        return source

    return factory


@pytest.mark.parametrize(
    ("probe", "csv_files", "chosen"),
    [
        (yahoo_frame.__name__, False, "yfinance"),  # probe answers: yfinance even with CSVs absent
        (ConnectionError("offline"), True, "csv"),
        (ConnectionError("offline"), False, "synthetic"),
    ],
)
async def test_auto_choice(fake_yf, tmp_path, probe, csv_files, chosen):
    outcome = yahoo_frame(ROWS[:2]) if probe == "yahoo_frame" else probe
    if csv_files:
        write(tmp_path, "CBA.AX.csv", HEADER + "2024-06-07,10,11,9,10,10,5\n")
    choice = await providers.choose_source(
        "auto",
        tmp_path,
        syd(2024, 6, 12),
        is_trading_day=is_trading_day,
        yfinance_factory=probe_factory(outcome),
        reachability=lambda timeout_s: None,  # Yahoo "answers": the yfinance probe decides
    )
    assert choice.source.name == chosen
    assert choice.reason.startswith("auto:")
    if chosen != "yfinance":
        assert "offline" in choice.reason


@pytest.mark.parametrize(("csv_files", "chosen"), [(True, "csv"), (False, "synthetic")])
async def test_auto_offline_never_builds_the_yfinance_probe(tmp_path, csv_files, chosen):
    """Unreachable Yahoo is detected without yfinance (and pandas) being imported at all."""
    if csv_files:
        write(tmp_path, "CBA.AX.csv", HEADER + "2024-06-07,10,11,9,10,10,5\n")

    def no_yfinance(*args, **kwargs):
        raise AssertionError("the yfinance probe must not run when Yahoo is unreachable")

    choice = await providers.choose_source(
        "auto",
        tmp_path,
        syd(2024, 6, 12),
        is_trading_day=is_trading_day,
        yfinance_factory=no_yfinance,
        reachability=lambda timeout_s: "Yahoo unreachable: no route",
    )
    assert choice.source.name == chosen
    assert "Yahoo unreachable: no route" in choice.reason


def test_yahoo_reachability_through_a_dead_proxy_is_a_reason(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    assert providers.yahoo_unreachable(2.0).startswith("Yahoo unreachable")


@pytest.mark.parametrize("name", ["csv", "synthetic", "yfinance"])
async def test_configured_sources_are_taken_as_is(tmp_path, name):
    choice = await providers.choose_source(name, tmp_path, syd(2024, 6, 12))
    assert choice.source.name == name and choice.reason.startswith("configured")


async def test_unknown_source_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown market data source"):
        await providers.choose_source("bloomberg", tmp_path, syd(2024, 6, 12))


# --- the cleaner and bar helpers, as every source uses them ----------------------------------------


def test_bar_wire_round_trip():
    bar = Bar(date(2024, 6, 14), 10.0, 11.0, 9.0, 10.5, 10.2, 1234)
    wire = bar_to_dict(bar)
    assert wire == {
        "date": "2024-06-14",
        "open": 10.0,
        "high": 11.0,
        "low": 9.0,
        "close": 10.5,
        "adj_close": 10.2,
        "volume": 1234,
    }
    assert bar_from_dict(wire) == bar


def test_report_until_hides_later_dates():
    report = CleaningReport(
        rows_read=9,
        null_rows=(date(2024, 1, 2), date(2024, 3, 1)),
        missing_sessions=(date(2024, 2, 1), date(2024, 3, 4)),
    )
    seen = report.until(date(2024, 2, 29))
    assert seen.null_rows == (date(2024, 1, 2),) and seen.missing_sessions == (date(2024, 2, 1),)


row_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 10**9),
    st.sampled_from(["null", "", "NaN", "abc", "1e3", "-1", "0"]),
)
raw_rows = st.lists(
    st.tuples(
        st.dates(date(2024, 1, 1), date(2024, 3, 31)).map(str) | st.sampled_from(["bad", ""]),
        *[row_values] * 6,
    ),
    max_size=40,
)


@given(raw_rows)
def test_cleaner_never_raises_and_accounts_for_every_row(rows):
    bars, report = clean_daily_rows(rows, weekday_calendar)
    assert len(bars) + report.dropped_count == report.rows_read == len(rows)
    dates = [b.date for b in bars]
    assert dates == sorted(set(dates))
    assert all(b.low <= b.high and b.close > 0 and weekday_calendar(b.date) for b in bars)
    assert not set(report.missing_sessions) & set(dates)
