"""A parameter sweep's spec, grid, walk-forward windows, cache key, results table and the
Deflated Sharpe Ratio: pure functions, no I/O (services/management/sweep.py runs the sweep).

The spec is a TOML document (parsed by the caller with tomllib)::

    data_dir = "data/market"        # optional; relative to the spec file
    train_years = 2                 # models for a fixed period: years before its first day

    [[periods]]                     # fixed ranges ...
    from = 2019-06-03
    to = 2019-06-14

    [walk_forward]                  # ... and/or rolling windows: train N years, test M months,
    from = 2015-01-01               # moved on K months at a time while the test fits before `to`
    to = 2019-12-31
    train_years = 3
    test_months = 6
    step_months = 6

    [fixed]                         # the same in every run
    TRADING_PREDICTION_SIGNAL_BEAR_BUY_EXTRA = 0

    [grid]                          # every combination ...
    TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD = [0.01, 0.05]
    TRADING_PAPER_TRADING_STOP_LOSS_PCT = [1.5, 3.0]

    # ... or a list of settings instead of [grid]:
    # [[settings]]
    # TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD = 0.01

Every knob is checked by the caller's `check` (the knob reader of the service that owns it), so
an unknown knob or a value outside its bounds is refused before anything runs, naming the entry.
"""

from __future__ import annotations

import calendar
import hashlib
import itertools
import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

EULER_GAMMA = 0.5772156649015329
TOP_LEVEL = frozenset(
    {"data_dir", "models_dir", "train_years", "periods", "walk_forward", "fixed", "grid", "settings"}
)
WALK_FORWARD_KEYS = frozenset({"from", "to", "train_years", "test_months", "step_months"})
DEFAULT_TRAIN_YEARS = 5.0

Setting = dict[str, str]  # knob variable -> its text, as the environment carries it


class SpecError(ValueError):
    """The spec cannot run: the message names the entry to fix."""


@dataclass(frozen=True, slots=True)
class Period:
    """One replayed range; `train_years` of data before `first` train its models."""

    first: date
    last: date
    train_years: float
    kind: str = "fixed"  # or "walk-forward" (its models are trained for the window)

    @property
    def label(self) -> str:
        return f"{self.first.isoformat()}..{self.last.isoformat()}"


@dataclass(frozen=True)
class SweepSpec:
    periods: tuple[Period, ...]
    settings: tuple[Setting, ...]
    swept: tuple[str, ...]  # the knobs that vary between settings, in the spec's order
    data_dir: str | None = None
    models_dir: str | None = None
    fixed: Setting = field(default_factory=dict)


# ---- the spec ------------------------------------------------------------------------------------


