"""sentiment's knobs (TRADING_SENTIMENT_*), read once at start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.base.knobs import knob
from services.domain import sentiment_scoring as scoring


def parse_country(text: str) -> str:
    return text.strip().lower() or "au"


@dataclass(frozen=True, slots=True)
class SentimentKnobs:
    service: ClassVar[str] = "sentiment"

    cache_s: float = knob(1800.0, low=0.0, high=86400.0, doc="a reading is served from cache this long")
    failure_retry_s: float = knob(
        300.0, low=0.0, high=86400.0, doc="after a failed fetch, wait this long before asking again"
    )
    lookback_h: float = knob(72.0, low=1.0, high=24.0 * 90, doc="news published this far back counts")
    news_limit: int = knob(3, low=1, high=100, doc="articles per request (3: the free plan's maximum)")
    half_life_h: float = knob(
        scoring.RECENCY_HALF_LIFE_H, low=0.1, doc="an article's weight halves this often"
    )
    fallback_half_life_h: float = knob(
        scoring.FALLBACK_HALF_LIFE_H, low=1e-4, doc="a stored reading's confidence halves this often"
    )
    top_articles: int = knob(5, low=0, high=100, doc="articles listed in a reply")
    market_country: str = knob("au", parse=parse_country, doc="country of the market-wide news")
    http_timeout_s: float = knob(10.0, low=0.1, high=120.0, doc="one MarketAux request")
    http_attempts: int = knob(3, low=1, high=10, doc="tries per MarketAux request")
    retry_backoff_s: float = knob(0.5, low=0.0, high=60.0, doc="first wait between tries (doubles)")
