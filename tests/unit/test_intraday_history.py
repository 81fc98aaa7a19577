"""Intraday CSV text into bars (bad rows dropped and named), and the series' per-session lookups:
previous close, the latest visible bars at a boundary, quotes and why there is none."""

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.domain.intraday import IntradayBar, NoIntradayData, asx_close_time
from services.domain.intraday_history import (
    IntradaySeries,
    closed_day_reason,
    intraday_csv_file_name,
    parse_intraday_csv,
)
from services.domain.price_history import MarketDataError

SYD = ZoneInfo("Australia/Sydney")
HEADER = "Datetime,Open,High,Low,Close,Volume\n"


def syd(y, m, d, hh, mm=0, ss=0, us=0):
    return datetime(y, m, d, hh, mm, ss, us, tzinfo=SYD)


def bar(start, o=10.0, h=10.2, lo=9.9, c=10.1, v=100):
    return IntradayBar(start, o, h, lo, c, v)


# --- file names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "interval", "name"),
    [("CBA.AX", "5m", "CBA.AX_5m.csv"), ("^AXJO", "5m", "AXJO_5m.csv"), ("NAB.AX", "60m", "NAB.AX_60m.csv")],
)
def test_file_names(symbol, interval, name):
    assert intraday_csv_file_name(symbol, interval) == name


def test_file_name_refuses_an_unknown_interval():
    with pytest.raises(ValueError, match="2m"):
        intraday_csv_file_name("CBA.AX", "2m")


# --- parsing ------------------------------------------------------------------------------------


def test_parse_a_clean_file_with_a_bom_and_extra_columns():
    text = (
        "\ufeffDatetime,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-06-14 10:05:00+10:00,10.1,10.3,10.0,10.2,10.2,200\n"
        "2024-06-14 10:00:00+10:00,10,10.2,9.9,10.1,10.1,100.0\n"  # out of order; volume as a float
    )
    parsed = parse_intraday_csv(text, "X.AX_5m.csv")
    assert parsed.rows_read == 2 and parsed.dropped == ()
    assert [(b.start, b.close, b.volume) for b in parsed.bars] == [
        (syd(2024, 6, 14, 10), 10.1, 100),
        (syd(2024, 6, 14, 10, 5), 10.2, 200),
    ]
    assert parsed.bars[0].start.utcoffset() == timedelta(hours=10)  # the file's offset is kept


BAD_ROWS = [
    ("2024-06-14 10:00:00,10,10.2,9.9,10.1,100", "has no UTC offset"),  # naive: names no instant
    ("14/06/2024 10:00,10,10.2,9.9,10.1,100", "unreadable time"),
    # Found by fuzzing (intraday_csv): times that do not convert to UTC or Sydney time raised
    # OverflowError from the parser (year 9999 west of UTC) or from resampling (year 1).
    ("9999-12-31 23:00:00-05:00,10,10.2,9.9,10.1,100", "is outside 1980-2099"),
    ("0001-01-01 00:30:00+10:00,10,10.2,9.9,10.1,100", "is outside 1980-2099"),
    ("2024-06-14 10:00:00+10:00,null,null,null,null,null", "empty (null) field"),  # Yahoo's null row
    ("2024-06-14 10:00:00+10:00,10,10.2,9.9,,100", "empty (null) field"),  # a short row
    ("2024-06-14 10:00:00+10:00,10,10.2,9.9,nan,100", "empty (null) field"),
    ("2024-06-14 10:00:00+10:00,10,10.2,abc,10.1,100", "not a number"),
    ("2024-06-14 10:00:00+10:00,0,10.2,0,10.1,100", "non-positive price"),
    ("2024-06-14 10:00:00+10:00,10,10.2,9.9,10.1,-5", "negative volume"),
    ("2024-06-14 10:00:00+10:00,10,9.9,10.2,10.1,100", "inconsistent prices"),  # high < low
    ("2024-06-14 10:00:00+10:00,10.5,10.2,9.9,10.1,100", "inconsistent prices"),  # open above the high
    ("2024-06-14 10:00:00+10:00,10,10.2,9.9,9.8,100", "inconsistent prices"),  # close below the low
]


@pytest.mark.parametrize(("row", "why"), BAD_ROWS)
def test_a_bad_row_is_dropped_and_named(row, why):
    good = "2024-06-14 10:05:00+10:00,10.1,10.3,10.0,10.2,200"
    parsed = parse_intraday_csv(HEADER + row + "\n" + good + "\n", "X.AX_5m.csv")
    assert [b.start for b in parsed.bars] == [syd(2024, 6, 14, 10, 5)]
    assert len(parsed.dropped) == 1 and parsed.dropped[0].startswith("line 2: ") and why in parsed.dropped[0]


