"""The one feature builder shared by model training and live serving, so the two cannot drift.

Pure Python on purpose (no numpy): the prediction service imports it to build the feature dict
it sends to ml-model, and must stay light. Training turns the same dicts into arrays.

Row t uses only bars dated up to and including day t: every column comes from trailing
indicators (services.domain.indicators) and the market index is joined "as of" day t (the
latest index bar dated on or before t). The tests check this by rebuilding from truncated
histories and by changing future bars.

The indicators are recursive (EMA, Wilder RSI), so a value depends slightly on where the
history starts. Serving builds from the last MIN_BARS bars while training used years; with
MIN_BARS = 250 the start-up effect is below 1e-6 of the value (tested), so both see the same
numbers.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from datetime import date

from services.domain import indicators
from services.domain.bars import Bar

FEATURE_VERSION = "f1-2026.11"
RETURN_HORIZONS_DAYS = (1, 5, 10, 20)

FEATURE_NAMES: tuple[str, ...] = (
    "return_1d",
    "return_5d",
    "return_10d",
    "return_20d",
    "rsi_14",
    "macd_hist_pct",  # MACD(12,26,9) histogram / price: comparable across price levels
    "bollinger_pct_b",  # (price - lower) / (upper - lower), 20 days, 2 std
    "volume_ratio_20",  # today's volume / mean of the previous 20 days
    "volatility_20d",  # annualised stdev of daily log returns
    "price_vs_sma50",  # price / SMA50 - 1
    "index_return_1d",
    "index_return_20d",
    "index_volatility_20d",
    "index_trend_50_200",  # index SMA50 / SMA200 - 1: the bull/bear measure of market context
    "relative_return_20d",  # return_20d - index_return_20d: strength against the market
    "sentiment_score",  # -1..1 for day t; 0 (neutral) when no score is known
)

# Longest look-back is the index SMA200; the rest (about a year of bars) lets the recursive
# indicators forget their seed (see the module docstring). Callers fetch this many bars of both
# the stock and the index.
MIN_BARS = 250
# The index is joined as of day t; an index bar older than this many calendar days is stale
# (longer than any ASX holiday break), and the row is left empty rather than using old data.
MAX_INDEX_STALENESS_DAYS = 6

# Plausible ranges, for validating a feature vector at the service boundary. They are wide on
# purpose: they catch a unit mistake (a price where a return belongs, RSI as a fraction), not
# an unusual day. %B with a 20-day population stdev cannot leave about [-0.59, 1.59].
FEATURE_RANGES: dict[str, tuple[float, float]] = {
    "return_1d": (-0.6, 1.5),
    "return_5d": (-0.9, 3.0),
    "return_10d": (-0.9, 3.0),
    "return_20d": (-0.95, 5.0),
    "rsi_14": (0.0, 100.0),
    "macd_hist_pct": (-0.5, 0.5),
    "bollinger_pct_b": (-1.0, 2.0),
    "volume_ratio_20": (0.0, 100.0),
    "volatility_20d": (0.0, 5.0),
    "price_vs_sma50": (-0.95, 5.0),
    "index_return_1d": (-0.5, 0.5),
    "index_return_20d": (-0.9, 2.0),
    "index_volatility_20d": (0.0, 5.0),
    "index_trend_50_200": (-0.9, 2.0),
    "relative_return_20d": (-5.0, 5.0),
    "sentiment_score": (-1.0, 1.0),
}

Column = list[float | None]
FeatureRow = tuple[date, dict[str, float] | None]


class FeatureValidationError(ValueError):
    """A feature vector does not match FEATURE_NAMES; `problems` names each bad feature."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def build_feature_rows(
    bars: Sequence[Bar],
    index_bars: Sequence[Bar],
    sentiment_by_date: Mapping[date, float] | None = None,
) -> list[FeatureRow]:
    """One (date, features) per bar, oldest first; features None where history is too short."""
    columns = _feature_columns(bars, index_bars, sentiment_by_date or {})
    rows: list[FeatureRow] = []
    for t, bar in enumerate(bars):
        values = {name: columns[name][t] for name in FEATURE_NAMES}
        complete = all(v is not None and math.isfinite(v) for v in values.values())
        rows.append((bar.date, values if complete else None))  # type: ignore[arg-type]
    return rows


