"""The shared feature builder: fixed names, no look-ahead, as-of index join, validation."""

import dataclasses
import math
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain import asx_calendar
from services.domain.bars import Bar, clean_daily_rows
from services.domain.features import (
    FEATURE_NAMES,
    FEATURE_RANGES,
    FEATURE_VERSION,
    MAX_INDEX_STALENESS_DAYS,
    MIN_BARS,
    FeatureValidationError,
    _feature_columns,
    _latest_values,
    build_feature_rows,
    build_latest_features,
    validate_features,
)
from services.domain.price_history import parse_yahoo_csv
from tests.unit._ml_helpers import random_walk_bars

REPO = Path(__file__).resolve().parents[2]
ASX_DATA = REPO.parent / "shared" / "data" / "asx"

STOCK = random_walk_bars(400, seed=1)
INDEX = random_walk_bars(400, seed=2, price=6000.0)


def _complete(rows):
    return [(d, f) for d, f in rows if f is not None]


def test_names_are_fixed_unique_and_ranged() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) == 16
    assert set(FEATURE_RANGES) == set(FEATURE_NAMES)
    assert FEATURE_VERSION


def test_one_row_per_bar_and_rows_start_once_history_suffices() -> None:
    rows = build_feature_rows(STOCK, INDEX)
    assert [d for d, _ in rows] == [bar.date for bar in STOCK]
    first = next(i for i, (_, f) in enumerate(rows) if f is not None)
    # The index SMA200 is the longest look-back: its first value is at position 199.
    assert first == 199
    assert all(f is not None for _, f in rows[first:])
    assert all(list(f) == list(FEATURE_NAMES) for _, f in _complete(rows))


@pytest.mark.parametrize("cut", [200, 201, 250, 333, 399])
def test_rows_do_not_change_when_later_bars_are_removed(cut: int) -> None:
    full = build_feature_rows(STOCK, INDEX)
    # The index is cut a little later than the stock, like a live index feed.
    truncated = build_feature_rows(STOCK[:cut], INDEX[: cut + 3])
    assert truncated == full[:cut]


@settings(max_examples=25, deadline=None)
@given(t=st.integers(min_value=200, max_value=398), shock=st.floats(min_value=0.2, max_value=5.0))
def test_changing_the_future_never_changes_the_past(t: int, shock: float) -> None:
    # Multiply every price after day t (stock and index) by `shock`: rows up to t must not move.
    def shocked(bars: list[Bar]) -> list[Bar]:
        return [
            *bars[: t + 1],
            *(
                dataclasses.replace(
                    b,
                    open=b.open * shock,
                    high=b.high * shock,
                    low=b.low * shock,
                    close=b.close * shock,
                    adj_close=b.adj_close * shock,
                    volume=b.volume * 3,
                )
                for b in bars[t + 1 :]
            ),
        ]

    base = build_feature_rows(STOCK, INDEX)
    moved = build_feature_rows(shocked(STOCK), shocked(INDEX))
    assert moved[: t + 1] == base[: t + 1]
    assert moved[t + 1 :] != base[t + 1 :]  # the shock is visible afterwards: the test can fail


def test_known_values_on_a_dividend_day() -> None:
    rows = build_feature_rows(STOCK, INDEX)
    t = 300
    features = rows[t][1]
    assert features["return_1d"] == pytest.approx(STOCK[t].adj_close / STOCK[t - 1].adj_close - 1)
    assert features["return_20d"] == pytest.approx(STOCK[t].adj_close / STOCK[t - 20].adj_close - 1)
    assert features["index_return_1d"] == pytest.approx(INDEX[t].adj_close / INDEX[t - 1].adj_close - 1)
    assert features["relative_return_20d"] == pytest.approx(
        features["return_20d"] - features["index_return_20d"]
    )
    assert features["volume_ratio_20"] == pytest.approx(
        STOCK[t].volume / (sum(b.volume for b in STOCK[t - 20 : t]) / 20)
    )
    # Returns use adj_close: a close-only drop (ex-dividend) is not a loss.
    dividend = [*STOCK[:t], dataclasses.replace(STOCK[t], close=STOCK[t].close * 0.95)]
    assert build_feature_rows(dividend, INDEX)[t][1]["return_1d"] == features["return_1d"]


