"""Trading performance metrics: pure functions over trade P&Ls and equity curves.

Metrics are ratios, so they are floats; inputs may be Decimal or float. Where a metric is
undefined (no trades, no losses, a flat curve) the answer is None, never an invented number.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from decimal import Decimal

Number = float | int | Decimal


def total_return(start_equity: Number, end_equity: Number) -> float:
    """Fractional change, e.g. 0.05 for +5%."""
    start = float(start_equity)
    if start <= 0:
        raise ValueError(f"start equity must be positive, got {start_equity}")
    return float(end_equity) / start - 1.0


def daily_returns(equity_curve: Sequence[Number]) -> list[float]:
    """Simple returns between consecutive closes of the equity curve (one fewer than points)."""
    values = [float(v) for v in equity_curve]
    if any(v <= 0 for v in values[:-1]):
        raise ValueError("equity must stay positive to compute returns")
    return [b / a - 1.0 for a, b in itertools.pairwise(values)]


def win_rate(pnls: Sequence[Number]) -> float | None:
    """Winning trades / all closed trades; a break-even trade counts as taken but not won."""
    if not pnls:
        return None
    return sum(1 for p in pnls if p > 0) / len(pnls)


def average_win(pnls: Sequence[Number]) -> float | None:
    wins = [float(p) for p in pnls if p > 0]
    return statistics.fmean(wins) if wins else None


def average_loss(pnls: Sequence[Number]) -> float | None:
    """Mean of the losing trades, as a negative number."""
    losses = [float(p) for p in pnls if p < 0]
    return statistics.fmean(losses) if losses else None


def profit_factor(pnls: Sequence[Number]) -> float | None:
    """Gross profit / gross loss; None without losses (it would be infinite, which JSON cannot say)."""
    gross_loss = -sum(float(p) for p in pnls if p < 0)
    if gross_loss == 0:
        return None
    return sum(float(p) for p in pnls if p > 0) / gross_loss


def sharpe_ratio(
    returns: Sequence[Number], periods_per_year: int = 252, risk_free: float = 0.0
) -> float | None:
    """Annualised Sharpe ratio of per-period returns (sample stdev); `risk_free` is annual."""
    if len(returns) < 2:
        return None
    excess = [float(r) - risk_free / periods_per_year for r in returns]
    spread = statistics.stdev(excess)
    if spread == 0:
        return None
    return statistics.fmean(excess) / spread * math.sqrt(periods_per_year)


def max_drawdown(equity_curve: Sequence[Number]) -> float:
    """Largest peak-to-trough fall as a positive fraction of the peak (0.0 when it never falls)."""
    peak = -math.inf
    worst = 0.0
    for point in equity_curve:
        value = float(point)
        peak = max(peak, value)
        if peak > 0:
            worst = max(worst, (peak - value) / peak)
    return worst


def summarise_trades(pnls: Sequence[Number]) -> dict[str, float | int | None]:
    """Closed-trade statistics in one dict (the shape reports and RPC results use)."""
    return {
        "number_of_trades": len(pnls),
        "winning_trades": sum(1 for p in pnls if p > 0),
        "losing_trades": sum(1 for p in pnls if p < 0),
        "win_rate": win_rate(pnls),
        "average_win": average_win(pnls),
        "average_loss": average_loss(pnls),
        "profit_factor": profit_factor(pnls),
        "net_pnl": sum(float(p) for p in pnls),
    }


def equity_report(
    equity_curve: Sequence[Number], periods_per_year: int = 252
) -> dict[str, float | int | None]:
    """Return, Sharpe and drawdown of a curve of daily closes whose first point is the base."""
    if not equity_curve:
        raise ValueError("the equity curve needs at least its starting point")
    return {
        "total_return": total_return(equity_curve[0], equity_curve[-1]),
        "sharpe_ratio": sharpe_ratio(daily_returns(equity_curve), periods_per_year),
        "max_drawdown": max_drawdown(equity_curve),
        "trading_days": len(equity_curve) - 1,
    }
