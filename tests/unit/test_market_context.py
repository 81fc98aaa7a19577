"""Market regime classification: hand-built index paths with known answers."""

import math
from pathlib import Path

import pytest

from services.domain.market_context import ContextParams, classify_market, min_history

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "asx"


def geometric(start: float, daily: float, n: int) -> list[float]:
    return [start * (1 + daily) ** i for i in range(n)]


def zigzag(level: float, amplitude: float, n: int) -> list[float]:
    return [level * (1 + amplitude * (1 if i % 2 else -1)) for i in range(n)]


@pytest.mark.parametrize(
    ("closes", "context"),
    [
        (geometric(6000, 0.002, 260), "bull"),  # steady +0.2%/day: above both MAs, MA50 > MA200
        (geometric(8000, -0.002, 260), "bear"),
        ([7000.0] * 260, "sideways"),
        (zigzag(7000, 0.001, 260), "sideways"),  # noise around a level: no trend vote
        # A long rise, then a 15% fall in 20 days back onto the 200-day average: MA50 > MA200
        # still votes bull, the 20-day return votes bear, price vs MA200 ~0 -> sideways.
        (geometric(6000, 0.002, 240) + geometric(6000 * 1.002**239 * 0.992, -0.008, 20), "sideways"),
        # The same rise with a gentler 11% fall stays (weakly) bull: price is still 4% above MA200.
        (geometric(6000, 0.002, 240) + geometric(6000 * 1.002**239 * 0.994, -0.006, 20), "bull"),
    ],
)
def test_classification_table(closes, context):
    assert classify_market(closes)["context"] == context


def test_measures_are_reported_and_consistent():
    closes = geometric(6000, 0.002, 260)
    result = classify_market(closes)
    assert result["sma_50"] == pytest.approx(sum(closes[-50:]) / 50)
    assert result["sma_200"] == pytest.approx(sum(closes[-200:]) / 200)
    assert result["return_20d"] == pytest.approx(1.002**20 - 1)
    assert result["volatility_20d"] == pytest.approx(0.0, abs=1e-9)  # constant growth: no dispersion
    assert set(result["votes"]) == {"price_vs_long_ma", "short_vs_long_ma", "recent_return"}
    assert result["trend_score"] == pytest.approx(sum(result["votes"].values()) / 3, abs=1e-3)


def test_strength_grows_with_the_trend():
    weak = classify_market(geometric(6000, 0.0008, 260))
    strong = classify_market(geometric(6000, 0.003, 260))
    assert weak["context"] == strong["context"] == "bull"
    assert 0 < weak["strength"] < strong["strength"] <= 1


def test_flat_market_is_fully_sideways_and_choppy_one_less_so():
    flat = classify_market([7000.0] * 260)
    choppy = classify_market(zigzag(7000, 0.03, 260))  # ±3% swings: ~95% annualised vol
    assert flat["strength"] == 1.0
    assert choppy["context"] == "sideways"
    assert choppy["strength"] < 0.5
    assert choppy["volatility_20d"] > ContextParams().high_volatility


def test_too_little_history_is_refused_with_the_count():
    with pytest.raises(ValueError, match=r"needs 200 index closes, got 199"):
        classify_market([7000.0] * 199)


def test_windows_are_configurable_and_named_in_the_keys():
    params = ContextParams(short_window=10, long_window=30, return_window=5, volatility_window=5)
    assert min_history(params) == 30
    result = classify_market(geometric(100, 0.01, 30), params)
    assert {"sma_10", "sma_30", "return_5d", "volatility_5d"} <= set(result)
    assert result["context"] == "bull"


def _axjo_closes_until(day: str) -> list[float]:
    rows = (DATA / "AXJO.csv").read_text().splitlines()[1:]
    return [float(r.split(",")[4]) for r in rows if r.split(",")[4] != "null" and r[:10] <= day]


def test_real_index_covid_crash_reads_bear():
    if not (DATA / "AXJO.csv").exists():
        pytest.skip("shared ASX data (../shared/data/asx) not present")
    # 2020-03-23: the S&P/ASX 200 had fallen ~36% from its February high.
    result = classify_market(_axjo_closes_until("2020-03-23"))
    assert result["context"] == "bear"
    # The crash was a month old: the 50-day average had only just slipped under the 200-day
    # one (a weak vote), while price and the 20-day return vote fully bear.
    assert 0.6 < result["strength"] < 1.0
    assert -0.5 < result["votes"]["short_vs_long_ma"] < 0
    assert result["votes"]["recent_return"] == result["votes"]["price_vs_long_ma"] == -1.0
    assert math.isclose(result["close"], 4546.0, rel_tol=0.01)
