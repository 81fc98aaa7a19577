"""The replay report's figures: tables of known answers, plus invariants with hypothesis."""

from __future__ import annotations

import math
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain import performance
from services.domain.replay_report import (
    ScoredPrediction,
    build_report,
    buy_and_hold_return,
    equity_figures,
    format_report,
    last_direction,
    model_accuracy,
    price_on_or_before,
    realised_direction,
    signal_counts,
    trade_figures,
)

D = date.fromisoformat
SERIES = [(D("2019-06-03"), 10.0), (D("2019-06-04"), 11.0), (D("2019-06-06"), 9.0), (D("2019-06-07"), 12.0)]
# SERIES with a close before its first: every SERIES date then has a last move (06-03: 10.5 -> 10, down).
HISTORY = [(D("2019-05-31"), 10.5), *SERIES]


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        ("2019-06-02", None),  # before the first price: nothing to value at
        ("2019-06-03", 10.0),
        ("2019-06-05", 11.0),  # a gap (no row) falls back to the day before
        ("2019-06-07", 12.0),
        ("2019-07-01", 12.0),  # after the data: the last price
    ],
)
def test_price_on_or_before(day, expected):
    assert price_on_or_before(SERIES, D(day)) == expected


@pytest.mark.parametrize(
    ("prices", "entry", "exit_", "expected"),
    [
        ({"A": SERIES}, "2019-06-03", "2019-06-07", 0.2),
        # equal weight: +20% and -10% average to +5%
        (
            {"A": SERIES, "B": [(D("2019-06-03"), 50.0), (D("2019-06-07"), 45.0)]},
            "2019-06-03",
            "2019-06-07",
            0.05,
        ),
        ({"A": SERIES}, "2019-06-04", "2019-06-06", 9.0 / 11.0 - 1),
        ({"A": SERIES}, "2019-06-07", "2019-06-07", 0.0),
        # a series without an entry price is left out, not counted as zero
        ({"A": SERIES, "B": [(D("2019-06-07"), 45.0)]}, "2019-06-03", "2019-06-07", 0.2),
        ({"A": SERIES}, "2019-01-01", "2019-06-07", None),
    ],
)
def test_buy_and_hold_return(prices, entry, exit_, expected):
    got = buy_and_hold_return(prices, D(entry), D(exit_))
    assert got == pytest.approx(expected) if expected is not None else got is None


@pytest.mark.parametrize(
    ("bar_date", "expected"),
    [
        ("2019-06-03", "up"),  # 10 -> 11
        ("2019-06-04", "down"),  # 11 -> 9 (the next row, across the gap)
        ("2019-06-06", "up"),
        ("2019-06-07", None),  # the last day: no next close yet
        ("2019-06-05", None),  # not a date of the data
    ],
)
def test_realised_direction(bar_date, expected):
    assert realised_direction(SERIES, D(bar_date)) == expected


def test_flat_next_close_counts_as_down():
    # The models' target is 1 = up, 0 = flat or down.
    assert realised_direction([(D("2019-06-03"), 5.0), (D("2019-06-04"), 5.0)], D("2019-06-03")) == "down"


@pytest.mark.parametrize(
    ("bar_date", "expected"),
    [
        ("2019-06-03", None),  # the first close: no move into it
        ("2019-06-04", "up"),  # 10 -> 11
        ("2019-06-06", "down"),  # 11 -> 9 (from the row before, across the gap)
        ("2019-06-07", "up"),  # 9 -> 12: known on the last day, unlike the next move
        ("2019-06-05", None),  # not a date of the data
        ("2019-07-01", None),
    ],
)
def test_last_direction(bar_date, expected):
    assert last_direction(SERIES, D(bar_date)) == expected


def test_flat_last_close_counts_as_down():
    assert last_direction([(D("2019-06-03"), 5.0), (D("2019-06-04"), 5.0)], D("2019-06-04")) == "down"


def pred(symbol="A", day="2019-06-03", signal="BUY", direction="up"):
    return ScoredPrediction(symbol, D(day), signal, direction)


