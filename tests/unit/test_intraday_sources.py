"""market-data's intraday sources: csv files (re-read on change, resampled from a finer file, no
synthetic fallback), the synthetic path (consistent with the daily bar, no look-ahead), and
yfinance against a fake of yf.download's multi-ticker frame (one call for the universe, Yahoo's
per-interval periods, its 20-minute delay)."""

import asyncio
import os
import threading
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.domain.asx_calendar import is_trading_day
from services.domain.intraday import IntradayBar, NoIntradayData, resample
from services.domain.price_history import (
    MarketDataError,
    SourceUnavailableError,
    synthetic_bars,
    trading_sessions,
)
from services.market_data import intraday_sources
from services.market_data.intraday_sources import (
    CsvIntradaySource,
    SyntheticIntradaySource,
    YFinanceIntradaySource,
    quote_source_for,
    serving_intervals,
    yahoo_period,
)

SYD = ZoneInfo("Australia/Sydney")
HEADER = "Datetime,Open,High,Low,Close,Volume\n"


def syd(y, m, d, hh, mm=0, ss=0, us=0):
    return datetime(y, m, d, hh, mm, ss, us, tzinfo=SYD)


def minute_bars(day: date, count: int, step_min: int = 1, base: float = 10.0) -> list[IntradayBar]:
    """`count` bars from 10:00 on `day`, `step_min` apart, closing base, base + 0.01, ..."""
    first = datetime.combine(day, datetime.min.time(), tzinfo=SYD).replace(hour=10)
    bars = []
    for i in range(count):
        close = round(base + i / 100, 4)
        high, low = round(close + 0.05, 4), round(close - 0.05, 4)
        bars.append(IntradayBar(first + timedelta(minutes=step_min * i), close, high, low, close, 100 + i))
    return bars


def csv_text(bars: list[IntradayBar]) -> str:
    rows = [f"{b.start.isoformat(sep=' ')},{b.open},{b.high},{b.low},{b.close},{b.volume}" for b in bars]
    return HEADER + "\n".join(rows) + "\n"


# --- csv ----------------------------------------------------------------------------------------


