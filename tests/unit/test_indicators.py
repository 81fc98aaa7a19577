"""Indicators against published worked examples and hand-checked tables."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain import indicators as ind

# Wilder's RSI example as published by StockCharts (cs-rsi spreadsheet), four-decimal closes.
WILDER_CLOSES = [
    44.3389, 44.0902, 44.1497, 43.6124, 44.3278, 44.8264, 45.0955, 45.4245, 45.8433, 46.0826,
    45.8931, 46.0328, 45.6140, 46.2820, 46.2820, 46.0028, 46.0328, 46.4116, 46.2222, 45.6439,
    46.2122, 46.2521, 45.7137, 46.4515, 45.7835, 45.3548, 44.0288, 44.1783, 44.2181, 44.5672,
    43.4205, 42.6628, 43.1314,
]  # fmt: skip
# StockCharts' RSI column, from the 15th close on.
WILDER_RSI = [
    70.53, 66.32, 66.55, 69.41, 66.36, 57.97, 62.93, 63.26, 56.06, 62.38,
    54.71, 50.42, 39.99, 41.46, 41.87, 45.46, 37.30, 33.08, 37.77,
]  # fmt: skip

# StockCharts "Moving Averages - Simple and Exponential": 10-day EMA table.
EMA_CLOSES = [
    22.27, 22.19, 22.08, 22.17, 22.18, 22.13, 22.23, 22.43, 22.24, 22.29, 22.15, 22.39, 22.38, 22.61, 23.36,
    24.05, 23.75, 23.83, 23.95, 23.63, 23.82, 23.87, 23.65, 23.19, 23.10, 23.33, 22.68, 23.10, 22.40, 22.17,
]  # fmt: skip
EMA10 = [
    22.22, 22.21, 22.24, 22.27, 22.33, 22.52, 22.80, 22.97, 23.13, 23.28, 23.34,
    23.43, 23.51, 23.53, 23.47, 23.40, 23.39, 23.26, 23.23, 23.08, 22.92,
]  # fmt: skip
SMA10 = [
    22.22, 22.21, 22.23, 22.26, 22.30, 22.42, 22.61, 22.77, 22.91, 23.08, 23.21,
    23.38, 23.52, 23.65, 23.71, 23.68, 23.61, 23.51, 23.43, 23.28, 23.13,
]  # fmt: skip

# StockCharts Bollinger Bands (20, 2) example; its table rounds to cents.
BB_CLOSES = [
    86.16, 89.09, 88.78, 90.32, 89.07, 91.15, 89.44, 89.18, 86.93, 87.68, 86.96, 89.43, 89.32, 88.72,
    87.45, 87.26, 89.50, 87.90, 89.13, 90.70, 92.90, 92.98, 91.80, 92.66, 92.68, 92.30, 92.77, 92.54,
    92.95, 93.20, 91.07, 89.83, 89.74, 90.40, 90.74, 88.02, 88.09, 88.84, 90.78, 90.54, 91.39, 90.65,
]  # fmt: skip
BB_MIDDLE = [
    88.71, 89.05, 89.24, 89.39, 89.51, 89.69, 89.75, 89.91, 90.08, 90.38, 90.66, 90.86,
    90.88, 90.90, 90.99, 91.15, 91.19, 91.12, 91.17, 91.25, 91.24, 91.17, 91.05,
]  # fmt: skip
BB_UPPER = [
    91.29, 91.95, 92.61, 92.93, 93.31, 93.73, 93.90, 94.26, 94.56, 94.79, 95.04, 94.91,
    94.90, 94.89, 94.86, 94.67, 94.55, 94.68, 94.57, 94.53, 94.53, 94.37, 94.15,
]  # fmt: skip
BB_LOWER = [
    86.13, 86.14, 85.87, 85.85, 85.70, 85.65, 85.59, 85.56, 85.60, 85.98, 86.27, 86.82,
    86.86, 86.91, 87.12, 87.63, 87.83, 87.56, 87.76, 87.97, 87.95, 87.96, 87.95,
]  # fmt: skip

# The widely reproduced MACD(12, 26, 9) spreadsheet example (investexcel.net, AAPL closes),
# computed with SMA-seeded EMAs exactly as StockCharts describes; values to full precision.
MACD_CLOSES = [
    459.99, 448.85, 446.06, 450.81, 442.80, 448.97, 444.57, 441.40, 430.47, 420.05, 431.14, 425.66,
    430.58, 431.72, 437.87, 428.43, 428.35, 432.50, 443.66, 455.72, 454.49, 452.08, 452.73, 461.91,
    463.58, 461.14, 452.08, 442.66, 428.91, 429.79, 431.99, 427.72, 423.20, 426.21, 426.98, 435.69,
    434.33, 429.80, 419.85, 426.24,
]  # fmt: skip


def rounded(series, start, places=2):
    return [round(v, places) for v in series[start:]]


def test_rsi_matches_stockcharts_table():
    values = ind.rsi(WILDER_CLOSES, 14)
    assert values[:14] == [None] * 14  # 14 changes are needed before the first value
    assert rounded(values, 14) == WILDER_RSI
    # Full precision of the first value: avg gain 0.2386, avg loss 0.0996 over the seed window.
    assert values[14] == pytest.approx(70.53278948, abs=1e-8)


def test_ema_and_sma_match_stockcharts_tables():
    assert ind.ema(EMA_CLOSES, 10)[:9] == [None] * 9
    assert rounded(ind.ema(EMA_CLOSES, 10), 9) == EMA10
    # The table rounds half up; 22.905 (row 9) is one float below that in binary, hence the tolerance.
    assert ind.sma(EMA_CLOSES, 10)[9:] == pytest.approx(SMA10, abs=0.0051)


def test_bollinger_matches_stockcharts_table():
    bands = ind.bollinger(BB_CLOSES, 20, 2.0)
    assert bands.middle[18] is None and bands.percent_b[18] is None
    assert rounded(bands.middle, 19) == BB_MIDDLE
    assert rounded(bands.upper, 19) == BB_UPPER
    assert rounded(bands.lower, 19) == BB_LOWER
    # %B of the first window by hand: (90.70 - 86.1251) / (91.2919 - 86.1251).
    assert bands.percent_b[19] == pytest.approx(0.8854, abs=1e-4)
    # 92.90 closes above the upper band (91.95): %B above 1 is kept, not clipped.
    assert bands.percent_b[20] == pytest.approx(1.1636, abs=1e-4)


def test_bollinger_uses_population_std():
    # Window [1, 2, 3]: population std sqrt(2/3); a sample std would be 1.0.
    bands = ind.bollinger([1.0, 2.0, 3.0], 3, 1.0)
    assert bands.upper[2] == pytest.approx(2 + math.sqrt(2 / 3))


def test_macd_matches_published_example():
    result = ind.macd(MACD_CLOSES, 12, 26, 9)
    assert result.macd[24] is None and result.macd[25] == pytest.approx(8.275269503907623, abs=1e-9)
    assert result.macd[31] == pytest.approx(0.10298149119910249, abs=1e-9)
    # The signal needs 9 MACD values: first at index 25 + 8 = 33.
    assert result.signal[32] is None
    assert result.signal[33] == pytest.approx(3.037525868733945, abs=1e-9)
    assert result.signal[39] == pytest.approx(-1.338100412582993, abs=1e-9)
    assert result.macd[34] == pytest.approx(-2.62184232825689, abs=1e-9)
    assert result.histogram[34] == pytest.approx(-4.52749455759, abs=1e-9)
    assert ind.ema(MACD_CLOSES, 12)[11] == pytest.approx(440.8975)


def test_macd_hand_checked_small_periods():
    # fast 2 / slow 3 / signal 2 on 1,2,4,8,16 by hand:
    # EMA2: seed 1.5 at i=1, k=2/3 -> 3.1667, 6.3889, 12.7963; EMA3: seed 7/3 at i=2, k=1/2 -> 5.1667, 10.5833
    # MACD: i=2 0.8333, i=3 1.2222, i=4 2.2130; signal seed (0.8333+1.2222)/2=1.0278, then 1.8179
    result = ind.macd([1, 2, 4, 8, 16], 2, 3, 2)
    assert result.macd[:2] == [None, None]
    assert [round(v, 4) for v in result.macd[2:]] == [0.8333, 1.2222, 2.2130]
    assert result.signal[:3] == [None, None, None]
    assert [round(v, 4) for v in result.signal[3:]] == [1.0278, 1.8179]
    assert round(result.histogram[4], 4) == 0.3951


@pytest.mark.parametrize(
    ("closes", "expected_last"),
    [
        ([float(i) for i in range(1, 20)], 100.0),  # only gains
        ([float(i) for i in range(20, 1, -1)], 0.0),  # only losses
        ([5.0] * 20, 50.0),  # flat: neither overbought nor oversold
    ],
)
def test_rsi_edge_cases(closes, expected_last):
    assert ind.rsi(closes, 14)[-1] == expected_last


@pytest.mark.parametrize(
    ("func", "args", "length"),
    [
        (ind.sma, ([1.0, 2.0], 3), 2),
        (ind.ema, ([1.0, 2.0], 3), 2),
        (ind.rsi, ([1.0] * 14, 14), 14),  # 14 closes give only 13 changes
        (ind.rolling_volatility, ([1.0] * 20, 20), 20),  # 20 closes give 19 returns
        (ind.volume_ratio, ([1.0] * 20, 20), 20),  # today plus 20 previous days needed
    ],
)
def test_too_little_history_gives_none_not_numbers(func, args, length):
    assert func(*args) == [None] * length


def test_bollinger_flat_window_has_no_percent_b():
    bands = ind.bollinger([10.0] * 20, 20)
    assert bands.upper[-1] == bands.lower[-1] == 10.0
    assert bands.percent_b[-1] is None


def test_returns_and_pct_change_tables():
    assert ind.log_returns([100.0, 110.0, 99.0]) == [
        None,
        pytest.approx(math.log(1.1)),
        pytest.approx(math.log(0.9)),
    ]
    assert ind.pct_change([100.0, 110.0, 121.0], 2) == [None, None, pytest.approx(0.21)]
    assert ind.pct_change([0.0, 5.0], 1) == [None, None]  # no base, no ratio


def test_rolling_volatility_hand_checked():
    # Returns alternate +r, -r: sample std of [r, -r, r] = r * sqrt(4/3) with mean r/3.
    r = math.log(1.01)
    closes = [100.0, 101.0, 100.0, 101.0]
    daily = ind.rolling_volatility(closes, 3, annualise=False)[-1]
    mean = r / 3
    expected = math.sqrt(((r - mean) ** 2 * 2 + (-r - mean) ** 2) / 2)
    assert daily == pytest.approx(expected)
    assert ind.rolling_volatility(closes, 3)[-1] == pytest.approx(expected * math.sqrt(252))


def test_volume_ratio_and_trend():
    volumes = [100.0] * 20 + [250.0]
    assert ind.volume_ratio(volumes, 20)[-1] == pytest.approx(2.5)  # today is not in its own average
    assert ind.volume_ratio([0.0] * 20 + [5.0], 20)[-1] is None  # index volume often unreported
    assert ind.volume_trend([100.0] * 15 + [200.0] * 5) == "rising"
    assert ind.volume_trend([200.0] * 15 + [100.0] * 5) == "falling"
    assert ind.volume_trend([100.0] * 20) == "flat"
    assert ind.volume_trend([100.0] * 19) is None


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_periods_are_refused(bad):
    with pytest.raises(ValueError):
        ind.sma([1.0, 2.0], bad)


def test_macd_refuses_fast_not_below_slow():
    with pytest.raises(ValueError, match="fast"):
        ind.macd([1.0] * 40, 26, 12)


prices = st.lists(st.floats(min_value=1.0, max_value=1000.0, allow_nan=False), min_size=0, max_size=80)


@given(prices)
def test_invariants(closes):
    for series in (
        ind.sma(closes, 5),
        ind.ema(closes, 5),
        ind.rsi(closes, 5),
        ind.macd(closes, 3, 6, 4).histogram,
    ):
        assert len(series) == len(closes)
    for value in ind.rsi(closes, 5):
        assert value is None or 0.0 <= value <= 100.0
    bands = ind.bollinger(closes, 5)
    for up, mid, low in zip(bands.upper, bands.middle, bands.lower, strict=True):
        assert (up is None) == (mid is None) == (low is None)
        assert up is None or low - 1e-9 <= mid <= up + 1e-9
    # Adding data never changes earlier values: indicators do not look ahead.
    if len(closes) > 10:
        assert ind.rsi(closes[:-1], 5) == ind.rsi(closes, 5)[:-1]
        assert ind.ema(closes[:-1], 5) == ind.ema(closes, 5)[:-1]


def test_technical_summary_reports_latest_readings_and_what_is_short():
    closes = MACD_CLOSES
    volumes = [1000.0] * 39 + [2000.0]
    summary = ind.technical_summary(closes, volumes, ind.TechnicalParams())
    assert summary["rsi"] == ind.rsi(closes, 14)[-1]
    assert summary["macd"]["signal"] == pytest.approx(-1.338100412582993, abs=1e-9)
    assert summary["bollinger"]["middle"] == pytest.approx(sum(closes[-20:]) / 20)
    assert summary["bollinger"]["percent_b"] == ind.bollinger(closes, 20).percent_b[-1]
    assert summary["sma"] == {"20": pytest.approx(sum(closes[-20:]) / 20), "50": None, "200": None}
    assert summary["volume"]["ratio"] == pytest.approx(2.0) and summary["volume"]["trend"] == "rising"
    assert summary["volatility"] == ind.rolling_volatility(closes, 20)[-1]
    # 40 bars: MACD is complete (34 needed) but the 50- and 200-day averages are not.
    assert summary["insufficient_history"] == {"sma_50": 50, "sma_200": 200}


def test_technical_summary_on_no_history_invents_nothing():
    summary = ind.technical_summary([], [], ind.TechnicalParams())
    assert summary["rsi"] is None and summary["volatility"] is None
    assert set(summary["macd"].values()) == set(summary["bollinger"].values()) == {None}
    assert summary["insufficient_history"]["rsi"] == 15


# ---- the latest reading without the series (what market-data and the features serve) ----------


def _walks() -> list[list[float]]:
    """Seeded random walks of many lengths, flat and monotone runs, and -0.0 changes."""
    import random

    rng = random.Random(21)
    walks: list[list[float]] = [
        [],
        [1.0],
        [5.0] * 40,
        [float(i) for i in range(60)],
        [60.0 - i for i in range(60)],
    ]
    for length in (2, 13, 14, 15, 16, 25, 26, 27, 33, 34, 35, 100, 1300):
        price, walk = 100.0, []
        for _ in range(length):
            price *= math.exp(rng.gauss(0, 0.015))
            walk.append(round(price, rng.choice((2, 3, 6))))
        walks.append(walk)
    return walks


@pytest.mark.parametrize("period", [1, 2, 14])
def test_rsi_last_is_the_series_last_value_bit_for_bit(period):
    for walk in _walks():
        series = ind.rsi(walk, period)
        expected = series[-1] if series else None
        assert ind.rsi_last(walk, period) == expected


@pytest.mark.parametrize(("fast", "slow", "signal"), [(12, 26, 9), (1, 2, 1), (3, 10, 5)])
def test_macd_last_is_the_series_last_values_bit_for_bit(fast, slow, signal):
    for walk in _walks():
        lines = ind.macd(walk, fast, slow, signal)
        expected = tuple(s[-1] if s else None for s in (lines.macd, lines.signal, lines.histogram))
        assert ind.macd_last(walk, fast, slow, signal) == expected


def test_macd_last_refuses_what_macd_refuses():
    with pytest.raises(ValueError):
        ind.macd_last([1.0] * 40, 26, 12, 9)
    with pytest.raises(ValueError):
        ind.macd_last([1.0] * 40, 12, 26, 0)


@given(st.lists(st.floats(min_value=0.01, max_value=1e6, allow_nan=False), max_size=80))
def test_the_latest_readings_match_the_series_on_any_prices(prices):
    series = ind.rsi(prices, 14)
    assert ind.rsi_last(prices, 14) == (series[-1] if series else None)
    lines = ind.macd(prices, 12, 26, 9)
    assert ind.macd_last(prices, 12, 26, 9) == tuple(
        s[-1] if s else None for s in (lines.macd, lines.signal, lines.histogram)
    )
