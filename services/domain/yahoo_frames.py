"""A yf.download frame taken apart per ticker, without importing pandas (the frame is duck-typed).

Columns come as (Ticker, Price) with group_by="ticker", as (Price, Ticker) with group_by="column",
or flat for a single ticker. Both the history fetcher (services/clients/yahoo_history.py) and
market-data's intraday source read frames through these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.domain.bars import SYDNEY
from services.domain.intraday import IntradayBar

OHLC = ["Open", "High", "Low", "Close"]


def ticker_part(frame: Any, symbol: str, symbols: Sequence[str]) -> Any | None:
    """`symbol`'s columns of a downloaded frame, or None when the frame has none for it."""
    columns = frame.columns
    multi = getattr(columns, "nlevels", 1) > 1
    if multi and symbol in columns.get_level_values(0):
        return frame[symbol]
    if multi and symbol in columns.get_level_values(1):
        return frame.xs(symbol, axis=1, level=1)
    if not multi and len(symbols) == 1:
        return frame
    return None


def intraday_bars(part: Any) -> list[IntradayBar] | None:
    """One ticker's intraday rows as bars in Sydney time, oldest first; None when the index has no
    time zone (a naive time names no instant). The index is the union of every ticker's times, so
    a ticker's missing times are NaN rows: dropped, as are Yahoo's own; Volume NaN counts as 0."""
    part = part.dropna(subset=OHLC)
    if part.empty:
        return []
    if part.index.tz is None:
        return None
    values = zip(
        part.index,
        *(part[c].tolist() for c in OHLC),
        part["Volume"].fillna(0).tolist(),
        strict=True,
    )
    return [
        IntradayBar(ts.to_pydatetime().astimezone(SYDNEY), float(o), float(h), float(lo), float(c), int(v))
        for ts, o, h, lo, c, v in values
    ]