def test_sentiment_is_read_for_its_own_day_and_neutral_otherwise() -> None:
    day = STOCK[350].date
    rows = build_feature_rows(STOCK, INDEX, {day: -0.4, STOCK[-1].date + timedelta(days=1): 0.9})
    assert rows[350][1]["sentiment_score"] == -0.4
    assert rows[351][1]["sentiment_score"] == 0.0


def test_index_is_joined_as_of_the_day_and_never_from_later() -> None:
    t = 300
    day = STOCK[t].date
    # Index bar for day t missing (a data gap): day t uses the previous index bar.
    gapped = [b for b in INDEX if b.date != day]
    row = build_feature_rows(STOCK, gapped)[t][1]
    previous = build_feature_rows(STOCK, INDEX)[t - 1][1]
    assert row["index_return_1d"] == previous["index_return_1d"]
    # An index that ends before day t by more than the staleness limit gives no row at all.
    stale_index = [b for b in INDEX if (day - b.date).days > MAX_INDEX_STALENESS_DAYS]
    assert build_feature_rows(STOCK, stale_index)[t][1] is None


def test_latest_features_match_the_training_rows_from_min_bars_of_history() -> None:
    # Serving builds from the last MIN_BARS bars, training from all of them: same numbers.
    long_stock = random_walk_bars(900, seed=3)
    long_index = random_walk_bars(900, seed=4, price=6000.0)
    training_row = build_feature_rows(long_stock, long_index)[-1][1]
    served = build_latest_features(long_stock[-MIN_BARS:], long_index[-MIN_BARS:], sentiment_score=0.0)
    for name in FEATURE_NAMES:
        assert served[name] == pytest.approx(training_row[name], rel=1e-6, abs=1e-9), name


@pytest.mark.parametrize(
    ("stock", "index", "named"),
    [
        ([], INDEX, "no bars"),
        # 30 bars: the MACD histogram (34), SMA50 and all index trend measures are missing.
        (STOCK[:30], INDEX[:30], "macd_hist_pct"),
        # Enough stock history, index too short for SMA200.
        (STOCK, INDEX[:150], "index_trend_50_200"),
    ],
)
def test_latest_features_name_what_is_missing(stock: list[Bar], index: list[Bar], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        build_latest_features(stock, index)


def test_unsorted_bars_are_refused() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        build_feature_rows([STOCK[1], STOCK[0]], INDEX)


GOOD = dict(build_feature_rows(STOCK, INDEX)[-1][1])


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        ({"drop": "rsi_14"}, ["missing features: rsi_14"]),
        ({"add": ("rsi", 50.0)}, ["unexpected features: rsi"]),
        # Renamed feature: reported as both missing and unexpected.
        (
            {"drop": "return_1d", "add": ("return_1", 0.0)},
            ["missing features: return_1d", "unexpected features: return_1"],
        ),
        ({"set": ("volatility_20d", math.nan)}, ["volatility_20d must be finite"]),
        ({"set": ("volatility_20d", math.inf)}, ["volatility_20d must be finite"]),
        ({"set": ("rsi_14", "70")}, ["rsi_14 must be a number"]),
        ({"set": ("rsi_14", True)}, ["rsi_14 must be a number"]),  # bool is an int in Python
        ({"set": ("rsi_14", 0.7e3)}, ["rsi_14=700 is outside"]),
        # A price sent where a return belongs.
        ({"set": ("return_1d", 95.2)}, ["return_1d=95.2 is outside"]),
        ({"set": ("sentiment_score", -1.5)}, ["sentiment_score=-1.5 is outside"]),
    ],
)
def test_validation_names_every_problem(change: dict, fragments: list[str]) -> None:
    features = dict(GOOD)
    if "drop" in change:
        del features[change["drop"]]
    if "add" in change:
        features[change["add"][0]] = change["add"][1]
    if "set" in change:
        features[change["set"][0]] = change["set"][1]
    with pytest.raises(FeatureValidationError) as caught:
        validate_features(features)
    for fragment in fragments:
        assert any(fragment in problem for problem in caught.value.problems), caught.value.problems


