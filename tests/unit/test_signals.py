"""The combining function: market-aware thresholds, degraded inputs, confidence (env: test_knobs)."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.signals import (
    EnsembleReading,
    MarketContext,
    SentimentReading,
    SignalConfig,
    SignalInputs,
    TechnicalReadings,
    decide,
    technical_score,
    thresholds,
    volume_factor,
)

CFG = SignalConfig()


def model_only(p_up: float, market: MarketContext | None = None, quality: float | None = 1.0) -> SignalInputs:
    """Only the ensemble votes, so the composite is exactly 2 * p_up - 1."""
    return SignalInputs(market=market, data_quality=quality, ensemble=EnsembleReading(p_up, 0.8))


def full_inputs(
    *,
    rsi: float = 35.0,
    p_up: float = 0.7,
    sentiment: float = 0.4,
    source: str = "marketaux",
    quality: float | None = 0.9,
    market: MarketContext | None = None,
) -> SignalInputs:
    market = market or MarketContext("sideways", 0.3)
    return SignalInputs(
        technical=TechnicalReadings(
            rsi=rsi, macd_histogram=0.1, bollinger_percent_b=0.3, volume_ratio=1.0, price=100.0
        ),
        market=market,
        data_quality=quality,
        sentiment=SentimentReading(sentiment, 0.6, source),
        ensemble=EnsembleReading(p_up, 0.7),
    )


BULL = MarketContext("bull", 1.0)
BEAR = MarketContext("bear", 1.0)
HALF_BEAR = MarketContext("bear", 0.5)
SIDEWAYS = MarketContext("sideways", 0.8)

# Default thresholds: BUY >= +0.20, SELL <= -0.20; a full-strength bear raises BUY to +0.40,
# a full-strength bull raises SELL to -0.40 (extra 0.20 x strength).
MARKET_TABLE = [
    # (p_up, market, expected, why)
    (0.65, SIDEWAYS, "BUY", "composite +0.30 clears the base +0.20"),
    (0.65, None, "BUY", "unknown context: base thresholds"),
    (0.65, BEAR, "HOLD", "bear market: +0.30 is not enough, needs +0.40"),
    (0.66, HALF_BEAR, "BUY", "half-strength bear needs +0.30; +0.32 clears it"),
    (0.64, HALF_BEAR, "HOLD", "half-strength bear needs +0.30; +0.28 does not"),
    (0.75, BEAR, "BUY", "+0.50 clears even a full bear's +0.40"),
    (0.65, BULL, "BUY", "a bull market does not make BUY harder"),
    (0.35, BEAR, "SELL", "a bear market does not make SELL harder"),
    (0.35, SIDEWAYS, "SELL", "-0.30 past the base -0.20"),
    (0.35, BULL, "HOLD", "bull market: -0.30 is not enough, needs -0.40"),
    (0.25, BULL, "SELL", "-0.50 clears a full bull's -0.40"),
    (0.50, BEAR, "HOLD", "no edge at all"),
    (0.62, MarketContext("bear", 0.0), "BUY", "a zero-strength bear behaves like sideways"),
]


@pytest.mark.parametrize(("p_up", "market", "expected", "why"), MARKET_TABLE)
def test_market_aware_thresholds(p_up, market, expected, why):
    assert decide(model_only(p_up, market), CFG).signal == expected, why


def test_threshold_is_inclusive():
    # 2 * 0.75 - 1 is exactly 0.5 in binary floating point, so this is a true boundary test.
    cfg = SignalConfig(buy_threshold=0.5, sell_threshold=0.5)
    assert decide(model_only(0.75), cfg).signal == "BUY"
    assert decide(model_only(0.25), cfg).signal == "SELL"
    assert decide(model_only(0.7499), cfg).signal == "HOLD"


@pytest.mark.parametrize(
    ("market", "buy", "sell"),
    [
        (None, 0.20, 0.20),
        (MarketContext("sideways", 1.0), 0.20, 0.20),
        (MarketContext("bear", 1.0), 0.40, 0.20),
        (MarketContext("bear", 0.25), 0.25, 0.20),
        (MarketContext("bull", 0.5), 0.20, 0.30),
    ],
)
def test_thresholds(market, buy, sell):
    assert thresholds(market, CFG) == pytest.approx((buy, sell))


def test_thresholds_stay_reachable_with_extreme_config():
    cfg = SignalConfig(buy_threshold=0.9, bear_buy_extra=0.5)
    assert thresholds(BEAR, cfg)[0] == 0.99


TECH_TABLE = [
    # (readings, expected score, expected share present)
    (TechnicalReadings(rsi=30.0), 1.0, 1 / 3),  # oversold -> bullish (mean reversion)
    (TechnicalReadings(rsi=70.0), -1.0, 1 / 3),
    (TechnicalReadings(rsi=50.0), 0.0, 1 / 3),
    (TechnicalReadings(rsi=5.0), 1.0, 1 / 3),  # clamped, never past +1
    (TechnicalReadings(bollinger_percent_b=0.0), 1.0, 1 / 3),  # at the lower band
    (TechnicalReadings(bollinger_percent_b=-0.5), 1.0, 1 / 3),  # below the band: clamped
    (TechnicalReadings(bollinger_percent_b=0.75), -0.5, 1 / 3),
    # MACD histogram 0.5 on a $100 stock = 0.5% of price = one macd_scale -> tanh(1)
    (TechnicalReadings(macd_histogram=0.5, price=100.0), math.tanh(1.0), 1 / 3),
    (TechnicalReadings(macd_histogram=-1.5, price=300.0), math.tanh(-1.0), 1 / 3),
    (TechnicalReadings(rsi=40.0, bollinger_percent_b=0.25, macd_histogram=0.0, price=50.0), 1 / 3, 1.0),
    # heavy volume confirms: (0.5 + 0.5) / 2 x 1.2
    (TechnicalReadings(rsi=40.0, bollinger_percent_b=0.25, volume_ratio=2.0), 0.6, 2 / 3),
    # thin volume weakens: 0.5 x 0.8
    (TechnicalReadings(rsi=40.0, volume_ratio=0.3), 0.4, 1 / 3),
    # heavy volume cannot push past +1
    (TechnicalReadings(rsi=20.0, volume_ratio=3.0), 1.0, 1 / 3),
]


@pytest.mark.parametrize(("readings", "score", "share"), TECH_TABLE)
def test_technical_score(readings, score, share):
    got = technical_score(readings, CFG)
    assert got is not None
    assert got[0] == pytest.approx(score)
    assert got[1] == pytest.approx(share)


def test_technical_score_without_directional_readings_is_missing_not_zero():
    assert technical_score(TechnicalReadings(volume_ratio=2.0, price=10.0), CFG) is None
    # MACD needs the price to be scaled; without it, it is not silently read as some number.
    assert technical_score(TechnicalReadings(macd_histogram=0.3), CFG) is None


@pytest.mark.parametrize(("ratio", "factor"), [(None, 1.0), (1.0, 1.0), (1.5, 1.2), (0.5, 0.8), (0.9, 1.0)])
def test_volume_factor(ratio, factor):
    assert volume_factor(ratio, CFG) == pytest.approx(factor)


QUALITY_TABLE = [
    # (quality, confidence factor relative to good data)
    (0.9, 1.0),
    (0.6, 1.0),  # exactly the minimum: no penalty
    (0.3, 0.5),  # half the minimum -> half the confidence
    (0.0, 0.0),  # unusable data: no confidence at all
    (None, 0.8),  # no quality score reported: fixed penalty
]


@pytest.mark.parametrize(("quality", "factor"), QUALITY_TABLE)
def test_low_quality_data_lowers_confidence_but_not_the_direction(quality, factor):
    good = decide(full_inputs(quality=0.95), CFG)
    degraded = decide(full_inputs(quality=quality), CFG)
    assert degraded.signal == good.signal == "BUY"
    assert degraded.confidence == pytest.approx(good.confidence * factor)
    if factor < 1:
        assert any("data quality" in r for r in degraded.reasons)


def test_fallback_sentiment_lowers_confidence():
    real = decide(full_inputs(sentiment=0.0, source="marketaux"), CFG)
    fallback = decide(full_inputs(sentiment=0.0, source="fallback"), CFG)
    assert fallback.confidence < real.confidence
    assert any("fallback" in r for r in fallback.reasons)
    sentiment = {c.name: c for c in fallback.components}["sentiment"]
    # weight x its confidence (0.6) x the fallback discount
    assert sentiment.weight == pytest.approx(CFG.weight_sentiment * 0.6 * CFG.fallback_sentiment_weight)


def test_zero_confidence_sentiment_does_not_pull_the_score_toward_neutral():
    base = full_inputs()
    silent = SignalInputs(
        base.technical, base.market, base.data_quality, SentimentReading(0.0, 0.0, "marketaux"), base.ensemble
    )
    absent = SignalInputs(base.technical, base.market, base.data_quality, None, base.ensemble)
    assert decide(silent, CFG).score == pytest.approx(decide(absent, CFG).score)
    assert decide(silent, CFG).missing == ()  # it answered; it just had nothing to say


def test_missing_model_is_reported_and_shrinks_confidence():
    with_model = full_inputs(p_up=0.7)
    without = SignalInputs(
        technical=with_model.technical,
        market=with_model.market,
        data_quality=with_model.data_quality,
        sentiment=with_model.sentiment,
    )
    d = decide(without, CFG)
    assert d.missing == ("model",)
    assert "model" not in {c.name for c in d.components}
    assert d.confidence < decide(with_model, CFG).confidence
    assert any("missing model" in r for r in d.reasons)


def test_nothing_available_is_hold_with_zero_confidence():
    d = decide(SignalInputs(market=BULL, data_quality=1.0), CFG)
    assert (d.signal, d.confidence, d.score) == ("HOLD", 0.0, None)
    assert d.missing == ("technical", "sentiment", "model")


def test_worked_example_confidence():
    # Model only, p_up 0.8 (score +0.6, confidence 0.8), sideways, quality 1.0:
    # decisiveness (0.6 - 0.2) / 0.8 = 0.5; evidence 0.8; coverage 0.5 / 1.0
    # confidence = (0.5 + 0.8) / 2 x 0.5 = 0.325
    d = decide(model_only(0.8, SIDEWAYS), CFG)
    assert d.signal == "BUY"
    assert d.score == pytest.approx(0.6)
    assert d.confidence == pytest.approx(0.325)


def test_hold_confidence_is_highest_in_the_middle_of_the_band():
    centre = decide(model_only(0.5, SIDEWAYS), CFG).confidence
    edge = decide(model_only(0.59, SIDEWAYS), CFG).confidence
    assert centre > edge


def test_as_dict_carries_thresholds_components_and_reasons():
    d = decide(full_inputs(market=BEAR), CFG).as_dict()
    assert d["thresholds"] == pytest.approx({"buy": 0.4, "sell": -0.2})
    assert set(d["components"]) == {"technical", "sentiment", "model"}
    assert d["reasons"][0].startswith("bear market")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda: MarketContext("crash", 0.5), "regime"),
        (lambda: MarketContext("bull", 1.5), "strength"),
        (lambda: SentimentReading(2.0, 0.5, "cache"), "sentiment score"),
        (lambda: EnsembleReading(float("nan"), 0.5), "probability"),
        (lambda: SignalInputs(data_quality=-0.1), "quality"),
    ],
)
def test_out_of_range_inputs_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        bad()


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        CFG.buy_threshold = 0.5  # type: ignore[misc]


unit = st.floats(0.0, 1.0)
markets = st.none() | st.builds(MarketContext, st.sampled_from(["bull", "bear", "sideways"]), unit)
technicals = st.builds(
    TechnicalReadings,
    rsi=st.none() | st.floats(0.0, 100.0),
    macd_histogram=st.none() | st.floats(-5.0, 5.0),
    bollinger_percent_b=st.none() | st.floats(-1.0, 2.0),
    volume_ratio=st.none() | st.floats(0.0, 10.0),
    price=st.none() | st.floats(0.01, 1000.0),
)
inputs_strategy = st.builds(
    SignalInputs,
    technical=st.none() | technicals,
    market=markets,
    data_quality=st.none() | unit,
    sentiment=st.none()
    | st.builds(
        SentimentReading, st.floats(-1.0, 1.0), unit, st.sampled_from(["marketaux", "cache", "fallback"])
    ),
    ensemble=st.none() | st.builds(EnsembleReading, unit, unit),
)


@given(inputs_strategy)
def test_confidence_always_in_unit_interval(inputs):
    d = decide(inputs, CFG)
    assert 0.0 <= d.confidence <= 1.0
    assert d.signal in ("BUY", "HOLD", "SELL")


@given(inputs_strategy, unit)
def test_bear_never_creates_a_buy_and_bull_never_creates_a_sell(inputs, strength):
    base = decide(
        SignalInputs(inputs.technical, None, inputs.data_quality, inputs.sentiment, inputs.ensemble), CFG
    )
    bear = decide(
        SignalInputs(
            inputs.technical,
            MarketContext("bear", strength),
            inputs.data_quality,
            inputs.sentiment,
            inputs.ensemble,
        ),
        CFG,
    )
    bull = decide(
        SignalInputs(
            inputs.technical,
            MarketContext("bull", strength),
            inputs.data_quality,
            inputs.sentiment,
            inputs.ensemble,
        ),
        CFG,
    )
    if bear.signal == "BUY":
        assert base.signal == "BUY"
    if bull.signal == "SELL":
        assert base.signal == "SELL"
    # The adjustment is one-sided: a bear market leaves the SELL side alone, a bull the BUY side.
    assert (bear.signal == "SELL") == (base.signal == "SELL")
    assert (bull.signal == "BUY") == (base.signal == "BUY")


@given(inputs_strategy, unit)
def test_worse_data_quality_never_raises_confidence_or_changes_the_signal(inputs, lower):
    if inputs.data_quality is None:
        return
    worse = SignalInputs(
        inputs.technical, inputs.market, inputs.data_quality * lower, inputs.sentiment, inputs.ensemble
    )
    a, b = decide(inputs, CFG), decide(worse, CFG)
    assert b.signal == a.signal
    assert b.confidence <= a.confidence + 1e-12
