"""Technical indicators, pure Python (no numpy: the prediction path stays light).

Every series function takes values oldest first and returns a list aligned with its input,
with None wherever there is not enough history: a missing number is never invented.
Conventions follow StockCharts / TA-Lib:
- EMA is seeded by the SMA of its first `period` values, then k = 2 / (period + 1).
- RSI uses Wilder smoothing seeded by the simple average of the first `period` changes.
- MACD's signal is an EMA of the MACD line, seeded once `signal` MACD values exist.
- Bollinger Bands use the population standard deviation of the window.
- Volatility uses the sample standard deviation of daily log returns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

TRADING_DAYS_PER_YEAR = 252

Series = list[float | None]


@dataclass(frozen=True, slots=True)
class MacdSeries:
    macd: Series
    signal: Series
    histogram: Series


@dataclass(frozen=True, slots=True)
class BollingerSeries:
    upper: Series
    middle: Series
    lower: Series
    percent_b: Series


def _check_period(period: int, name: str = "period") -> None:
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"{name} must be a positive integer, got {period!r}")


def sma(values: Sequence[float], period: int) -> Series:
    """Simple moving average; a running sum would drift, so each window is summed afresh."""
    _check_period(period)
    out: Series = [None] * len(values)
    for i in range(period - 1, len(values)):
        out[i] = math.fsum(values[i - period + 1 : i + 1]) / period
    return out


def _ema_from(values: Sequence[float | None], period: int) -> Series:
    """EMA over a series whose leading entries may be None (as MACD's line is)."""
    out: Series = [None] * len(values)
    start = next((i for i, v in enumerate(values) if v is not None), len(values))
    seed_end = start + period - 1
    if seed_end >= len(values):
        return out
    k = 2.0 / (period + 1)
    prev = math.fsum(values[start : seed_end + 1]) / period  # type: ignore[arg-type]
    out[seed_end] = prev
    for i in range(seed_end + 1, len(values)):
        prev = values[i] * k + prev * (1 - k)  # type: ignore[operator]
        out[i] = prev
    return out


def ema(values: Sequence[float], period: int) -> Series:
    """Exponential moving average seeded by the SMA of the first `period` values."""
    _check_period(period)
    return _ema_from(values, period)


def _rsi_from_averages(avg_gain: float, avg_loss: float) -> float:
    if avg_loss == 0:
        # No losses: 100 when there were gains; a perfectly flat window is neutral (50).
        return 100.0 if avg_gain > 0 else 50.0
    return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)


def rsi(closes: Sequence[float], period: int = 14) -> Series:
    """Wilder's RSI: first value at index `period` (it needs `period` changes)."""
    _check_period(period)
    out: Series = [None] * len(closes)
    if len(closes) <= period:
        return out
    changes = [closes[i] - closes[i - 1] for i in range(1, len(closes))]
    avg_gain = math.fsum(max(c, 0.0) for c in changes[:period]) / period
    avg_loss = math.fsum(max(-c, 0.0) for c in changes[:period]) / period
    out[period] = _rsi_from_averages(avg_gain, avg_loss)
    for i in range(period + 1, len(closes)):
        change = changes[i - 1]
        avg_gain = (avg_gain * (period - 1) + max(change, 0.0)) / period
        avg_loss = (avg_loss * (period - 1) + max(-change, 0.0)) / period
        out[i] = _rsi_from_averages(avg_gain, avg_loss)
    return out


def macd(closes: Sequence[float], fast: int = 12, slow: int = 26, signal: int = 9) -> MacdSeries:
    """MACD line = EMA(fast) - EMA(slow); signal = EMA(signal) of the line; histogram = line - signal."""
    for name, value in (("fast", fast), ("slow", slow), ("signal", signal)):
        _check_period(value, name)
    if fast >= slow:
        raise ValueError(f"fast ({fast}) must be shorter than slow ({slow})")
    fast_ema, slow_ema = ema(closes, fast), ema(closes, slow)
    line: Series = [
        f - s if f is not None and s is not None else None for f, s in zip(fast_ema, slow_ema, strict=True)
    ]
    signal_line = _ema_from(line, signal)
    histogram: Series = [
        m - s if m is not None and s is not None else None for m, s in zip(line, signal_line, strict=True)
    ]
    return MacdSeries(line, signal_line, histogram)