async def test_csv_quote_and_the_file_is_read_again_when_it_changes(tmp_path):
    path = tmp_path / "CBA.AX_5m.csv"
    path.write_text(
        csv_text(minute_bars(date(2024, 6, 13), 72, 5, 20) + minute_bars(date(2024, 6, 14), 6, 5))
    )
    source = CsvIntradaySource(tmp_path)
    first = await source.quote("CBA.AX", syd(2024, 6, 14, 12))
    assert (first.price, first.quote_time, first.source, first.delay_s) == (
        10.05,
        syd(2024, 6, 14, 10, 30),
        "csv",
        0,
    )
    assert first.previous_close == 20.71  # the last 5m close of Thursday in the file
    assert await source.quote("CBA.AX", syd(2024, 6, 14, 12)) == first  # unchanged: the cached parse
    path.write_text(
        csv_text(minute_bars(date(2024, 6, 13), 72, 5, 20) + minute_bars(date(2024, 6, 14), 8, 5))
    )
    second = await source.quote("CBA.AX", syd(2024, 6, 14, 12))
    assert (second.price, second.quote_time) == (10.07, syd(2024, 6, 14, 10, 40))
    # Same size, new content: the mtime tells.
    stat = path.stat()
    path.write_text(path.read_text().replace("10.07", "10.08"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert (await source.quote("CBA.AX", syd(2024, 6, 14, 12))).price == 10.08


async def test_csv_serves_a_coarser_interval_from_a_finer_file(tmp_path):
    five = minute_bars(date(2024, 6, 14), 72, 5)
    (tmp_path / "NAB.AX_5m.csv").write_text(csv_text(five))
    source = CsvIntradaySource(tmp_path)
    now = syd(2024, 6, 14, 16, 30)
    fifteen = await source.intraday_bars("NAB.AX", "15m", 100, now)
    assert fifteen == resample(five, "15m", "5m") and len(fifteen) == 24
    hourly = await source.intraday_bars("NAB.AX", "60m", 3, now)
    assert [b.start for b in hourly] == [syd(2024, 6, 14, 13), syd(2024, 6, 14, 14), syd(2024, 6, 14, 15)]
    with pytest.raises(NoIntradayData, match=r"NAB\.AX_1m\.csv"):
        await source.intraday_bars("NAB.AX", "1m", 10, now)  # never built from coarser bars


async def test_csv_prefers_the_exact_file_and_quotes_from_the_finest(tmp_path):
    day = date(2024, 6, 14)
    (tmp_path / "WBC.AX_5m.csv").write_text(csv_text(minute_bars(day, 72, 5, base=30)))
    (tmp_path / "WBC.AX_15m.csv").write_text(csv_text(minute_bars(day, 24, 15, base=40)))
    (tmp_path / "WBC.AX_1m.csv").write_text(csv_text(minute_bars(day, 30, 1, base=50)))
    source = CsvIntradaySource(tmp_path)
    fifteen = await source.intraday_bars("WBC.AX", "15m", 2, syd(2024, 6, 14, 17))
    assert [b.close for b in fifteen] == [40.22, 40.23]  # the 15m file's own bars
    quote = await source.quote("WBC.AX", syd(2024, 6, 14, 10, 20, 30))
    assert quote.price == 50.19 and quote.quote_time == syd(2024, 6, 14, 10, 20)  # the 1m file


async def test_csv_without_a_file_has_no_intraday_data_and_no_synthetic_fallback(tmp_path):
    source = CsvIntradaySource(tmp_path)
    with pytest.raises(NoIntradayData) as none:  # neither an intraday nor a daily file
        await source.quote("CBA.AX", syd(2024, 6, 14, 12))
    assert "CBA.AX_1m.csv" in str(none.value) and str(tmp_path) in str(none.value)
    assert "CBA.AX.csv" in str(none.value)
    (tmp_path / "CBA.AX.csv").write_text("Date,Open,High,Low,Close,Adj Close,Volume\n")  # daily, empty
    with pytest.raises(NoIntradayData, match="no bar for 2024-06-14"):
        await source.quote("CBA.AX", syd(2024, 6, 14, 12))
    with pytest.raises(NoIntradayData, match=r"AXJO_5m\.csv"):
        await source.intraday_bars("^AXJO", "5m", 10, syd(2024, 6, 14, 12))


def write_daily(directory: Path, symbol: str, until: date) -> list:
    bars = synthetic_bars(symbol, trading_sessions(date(2024, 1, 2), until, is_trading_day))
    rows = [f"{b.date},{b.open},{b.high},{b.low},{b.close},{b.adj_close},{b.volume}" for b in bars]
    (directory / f"{symbol}.csv").write_text("Date,Open,High,Low,Close,Adj Close,Volume\n" + "\n".join(rows))
    return bars


async def test_csv_with_daily_bars_only_quotes_the_days_open_from_10(tmp_path):
    bars = write_daily(tmp_path, "NAB.AX", date(2024, 6, 14))
    today, yesterday = bars[-1], bars[-2]
    source = CsvIntradaySource(tmp_path)
    with pytest.raises(NoIntradayData, match="known from 10:00"):
        await source.quote("NAB.AX", syd(2024, 6, 14, 9, 59, 59))
    for moment in (syd(2024, 6, 14, 10), syd(2024, 6, 14, 15, 30)):
        quote = await source.quote("NAB.AX", moment)
        assert (quote.basis, quote.source, quote.delay_s, quote.stale) == ("daily_open", "csv", 0, False)
        assert quote.price == quote.day_open == quote.day_high == quote.day_low == today.open
        assert quote.volume == 0 and quote.previous_close == yesterday.close
        assert quote.quote_time == syd(2024, 6, 14, 10)
        assert quote.bar is None  # only the open is known: no range behind it yet
    closed = await source.quote("NAB.AX", syd(2024, 6, 14, 16, 10))  # the day's bar is final
    assert (closed.basis, closed.price, closed.day_high, closed.day_low, closed.volume) == (
        "daily_close",
        today.close,
        today.high,
        today.low,
        today.volume,
    )
    assert closed.quote_time == syd(2024, 6, 14, 16)
    # The whole session as one bar: the range stops and take-profits are checked against.
    assert closed.bar is not None and closed.bar.to_dict() == {
        "interval": "1d", "start": "2024-06-14T10:00:00+10:00", "end": "2024-06-14T16:00:00+10:00",
        "open": today.open, "high": today.high, "low": today.low, "close": today.close,
    }  # fmt: skip
    with pytest.raises(NoIntradayData, match="weekend"):
        await source.quote("NAB.AX", syd(2024, 6, 15, 11))
    with pytest.raises(NoIntradayData, match="no bar for 2024-06-17"):  # the file ends before
        await source.quote("NAB.AX", syd(2024, 6, 17, 11))
    with pytest.raises(NoIntradayData, match=r"NAB\.AX_5m\.csv"):  # no intraday bars are made up
        await source.intraday_bars("NAB.AX", "5m", 10, syd(2024, 6, 14, 12))
    # An intraday file, once there, is the quote's source again.
    (tmp_path / "NAB.AX_1m.csv").write_text(csv_text(minute_bars(date(2024, 6, 14), 30)))
    assert (await source.quote("NAB.AX", syd(2024, 6, 14, 10, 20))).basis == "intraday"


async def test_csv_broken_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "CBA.AX_5m.csv").write_text("Date,Price\n2024-06-14,1\n")
    with pytest.raises(MarketDataError, match=r"CBA\.AX_5m\.csv: missing column"):
        await CsvIntradaySource(tmp_path).quote("CBA.AX", syd(2024, 6, 14, 12))


@pytest.mark.parametrize(
    ("interval", "candidates"),
    [
        ("1m", ["1m"]),
        ("5m", ["5m", "1m"]),
        ("15m", ["15m", "5m", "1m"]),
        ("60m", ["60m", "30m", "15m", "5m", "1m"]),
    ],
)
def test_serving_intervals(interval, candidates):
    assert serving_intervals(interval) == candidates


# --- synthetic ----------------------------------------------------------------------------------


def daily_bar(symbol: str, day: date):
    bars = synthetic_bars(symbol, trading_sessions(date(2015, 1, 2), day, is_trading_day))
    return bars[-1], bars[-2].close


@pytest.mark.parametrize(
    ("day", "close_at"),
    [
        (date(2024, 6, 14), syd(2024, 6, 14, 16)),
        (date(2024, 12, 24), syd(2024, 12, 24, 14, 10)),
    ],  # early close
)
async def test_synthetic_quote_at_the_close_is_the_daily_bar(day, close_at):
    bar, previous_close = daily_bar("CBA.AX", day)
    quote = await SyntheticIntradaySource().quote("CBA.AX", close_at + timedelta(hours=1))
    assert (quote.day_open, quote.day_high, quote.day_low, quote.price) == (
        bar.open,
        bar.high,
        bar.low,
        bar.close,
    )
    assert quote.volume == bar.volume and quote.previous_close == previous_close
    assert quote.quote_time == close_at and quote.source == "synthetic" and quote.delay_s == 0


@pytest.mark.parametrize(
    ("now", "quote_time"),
    [
        (syd(2024, 6, 14, 11, 5), syd(2024, 6, 14, 11, 5)),  # the 11:04 minute ends exactly now
        (syd(2024, 6, 14, 11, 4, 59, 999999), syd(2024, 6, 14, 11, 4)),  # a microsecond earlier: not yet
    ],
)
async def test_synthetic_quote_has_no_look_ahead_at_a_bar_boundary(now, quote_time):
    quote = await SyntheticIntradaySource().quote("WBC.AX", now)
    assert quote.quote_time == quote_time and quote.quote_time <= now


async def test_synthetic_is_identical_from_a_fresh_source_and_moves_through_the_day():
    now = syd(2024, 6, 14, 13, 7)
    a = await SyntheticIntradaySource().quote("ANZ.AX", now)
    b = await SyntheticIntradaySource().quote("ANZ.AX", now)
    assert a == b
    prices = {
        (await SyntheticIntradaySource().quote("ANZ.AX", syd(2024, 6, 14, 10 + h))).price for h in range(1, 6)
    }
    assert len(prices) == 5


async def test_synthetic_bars_span_sessions_oldest_first():
    bars = await SyntheticIntradaySource().intraday_bars("NAB.AX", "5m", 78, syd(2024, 6, 17, 10, 32))
    assert len(bars) == 78 and bars == sorted(bars, key=lambda b: b.start)
    assert bars[-1].start == syd(2024, 6, 17, 10, 25)  # 10:30-10:35 is not over yet
    assert bars[0].start.date() == date(2024, 6, 14)  # Friday's last 72: across the weekend
    with pytest.raises(NoIntradayData, match="King's Birthday"):
        await SyntheticIntradaySource().quote("NAB.AX", syd(2024, 6, 10, 12))
    with pytest.raises(NoIntradayData, match="visible yet"):
        await SyntheticIntradaySource().quote("NAB.AX", syd(2024, 6, 17, 10, 0, 30))


def test_quote_source_follows_the_daily_source(tmp_path):
    assert isinstance(quote_source_for("csv", tmp_path, ["CBA.AX"]), CsvIntradaySource)
    assert isinstance(quote_source_for("synthetic", tmp_path, ["CBA.AX"]), SyntheticIntradaySource)
    yahoo = quote_source_for("yfinance", tmp_path, ["CBA.AX", "^AXJO"], fresh_s=30)
    assert isinstance(yahoo, YFinanceIntradaySource) and yahoo.fresh_s == 30
    assert isinstance(yahoo, intraday_sources.BatchedQuoteSource)
    assert not isinstance(CsvIntradaySource(tmp_path), intraday_sources.BatchedQuoteSource)
    with pytest.raises(ValueError):
        quote_source_for("auto", tmp_path, ["CBA.AX"])


# --- yfinance -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "limit", "period"),
    [
        ("1m", 1, "6d"),  # quotes: today and the previous session, over a long weekend
        ("1m", 78, "6d"),
        ("1m", 1000, "7d"),  # 3 sessions' worth, but 1m requests stop at 7 days
        ("5m", 78, "8d"),
        ("5m", 1000, "25d"),
        ("15m", 1000, "60d"),  # 5m-30m: Yahoo's 60 days
        ("30m", 1000, "60d"),
        ("60m", 78, "23d"),
        ("60m", 1000, "239d"),  # 60m reaches back 730 days: not capped here
    ],
)
def test_yahoo_period(interval, limit, period):
    assert yahoo_period(interval, limit) == period