@pytest.mark.parametrize(
    ("predictions", "scored", "correct"),
    [
        ([pred()], 1, 1),
        ([pred(direction="down")], 1, 0),
        ([pred(), pred(day="2019-06-04", direction="down"), pred(day="2019-06-06", direction="down")], 3, 2),
        ([pred(direction=None)], 0, 0),  # the model was missing: nothing to score
        ([pred(day="2019-06-07")], 0, 0),  # next close beyond the data
        ([pred(symbol="Z")], 0, 0),  # no prices for the symbol
    ],
)
def test_model_accuracy(predictions, scored, correct):
    got = model_accuracy(predictions, {"A": HISTORY})
    assert (got["scored"], got["correct"]) == (scored, correct)
    assert got["accuracy"] == (correct / scored if scored else None)


# HISTORY's moves: into 06-03 down, 06-04 up, 06-06 down; next after 06-03 up, 06-04 down, 06-06 up.
# It reverses every day, so "like the last move" is always wrong and "always up" right 2 of 3.
REVERSING = [pred(day="2019-06-03"), pred(day="2019-06-04", direction="down"), pred(day="2019-06-06")]
DOWNS = [pred(day=d, direction="down") for d in ("2019-06-03", "2019-06-04", "2019-06-06")]
# 1, 2, 3, 2.5, 2, 2.2: from 06-04 to 06-07 the next moves are up, down, down, up and the last
# moves up, up, down, down, so the last move is repeated twice in four.
TRENDING = [(D("2019-06-03"), 1.0), (D("2019-06-04"), 2.0), (D("2019-06-05"), 3.0), (D("2019-06-06"), 2.5)]
TRENDING += [(D("2019-06-07"), 2.0), (D("2019-06-11"), 2.2)]
UPS = [pred(day=d) for d in ("2019-06-04", "2019-06-05", "2019-06-06", "2019-06-07")]


@pytest.mark.parametrize(
    ("predictions", "series", "expected"),
    [
        # scored, (model, always up, yesterday's move) correct
        (REVERSING, HISTORY, (3, (3, 2, 0))),
        (DOWNS, HISTORY, (3, (1, 2, 0))),
        (UPS, TRENDING, (4, (2, 2, 2))),
        ([pred(day="2019-06-06")], TRENDING, (1, (0, 0, 1))),  # down into it and after: only persistence
        # the first date has no last move: left out of all three, though the model and
        # always up could be scored on it (both would be right: 10 -> 11)
        ([pred(day="2019-06-03")], SERIES, (0, (0, 0, 0))),
        ([pred(day="2019-06-03"), pred(day="2019-06-04", direction="down")], SERIES, (1, (1, 0, 0))),
        ([pred(day="2019-06-07")], HISTORY, (0, (0, 0, 0))),  # no next close: nothing scored
        ([pred(day="2019-06-04", direction=None)], HISTORY, (0, (0, 0, 0))),  # no model direction
        ([], HISTORY, (0, (0, 0, 0))),
    ],
)
def test_model_accuracy_with_baselines(predictions, series, expected):
    got = model_accuracy(predictions, {"A": series})
    scored, (model, up, last) = expected
    share = lambda hits: hits / scored if scored else None  # noqa: E731
    assert got == {
        "scored": scored,
        "correct": model,
        "accuracy": share(model),
        "always_up": {"correct": up, "accuracy": share(up)},
        "yesterday_direction": {"correct": last, "accuracy": share(last)},
    }


def test_baselines_share_the_models_scored_predictions():
    # One of each way out (no direction, first date, no next close, unknown symbol) and two scored.
    predictions = [
        pred(day="2019-06-04", direction=None),
        pred(day="2019-06-03"),
        pred(day="2019-06-07"),
        pred(symbol="Z", day="2019-06-04"),
        pred(day="2019-06-04", direction="down"),
        pred(day="2019-06-06", direction="down"),
    ]
    got = model_accuracy(predictions, {"A": SERIES})
    assert got["scored"] == 2
    assert (got["correct"], got["always_up"]["correct"], got["yesterday_direction"]["correct"]) == (1, 1, 0)
    assert (got["accuracy"], got["always_up"]["accuracy"], got["yesterday_direction"]["accuracy"]) == (
        0.5,
        0.5,
        0.0,
    )


