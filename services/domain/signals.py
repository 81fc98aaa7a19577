"""Combine technicals, market context, sentiment and the model ensemble into BUY / HOLD / SELL.

Pure: no I/O, no clock. Every input may be missing; a missing input is never replaced by an
invented number. It simply drops out of the direction and lowers the confidence.

How a decision is made
----------------------
1. Each *directional component* gives a score in -1..+1 (positive = bullish):

   * technical: the mean of the readings present among
     - RSI: ``(50 - rsi) / rsi_span`` clamped (span 20), i.e. 30 (oversold) -> +1, 70 (overbought) -> -1
       (mean reversion, the classic reading of RSI on daily bars);
     - MACD histogram: ``tanh(histogram / price / macd_scale)``: positive momentum is bullish;
       divided by the price so banks at $30 and $100 compare (needs the price);
     - Bollinger %B: ``(0.5 - %B) * 2`` clamped: below the lower band -> +1, above the upper -> -1;
     then scaled by the volume ratio: x(1 + volume_max_boost) at or above ``volume_high``
     (heavy volume confirms a move), x(1 - volume_max_boost) at or below ``volume_low``;
   * sentiment: the news score (-1..1), its weight scaled by its confidence (a score from no
     news says nothing, so it must not pull the composite toward zero);
   * model: ``2 * P(up) - 1`` from the ensemble.

2. The *composite* is the weighted mean of the components that are present (weights from the
   config, renormalised over what is present). Fallback sentiment (the sentiment service could not
   reach its news source) counts with a reduced weight.

3. *Market-aware thresholds*: BUY when composite >= buy threshold, SELL when composite <=
   -sell threshold, else HOLD. In a bear market the BUY threshold rises by
   ``bear_buy_extra * strength``; in a bull market the SELL threshold rises by
   ``bull_sell_extra * strength``: acting against the tide needs stronger evidence.

4. *Confidence* (0..1) = ``(decisiveness + evidence) / 2`` x coverage x quality factor x
   fallback factor x context factor, where
   * decisiveness: how far the composite is past the threshold (BUY/SELL) or inside the HOLD
     band, 0..1;
   * evidence: the components' own confidences (share of technical readings present, sentiment
     confidence, ensemble confidence), weighted like the composite;
   * coverage: share of the configured weight that the present components carry (no model ->
     the model's weight is missing -> confidence shrinks in proportion; sentiment carries its
     weight x its confidence, and a fallback only part of that);
   * quality factor: ``min(1, quality / min_quality)``, or ``missing_quality_factor`` when the
     market data gave no quality score;
   * fallback factor: ``fallback_sentiment_factor`` when sentiment came from the fallback;
   * context factor: ``missing_context_factor`` when the market context is unknown (the
     thresholds could not be adjusted).

Every number named here is a `SignalConfig` field, settable as ``TRADING_PREDICTION_SIGNAL_<FIELD>``
(read by the prediction service, services/prediction/prediction_knobs.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Signal = Literal["BUY", "HOLD", "SELL"]
MarketRegime = Literal["bull", "bear", "sideways"]
MARKET_REGIMES: tuple[str, ...] = ("bull", "bear", "sideways")
SENTIMENT_FALLBACK_SOURCE = "fallback"


def _setting(default: float, bounds: str, doc: str) -> Any:
    """A field with its allowed interval (e.g. ``"[0, 1)"``) and a one-line doc, both listed as knobs."""
    return field(default=default, metadata={"bounds": bounds, "doc": doc})


def _within(value: float, bounds: str) -> bool:
    low, high = (float(end) for end in bounds[1:-1].split(","))
    above = value > low if bounds[0] == "(" else value >= low
    below = value < high if bounds[-1] == ")" else value <= high
    return above and below


@dataclass(frozen=True, slots=True)
class SignalConfig:
    """Thresholds and weights; the prediction service reads each as ``TRADING_PREDICTION_SIGNAL_<FIELD>``."""

    weight_technical: float = _setting(0.35, "[0, inf)", "weight of the technical component")
    weight_sentiment: float = _setting(0.15, "[0, inf)", "weight of the news sentiment")
    weight_model: float = _setting(0.50, "[0, inf)", "weight of the model ensemble")
    buy_threshold: float = _setting(0.20, "(0, 1)", "BUY when the composite is at or above this")
    sell_threshold: float = _setting(0.20, "(0, 1)", "SELL when the composite is at or below minus this")
    bear_buy_extra: float = _setting(
        0.20, "[0, 1)", "a bear market raises the BUY threshold by this x strength"
    )
    bull_sell_extra: float = _setting(
        0.20, "[0, 1)", "a bull market raises the SELL threshold by this x strength"
    )
    rsi_span: float = _setting(20.0, "(0, inf)", "RSI points from 50 that score +-1")
    macd_scale: float = _setting(0.005, "(0, inf)", "MACD histogram / price that scores tanh(1)")
    volume_low: float = _setting(
        0.5, "[0, inf)", "volume ratio at or below which the technical score shrinks"
    )
    volume_high: float = _setting(1.5, "[0, inf)", "volume ratio at or above which the technical score grows")
    volume_max_boost: float = _setting(0.2, "[0, 1)", "how much volume grows or shrinks the technical score")
    min_quality: float = _setting(0.6, "[0, 1]", "data quality below this lowers the confidence")
    missing_quality_factor: float = _setting(0.8, "[0, 1]", "confidence factor when no quality score came")
    fallback_sentiment_weight: float = _setting(
        0.5, "[0, 1]", "share of its weight a fallback sentiment keeps"
    )
    fallback_sentiment_factor: float = _setting(0.8, "[0, 1]", "confidence factor for a fallback sentiment")
    missing_context_factor: float = _setting(
        0.9, "[0, 1]", "confidence factor when the market context is unknown"
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
            if not _within(value, f.metadata["bounds"]):
                raise ValueError(f"{f.name} must be in {f.metadata['bounds']}, got {value!r}")
        if self.weight_technical + self.weight_sentiment + self.weight_model <= 0:
            raise ValueError("the weights must not all be zero")
        if self.volume_low >= self.volume_high:
            raise ValueError("volume_low must be below volume_high")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TechnicalReadings:
    """Latest indicator values; any may be None (too little history)."""

    rsi: float | None = None
    macd_histogram: float | None = None
    bollinger_percent_b: float | None = None
    volume_ratio: float | None = None
    price: float | None = None


@dataclass(frozen=True, slots=True)
class MarketContext:
    regime: MarketRegime
    strength: float

    def __post_init__(self) -> None:
        if self.regime not in MARKET_REGIMES:
            raise ValueError(f"unknown market regime {self.regime!r}")
        if not 0 <= self.strength <= 1:
            raise ValueError(f"market strength must be in 0..1, got {self.strength!r}")


@dataclass(frozen=True, slots=True)
class SentimentReading:
    score: float
    confidence: float
    source: str

    def __post_init__(self) -> None:
        _check_range("sentiment score", self.score, -1, 1)
        _check_range("sentiment confidence", self.confidence, 0, 1)


@dataclass(frozen=True, slots=True)
class EnsembleReading:
    probability_up: float
    confidence: float

    def __post_init__(self) -> None:
        _check_range("ensemble probability", self.probability_up, 0, 1)
        _check_range("ensemble confidence", self.confidence, 0, 1)


@dataclass(frozen=True, slots=True)
class SignalInputs:
    """What a decision is made from; None = that input is unavailable."""

    technical: TechnicalReadings | None = None
    market: MarketContext | None = None
    data_quality: float | None = None
    sentiment: SentimentReading | None = None
    ensemble: EnsembleReading | None = None

    def __post_init__(self) -> None:
        if self.data_quality is not None:
            _check_range("data quality", self.data_quality, 0, 1)


@dataclass(frozen=True, slots=True)
class Component:
    """One directional input as used: its score, the weight it got, and its own confidence."""

    name: str
    score: float
    weight: float
    confidence: float


@dataclass(frozen=True, slots=True)
class SignalDecision:
    signal: Signal
    confidence: float
    score: float | None
    buy_threshold: float
    sell_threshold: float
    components: tuple[Component, ...]
    missing: tuple[str, ...]
    reasons: tuple[str, ...]

    def as_dict(self) -> dict:
        return {
            "signal": self.signal,
            "confidence": self.confidence,
            "score": self.score,
            "thresholds": {"buy": self.buy_threshold, "sell": -self.sell_threshold},
            "components": {
                c.name: {"score": c.score, "weight": c.weight, "confidence": c.confidence}
                for c in self.components
            },
            "missing": list(self.missing),
            "reasons": list(self.reasons),
        }


def _check_range(label: str, value: float, low: float, high: float) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{label} must be in {low}..{high}, got {value!r}")


def _clamp(value: float, low: float = -1.0, high: float = 1.0) -> float:
    return max(low, min(high, value))


def technical_score(t: TechnicalReadings, config: SignalConfig) -> tuple[float, float, list[str]] | None:
    """(score, share of the three directional readings present, reasons), or None if none present."""
    parts: list[float] = []
    reasons: list[str] = []
    if t.rsi is not None:
        parts.append(_clamp((50.0 - t.rsi) / config.rsi_span))
        reasons.append(f"RSI {t.rsi:.1f} -> {parts[-1]:+.2f}")
    if t.macd_histogram is not None and t.price:
        parts.append(math.tanh(t.macd_histogram / t.price / config.macd_scale))
        reasons.append(f"MACD histogram {t.macd_histogram:+.4f} -> {parts[-1]:+.2f}")
    elif t.macd_histogram is not None:
        reasons.append("MACD histogram ignored: no price to scale it by")
    if t.bollinger_percent_b is not None:
        parts.append(_clamp((0.5 - t.bollinger_percent_b) * 2.0))
        reasons.append(f"Bollinger %B {t.bollinger_percent_b:.2f} -> {parts[-1]:+.2f}")
    if not parts:
        return None
    score = sum(parts) / len(parts)
    factor = volume_factor(t.volume_ratio, config)
    if factor != 1.0:
        reasons.append(f"volume ratio {t.volume_ratio:.2f}: technical score x{factor:.2f}")
    return _clamp(score * factor), len(parts) / 3.0, reasons


def volume_factor(ratio: float | None, config: SignalConfig) -> float:
    """Heavy volume confirms a move (up to 1 + boost), thin volume weakens it; unknown -> 1."""
    if ratio is None:
        return 1.0
    if ratio >= config.volume_high:
        return 1.0 + config.volume_max_boost
    if ratio <= config.volume_low:
        return 1.0 - config.volume_max_boost
    return 1.0


def thresholds(market: MarketContext | None, config: SignalConfig) -> tuple[float, float]:
    """(buy threshold, sell threshold magnitude) after the market-context adjustment."""
    buy, sell = config.buy_threshold, config.sell_threshold
    if market is None:
        return buy, sell
    if market.regime == "bear":
        buy += config.bear_buy_extra * market.strength
    elif market.regime == "bull":
        sell += config.bull_sell_extra * market.strength
    # Keep both reachable: a composite can never exceed 1 in magnitude.
    return min(buy, 0.99), min(sell, 0.99)


def _components(inputs: SignalInputs, config: SignalConfig) -> tuple[list[Component], list[str], list[str]]:
    comps: list[Component] = []
    missing: list[str] = []
    reasons: list[str] = []
    tech = technical_score(inputs.technical, config) if inputs.technical else None
    if tech is None:
        missing.append("technical")
    else:
        comps.append(Component("technical", tech[0], config.weight_technical, tech[1]))
        reasons.extend(tech[2])
    s = inputs.sentiment
    if s is None:
        missing.append("sentiment")
    else:
        # Scaled by its own confidence: "neutral, zero confidence" (no news) carries no weight
        # rather than dragging the composite toward zero as if it were evidence of calm.
        weight = config.weight_sentiment * s.confidence
        if s.source == SENTIMENT_FALLBACK_SOURCE:
            weight *= config.fallback_sentiment_weight
        comps.append(Component("sentiment", s.score, weight, s.confidence))
        reasons.append(f"sentiment {s.score:+.2f} (confidence {s.confidence:.2f}, {s.source})")
    e = inputs.ensemble
    if e is None:
        missing.append("model")
    else:
        comps.append(Component("model", 2.0 * e.probability_up - 1.0, config.weight_model, e.confidence))
        reasons.append(f"model P(up) {e.probability_up:.2f} (confidence {e.confidence:.2f})")
    return comps, missing, reasons


def _decisiveness(signal: Signal, score: float, buy: float, sell: float) -> float:
    if signal == "BUY":
        return _clamp((score - buy) / (1.0 - buy), 0.0, 1.0)
    if signal == "SELL":
        return _clamp((-score - sell) / (1.0 - sell), 0.0, 1.0)
    # HOLD: distance to the nearer threshold, relative to half the band's width.
    half_band = (buy + sell) / 2.0
    return _clamp(min(buy - score, score + sell) / half_band, 0.0, 1.0)


def _confidence_factors(inputs: SignalInputs, config: SignalConfig) -> tuple[float, list[str]]:
    factor = 1.0
    reasons: list[str] = []
    q = inputs.data_quality
    if q is None:
        factor *= config.missing_quality_factor
        reasons.append(f"data quality unknown: confidence x{config.missing_quality_factor:.2f}")
    elif q < config.min_quality:
        f = q / config.min_quality
        factor *= f
        reasons.append(f"data quality {q:.2f} below {config.min_quality:.2f}: confidence x{f:.2f}")
    if inputs.sentiment is not None and inputs.sentiment.source == SENTIMENT_FALLBACK_SOURCE:
        factor *= config.fallback_sentiment_factor
        reasons.append(f"sentiment is a fallback: confidence x{config.fallback_sentiment_factor:.2f}")
    if inputs.market is None:
        factor *= config.missing_context_factor
        reasons.append(
            f"market context unknown: base thresholds, confidence x{config.missing_context_factor:.2f}"
        )
    return factor, reasons


def decide(inputs: SignalInputs, config: SignalConfig) -> SignalDecision:
    """The one combining function: see the module docstring for the rules."""
    buy, sell = thresholds(inputs.market, config)
    comps, missing, reasons = _components(inputs, config)
    if inputs.market is not None:
        reasons.insert(0, _market_reason(inputs.market, buy, sell, config))
    if not comps:
        reasons.append("no directional input available: HOLD with zero confidence")
        return SignalDecision("HOLD", 0.0, None, buy, sell, (), tuple(missing), tuple(reasons))
    total = sum(c.weight for c in comps)
    if total == 0:
        reasons.append("every available input has zero weight: HOLD with zero confidence")
        return SignalDecision("HOLD", 0.0, None, buy, sell, tuple(comps), tuple(missing), tuple(reasons))
    score = sum(c.score * c.weight for c in comps) / total
    signal: Signal = "BUY" if score >= buy else "SELL" if score <= -sell else "HOLD"
    evidence = sum(c.confidence * c.weight for c in comps) / total
    configured = config.weight_technical + config.weight_sentiment + config.weight_model
    coverage = total / configured
    confidence = (_decisiveness(signal, score, buy, sell) + evidence) / 2.0 * coverage
    if missing:
        reasons.append(f"missing {', '.join(missing)}: coverage {coverage:.2f}")
    factor, factor_reasons = _confidence_factors(inputs, config)
    reasons.extend(factor_reasons)
    reasons.append(f"composite {score:+.3f} vs BUY >= {buy:+.3f}, SELL <= {-sell:+.3f}: {signal}")
    return SignalDecision(
        signal,
        _clamp(confidence * factor, 0.0, 1.0),
        score,
        buy,
        sell,
        tuple(comps),
        tuple(missing),
        tuple(reasons),
    )


def _market_reason(market: MarketContext, buy: float, sell: float, config: SignalConfig) -> str:
    if market.regime == "bear":
        return f"bear market (strength {market.strength:.2f}): BUY threshold {config.buy_threshold:.3f} -> {buy:.3f}"
    if market.regime == "bull":
        return f"bull market (strength {market.strength:.2f}): SELL threshold {config.sell_threshold:.3f} -> {sell:.3f}"
    return f"sideways market (strength {market.strength:.2f}): base thresholds"
