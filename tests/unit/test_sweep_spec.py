"""The sweep spec (periods, grid, windows, cache key) and the Deflated Sharpe Ratio."""

from __future__ import annotations

import math
import tomllib
from datetime import date

import pytest

from services.domain import sweep_spec
from services.domain.sweep_spec import Period, SpecError
from services.management.sweep import check_setting, sweepable_knobs

KNOWN = sweepable_knobs()
BUY = "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD"
STOP = "TRADING_PAPER_TRADING_STOP_LOSS_PCT"

GOOD = """
[[periods]]
from = 2019-06-03
to = 2019-06-14

[fixed]
TRADING_PREDICTION_SIGNAL_BEAR_BUY_EXTRA = 0

[grid]
TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD = [0.01, 0.05]
TRADING_PAPER_TRADING_STOP_LOSS_PCT = [1.5, 3]
TRADING_PAPER_TRADING_FOLLOW_SIGNALS = [true]
"""


def parse(text: str) -> sweep_spec.SweepSpec:
    return sweep_spec.parse_spec(tomllib.loads(text), KNOWN, check_setting)


def test_grid_is_every_combination_with_the_fixed_knobs():
    spec = parse(GOOD)
    assert spec.periods == (Period(date(2019, 6, 3), date(2019, 6, 14), 5.0),)
    assert spec.swept == (BUY, STOP)  # FOLLOW_SIGNALS has one value: not swept
    assert [(s[BUY], s[STOP]) for s in spec.settings] == [
        ("0.01", "1.5"), ("0.01", "3"), ("0.05", "1.5"), ("0.05", "3"),
    ]  # fmt: skip
    assert all(s["TRADING_PREDICTION_SIGNAL_BEAR_BUY_EXTRA"] == "0" for s in spec.settings)
    assert all(s["TRADING_PAPER_TRADING_FOLLOW_SIGNALS"] == "true" for s in spec.settings)


def test_a_list_of_settings():
    spec = parse(
        "[[periods]]\nfrom = 2019-06-03\nto = 2019-06-14\n"
        f"[[settings]]\n{BUY} = 0.01\n[[settings]]\n{BUY} = 0.02\n{STOP} = 2.0\n"
    )
    assert spec.settings == ({BUY: "0.01"}, {BUY: "0.02", STOP: "2.0"})
    assert spec.swept == (BUY, STOP)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (GOOD.replace("STOP_LOSS_PCT", "STOP_LOS_PCT"), "grid.TRADING_PAPER_TRADING_STOP_LOS_PCT: unknown knob"),
        (GOOD.replace("[0.01, 0.05]", "[0.01, 1.5]"), "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD"),  # (0, 1)
        (GOOD.replace("[1.5, 3]", "[1.5, 0]"), "TRADING_PAPER_TRADING_STOP_LOSS_PCT: 0 is outside"),
        (GOOD.replace("[1.5, 3]", "[]"), "grid.TRADING_PAPER_TRADING_STOP_LOSS_PCT: empty"),
        ("[[periods]]\nfrom = 2019-06-03\nto = 2019-06-14\n[grid]\n", "grid: empty"),
        ("settings = []\n[[periods]]\nfrom = 2019-06-03\nto = 2019-06-14\n", "settings: empty"),
        (GOOD.replace("to = 2019-06-14", "to = 2019-05-14"), "periods[1]: from 2019-06-03 is after"),
        (GOOD.replace("[[periods]]\nfrom = 2019-06-03\nto = 2019-06-14\n", ""), "periods: no period"),
        # A knob the replay sets for its own suite cannot be swept.
        (GOOD.replace("STOP_LOSS_PCT", "IG_MIRROR").replace("[1.5, 3]", "[true]"), "unknown knob"),
        ("bogus = 1\n" + GOOD, "bogus: not a spec entry"),
    ],
    ids=["unknown-knob", "above-bound", "below-bound", "empty-list", "empty-grid", "empty-settings",
         "reversed-period", "no-period", "replay-managed-knob", "unknown-entry"],
)  # fmt: skip
def test_bad_specs_name_the_entry(text, named):
    with pytest.raises(SpecError) as caught:
        parse(text)
    assert named in str(caught.value)


def test_walk_forward_windows():
    windows = sweep_spec.walk_forward_windows(
        date(2018, 1, 31), date(2019, 1, 30), train_years=2, test_months=3, step_months=3
    )
    assert [(w.first, w.last) for w in windows] == [
        (date(2018, 1, 31), date(2018, 4, 29)),  # 31 Jan + 3 months = 30 Apr (clamped), minus a day
        (date(2018, 4, 30), date(2018, 7, 29)),
        (date(2018, 7, 30), date(2018, 10, 29)),
        (date(2018, 10, 30), date(2019, 1, 29)),
    ]
    assert all(w.kind == "walk-forward" and w.train_years == 2 for w in windows)
    # Overlapping test windows when the step is shorter than the test.
    overlapping = sweep_spec.walk_forward_windows(
        date(2018, 1, 1), date(2018, 12, 31), train_years=1, test_months=6, step_months=2
    )
    assert [w.first.month for w in overlapping] == [1, 3, 5, 7]
    spec = parse(
        "[walk_forward]\nfrom = 2018-01-01\nto = 2018-12-31\ntrain_years = 3\ntest_months = 6\nstep_months = 6\n"
        f"[grid]\n{BUY} = [0.1]\n"
    )
    assert [p.label for p in spec.periods] == ["2018-01-01..2018-06-30", "2018-07-01..2018-12-31"]
    with pytest.raises(SpecError, match="walk_forward: no 24-month test window"):
        parse(spec_text := "[walk_forward]\nfrom = 2018-01-01\nto = 2018-12-31\ntrain_years = 3\n"
              f"test_months = 24\nstep_months = 6\n[grid]\n{BUY} = [0.1]\n")  # fmt: skip
    assert spec_text