def value_text(name: str, value: Any) -> str:
    """A TOML value as the environment spells it (true/false, numbers as written)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return value
    raise SpecError(f"{name}: {value!r} is not a number, boolean or string")


def parse_spec(doc: Mapping[str, Any], known: Iterable[str], check: Callable[[Setting], None]) -> SweepSpec:
    """The spec's periods and settings; SpecError naming the entry when something is wrong.

    `known`: the knob variables a sweep may set. `check(setting)` raises ValueError naming the
    variable when a value (or a combination, e.g. every weight zero) is refused by the knob reader.
    """
    unknown_keys = sorted(set(doc) - TOP_LEVEL)
    if unknown_keys:
        raise SpecError(f"{unknown_keys[0]}: not a spec entry (known: {', '.join(sorted(TOP_LEVEL))})")
    train_years = _positive(doc.get("train_years", DEFAULT_TRAIN_YEARS), "train_years")
    periods = [*_fixed_periods(doc.get("periods", []), train_years)]
    if "walk_forward" in doc:
        periods += walk_forward_from(doc["walk_forward"])
    if not periods:
        raise SpecError("periods: no period (give [[periods]] from/to, or [walk_forward])")
    known_set = frozenset(known)
    fixed = _setting(doc.get("fixed", {}), "fixed", known_set)
    settings, swept = _settings(doc, known_set)
    combined = tuple({**fixed, **s} for s in settings)
    for number, setting in enumerate(combined, start=1):
        try:
            check(setting)
        except ValueError as exc:
            raise SpecError(f"setting {number} ({describe_setting(setting, swept)}): {exc}") from None
    return SweepSpec(
        periods=tuple(periods),
        settings=combined,
        swept=swept,
        data_dir=_optional_text(doc, "data_dir"),
        models_dir=_optional_text(doc, "models_dir"),
        fixed=fixed,
    )


def _settings(doc: Mapping[str, Any], known: frozenset[str]) -> tuple[list[Setting], tuple[str, ...]]:
    if ("grid" in doc) == ("settings" in doc):
        raise SpecError("grid: give exactly one of [grid] or [[settings]]")
    if "grid" in doc:
        grid = doc["grid"]
        if not isinstance(grid, Mapping) or not grid:
            raise SpecError("grid: empty (name at least one knob with a list of values)")
        lists: dict[str, list[str]] = {}
        for name, values in grid.items():
            _check_known(name, "grid", known)
            if not isinstance(values, list) or not values:
                raise SpecError(f"grid.{name}: empty or not a list of values")
            lists[name] = [value_text(f"grid.{name}", v) for v in values]
        swept = tuple(name for name, values in lists.items() if len(set(values)) > 1)
        return expand_grid(lists), swept
    rows = doc["settings"]
    if not isinstance(rows, list) or not rows:
        raise SpecError("settings: empty (give at least one [[settings]] table)")
    settings = [_setting(row, f"settings[{n}]", known) for n, row in enumerate(rows, start=1)]
    names = list(dict.fromkeys(k for s in settings for k in s))
    swept = tuple(n for n in names if len({s.get(n) for s in settings}) > 1)
    return settings, swept


def _setting(table: Any, where: str, known: frozenset[str]) -> Setting:
    if not isinstance(table, Mapping):
        raise SpecError(f"{where}: not a table of knob = value")
    out: Setting = {}
    for name, value in table.items():
        _check_known(name, where, known)
        out[name] = value_text(f"{where}.{name}", value)
    return out


def _check_known(name: str, where: str, known: frozenset[str]) -> None:
    if name not in known:
        raise SpecError(
            f"{where}.{name}: unknown knob (a sweep sets TRADING_PREDICTION_* and"
            " TRADING_PAPER_TRADING_* knobs; `service_manager.py sweep --knobs` lists them)"
        )


def expand_grid(lists: Mapping[str, Sequence[str]]) -> list[Setting]:
    """Every combination, the first knob varying slowest (as nested loops in the spec's order)."""
    names = list(lists)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(lists[n] for n in names))]


def describe_setting(setting: Mapping[str, str], swept: Sequence[str]) -> str:
    """`BUY_THRESHOLD=0.01 STOP_LOSS_PCT=1.5`: the swept knobs, without their service prefix."""
    shown = [n for n in swept if n in setting] or list(setting)
    return " ".join(f"{short_name(n)}={setting[n]}" for n in shown) or "defaults"


def short_name(variable: str) -> str:
    for prefix in ("TRADING_PREDICTION_SIGNAL_", "TRADING_PREDICTION_", "TRADING_PAPER_TRADING_"):
        if variable.startswith(prefix):
            return variable[len(prefix) :]
    return variable


def _fixed_periods(rows: Any, train_years: float) -> list[Period]:
    if not isinstance(rows, list):
        raise SpecError("periods: must be an array of tables ([[periods]] with from and to)")
    periods = []
    for number, row in enumerate(rows, start=1):
        where = f"periods[{number}]"
        if not isinstance(row, Mapping) or set(row) - {"from", "to", "train_years"}:
            raise SpecError(f"{where}: a period has from, to and optionally train_years")
        first, last = _date(row, "from", where), _date(row, "to", where)
        if first > last:
            raise SpecError(f"{where}: from {first} is after to {last}")
        years = _positive(row.get("train_years", train_years), f"{where}.train_years")
        periods.append(Period(first, last, years))
    return periods


def walk_forward_from(table: Any) -> list[Period]:
    where = "walk_forward"
    if not isinstance(table, Mapping) or set(table) != WALK_FORWARD_KEYS:
        raise SpecError(f"{where}: needs exactly {', '.join(sorted(WALK_FORWARD_KEYS))}")
    first, last = _date(table, "from", where), _date(table, "to", where)
    years = _positive(table["train_years"], f"{where}.train_years")
    test, step = (_months(table, key) for key in ("test_months", "step_months"))
    windows = walk_forward_windows(first, last, train_years=years, test_months=test, step_months=step)
    if not windows:
        raise SpecError(f"{where}: no {test}-month test window fits between {first} and {last}")
    return windows


def walk_forward_windows(
    first: date, last: date, *, train_years: float, test_months: int, step_months: int
) -> list[Period]:
    """Test windows of `test_months` from `first`, moved on `step_months` at a time, each ending on
    or before `last`; each window's models train on `train_years` before its first day (the
    replay trains them with the clock at that day, so no label reaches into the window)."""
    windows: list[Period] = []
    start = first
    while True:
        end = add_months(start, test_months) - timedelta(days=1)
        if end > last:
            return windows
        windows.append(Period(start, end, train_years, "walk-forward"))
        start = add_months(start, step_months)