class FakeDownload:
    """Stands in for yfinance.download: records each call, returns (or raises) what is scripted."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, **kwargs):
        with self.lock:
            self.calls.append(kwargs)
            outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome() if callable(outcome) else outcome


def download_frame(bars_by_symbol: dict[str, list[IntradayBar]], tz: str = "Australia/Sydney"):
    """yf.download(group_by="ticker", auto_adjust=False)'s frame: (Ticker, Price) columns over the
    union of every ticker's times (NaN where a ticker has none); an empty list is a failed ticker."""
    import pandas as pd

    columns = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]
    frames = {}
    for symbol, bars in bars_by_symbol.items():
        index = pd.DatetimeIndex([pd.Timestamp(b.start) for b in bars], name="Datetime", tz=tz)
        rows = [[b.open, b.high, b.low, b.close, b.close, b.volume] for b in bars]
        frames[symbol] = pd.DataFrame(rows, index=index, columns=columns, dtype=float)
    return pd.concat(frames.values(), axis=1, keys=frames.keys(), names=["Ticker", "Price"], sort=True)


@pytest.fixture
def fake_download(monkeypatch):
    yfinance = pytest.importorskip("yfinance")

    def install(*outcomes) -> FakeDownload:
        fake = FakeDownload(*outcomes)
        monkeypatch.setattr(yfinance, "download", fake)
        return fake

    return install


