"""Performance metrics against tables of answers worked out by hand."""

import math
from decimal import Decimal as D

import pytest

from services.domain.performance import (
    average_loss,
    average_win,
    daily_returns,
    equity_report,
    max_drawdown,
    profit_factor,
    sharpe_ratio,
    summarise_trades,
    total_return,
    win_rate,
)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(100000, 105000, 0.05), (100000, 90000, -0.10), (D("100000"), D("100000"), 0.0)],
)
def test_total_return(start, end, expected):
    assert total_return(start, end) == pytest.approx(expected)


def test_total_return_needs_positive_start():
    with pytest.raises(ValueError):
        total_return(0, 10)


@pytest.mark.parametrize(
    ("curve", "expected"),
    [([100, 110, 99], [0.1, -0.1]), ([100], []), ([D("200"), D("250")], [0.25])],
)
def test_daily_returns(curve, expected):
    assert daily_returns(curve) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("pnls", "expected"),
    [
        ([100, -50, 0, 50], 0.5),  # a break-even trade is taken but not won
        ([-1, -2], 0.0),
        ([5], 1.0),
        ([], None),  # no trades: undefined, not 0
    ],
)
def test_win_rate(pnls, expected):
    assert win_rate(pnls) == expected


@pytest.mark.parametrize(
    ("pnls", "avg_win", "avg_loss"),
    [
        ([100, -50, 50], 75.0, -50.0),
        ([-50, -150, 10], 10.0, -100.0),
        ([D("10.5"), D("-0.5")], 10.5, -0.5),
        ([], None, None),
    ],
)
def test_average_win_and_loss(pnls, avg_win, avg_loss):
    assert (average_win(pnls), average_loss(pnls)) == (avg_win, avg_loss)


@pytest.mark.parametrize(
    ("pnls", "expected"),
    [
        ([100, -50, 50], 3.0),
        ([-10], 0.0),  # losses only
        ([100], None),  # no losses: infinite, reported as undefined
        ([], None),
    ],
)
def test_profit_factor(pnls, expected):
    assert profit_factor(pnls) == expected


@pytest.mark.parametrize(
    ("returns", "kwargs", "expected"),
    [
        # mean 0.005; deviations ±0.005, ±0.015 -> sample variance 500e-6 / 3.
        ([0.01, -0.01, 0.02, 0.0], {}, 0.005 / math.sqrt(500e-6 / 3) * math.sqrt(252)),
        # Same numbers, risk-free 2.52%/yr = 0.0001/day lowers the mean only.
        ([0.01, -0.01, 0.02, 0.0], {"risk_free": 0.0252}, 0.0049 / math.sqrt(500e-6 / 3) * math.sqrt(252)),
        # Weekly periods: mean 0.01, sample stdev sqrt(2 * 0.01**2 / 1) = 0.01 * sqrt(2).
        ([0.0, 0.02], {"periods_per_year": 52}, math.sqrt(52) / math.sqrt(2)),
        ([0.01, 0.01, 0.01], {}, None),  # no variation: undefined
        ([0.01], {}, None),  # one return cannot have a spread
        ([], {}, None),
    ],
)
def test_sharpe_ratio(returns, kwargs, expected):
    result = sharpe_ratio(returns, **kwargs)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


@pytest.mark.parametrize(
    ("curve", "expected"),
    [
        ([100, 120, 90, 130, 65], 0.5),  # the later, deeper fall from the new peak wins
        ([100, 80, 90, 70], 0.3),
        ([100, 110, 120], 0.0),  # only rises
        ([100], 0.0),
        ([], 0.0),
        ([D("100000"), D("95000"), D("99000")], 0.05),
    ],
)
def test_max_drawdown(curve, expected):
    assert max_drawdown(curve) == pytest.approx(expected)


def test_summarise_trades():
    summary = summarise_trades([100, -50, 50, 0])
    assert summary == {
        "number_of_trades": 4,
        "winning_trades": 2,
        "losing_trades": 1,
        "win_rate": 0.5,
        "average_win": 75.0,
        "average_loss": -50.0,
        "profit_factor": 3.0,
        "net_pnl": 100.0,
    }


def test_equity_report():
    curve = [100_000, 101_000, 99_990, 102_000]
    report = equity_report(curve)
    returns = [0.01, 99_990 / 101_000 - 1, 102_000 / 99_990 - 1]
    assert report["total_return"] == pytest.approx(0.02)
    assert report["max_drawdown"] == pytest.approx(1010 / 101_000)  # 101,000 -> 99,990
    assert report["sharpe_ratio"] == pytest.approx(sharpe_ratio(returns))
    assert report["trading_days"] == 3


def test_equity_report_of_a_single_point_has_no_sharpe():
    assert equity_report([D("100000")]) == {
        "total_return": 0.0,
        "sharpe_ratio": None,
        "max_drawdown": 0.0,
        "trading_days": 0,
    }
    with pytest.raises(ValueError):
        equity_report([])
