"""Shared parts of the end-to-end tests: market CSVs, models trained before a date, signal knobs.

Real ASX CSVs from ../shared/data/asx are used when present; otherwise the synthetic walks that
market-data serves (services.domain.price_history) are written as Yahoo-format CSVs into a
temporary folder, so the same tests run on a fresh clone without the shared data.
"""

from __future__ import annotations

import csv
from datetime import date, datetime, time
from functools import cache
from pathlib import Path

from services.base.clock import SYDNEY
from services.domain import asx_calendar
from services.domain.intraday import resample, session_minutes
from services.domain.price_history import (
    SYNTHETIC_EPOCH,
    csv_file_name,
    history_from_csv,
    synthetic_bars,
    trading_sessions,
)
from services.domain.synthetic_intraday import synthetic_intraday_bars
from tests.support import SHARED_ASX, Training, short_tempdir, trained_models

SYMBOLS = ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")
INDEX = "^AXJO"
SYNTHETIC_UNTIL = date(2019, 12, 31)
# The replay_models fixture's models are trained before this day: the first of the replay and
# trading-day tests' periods.
MODELS_BEFORE = date(2019, 6, 3)
# Low thresholds and no bear-market penalty: with neutral sentiment (no news in a replay) the
# default thresholds give mostly HOLD; these make the short test periods trade both ways.
# Tight exits make stop-loss and take-profit happen within a few days.
TRADING_KNOBS = {
    "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD": "0.01",
    "TRADING_PREDICTION_SIGNAL_SELL_THRESHOLD": "0.15",
    "TRADING_PREDICTION_SIGNAL_BEAR_BUY_EXTRA": "0",
    "TRADING_PAPER_TRADING_STOP_LOSS_PCT": "1.5",
    "TRADING_PAPER_TRADING_TAKE_PROFIT_PCT": "1.5",
}


def using_real_data() -> bool:
    return all((SHARED_ASX / f"{s.lstrip('^')}.csv").is_file() for s in (*SYMBOLS, INDEX))


@cache
def market_csv_dir() -> Path:
    """The real ASX CSVs when present, else synthetic ones written in the same format."""
    if using_real_data():
        return SHARED_ASX.resolve()
    folder = short_tempdir("csv-")
    sessions = trading_sessions(SYNTHETIC_EPOCH, SYNTHETIC_UNTIL, asx_calendar.is_trading_day)
    for symbol in (*SYMBOLS, INDEX):
        with open(folder / f"{symbol.lstrip('^')}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"])
            for bar in synthetic_bars(symbol, sessions):
                writer.writerow(
                    [bar.date.isoformat(), bar.open, bar.high, bar.low, bar.close, bar.adj_close, bar.volume]
                )
    return folder


def replay_training(first: date, years: float = 2.0) -> Training:
    """Training on the market CSVs with the clock at `first` 00:00 (labels end before it)."""
    return Training(
        years=years, data_dir=market_csv_dir(), clock_start=datetime.combine(first, time(0), SYDNEY)
    )


@cache
def models_trained_before(first: date, years: float = 2.0) -> Path:
    """Models trained on the CSVs before `first`: minutes on a busy 2-core machine the first time,
    then kept on disk (tests.support.trained_models) for later sessions."""
    return trained_models(replay_training(first, years))


@cache
def intraday_csv_dir(first: date, last: date, interval: str = "5m") -> Path:
    """The market CSVs (linked) plus `<SYMBOL>_<interval>.csv` for the Big 4 from `first` to `last`.

    No real intraday history is at hand, so each day's bars are the seeded synthetic path
    through that day's real (or synthetic) daily bar: they open at its open, close at its close
    and reach its high and low, so the daily and intraday files never disagree.
    """
    source = market_csv_dir()
    folder = short_tempdir("csv-intraday-")
    for path in source.glob("*.csv"):
        (folder / path.name).symlink_to(path)
    end = datetime.combine(last, time(23, 59), SYDNEY)
    for symbol in SYMBOLS:
        text = (source / csv_file_name(symbol)).read_bytes().decode("utf-8")
        bars = history_from_csv(symbol, text, end, asx_calendar.is_trading_day).bars
        with open(folder / f"{symbol}_{interval}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["Datetime", "Open", "High", "Low", "Close", "Volume"])
            for bar in (b for b in bars if first <= b.date <= last):
                minutes = session_minutes(bar.date, asx_calendar.is_early_close(bar.date))
                for b in resample(synthetic_intraday_bars(symbol, bar, minutes), interval):
                    writer.writerow([b.start.isoformat(), b.open, b.high, b.low, b.close, b.volume])
    return folder