def test_cache_key_changes_with_anything_that_decides_the_answer():
    period = Period(date(2019, 6, 3), date(2019, 6, 14), 2.0)
    base = sweep_spec.cache_key({BUY: "0.1", STOP: "2"}, period, {"CBA.AX.csv": "aa"}, "c1")
    assert base == sweep_spec.cache_key({STOP: "2", BUY: "0.1"}, period, {"CBA.AX.csv": "aa"}, "c1")
    others = {
        sweep_spec.cache_key({BUY: "0.2", STOP: "2"}, period, {"CBA.AX.csv": "aa"}, "c1"),
        sweep_spec.cache_key({BUY: "0.1", STOP: "2"}, Period(period.first, period.last, 3.0), {"CBA.AX.csv": "aa"}, "c1"),
        sweep_spec.cache_key({BUY: "0.1", STOP: "2"}, period, {"CBA.AX.csv": "ab"}, "c1"),
        sweep_spec.cache_key({BUY: "0.1", STOP: "2"}, period, {"CBA.AX.csv": "aa"}, "c2"),
    }  # fmt: skip
    assert base not in others and len(others) == 4


def test_deflated_sharpe_ratio_reproduces_the_papers_example():
    """Bailey and Lopez de Prado (2014), section 'A numerical example': SR 2.5 a year over five
    years of daily returns (T = 1250), 100 trials with V[SR] 0.5 a year, skewness -3, kurtosis 10:
    the expected maximum is 0.1132 a day and DSR 0.9004."""
    days = 250
    variance = 0.5 / days
    assert sweep_spec.expected_max_sharpe(variance, 100) == pytest.approx(0.1132, abs=5e-5)
    dsr = sweep_spec.deflated_sharpe_ratio(
        2.5 / math.sqrt(days), sharpe_variance=variance, trials=100, observations=1250, skew=-3, kurt=10
    )
    assert dsr == pytest.approx(0.9004, abs=5e-4)


def test_deflated_sharpe_ratio_edges():
    # One trial: nothing was picked, so the threshold is 0 and DSR is the probabilistic Sharpe.
    assert sweep_spec.expected_max_sharpe(0.01, 1) == 0.0
    assert (
        sweep_spec.deflated_sharpe_ratio(
            0.0, sharpe_variance=0.01, trials=1, observations=100, skew=0, kurt=3
        )
        == 0.5
    )
    # More trials raise the bar, so the same Sharpe is worth less.
    few = sweep_spec.deflated_sharpe_ratio(
        0.1, sharpe_variance=0.002, trials=10, observations=500, skew=0, kurt=3
    )
    many = sweep_spec.deflated_sharpe_ratio(
        0.1, sharpe_variance=0.002, trials=1000, observations=500, skew=0, kurt=3
    )
    assert 0 < many < few < 1


def test_ranking_joins_each_settings_test_windows():
    returns = {
        "a": [[0.01, -0.005, 0.01], [0.002, 0.004]],
        "b": [[0.01, 0.01, 0.01]],  # flat: no Sharpe, left out
        "c": [[-0.01, 0.005, -0.002]],
    }
    ranked = sweep_spec.rank_settings(returns)
    assert [r.setting for r in ranked] == ["a", "c"]
    assert ranked[0].returns == 5 and ranked[0].runs == 2
    summary = sweep_spec.selection_summary(ranked, returns)
    assert summary["trials"] == 2 and summary["best"] == "a" and 0 < summary["deflated_sharpe"] < 1


def test_result_row_from_a_report_and_a_failure():
    report = {
        "equity": {"total_return": 0.02, "sharpe_ratio": 1.5, "max_drawdown": 0.01},
        "benchmarks": {"universe_buy_and_hold": 0.01, "excess_vs_universe": 0.01},
        "trading": {"trades": 4, "win_rate": 0.5, "commissions": 40.0},
        "model": {"accuracy": 0.55, "always_up": {"accuracy": 0.6}, "yesterday_direction": {"accuracy": 0.5}},
    }
    period = Period(date(2019, 6, 3), date(2019, 6, 14), 2.0)
    row = sweep_spec.result_row("BUY_THRESHOLD=0.1", period, report)
    assert row["status"] == "ok" and row["excess_return"] == 0.01 and row["always_up_accuracy"] == 0.6
    failed = sweep_spec.result_row("BUY_THRESHOLD=0.1", period, None, "the suite did not start")
    assert (
        failed["status"] == "failed"
        and failed["sharpe"] is None
        and failed["reason"] == "the suite did not start"
    )
    table = sweep_spec.markdown_table([row, failed])
    assert "| BUY_THRESHOLD=0.1 | 2019-06-03..2019-06-14 | ok | 2.00% |" in table