def test_validation_returns_values_in_feature_order_whatever_the_key_order() -> None:
    shuffled = dict(reversed(list(GOOD.items())))
    assert validate_features(shuffled) == [GOOD[name] for name in FEATURE_NAMES]
    with pytest.raises(FeatureValidationError, match="object"):
        validate_features([1.0] * 16)  # type: ignore[arg-type]


def test_feature_module_stays_light() -> None:
    # The prediction service imports this module: it must not pull numpy/pandas/sklearn in.
    code = (
        "import sys; import services.domain.features; "
        "heavy = [m for m in ('numpy', 'pandas', 'sklearn') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def _read_csv(path: Path) -> list[Bar]:
    # Through the shared parser and cleaner: what training and the market-data csv source read.
    return clean_daily_rows(parse_yahoo_csv(path.read_text(), path.name), asx_calendar.is_trading_day)[0]


@pytest.mark.skipif(not ASX_DATA.is_dir(), reason="shared ASX data (../shared/data/asx) not present")
@pytest.mark.parametrize("symbol", ["CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX"])
def test_real_bank_data_stays_inside_the_plausible_ranges(symbol: str) -> None:
    index = _read_csv(ASX_DATA / "AXJO.csv")
    rows = _complete(build_feature_rows(_read_csv(ASX_DATA / f"{symbol}.csv"), index))
    assert len(rows) > 1000
    assert rows[0][0] >= date(2016, 1, 1)  # after a year of warm-up from 2015-05-20
    for _, features in rows:
        validate_features(features)  # raises if a real day were judged implausible


def _same(a: float | None, b: float | None) -> bool:
    return a is b is None or (a is not None and b is not None and repr(a) == repr(b))


def _latest_as_columns(bars, index_bars, sentiment):
    """The last row of the training columns: what build_latest_features must equal, bit for bit."""
    columns = _feature_columns(bars, index_bars, {bars[-1].date: sentiment})
    return {name: columns[name][-1] for name in FEATURE_NAMES}


@pytest.mark.parametrize("n", [1, 2, 15, 21, 22, 49, 50, 51, 199, 200, 201, 260, 400])
def test_latest_values_equal_the_last_column_row_bit_for_bit(n):
    """Serving computes only the last row (windows from trailing slices); it must be exactly the
    training columns' last row, also with short histories, a stale index and zero volumes."""
    stock = STOCK[:n]
    cases = [
        (stock, INDEX),
        (stock, INDEX[: max(1, n - 30)]),  # the index ends weeks before: stale, its features None
        (stock, INDEX[:1]),
        ([dataclasses.replace(b, volume=0) for b in stock], INDEX[: n + 5]),
    ]
    for bars, index in cases:
        latest = _latest_values(bars, index, 0.25)
        expected = _latest_as_columns(bars, index, 0.25)
        assert list(latest) == list(FEATURE_NAMES)
        assert all(_same(latest[k], expected[k]) for k in FEATURE_NAMES), (n, latest, expected)


@pytest.mark.skipif(not ASX_DATA.is_dir(), reason="shared ASX data (../shared/data/asx) not present")
def test_latest_values_equal_the_last_column_row_on_real_data():
    index = _read_csv(ASX_DATA / "AXJO.csv")
    stock = _read_csv(ASX_DATA / "CBA.AX.csv")
    for end in range(MIN_BARS, len(stock), 37):
        bars = stock[end - MIN_BARS : end]
        index_bars = [b for b in index if b.date <= bars[-1].date][-MIN_BARS:]
        latest = _latest_values(bars, index_bars, 0.0)
        expected = _latest_as_columns(bars, index_bars, 0.0)
        assert all(_same(latest[k], expected[k]) for k in FEATURE_NAMES), (bars[-1].date, latest, expected)