def test_duplicates_keep_the_later_row_and_blank_lines_are_skipped():
    text = HEADER + (
        "2024-06-14 10:00:00+10:00,10,10.2,9.9,10.1,100\n"
        "\n"
        "2024-06-14 00:00:00+00:00,10,10.3,9.9,10.15,120\n"  # the same instant in UTC: a correction
    )
    parsed = parse_intraday_csv(text, "X.AX_5m.csv")
    assert [(b.close, b.volume) for b in parsed.bars] == [(10.15, 120)]
    assert parsed.rows_read == 2 and "repeats the start" in parsed.dropped[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Date,Open,High,Low,Close,Volume\n", "missing column(s) Datetime"),  # a daily file's header
        ("Datetime,Open,High,Low,Close\n", "missing column(s) Volume"),
        ("", "missing column(s) Datetime, Open"),
        (HEADER + '"' + "x" * 200_000, "unreadable"),  # a field past the csv module's limit
    ],
)
def test_a_bad_file_is_an_error_naming_it(text, message):
    with pytest.raises(MarketDataError) as error:
        parse_intraday_csv(text, "X.AX_5m.csv")
    assert "X.AX_5m.csv" in str(error.value) and message in str(error.value)


# --- the series ---------------------------------------------------------------------------------


def two_days() -> IntradaySeries:
    """5m bars: Thursday 13 June (to 15:55) and Friday 14 June 2024 (10:00 to 10:55)."""
    thursday = [bar(syd(2024, 6, 13, 10) + timedelta(minutes=5 * i), c=20.0 + i / 100) for i in range(72)]
    friday = [bar(syd(2024, 6, 14, 10) + timedelta(minutes=5 * i), c=30.0 + i, h=40, lo=5) for i in range(12)]
    return IntradaySeries(friday + thursday, "5m")  # any order in


def test_sessions_and_previous_close():
    series = two_days()
    assert series.days == [date(2024, 6, 13), date(2024, 6, 14)] and len(series) == 84
    assert len(series.session(date(2024, 6, 13))) == 72 and series.session(date(2024, 6, 12)) == []
    assert series.previous_close(date(2024, 6, 14)) == pytest.approx(20.71)  # Thursday's last close
    assert series.previous_close(date(2024, 6, 17)) == 41.0  # Friday's, over the weekend
    assert series.previous_close(date(2024, 6, 13)) is None  # nothing before the data


@pytest.mark.parametrize(
    ("now", "delay_s", "last_start"),
    [
        (syd(2024, 6, 14, 10, 30), 0, syd(2024, 6, 14, 10, 25)),  # 10:25-10:30 ends exactly now: shown
        (syd(2024, 6, 14, 10, 29, 59, 999999), 0, syd(2024, 6, 14, 10, 20)),  # a microsecond before: not
        (syd(2024, 6, 14, 10, 50), 1200, syd(2024, 6, 14, 10, 25)),  # 20 minutes late, same boundary
        (syd(2024, 6, 14, 10, 49, 59), 1200, syd(2024, 6, 14, 10, 20)),
        (syd(2024, 6, 14, 9, 0), 0, syd(2024, 6, 13, 15, 55)),  # before the open: yesterday's last
    ],
)
def test_latest_visible_at_the_boundary(now, delay_s, last_start):
    bars = two_days().latest_visible(3, now, delay_s, asx_close_time)
    assert len(bars) == 3 and bars[-1].start == last_start
    assert bars == sorted(bars, key=lambda b: b.start)
    assert all(b.start + timedelta(minutes=5, seconds=delay_s) <= now for b in bars)


def test_latest_visible_crosses_sessions_and_stops_at_the_start():
    series = two_days()
    bars = series.latest_visible(20, syd(2024, 6, 14, 10, 30), 0, asx_close_time)
    assert [b.start.date().day for b in bars] == [13] * 14 + [14] * 6
    assert len(series.latest_visible(500, syd(2024, 6, 20, 12), 0, asx_close_time)) == 84


def test_quote_from_todays_visible_bars():
    quote = two_days().quote("X.AX", syd(2024, 6, 14, 10, 31), 0, "csv", asx_close_time)
    assert quote.price == 35.0 and quote.quote_time == syd(2024, 6, 14, 10, 30)
    assert quote.previous_close == pytest.approx(20.71) and quote.volume == 600
    assert quote.source == "csv" and quote.delay_s == 0 and quote.stale is False


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (syd(2024, 6, 14, 10, 4), "is visible yet (the first one shows at 10:05 Sydney time)"),
        (syd(2024, 6, 10, 12), "2024-06-10 is an ASX holiday (King's Birthday): no session"),
        (syd(2024, 6, 15, 12), "2024-06-15 is a weekend: no session"),
        (syd(2024, 6, 18, 12), "no 5m bars for X.AX on 2024-06-18 (its data ends on 2024-06-14)"),
    ],
)
def test_no_quote_says_why(now, reason):
    with pytest.raises(NoIntradayData) as none:
        two_days().quote("X.AX", now, 0, "csv", asx_close_time)
    assert reason in str(none.value)


def test_resampled_series():
    series = two_days().resampled("15m")
    assert series.interval == "15m" and len(series) == 24 + 4
    assert series.session(date(2024, 6, 14))[0].volume == 300
    assert two_days().resampled("5m").interval == "5m"
    with pytest.raises(ValueError):
        two_days().resampled("1m")


@pytest.mark.parametrize(
    ("day", "reason"),
    [
        (date(2024, 6, 14), None),
        (date(2024, 12, 25), "2024-12-25 is an ASX holiday (Christmas Day): no session"),
        (date(2024, 6, 16), "2024-06-16 is a weekend: no session"),
    ],
)
def test_closed_day_reason(day, reason):
    assert closed_day_reason(day) == reason