def _population_std(window: Sequence[float]) -> float:
    mean = math.fsum(window) / len(window)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in window) / len(window))


def bollinger(closes: Sequence[float], period: int = 20, num_std: float = 2.0) -> BollingerSeries:
    """Bands at SMA ± num_std population standard deviations; %B = (close - lower) / (upper - lower)."""
    _check_period(period)
    if num_std <= 0:
        raise ValueError(f"num_std must be positive, got {num_std!r}")
    n = len(closes)
    upper: Series = [None] * n
    lower: Series = [None] * n
    percent_b: Series = [None] * n
    middle = sma(closes, period)
    for i in range(period - 1, n):
        width = num_std * _population_std(closes[i - period + 1 : i + 1])
        upper[i] = middle[i] + width  # type: ignore[operator]
        lower[i] = middle[i] - width  # type: ignore[operator]
        # A flat window has zero width: %B is undefined there, not 0.5 or infinity.
        if width > 0:
            percent_b[i] = (closes[i] - lower[i]) / (2 * width)  # type: ignore[operator]
    return BollingerSeries(upper, middle, lower, percent_b)


def log_returns(closes: Sequence[float]) -> Series:
    """ln(close_t / close_{t-1}); None for the first value and for non-positive prices."""
    out: Series = [None] * len(closes)
    for i in range(1, len(closes)):
        if closes[i] > 0 and closes[i - 1] > 0:
            out[i] = math.log(closes[i] / closes[i - 1])
    return out


def pct_change(values: Sequence[float], horizon: int = 1) -> Series:
    """values_t / values_{t-horizon} - 1; None where the base is missing or zero."""
    _check_period(horizon, "horizon")
    out: Series = [None] * len(values)
    for i in range(horizon, len(values)):
        base = values[i - horizon]
        if base:
            out[i] = values[i] / base - 1.0
    return out


def _sample_std(window: Sequence[float]) -> float:
    mean = math.fsum(window) / len(window)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in window) / (len(window) - 1))


def rolling_volatility(closes: Sequence[float], period: int = 20, annualise: bool = True) -> Series:
    """Sample stdev of the last `period` daily log returns (x sqrt(252) when annualised)."""
    _check_period(period)
    if period < 2:
        raise ValueError("period must be at least 2 for a sample standard deviation")
    returns = log_returns(closes)
    scale = math.sqrt(TRADING_DAYS_PER_YEAR) if annualise else 1.0
    out: Series = [None] * len(closes)
    for i in range(period, len(closes)):
        window = returns[i - period + 1 : i + 1]
        if all(r is not None for r in window):
            out[i] = _sample_std(window) * scale  # type: ignore[arg-type]
    return out


def volume_ratio(volumes: Sequence[float], period: int = 20) -> Series:
    """Today's volume / the mean of the previous `period` days (None when that mean is 0)."""
    _check_period(period)
    out: Series = [None] * len(volumes)
    for i in range(period, len(volumes)):
        mean = math.fsum(volumes[i - period : i]) / period
        if mean > 0:
            out[i] = volumes[i] / mean
    return out


def volume_trend(volumes: Sequence[float], short: int = 5, long: int = 20, band: float = 0.1) -> str | None:
    """ "rising"/"falling"/"flat": the latest `short`-day mean volume against the `long`-day mean.

    Within ±band (10%) of each other counts as flat; None without `long` days or any volume.
    """
    _check_period(short, "short")
    _check_period(long, "long")
    if len(volumes) < long:
        return None
    long_mean = math.fsum(volumes[-long:]) / long
    if long_mean <= 0:
        return None
    ratio = (math.fsum(volumes[-short:]) / short) / long_mean
    if ratio > 1 + band:
        return "rising"
    if ratio < 1 - band:
        return "falling"
    return "flat"