@given(st.lists(st.floats(1.0, 100.0), min_size=2, max_size=30), st.data())
def test_a_model_that_calls_like_a_baseline_scores_like_it(closes, data):
    series = [(date(2019, 1, 1) + timedelta(days=i), c) for i, c in enumerate(closes)]
    days = data.draw(st.lists(st.sampled_from([d for d, _ in series])))
    ups = model_accuracy([pred(day=d.isoformat(), direction="up") for d in days], {"A": series})
    assert ups["correct"] == ups["always_up"]["correct"]
    calls = [(d, last_direction(series, d)) for d in days]
    like_last = [pred(day=d.isoformat(), direction=c) for d, c in calls if c]
    got = model_accuracy(like_last, {"A": series})
    assert got["correct"] == got["yesterday_direction"]["correct"]
    assert got["scored"] == ups["scored"] == sum(1 for d in days if series[0][0] < d < series[-1][0])


def test_signal_counts_and_buy_rate():
    got = signal_counts([pred(signal="BUY"), pred(signal="HOLD"), pred(signal="BUY"), pred(signal="SELL")])
    assert got == {"counts": {"BUY": 2, "HOLD": 1, "SELL": 1}, "total": 4, "buy_rate": 0.5}
    assert signal_counts([])["buy_rate"] is None


def trade(action, net_pnl=0.0, commission=10.0, realized=0.0, gross=1000.0, prediction_id="p", slippage=0.5):
    return {
        "action": action,
        "net_pnl": net_pnl,
        "commission": commission,
        "realized_pnl": realized,
        "gross": gross,
        "prediction_id": prediction_id,
        "slippage": slippage,
    }


def test_trade_figures_known_answer():
    trades = [
        trade("BUY", commission=11.0),
        trade("BUY", commission=12.5, prediction_id=None),  # a manual trade
        trade("SELL", net_pnl=100.0, realized=121.0, commission=10.5),
        trade("SELL", net_pnl=-50.0, realized=-30.0, commission=10.0),
        trade("SELL", net_pnl=0.0, realized=20.0, commission=10.0),  # break-even: taken, not won
    ]
    got = trade_figures(trades)
    assert (got["trades"], got["buys"], got["sells"]) == (5, 2, 3)
    assert got["commissions"] == pytest.approx(54.0)
    assert got["slippage"] == pytest.approx(2.5)
    assert got["realized_pnl"] == pytest.approx(111.0)
    assert got["win_rate"] == pytest.approx(1 / 3)
    assert got["profit_factor"] == pytest.approx(2.0)
    assert (got["winning_trades"], got["losing_trades"], got["closed_trades"]) == (1, 1, 3)
    assert got["linked_to_predictions"] == 4


def test_trade_figures_without_trades():
    got = trade_figures([])
    assert got["trades"] == 0 and got["win_rate"] is None and got["commissions"] == 0.0


def test_equity_figures_known_answer():
    curve = [
        (None, 100_000.0),
        (D("2019-06-03"), 101_000.0),
        (D("2019-06-04"), 98_980.0),
        (D("2019-06-05"), 102_000.0),
    ]
    got = equity_figures(curve)
    assert got["total_return"] == pytest.approx(0.02)
    assert got["max_drawdown"] == pytest.approx(0.02)  # 101,000 -> 98,980
    assert got["trading_days"] == 3
    assert got["low"] == {"date": "2019-06-04", "equity": 98_980.0}
    assert got["high"] == {"date": "2019-06-05", "equity": 102_000.0}
    returns = [0.01, 98_980 / 101_000 - 1, 102_000 / 98_980 - 1]
    assert got["sharpe_ratio"] == pytest.approx(performance.sharpe_ratio(returns))


