"""market-data's knobs (TRADING_MARKET_DATA_*), read once at start.

TRADING_MARKET_DATA_SOURCE and TRADING_MARKET_DATA_DIR are not knobs but contract settings
(services.base.config.Settings), shared with training and replays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.base.knobs import knob
from services.domain import indicators


@dataclass(frozen=True, slots=True)
class MarketDataKnobs:
    service: ClassVar[str] = "market-data"

    cache_s: float = knob(300.0, low=0.0, high=86400.0, doc="a symbol's data is fresh this long")
    retry_s: float = knob(
        30.0, low=0.0, high=3600.0, doc="after a failed fetch, wait this long (never past cache_s)"
    )
    history_bars: int = knob(1300, low=30, high=20000, doc="daily bars kept per symbol")
    recent_bars: int = knob(30, low=1, high=500, doc="bars in get_market_data's reply")
    refresh_concurrency: int = knob(8, low=1, high=256, doc="symbols fetched at once by a refresh")
    probe_timeout_s: float = knob(3.0, low=0.1, high=60.0, doc="auto: how long to ask whether Yahoo answers")
    yf_timeout_s: float = knob(10.0, low=0.1, high=120.0, doc="one yfinance download")
    yf_attempts: int = knob(3, low=1, high=10, doc="yfinance tries per fetch")
    quote_s: float = knob(
        60.0, low=1.0, high=3600.0, doc="seconds between quote refreshes while the market is open"
    )
    ig_quotes: bool = knob(
        True, doc="quotes from IG Markets when its credentials are set and the source is auto or yfinance"
    )
    ig_timeout_s: float = knob(5.0, low=0.1, high=60.0, doc="one IG request")
    ig_retry_s: float = knob(
        60.0,
        low=0.0,
        high=3600.0,
        doc="after IG failed as a whole (down, 5xx, rate limited), ask again after this",
    )
    rsi_period: int = knob(14, low=2, high=200, doc="RSI bars")
    bollinger_period: int = knob(20, low=2, high=200, doc="Bollinger band bars")

    @property
    def failure_retry_s(self) -> float:
        """How long a failed fetch is not retried: retry_s, but never past the cache's TTL."""
        return min(self.cache_s, self.retry_s)

    @property
    def technical(self) -> indicators.TechnicalParams:
        return indicators.TechnicalParams(rsi_period=self.rsi_period, bollinger_period=self.bollinger_period)