def build_latest_features(
    bars: Sequence[Bar], index_bars: Sequence[Bar], sentiment_score: float = 0.0
) -> dict[str, float]:
    """Features for the last bar. Raises ValueError naming what is missing when it cannot."""
    if not bars:
        raise ValueError(f"no bars: need at least MIN_BARS={MIN_BARS} daily bars of the stock")
    last = bars[-1].date
    values = _latest_values(bars, index_bars, sentiment_score)
    missing = [name for name, v in values.items() if v is None or not math.isfinite(v)]
    if missing:
        raise ValueError(
            f"cannot build features for {last}: no value for {', '.join(missing)} "
            f"(have {len(bars)} stock bars and {len(index_bars)} index bars; need at least "
            f"MIN_BARS={MIN_BARS} of each, with an index bar within {MAX_INDEX_STALENESS_DAYS} days of {last})"
        )
    return values  # type: ignore[return-value]


def validate_features(features: Mapping[str, object]) -> list[float]:
    """Check names, count, finiteness and plausible ranges; return values in FEATURE_NAMES order.

    A JSON object's key order carries no meaning, so a dict is reordered by name here; that is
    exactly why training and serving cannot disagree on order. Raises FeatureValidationError
    listing every problem (missing, unexpected, non-numeric, non-finite, out of range).
    """
    if not isinstance(features, Mapping):
        raise FeatureValidationError([f"features must be an object of {len(FEATURE_NAMES)} named numbers"])
    problems = []
    missing = [name for name in FEATURE_NAMES if name not in features]
    unexpected = [name for name in features if name not in FEATURE_RANGES]
    if missing:
        problems.append(f"missing features: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected features: {', '.join(map(str, unexpected))}")
    values = []
    for name in FEATURE_NAMES:
        if name in features:
            problem = _value_problem(name, features[name])
            if problem:
                problems.append(problem)
            else:
                values.append(float(features[name]))  # type: ignore[arg-type]
    if problems:
        raise FeatureValidationError(problems)
    return values


