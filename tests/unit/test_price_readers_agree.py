"""Training and the replay report read price files themselves (no service imports another's modules),
through services.domain.price_history: they must see the very bars market-data's sources serve."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.domain.asx_calendar import is_trading_day
from services.management.replay import read_prices
from services.market_data.providers import CsvSource, SyntheticSource
from services.ml_model.train_models import read_bars

SYD = ZoneInfo("Australia/Sydney")
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "asx"
QUIRKY = (
    "\ufeffDate,Open,High,Low,Close,Adj Close,Volume\r\n"
    "2024-06-03,10,11,9,10.5,10.4,1000\r\n"
    "2024-06-04,null,null,null,null,null,null\r\n"  # Yahoo null row
    "2024-06-05,10.5,10.5,10.5,10.5,10.4,0\r\n"  # filler
    "2024-06-08,10,11,9,10.3,10.2,500\r\n"  # a Saturday
    "2024-06-07,10,11,9,10.1,10.0,900\r\n"  # out of order
    "2024-06-11,10,11,9,10.6,10.5,1200\r\n"
    "2024-06-12,10,11,9,10.7,10.6,1300\r\n"  # not final at 12:00 on the 12th
)
NOW = datetime(2024, 6, 12, 12, tzinfo=SYD)


@pytest.fixture
def csv_dir(tmp_path: Path) -> Path:
    (tmp_path / "XYZ.AX.csv").write_text(QUIRKY, encoding="utf-8", newline="")
    if (SHARED / "CBA.AX.csv").is_file():
        shutil.copy(SHARED / "CBA.AX.csv", tmp_path / "CBA.AX.csv")
    return tmp_path


def symbols(directory: Path) -> tuple[str, ...]:
    return tuple(sorted(p.name.removesuffix(".csv") for p in directory.glob("*.csv")))


async def test_training_reads_the_csv_bars_market_data_serves(csv_dir):
    source = CsvSource(csv_dir, is_trading_day)
    for symbol, bars in read_bars(csv_dir, list(symbols(csv_dir)), NOW).items():
        assert bars, symbol
        assert bars == list((await source.fetch(symbol, NOW)).bars), symbol


async def test_training_walks_the_synthetic_bars_market_data_serves():
    now = datetime(2020, 3, 2, 17, tzinfo=SYD)
    source = SyntheticSource(is_trading_day)
    for symbol, bars in read_bars(None, ["CBA.AX", "^AXJO"], now).items():
        assert bars == list((await source.fetch(symbol, now)).bars), symbol


async def test_the_replay_report_reads_the_csv_bars_market_data_serves(csv_dir):
    source = CsvSource(csv_dir, is_trading_day)
    for symbol, (closes, adj_closes) in read_prices(csv_dir, symbols(csv_dir), NOW).items():
        bars = (await source.fetch(symbol, NOW)).bars
        assert closes == [(b.date, b.close) for b in bars], symbol
        assert adj_closes == [(b.date, b.adj_close) for b in bars], symbol
