"""Shared parts of the end-to-end tests: market CSVs, models trained before a date, signal knobs.

Real ASX CSVs from ../shared/data/asx are used when present; otherwise the synthetic walks that
market-data serves (services.domain.price_history) are written as Yahoo-format CSVs into a
temporary folder, so the same tests run on a fresh clone without the shared data.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import date, datetime, time
from functools import cache
from pathlib import Path

from services.base.clock import SYDNEY
from services.domain import asx_calendar
from services.domain.price_history import SYNTHETIC_EPOCH, synthetic_bars, trading_sessions
from tests.support import REPO, SHARED_ASX, short_tempdir

SYMBOLS = ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")
INDEX = "^AXJO"
SYNTHETIC_UNTIL = date(2019, 12, 31)
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


@cache
def models_trained_before(first: date, years: float = 2.0) -> Path:
    """Models trained with the clock at `first` 00:00 (labels end before it).

    Training takes from 15 s to minutes on a busy 2-core machine, so the result is kept under
    the system temp dir, keyed by everything that decides it (the training code, the CSVs, the
    date and the years): a later session reuses it; any change trains afresh.
    """
    out = Path(tempfile.gettempdir()) / "trading-test-models" / _training_key(first, years)
    if (out / "manifest.json").is_file():
        return out
    work = short_tempdir("models-")
    env = {
        "PYTHONPATH": str(REPO),
        "TRADING_CLOCK_START": datetime.combine(first, time(0), SYDNEY).isoformat(),
        "TRADING_LOG_DIR": str(work / "logs"),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "services/ml-model/train_models.py"),
            "--data-dir",
            str(market_csv_dir()),
            "--out",
            str(work / "models"),
            "--years",
            repr(years),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # another session finished the same training first
        os.rename(work / "models", out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def _training_key(first: date, years: float) -> str:
    digest = hashlib.sha256(f"{first}|{years}".encode())
    code = [
        *sorted((REPO / "services" / "ml-model").glob("*.py")),
        *sorted((REPO / "services" / "domain").glob("*.py")),
    ]
    for path in code:
        digest.update(path.name.encode() + path.read_bytes())
    for path in sorted(market_csv_dir().glob("*.csv")):
        stat = path.stat()
        digest.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]