def _value_problem(name: str, value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{name} must be a number, got {type(value).__name__}"
    if not math.isfinite(value):
        return f"{name} must be finite, got {value}"
    low, high = FEATURE_RANGES[name]
    if not low <= value <= high:
        return f"{name}={value:g} is outside the plausible range [{low:g}, {high:g}]"
    return None


def _feature_columns(
    bars: Sequence[Bar], index_bars: Sequence[Bar], sentiment_by_date: Mapping[date, float]
) -> dict[str, Column]:
    _check_ordered(bars, "bars")
    _check_ordered(index_bars, "index_bars")
    columns = _stock_columns(bars)
    columns.update(_align_index(bars, index_bars, _index_columns(index_bars)))
    columns["relative_return_20d"] = _binary(
        columns["return_20d"], columns["index_return_20d"], lambda a, b: a - b
    )
    columns["sentiment_score"] = [float(sentiment_by_date.get(bar.date, 0.0)) for bar in bars]
    return columns


def _latest_values(
    bars: Sequence[Bar], index_bars: Sequence[Bar], sentiment_score: float
) -> dict[str, float | None]:
    """The last row of _feature_columns, without computing the rows before it.

    Every windowed indicator sums each window afresh (no running sums), so its last value from a
    trailing slice of exactly its window is the same number, bit for bit; the recursive ones
    (RSI, MACD) still run over the whole history. tests/unit/test_features.py checks the two
    agree on real and edge-case histories. Serving calls this for every prediction; training
    keeps the columns."""
    _check_ordered(bars, "bars")
    _check_ordered(index_bars, "index_bars")
    prices = [bar.adj_close for bar in bars]
    volumes = [float(bar.volume) for bar in bars[-21:]]
    values: dict[str, float | None] = {
        f"return_{h}d": indicators.pct_change(prices[-(h + 1) :], h)[-1] for h in RETURN_HORIZONS_DAYS
    }
    values["rsi_14"] = indicators.rsi_last(prices, 14)
    histogram = [indicators.macd_last(prices, 12, 26, 9)[2]]
    values["macd_hist_pct"] = _binary(histogram, prices[-1:], lambda h, p: h / p)[0]
    values["bollinger_pct_b"] = indicators.bollinger(prices[-20:], 20, 2.0).percent_b[-1]
    values["volume_ratio_20"] = indicators.volume_ratio(volumes, 20)[-1]
    values["volatility_20d"] = indicators.rolling_volatility(prices[-21:], 20, annualise=True)[-1]
    sma50 = indicators.sma(prices[-50:], 50)[-1:]
    values["price_vs_sma50"] = _binary(prices[-1:], sma50, lambda p, s: p / s - 1.0)[0]
    index_names = ("index_return_1d", "index_return_20d", "index_volatility_20d", "index_trend_50_200")
    values.update(dict.fromkeys(index_names))
    index_dates = [bar.date for bar in index_bars]
    j = bisect_right(index_dates, bars[-1].date) - 1
    if j >= 0 and (bars[-1].date - index_dates[j]).days <= MAX_INDEX_STALENESS_DAYS:
        levels = [bar.adj_close for bar in index_bars[: j + 1]]
        values["index_return_1d"] = indicators.pct_change(levels[-2:], 1)[-1]
        values["index_return_20d"] = indicators.pct_change(levels[-21:], 20)[-1]
        values["index_volatility_20d"] = indicators.rolling_volatility(levels[-21:], 20, annualise=True)[-1]
        values["index_trend_50_200"] = _binary(
            indicators.sma(levels[-50:], 50)[-1:],
            indicators.sma(levels[-200:], 200)[-1:],
            lambda a, b: a / b - 1.0,
        )[0]
    values["relative_return_20d"] = _binary(
        [values["return_20d"]], [values["index_return_20d"]], lambda a, b: a - b
    )[0]
    values["sentiment_score"] = float(sentiment_score)
    return {name: values[name] for name in FEATURE_NAMES}


def _stock_columns(bars: Sequence[Bar]) -> dict[str, Column]:
    # Returns-based features use adj_close, so an ex-dividend drop is not read as a loss.
    prices = [bar.adj_close for bar in bars]
    columns: dict[str, Column] = {
        f"return_{h}d": indicators.pct_change(prices, h) for h in RETURN_HORIZONS_DAYS
    }
    columns["rsi_14"] = indicators.rsi(prices, 14)
    histogram = indicators.macd(prices, 12, 26, 9).histogram
    columns["macd_hist_pct"] = _binary(histogram, prices, lambda h, p: h / p)
    columns["bollinger_pct_b"] = indicators.bollinger(prices, 20, 2.0).percent_b
    columns["volume_ratio_20"] = indicators.volume_ratio([float(bar.volume) for bar in bars], 20)
    columns["volatility_20d"] = indicators.rolling_volatility(prices, 20, annualise=True)
    columns["price_vs_sma50"] = _binary(prices, indicators.sma(prices, 50), lambda p, s: p / s - 1.0)
    return columns


def _index_columns(index_bars: Sequence[Bar]) -> dict[str, Column]:
    levels = [bar.adj_close for bar in index_bars]
    return {
        "index_return_1d": indicators.pct_change(levels, 1),
        "index_return_20d": indicators.pct_change(levels, 20),
        "index_volatility_20d": indicators.rolling_volatility(levels, 20, annualise=True),
        "index_trend_50_200": _binary(
            indicators.sma(levels, 50), indicators.sma(levels, 200), lambda a, b: a / b - 1.0
        ),
    }


def _align_index(
    bars: Sequence[Bar], index_bars: Sequence[Bar], index_columns: dict[str, Column]
) -> dict[str, Column]:
    """For each stock date, the index values of the latest index bar dated on or before it."""
    index_dates = [bar.date for bar in index_bars]
    positions: list[int | None] = []
    for bar in bars:
        j = bisect_right(index_dates, bar.date) - 1
        fresh = j >= 0 and (bar.date - index_dates[j]).days <= MAX_INDEX_STALENESS_DAYS
        positions.append(j if fresh else None)
    return {
        name: [column[j] if j is not None else None for j in positions]
        for name, column in index_columns.items()
    }


def _binary(
    left: Sequence[float | None], right: Sequence[float | None], op: Callable[[float, float], float]
) -> Column:
    """Element-wise op; None where either side is None or the op is undefined (a zero divisor)."""
    out: Column = []
    for a, b in zip(left, right, strict=True):
        try:
            out.append(op(a, b) if a is not None and b is not None else None)
        except ZeroDivisionError:
            out.append(None)
    return out


def _check_ordered(bars: Sequence[Bar], what: str) -> None:
    for k in range(1, len(bars)):
        if not bars[k - 1].date < bars[k].date:
            raise ValueError(
                f"{what} must be strictly increasing by date: {bars[k].date} follows {bars[k - 1].date}"
            )
