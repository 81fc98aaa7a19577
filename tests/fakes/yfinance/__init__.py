"""A fake of yfinance's `download`: the frames Yahoo's client returns, built from a JSON file.

A test writes the file named by FAKE_YFINANCE (a path) and puts `tests/fakes` first on PYTHONPATH,
so the real code path (`importlib.import_module("yfinance").download(...)`) runs in a real process
against frames shaped as yfinance 0.2/1.x gives them: with group_by="ticker" the columns are
(Ticker, Price); a daily index is naive dates, an intraday one aware times; a ticker Yahoo has
nothing for is all-NaN columns. The file:

    {"daily": {"CBA.AX": [["2024-06-06", o, h, l, c, adj, volume], ...]},
     "intraday": {"5m": {"CBA.AX": [["2024-06-14T10:00:00+10:00", o, h, l, c, volume], ...]}},
     "fail": 0}

`fail` > 0: that many calls raise (a rate limit) before one answers. Each call is appended as a
JSON line to `<file>.calls`, so a test sees how many requests were made and with what.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

__version__ = "fake"
PRICES = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]


def _spec_path() -> Path:
    return Path(os.environ["FAKE_YFINANCE"])


def download(tickers, start=None, end=None, period=None, interval="1d", group_by="column", **kwargs):
    path = _spec_path()
    spec = json.loads(path.read_text())
    symbols = [tickers] if isinstance(tickers, str) else list(tickers)
    with open(str(path) + ".calls", "a") as calls:
        calls.write(
            json.dumps(
                {"tickers": symbols, "start": start, "end": end, "period": period, "interval": interval}
            )
            + "\n"
        )
    if spec.get("fail", 0) > 0:
        spec["fail"] -= 1
        path.write_text(json.dumps(spec))
        raise RuntimeError("Too Many Requests. Rate limited. Try after a while.")
    if interval == "1d":
        rows = spec.get("daily", {})
        index_of = lambda text: pd.Timestamp(text)  # noqa: E731 - naive dates, as yfinance gives daily bars
        columns = PRICES
    else:
        rows = spec.get("intraday", {}).get(interval, {})
        index_of = lambda text: pd.Timestamp(text).tz_convert("Australia/Sydney")  # noqa: E731
        columns = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]
    frames = {}
    for symbol in symbols:
        kept = [r for r in rows.get(symbol, []) if _within(r[0], start, end)]
        values = [r[1:] if interval == "1d" else [*r[1:5], r[4], r[5]] for r in kept]
        frames[symbol] = pd.DataFrame(
            values, index=pd.Index([index_of(r[0]) for r in kept]), columns=columns, dtype=float
        )
    frame = pd.concat(frames, axis=1)  # union of the times: a ticker's missing ones are NaN rows
    if frame.columns.nlevels == 1:
        frame.columns = pd.MultiIndex.from_product([symbols, columns])
    if group_by != "ticker":
        frame = frame.swaplevel(axis=1)
    return frame.sort_index()


def _within(day: str, start, end) -> bool:
    return (start is None or day[:10] >= start) and (end is None or day[:10] < end)