UNIVERSE = ["CBA.AX", "WBC.AX", "^AXJO"]


def universe_frame():
    return download_frame(
        {
            "CBA.AX": minute_bars(date(2024, 6, 13), 360, base=120)
            + minute_bars(date(2024, 6, 14), 90, base=121),
            "WBC.AX": minute_bars(date(2024, 6, 14), 60, base=28),  # no bars of the previous session
            "^AXJO": [],  # Yahoo failed this ticker: all NaN in the frame
        }
    )


def yahoo(**kw) -> YFinanceIntradaySource:
    return YFinanceIntradaySource(UNIVERSE, **{"timeout_s": 0.5, "attempts": 2, "backoff_s": 0.01, **kw})


async def test_one_download_for_the_universe_per_refresh(fake_download):
    fake = fake_download(universe_frame())
    source = yahoo()
    now = syd(2024, 6, 14, 11)
    await source.prefetch(now)
    cba, wbc = await source.quote("CBA.AX", now), await source.quote("WBC.AX", now)
    with pytest.raises(NoIntradayData, match="Yahoo returned no 1m bars for \\^AXJO"):
        await source.quote("^AXJO", now)
    assert len(fake.calls) == 1
    call = fake.calls[0]
    assert call["tickers"] == UNIVERSE and (call["interval"], call["period"]) == ("1m", "6d")
    assert (call["group_by"], call["threads"], call["progress"], call["ignore_tz"]) == (
        "ticker",
        False,
        False,
        False,
    )
    # 20 minutes late: at 11:00 the latest bar shown is 10:39-10:40.
    assert (cba.quote_time, cba.price, cba.delay_s, cba.source) == (
        syd(2024, 6, 14, 10, 40),
        121.39,
        1200,
        "yfinance",
    )
    assert cba.previous_close == 123.59 and cba.day_open == 121.0 and cba.volume == sum(range(100, 140))
    assert wbc.previous_close is None and wbc.change is None
    await source.prefetch(now)  # the next refresh asks again
    assert len(fake.calls) == 2


