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


def rsi_last(closes: Sequence[float], period: int = 14) -> float | None:
    """`rsi(closes, period)[-1]`, the same float, without the series (the latest reading is what
    market-data and the features serve: a replayed day asks for it over 1300 bars per symbol).
    `max(x, 0.0)` is written out as what it computes, `0.0 if 0.0 > x else x`."""
    _check_period(period)
    if len(closes) <= period:
        return None
    first = [closes[i] - closes[i - 1] for i in range(1, period + 1)]
    avg_gain = math.fsum(max(c, 0.0) for c in first) / period
    avg_loss = math.fsum(max(-c, 0.0) for c in first) / period
    keep = period - 1
    previous = closes[period]
    # One pass, no list of changes: a replayed day runs this over 1300 bars per symbol.
    for close in closes[period + 1 :]:
        change = close - previous
        previous = close
        avg_gain = (avg_gain * keep + (0.0 if 0.0 > change else change)) / period
        avg_loss = (avg_loss * keep + (0.0 if 0.0 > -change else -change)) / period
    return _rsi_from_averages(avg_gain, avg_loss)


def macd_last(
    closes: Sequence[float], fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[float | None, float | None, float | None]:
    """The last (MACD line, signal, histogram) of `macd(closes, ...)`, the same floats, without
    the series and their None padding."""
    for name, value in (("fast", fast), ("slow", slow), ("signal", signal)):
        _check_period(value, name)
    if fast >= slow:
        raise ValueError(f"fast ({fast}) must be shorter than slow ({slow})")
    if len(closes) < slow:
        return None, None, None
    # The line exists from index slow - 1, where the fast EMA is at its (slow - fast)th value.
    # One pass over the closes for both EMAs, the line and its signal EMA (the same seeds and
    # recursions as _ema_from, so the same floats): a replayed day runs this over 1300 bars
    # per symbol, and the lists of three series were most of its cost.
    k_fast, k_slow, k_signal = 2.0 / (fast + 1), 2.0 / (slow + 1), 2.0 / (signal + 1)
    rest_fast, rest_slow, rest_signal = 1 - k_fast, 1 - k_slow, 1 - k_signal
    ema_fast = math.fsum(closes[:fast]) / fast
    for close in closes[fast:slow]:
        ema_fast = close * k_fast + ema_fast * rest_fast
    ema_slow = math.fsum(closes[:slow]) / slow
    line = ema_fast - ema_slow
    seed = [line]  # the signal EMA's first `signal` line values
    ema_signal = math.fsum(seed) / signal if signal == 1 else 0.0
    for close in closes[slow:]:
        ema_fast = close * k_fast + ema_fast * rest_fast
        ema_slow = close * k_slow + ema_slow * rest_slow
        line = ema_fast - ema_slow
        if len(seed) < signal:
            seed.append(line)
            if len(seed) == signal:
                ema_signal = math.fsum(seed) / signal
        else:
            ema_signal = line * k_signal + ema_signal * rest_signal
    if len(seed) < signal:
        return line, None, None
    return line, ema_signal, line - ema_signal


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


# --- the latest readings, as the market-data service reports them ------------------------------


@dataclass(frozen=True, slots=True)
class TechnicalParams:
    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bollinger_period: int = 20
    bollinger_std: float = 2.0
    sma_periods: tuple[int, ...] = (20, 50, 200)
    volume_period: int = 20
    volatility_period: int = 20


def _last(series: Series) -> float | None:
    return series[-1] if series else None


def _tail_sma(values: Sequence[float], period: int) -> float | None:
    # Only the latest value is wanted, and an SMA depends on its window alone.
    return math.fsum(values[-period:]) / period if len(values) >= period else None


def _needs(p: TechnicalParams) -> dict[str, int]:
    """Bars each reading needs before it exists."""
    return {
        "rsi": p.rsi_period + 1,
        "macd": p.macd_slow + p.macd_signal - 1,
        "bollinger": p.bollinger_period,
        **{f"sma_{n}": n for n in p.sma_periods},
        "volume_ratio": p.volume_period + 1,
        "volatility": p.volatility_period + 1,
    }


def technical_summary(closes: Sequence[float], volumes: Sequence[float], params: TechnicalParams) -> dict:
    """Latest RSI, MACD, Bollinger, SMAs, volume and volatility; None (and listed) where history is short.

    RSI and MACD are recursive, so they run over all of `closes`; window-only readings use the tail.
    """
    p = params
    tail = closes[-p.bollinger_period :]
    bands = bollinger(tail, p.bollinger_period, p.bollinger_std) if len(tail) == p.bollinger_period else None
    line, signal, histogram = macd_last(closes, p.macd_fast, p.macd_slow, p.macd_signal)
    vol_tail = closes[-(p.volatility_period + 1) :]
    return {
        "rsi": rsi_last(closes, p.rsi_period),
        "macd": {"macd": line, "signal": signal, "histogram": histogram},
        "bollinger": {
            "upper": _last(bands.upper) if bands else None,
            "middle": _last(bands.middle) if bands else None,
            "lower": _last(bands.lower) if bands else None,
            "percent_b": _last(bands.percent_b) if bands else None,
        },
        "sma": {str(n): _tail_sma(closes, n) for n in p.sma_periods},
        "volume": {
            "latest": volumes[-1] if volumes else None,
            "average": _tail_sma(volumes[-(p.volume_period + 1) : -1], p.volume_period),
            "ratio": _last(volume_ratio(volumes[-(p.volume_period + 1) :], p.volume_period)),
            "trend": volume_trend(volumes, long=p.volume_period),
        },
        "volatility": _last(rolling_volatility(vol_tail, p.volatility_period)),
        "bars_used": len(closes),
        "insufficient_history": {k: n for k, n in _needs(p).items() if len(closes) < n},
    }
