"""What a prediction is decided on: the replies of market-data, sentiment and ml-model (contract
field names) read into the signal combiner's inputs. Pure.

A field that is absent, null or not a finite number is missing, never defaulted. The prediction
service reads its dependencies' replies through these, and the in-process replay engine
(services/management/fast_replay.py) reads the same replies, built by the same domain functions
without RPC, through them too: both decide on the same inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from services.domain.signals import (
    EnsembleReading,
    MarketContext,
    SentimentReading,
    SignalInputs,
    TechnicalReadings,
)


def number(source: Any, *path: str) -> float | None:
    value = source
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def technical_from_market(market: dict) -> TechnicalReadings:
    tech = market.get("technical") or {}
    return TechnicalReadings(
        rsi=number(tech, "rsi"),
        macd_histogram=number(tech, "macd", "histogram"),
        bollinger_percent_b=number(tech, "bollinger", "percent_b"),
        volume_ratio=number(tech, "volume", "ratio"),
        price=number(market, "price"),
    )


def context_from_market(market: dict) -> MarketContext | None:
    ctx = market.get("market_context")
    if not isinstance(ctx, dict):
        return None
    strength = number(ctx, "strength")
    try:
        return MarketContext(ctx.get("context"), strength) if strength is not None else None  # type: ignore[arg-type]
    except ValueError:
        return None


def quality_from_market(market: dict) -> float | None:
    score = number(market, "quality", "score")
    return score if score is not None and 0.0 <= score <= 1.0 else None


def sentiment_reading(result: dict) -> SentimentReading:
    """Raises ValueError when the result breaks the contract (then sentiment counts as missing)."""
    score, confidence = number(result, "score"), number(result, "confidence")
    if score is None or confidence is None:
        raise ValueError("sentiment result lacks a numeric score or confidence")
    return SentimentReading(score, confidence, str(result.get("source") or "unknown"))


def ensemble_reading(result: dict) -> EnsembleReading:
    p, confidence = number(result, "probability"), number(result, "confidence")
    if p is None or confidence is None:
        raise ValueError("ensemble result lacks a numeric probability or confidence")
    return EnsembleReading(p, confidence)


@dataclass(slots=True)
class Gathered:
    market: dict
    sentiment: dict | None = None
    ensemble: dict | None = None
    feature_values: dict | None = None
    missing: dict[str, str] = field(default_factory=dict)


def read_inputs(g: Gathered) -> tuple[SignalInputs, dict[str, str]]:
    """The combiner's inputs, and every input that is missing with the reason. Pure."""
    missing = dict(g.missing)
    sentiment = ensemble = None
    if g.sentiment is not None:
        try:
            sentiment = sentiment_reading(g.sentiment)
        except ValueError as exc:
            missing["sentiment"] = f"unusable sentiment result: {exc}"
    expired = g.ensemble.get("expired") if g.ensemble is not None else None
    if isinstance(expired, dict):  # ml-model gives an expired set's votes no weight: no model input
        missing["model"] = (
            f"model set {expired.get('model_set')} expired: {expired.get('age_days')} days old "
            f"(over twice TRADING_ML_MODEL_MAX_AGE_DAYS={expired.get('max_age_days')})"
        )
    elif g.ensemble is not None:
        try:
            ensemble = ensemble_reading(g.ensemble)
        except ValueError as exc:
            missing["model"] = f"unusable ensemble result: {exc}"
    technical = technical_from_market(g.market)
    context = context_from_market(g.market)
    if context is None:
        ctx = g.market.get("market_context")
        reason = ctx.get("error") if isinstance(ctx, dict) else None
        missing["market_context"] = reason or "market-data gave no usable market context"
    quality = quality_from_market(g.market)
    if quality is None:
        missing["data_quality"] = "market-data gave no quality score"
    inputs = SignalInputs(technical, context, quality, sentiment, ensemble)
    return inputs, missing