async def test_quotes_within_fresh_s_share_one_download(fake_download):
    fake = fake_download(universe_frame)
    source = yahoo(fresh_s=60)
    now = syd(2024, 6, 14, 11)
    quotes = await asyncio.gather(*(source.quote(s, now) for s in ("CBA.AX", "WBC.AX", "CBA.AX")))
    await source.quote("WBC.AX", now)
    assert len(fake.calls) == 1 and quotes[0] == quotes[2]
    expired = yahoo(fresh_s=0)
    fake.calls.clear()
    await expired.quote("CBA.AX", now)
    await expired.quote("CBA.AX", now)
    assert len(fake.calls) == 2


@pytest.mark.parametrize(
    ("interval", "limit", "period"), [("5m", 78, "8d"), ("60m", 1000, "239d"), ("1m", 1000, "7d")]
)
async def test_intraday_bars_ask_for_the_interval_within_yahoos_limit(fake_download, interval, limit, period):
    five = minute_bars(date(2024, 6, 14), 72, 5, base=121)
    fake = fake_download(download_frame({"CBA.AX": five, "WBC.AX": five, "^AXJO": []}))
    bars = await yahoo().intraday_bars("CBA.AX", interval, limit, syd(2024, 6, 14, 16, 30))
    assert (fake.calls[0]["interval"], fake.calls[0]["period"]) == (interval, period)
    assert bars[-1].start == syd(2024, 6, 14, 15, 55)  # the day's last bar ends by 16:00: shown at 16:20
    five_late = await yahoo().intraday_bars("CBA.AX", "5m", 10, syd(2024, 6, 14, 11))
    assert five_late[-1].start == syd(2024, 6, 14, 10, 35)  # ends 10:40, shown at 11:00


async def test_nothing_visible_yet_is_no_data(fake_download):
    fake_download(universe_frame())
    with pytest.raises(NoIntradayData, match="20 minutes after their end"):
        await yahoo().intraday_bars("WBC.AX", "1m", 10, syd(2024, 6, 14, 10, 20, 59))
    with pytest.raises(NoIntradayData, match="visible yet"):
        await yahoo().quote("WBC.AX", syd(2024, 6, 14, 10, 20, 59))


async def test_a_failed_download_is_retried_then_unavailable(fake_download):
    fake = fake_download(ConnectionError("reset by peer"), universe_frame())
    assert (await yahoo().quote("CBA.AX", syd(2024, 6, 14, 11))).price == 121.39
    assert len(fake.calls) == 2
    fake = fake_download(download_frame({"CBA.AX": [], "WBC.AX": []}))  # every ticker failed
    with pytest.raises(SourceUnavailableError, match="no 1m bars for any of 3 symbols"):
        await yahoo().prefetch(syd(2024, 6, 14, 11))
    assert len(fake.calls) == 2  # both attempts


async def test_a_hung_download_times_out(fake_download):
    release = threading.Event()
    fake_download(lambda: release.wait(5) and universe_frame())
    source = yahoo(timeout_s=0.05, attempts=1)  # budget: 0.05 s per ticker + 1
    try:
        with pytest.raises(SourceUnavailableError, match=r"did not finish within 0\.2s"):
            await source.quote("CBA.AX", syd(2024, 6, 14, 11))
    finally:
        release.set()


def test_no_yfinance_import_for_csv_or_synthetic():
    """The adapter module loads pandas and yfinance only when a yfinance download runs."""
    import subprocess
    import sys

    code = (
        "import asyncio, sys; from datetime import datetime; from zoneinfo import ZoneInfo;"
        "from services.market_data import intraday_sources as s;"
        "asyncio.run(s.SyntheticIntradaySource().quote('CBA.AX', datetime(2024, 6, 14, 12, tzinfo=ZoneInfo('Australia/Sydney'))));"
        "print(sorted(m for m in ('pandas', 'yfinance', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.strip() == "[]"
