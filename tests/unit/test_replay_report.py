"""The replay report's figures: tables of known answers, plus invariants with hypothesis."""

from __future__ import annotations

import math
from datetime import date

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
    model_accuracy,
    price_on_or_before,
    realised_direction,
    signal_counts,
    trade_figures,
)

D = date.fromisoformat
SERIES = [(D("2019-06-03"), 10.0), (D("2019-06-04"), 11.0), (D("2019-06-06"), 9.0), (D("2019-06-07"), 12.0)]


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
    got = model_accuracy(predictions, {"A": SERIES})
    assert (got["scored"], got["correct"]) == (scored, correct)
    assert got["accuracy"] == (correct / scored if scored else None)


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
        adj_closes=closes,
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
    }  # B has no 06-04 row: next is 06-07 up
    text = format_report(report, notes=["orders fill at the previous close"])
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
