"""Market regime (bull / bear / sideways) from the index's closes. Pure.

Three trend votes, each in -1..1, are averaged into a trend score:
- price vs its long moving average (SMA 200): the classic regime line,
- short vs long moving average (SMA 50 vs SMA 200): the trend of the averages,
- the recent return (20 days), scaled so `return_scale` (5%) counts as a full vote.
The first two are scaled by `ma_band` (5%): a price 5% above its average is a full +1 vote,
1% above is +0.2, so hugging the average reads as indecision rather than a trend.

|score| below `sideways_below` (0.25) is sideways; otherwise bull or bear by its sign.
`strength` (0..1) is how firmly the label holds: |score| for a trend, and for sideways how
close the score is to zero (1 = perfectly flat), damped when volatility is high (a choppy
market is not a calm sideways one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.domain import indicators


@dataclass(frozen=True, slots=True)
class ContextParams:
    short_window: int = 50
    long_window: int = 200
    return_window: int = 20
    volatility_window: int = 20
    ma_band: float = 0.05
    return_scale: float = 0.05
    sideways_below: float = 0.25
    high_volatility: float = 0.25  # annualised; above this a sideways reading loses strength


def _clip(x: float) -> float:
    return max(-1.0, min(1.0, x))


def min_history(params: ContextParams = ContextParams()) -> int:
    """Closes needed for every measure to exist (the long SMA is the longest look-back)."""
    return max(params.long_window, params.return_window + 1, params.volatility_window + 1)


def _votes(closes: Sequence[float], sma_short: float, sma_long: float, ret: float, p: ContextParams) -> dict:
    last = closes[-1]
    return {
        "price_vs_long_ma": _clip((last / sma_long - 1.0) / p.ma_band),
        "short_vs_long_ma": _clip((sma_short / sma_long - 1.0) / p.ma_band),
        "recent_return": _clip(ret / p.return_scale),
    }


def _label_and_strength(score: float, volatility: float, p: ContextParams) -> tuple[str, float]:
    if score >= p.sideways_below:
        return "bull", abs(score)
    if score <= -p.sideways_below:
        return "bear", abs(score)
    calm = 1.0 - abs(score) / p.sideways_below
    if volatility > p.high_volatility:
        calm *= p.high_volatility / volatility
    return "sideways", calm


def classify_market(index_closes: Sequence[float], params: ContextParams = ContextParams()) -> dict:
    """{"context", "strength", "trend_score", "votes", "sma_50", "sma_200", "return_20d", ...}.

    Raises ValueError naming the shortfall when there are fewer closes than `min_history`.
    Measure keys carry the configured windows (sma_<short>, sma_<long>, return_<n>d, ...).
    """
    p = params
    needed = min_history(p)
    if len(index_closes) < needed:
        raise ValueError(f"market context needs {needed} index closes, got {len(index_closes)}")
    sma_short = indicators.sma(index_closes[-p.short_window :], p.short_window)[-1]
    sma_long = indicators.sma(index_closes[-p.long_window :], p.long_window)[-1]
    ret = indicators.pct_change(index_closes[-(p.return_window + 1) :], p.return_window)[-1]
    vol = indicators.rolling_volatility(index_closes[-(p.volatility_window + 1) :], p.volatility_window)[-1]
    if ret is None or vol is None:  # only possible with non-positive closes
        raise ValueError("market context needs positive index closes")
    votes = _votes(index_closes, sma_short, sma_long, ret, p)  # type: ignore[arg-type]
    score = sum(votes.values()) / len(votes)
    context, strength = _label_and_strength(score, vol, p)
    return {
        "context": context,
        "strength": round(strength, 4),
        "trend_score": round(score, 4),
        "votes": {k: round(v, 4) for k, v in votes.items()},
        "close": index_closes[-1],
        f"sma_{p.short_window}": sma_short,
        f"sma_{p.long_window}": sma_long,
        f"return_{p.return_window}d": ret,
        f"volatility_{p.volatility_window}d": vol,
    }