def test_build_and_format_report():
    closes = {"A": SERIES, "B": [(D("2019-06-03"), 20.0), (D("2019-06-07"), 22.0)]}
    report = build_report(
        first_day=D("2019-06-04"),
        last_day=D("2019-06-07"),
        entry_day=D("2019-06-03"),
        curve=[(None, 100_000.0), (D("2019-06-04"), 100_500.0), (D("2019-06-07"), 103_000.0)],
        trades=[trade("BUY"), trade("SELL", net_pnl=80.0, realized=100.0)],
        predictions=[
            pred(day="2019-06-03", direction="up"),
            pred(symbol="B", day="2019-06-03", signal="HOLD"),
        ],
        closes=closes,
        # adj closes with a close before 06-03, so both predictions have a last move (A down, B up)
        adj_closes={"A": HISTORY, "B": [(D("2019-05-31"), 19.0), *closes["B"]]},
        index_closes=[(D("2019-06-03"), 6000.0), (D("2019-06-07"), 6060.0)],
        index_symbol="^AXJO",
    )
    assert report["equity"]["total_return"] == pytest.approx(0.03)
    assert report["benchmarks"]["universe_buy_and_hold"] == pytest.approx((0.2 + 0.1) / 2)
    assert report["benchmarks"]["index_buy_and_hold"] == pytest.approx(0.01)
    assert report["benchmarks"]["excess_vs_index"] == pytest.approx(0.02)
    assert report["signals"]["buy_rate"] == 0.5
    assert report["model"] == {
        "scored": 2,
        "correct": 2,
        "accuracy": 1.0,
        "always_up": {"correct": 2, "accuracy": 1.0},
        "yesterday_direction": {"correct": 1, "accuracy": 0.5},
    }  # B has no 06-04 row: next is 06-07 up
    assert report["basis"] is None
    text = format_report(report, notes=["orders fill at the previous close"])
    lines = text.splitlines()
    model_line = next(i for i, line in enumerate(lines) if line.startswith("  model accuracy"))
    assert lines[model_line : model_line + 3] == [
        "  model accuracy    100.00% (2/2 directions right, next close vs last close)",
        '  always up         100.00% (2/2 right, "up" every time)',
        "  yesterday's move  50.00% (1/2 right, the next close moves like the last one)",
    ]
    assert "fill basis" not in text and lines[1] == ""
    assert "-$1,234.50" in format_report(
        {**report, "trading": {**report["trading"], "realized_pnl": -1234.5}}
    )
    for fragment in ("+3.00%", "+15.00%", "+1.00%", "$103,000.00", "buy rate", "50.00%", "orders fill"):
        assert fragment in text, fragment


@given(st.lists(st.floats(min_value=1.0, max_value=1e6), min_size=2, max_size=40))
def test_equity_figures_invariants(values):
    curve = [(None, values[0])] + [(date(2020, 1, 1 + i % 28), v) for i, v in enumerate(values[1:])]
    got = equity_figures(curve)
    assert 0.0 <= got["max_drawdown"] < 1.0
    assert got["low"]["equity"] <= got["final_equity"] <= got["high"]["equity"]
    assert math.isclose(1 + got["total_return"], values[-1] / values[0], rel_tol=1e-9)


@given(
    st.dictionaries(
        st.sampled_from("ABCD"), st.tuples(st.floats(0.01, 1e4), st.floats(0.01, 1e4)), min_size=1
    )
)
def test_buy_and_hold_is_the_mean_of_single_returns(pairs):
    prices = {s: [(D("2019-06-03"), a), (D("2019-06-07"), b)] for s, (a, b) in pairs.items()}
    singles = [buy_and_hold_return({s: p}, D("2019-06-03"), D("2019-06-07")) for s, p in prices.items()]
    assert buy_and_hold_return(prices, D("2019-06-03"), D("2019-06-07")) == pytest.approx(
        sum(singles) / len(singles)
    )


def test_fill_basis_in_the_report_and_the_header():
    kwargs = {
        "first_day": D("2019-06-04"),
        "last_day": D("2019-06-07"),
        "entry_day": D("2019-06-03"),
        "curve": [(None, 100_000.0), (D("2019-06-04"), 100_500.0)],
        "trades": [],
        "predictions": [],
        "closes": {"A": SERIES},
        "adj_closes": {"A": SERIES},
        "index_closes": None,
        "index_symbol": "^AXJO",
    }
    basis = "the day's open plus slippage (daily bars only)"
    report = build_report(**kwargs, basis=basis)
    assert report["basis"] == basis
    lines = format_report(report).splitlines()
    assert lines[0].startswith("Replay 2019-06-04 .. 2019-06-07")
    assert lines[1] == "  fill basis        the day's open plus slippage (daily bars only)"
    assert lines[2] == ""
    assert report["model"]["always_up"] == {"correct": 0, "accuracy": None}
    assert "  always up         n/a (0/0 right" in format_report(report)
    without = format_report(build_report(**kwargs))
    assert "fill basis" not in without and without.splitlines()[1] == ""