def add_months(day: date, months: int) -> date:
    """The same day `months` later, clamped to the month's end (31 Jan + 1 month: 28/29 Feb)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _date(table: Mapping[str, Any], key: str, where: str) -> date:
    value = table.get(key)
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            raise SpecError(f"{where}.{key}: {value!r} is not a YYYY-MM-DD date") from None
    if not isinstance(value, date) or hasattr(value, "hour"):
        raise SpecError(f"{where}.{key}: missing or not a date (YYYY-MM-DD)")
    return value


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 50:
        raise SpecError(f"{where}: {value!r} is not a number of years in (0, 50]")
    return float(value)


def _months(table: Mapping[str, Any], key: str) -> int:
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 600:
        raise SpecError(f"walk_forward.{key}: {value!r} is not a whole number of months in 1..600")
    return value


def _optional_text(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise SpecError(f"{key}: must be a path (a string)")
    return value


# ---- the cache key -------------------------------------------------------------------------------


def cache_key(
    setting: Mapping[str, str], period: Period, data_hashes: Mapping[str, str], code_version: str
) -> str:
    """What decides a run's answer, hashed: the same key, the same report (a re-run skips it)."""
    material = {
        "setting": dict(sorted(setting.items())),
        "period": [period.first.isoformat(), period.last.isoformat(), period.train_years, period.kind],
        "data": dict(sorted(data_hashes.items())),
        "code": code_version,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def code_version(files: Iterable[tuple[str, bytes]]) -> str:
    """A hash of the code's files (relative path and content), in path order."""
    digest = hashlib.sha256()
    for name, content in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()[:16]


# ---- results -------------------------------------------------------------------------------------

COLUMNS = (
    "setting", "period", "status", "total_return", "universe_buy_and_hold", "excess_return",
    "sharpe", "max_drawdown", "trades", "win_rate", "commissions", "model_accuracy",
    "always_up_accuracy", "yesterday_accuracy", "reason",
)  # fmt: skip


def result_row(
    setting_label: str, period: Period, report: Mapping[str, Any] | None, reason: str = ""
) -> dict:
    """One row of the results table from a run's replay report (None: the run failed)."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(setting=setting_label, period=period.label, status="failed" if report is None else "ok")
    row["reason"] = reason
    if report is None:
        return row
    eq, bench, trading, model = report["equity"], report["benchmarks"], report["trading"], report["model"]
    row.update(
        total_return=eq["total_return"],
        universe_buy_and_hold=bench["universe_buy_and_hold"],
        excess_return=bench["excess_vs_universe"],
        sharpe=eq["sharpe_ratio"],
        max_drawdown=eq["max_drawdown"],
        trades=trading["trades"],
        win_rate=trading["win_rate"],
        commissions=trading["commissions"],
        model_accuracy=model["accuracy"],
        always_up_accuracy=(model.get("always_up") or {}).get("accuracy"),
        yesterday_accuracy=(model.get("yesterday_direction") or {}).get("accuracy"),
    )
    return row


def cell_text(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in ("total_return", "universe_buy_and_hold", "excess_return", "max_drawdown", "win_rate") or (
        column.endswith("accuracy")
    ):
        return f"{value * 100:.2f}%"
    if column == "sharpe":
        return f"{value:.2f}"
    if column == "commissions":
        return f"{value:.2f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = (cell_text(c, row.get(c)).replace("|", "/").replace("\n", " ") for c in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def daily_returns(equity: Sequence[float]) -> list[float]:
    return [b / a - 1.0 for a, b in itertools.pairwise(equity) if a > 0]


def per_period_sharpe(returns: Sequence[float]) -> float | None:
    """Mean over sample standard deviation, not annualised (the Deflated Sharpe Ratio's unit)."""
    if len(returns) < 2:
        return None
    spread = statistics.stdev(returns)
    return statistics.fmean(returns) / spread if spread > 0 else None


@dataclass(frozen=True, slots=True)
class Ranked:
    setting: str
    sharpe: float  # annualised, over the setting's test windows joined
    sharpe_per_day: float
    returns: int  # daily returns it is computed on
    runs: int  # the setting's runs (one per period)


def rank_settings(returns_by_setting: Mapping[str, Sequence[Sequence[float]]]) -> list[Ranked]:
    """Settings by out-of-sample Sharpe: each setting's daily returns over all its test windows,
    joined; a setting without a defined Sharpe (fewer than two returns, a flat curve) is left out."""
    ranked = []
    for setting, windows in returns_by_setting.items():
        joined = [r for window in windows for r in window]
        sr = per_period_sharpe(joined)
        if sr is not None:
            ranked.append(Ranked(setting, sr * math.sqrt(252), sr, len(joined), len(windows)))
    return sorted(ranked, key=lambda r: r.sharpe, reverse=True)


def skewness(values: Sequence[float]) -> float:
    mean, n = statistics.fmean(values), len(values)
    m2 = sum((v - mean) ** 2 for v in values) / n
    return 0.0 if m2 == 0 else sum((v - mean) ** 3 for v in values) / n / m2**1.5


def kurtosis(values: Sequence[float]) -> float:
    """Pearson's kurtosis (3 for a normal distribution, not the excess)."""
    mean, n = statistics.fmean(values), len(values)
    m2 = sum((v - mean) ** 2 for v in values) / n
    return 3.0 if m2 == 0 else sum((v - mean) ** 4 for v in values) / n / m2**2


def expected_max_sharpe(sharpe_variance: float, trials: int) -> float:
    """SR0: the Sharpe the best of `trials` unskilled strategies is expected to reach,

        SR0 = sqrt(V[SR]) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))

    (Bailey and Lopez de Prado 2014, eq. 2; g the Euler-Mascheroni constant, Z the standard
    normal CDF). One trial: 0, nothing was picked."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if trials == 1:
        return 0.0
    z = statistics.NormalDist()
    return math.sqrt(max(sharpe_variance, 0.0)) * (
        (1 - EULER_GAMMA) * z.inv_cdf(1 - 1 / trials) + EULER_GAMMA * z.inv_cdf(1 - 1 / (trials * math.e))
    )


def deflated_sharpe_ratio(
    sharpe: float, *, sharpe_variance: float, trials: int, observations: int, skew: float, kurt: float
) -> float:
    """The Deflated Sharpe Ratio (Bailey, D. H. and Lopez de Prado, M. (2014), "The Deflated Sharpe
    Ratio: Correcting for Selection Bias, Backtest Overfitting and Non-Normality", Journal of
    Portfolio Management 40(5), 94-107): the probability that the selected strategy's true Sharpe
    is above what the best of `trials` unskilled ones would show,

        DSR = Z( (SR - SR0) * sqrt(T - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR^2) )

    with SR the selected strategy's per-period (not annualised) Sharpe, SR0 `expected_max_sharpe`
    of the trials' Sharpe variance V[SR] (per period too), T the number of returns, g3 their
    skewness and g4 their kurtosis (3 for normal returns). The paper's example: SR 2.5 annualised
    over 1250 daily returns (0.1581 a day), V[SR] 0.5 annualised (0.5/250 a day), 100 trials,
    skewness -3, kurtosis 10: SR0 = 0.1132 a day and DSR = 0.9004.
    """
    if observations < 2:
        raise ValueError(f"observations must be >= 2, got {observations}")
    threshold = expected_max_sharpe(sharpe_variance, trials)
    spread = 1 - skew * sharpe + (kurt - 1) / 4 * sharpe**2
    if spread <= 0:
        raise ValueError("skewness and kurtosis give a non-positive variance for this Sharpe")
    z = (sharpe - threshold) * math.sqrt(observations - 1) / math.sqrt(spread)
    return statistics.NormalDist().cdf(z)


def selection_summary(
    ranked: Sequence[Ranked], returns_by_setting: Mapping[str, Sequence[Sequence[float]]]
) -> dict:
    """The best setting's Deflated Sharpe Ratio given every setting that was tried."""
    if not ranked:
        return {"trials": 0, "best": None, "deflated_sharpe": None, "expected_max_sharpe": None}
    best = ranked[0]
    joined = [r for window in returns_by_setting[best.setting] for r in window]
    variance = statistics.variance([r.sharpe_per_day for r in ranked]) if len(ranked) > 1 else 0.0
    dsr = deflated_sharpe_ratio(
        best.sharpe_per_day,
        sharpe_variance=variance,
        trials=len(ranked),
        observations=len(joined),
        skew=skewness(joined),
        kurt=kurtosis(joined),
    )
    return {
        "trials": len(ranked),
        "best": best.setting,
        "best_sharpe": best.sharpe,
        "expected_max_sharpe": expected_max_sharpe(variance, len(ranked)) * math.sqrt(252),
        "deflated_sharpe": dsr,
    }
