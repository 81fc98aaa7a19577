"""The replay report: pure figures from a replay's equity closes, trades, predictions and prices.

No I/O and no clock: the replay driver (services/management/replay.py) gathers the inputs from
the suite and the CSV files, this module turns them into numbers and text. Return, Sharpe and
drawdown come from services.domain.performance, the same functions paper-trading reports with,
so the two never disagree on a definition.

Definitions (stated in the printed report too):
- equity curve: the starting capital, then the portfolio's equity at each replayed day's close;
- buy-and-hold: equal money in each symbol (or the index) at the close before the first replayed
  day, the price the replay's first orders fill at, held to the last day's close; no costs;
- win rate: closed (SELL) trades with a positive net P&L (after both commissions);
- buy rate: the share of BUY among the predictions the trading steps acted on;
- model accuracy: the ensemble's direction against the next close's adj-close move (the
  models' training target), for every step prediction with a direction whose bar date is in the
  symbol's adj-close series with a close before it and one after it (the next close);
- baselines, scored on exactly those predictions (one `scored` count for all three, so a
  prediction on a series' first date, which the yesterday's-move baseline cannot score, is left
  out of all three): always up ("up" every time) and yesterday's move (the next close moves like
  the last one: "up" when the close on the bar date is strictly above the close before it, else
  "down"), the two naive calls train_models.py scores the models against (always_up,
  yesterday_direction).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from services.domain import performance

Number = float | int | Decimal
PriceSeries = Sequence[tuple[date, float]]  # (date, price), oldest first


@dataclass(frozen=True, slots=True)
class ScoredPrediction:
    """One step prediction reduced to what accuracy needs."""

    symbol: str
    bar_date: date  # the last bar the prediction saw (its data's as_of date)
    signal: str  # BUY, HOLD, SELL
    direction: str | None  # the ensemble's "up"/"down"; None when the model was missing


def price_on_or_before(series: PriceSeries, day: date) -> float | None:
    """The latest price dated `day` or earlier (a holiday or gap falls back to the day before)."""
    dates = [d for d, _ in series]
    index = bisect.bisect_right(dates, day) - 1
    return series[index][1] if index >= 0 else None


def buy_and_hold_return(prices: Mapping[str, PriceSeries], entry_day: date, exit_day: date) -> float | None:
    """Equal-weight return from the close of `entry_day` to the close of `exit_day`.

    Each series contributes price(exit)/price(entry) - 1 with equal weight (equal money at entry);
    a series without a price on or before either day is left out; None when none has both.
    """
    returns = []
    for series in prices.values():
        start, end = price_on_or_before(series, entry_day), price_on_or_before(series, exit_day)
        if start is not None and end is not None and start > 0:
            returns.append(end / start - 1.0)
    return sum(returns) / len(returns) if returns else None


def realised_direction(series: PriceSeries, bar_date: date) -> str | None:
    """Up when the first close after `bar_date` is above the close on it ("up"), else "down"; None
    when either is missing (the last day of the data, or a date not in it)."""
    dates = [d for d, _ in series]
    index = bisect.bisect_left(dates, bar_date)
    if index >= len(dates) or dates[index] != bar_date or index + 1 >= len(dates):
        return None
    return "up" if series[index + 1][1] > series[index][1] else "down"


def last_direction(series: PriceSeries, bar_date: date) -> str | None:
    """The move into `bar_date`: "up" when its close is strictly above the close before it, else
    "down"; None when `bar_date` is not a date of the series or is its first."""
    dates = [d for d, _ in series]
    index = bisect.bisect_left(dates, bar_date)
    if index >= len(dates) or dates[index] != bar_date or index == 0:
        return None
    return "up" if series[index][1] > series[index - 1][1] else "down"


def model_accuracy(predictions: Sequence[ScoredPrediction], adj_closes: Mapping[str, PriceSeries]) -> dict:
    """How often the ensemble's direction, "up" every time and the last move's direction matched the
    next close's move, all three over the same predictions: those with a direction, a next close
    and a close before the bar date (the last needs it)."""
    scored = correct = up_correct = last_correct = 0
    for p in predictions:
        if p.direction not in ("up", "down"):
            continue
        series = adj_closes.get(p.symbol, ())
        actual, last = realised_direction(series, p.bar_date), last_direction(series, p.bar_date)
        if actual is None or last is None:
            continue
        scored += 1
        correct += actual == p.direction
        up_correct += actual == "up"
        last_correct += actual == last
    share = lambda hits: hits / scored if scored else None  # noqa: E731
    return {
        "scored": scored,
        "correct": correct,
        "accuracy": share(correct),
        "always_up": {"correct": up_correct, "accuracy": share(up_correct)},
        "yesterday_direction": {"correct": last_correct, "accuracy": share(last_correct)},
    }


def signal_counts(predictions: Sequence[ScoredPrediction]) -> dict:
    counts = {"BUY": 0, "HOLD": 0, "SELL": 0}
    for p in predictions:
        counts[p.signal] = counts.get(p.signal, 0) + 1
    total = sum(counts.values())
    return {"counts": counts, "total": total, "buy_rate": counts["BUY"] / total if total else None}


def trade_figures(trades: Sequence[Mapping]) -> dict:
    """Counts, costs and closed-trade statistics from the trade log (paper-trading's trade dicts)."""
    sells = [t for t in trades if t["action"] == "SELL"]
    money = lambda key: float(sum((Decimal(str(t[key])) for t in trades), Decimal(0)))  # noqa: E731
    summary = performance.summarise_trades([Decimal(str(t["net_pnl"])) for t in sells])
    return {
        "trades": len(trades),
        "buys": len(trades) - len(sells),
        "sells": len(sells),
        "commissions": money("commission"),
        "slippage": money("slippage"),
        "gross_traded": money("gross"),
        "realized_pnl": money("realized_pnl"),
        "closed_trades": summary["number_of_trades"],
        "winning_trades": summary["winning_trades"],
        "losing_trades": summary["losing_trades"],
        "win_rate": summary["win_rate"],
        "profit_factor": summary["profit_factor"],
        "average_win": summary["average_win"],
        "average_loss": summary["average_loss"],
        "linked_to_predictions": sum(1 for t in trades if t.get("prediction_id")),
    }


def equity_figures(curve: Sequence[tuple[date | None, Number]]) -> dict:
    """Return, Sharpe, drawdown and the curve's low and high; the first point is the capital."""
    values = [v for _, v in curve]
    report = performance.equity_report(values)
    days = curve[1:] or curve
    low = min(days, key=lambda point: float(point[1]))
    high = max(days, key=lambda point: float(point[1]))
    return {
        **report,
        "starting_equity": float(values[0]),
        "final_equity": float(values[-1]),
        "low": {"date": _iso(low[0]), "equity": float(low[1])},
        "high": {"date": _iso(high[0]), "equity": float(high[1])},
    }


def build_report(
    *,
    first_day: date,
    last_day: date,
    entry_day: date,
    curve: Sequence[tuple[date | None, Number]],
    trades: Sequence[Mapping],
    predictions: Sequence[ScoredPrediction],
    closes: Mapping[str, PriceSeries],
    adj_closes: Mapping[str, PriceSeries],
    index_closes: PriceSeries | None,
    index_symbol: str,
    basis: str | None = None,
    signal_predictions: Sequence[ScoredPrediction] | None = None,
) -> dict:
    """Every figure of the replay report, as plain data (JSON-ready).

    `basis` is the caller's one-line description of the prices the replay filled and exited at;
    it is kept as report["basis"] (None when not given) and printed in the header when given.
    `predictions` are scored for accuracy (one per symbol and day: a day's predictions all see
    the same daily bars); the signal counts are over `signal_predictions` when given (every
    prediction the sessions acted on, e.g. each intraday step's), else over `predictions`.
    """
    equity = equity_figures(curve)
    universe = buy_and_hold_return(closes, entry_day, last_day)
    index = buy_and_hold_return({index_symbol: index_closes}, entry_day, last_day) if index_closes else None
    return {
        "period": {
            "from": first_day.isoformat(),
            "to": last_day.isoformat(),
            "entry_close": entry_day.isoformat(),
        },
        "equity": equity,
        "benchmarks": {
            "universe_buy_and_hold": universe,
            "index_buy_and_hold": index,
            "index_symbol": index_symbol,
            "excess_vs_universe": _minus(equity["total_return"], universe),
            "excess_vs_index": _minus(equity["total_return"], index),
        },
        "trading": trade_figures(trades),
        "signals": signal_counts(predictions if signal_predictions is None else signal_predictions),
        "model": model_accuracy(predictions, adj_closes),
        "basis": basis,
    }


def format_report(report: dict, notes: Sequence[str] = ()) -> str:
    """The report as the text the replay command prints."""
    eq, bench, tr = report["equity"], report["benchmarks"], report["trading"]
    sig, model, period = report["signals"], report["model"], report["period"]
    lines = [
        f"Replay {period['from']} .. {period['to']} ({eq['trading_days']} trading days)",
        *([f"  fill basis        {report['basis']}"] if report.get("basis") else []),
        "",
        "Equity curve",
        f"  start {_money(eq['starting_equity'])}   end {_money(eq['final_equity'])}"
        f"   low {_money(eq['low']['equity'])} ({eq['low']['date']})"
        f"   high {_money(eq['high']['equity'])} ({eq['high']['date']})",
        f"  total return      {_pct(eq['total_return'])}",
        f"  buy-and-hold      {_pct(bench['universe_buy_and_hold'])} universe (equal weight)"
        f"   {_pct(bench['index_buy_and_hold'])} index {bench['index_symbol']}",
        f"  excess return     {_pct(bench['excess_vs_universe'])} vs universe"
        f"   {_pct(bench['excess_vs_index'])} vs index",
        f"  Sharpe ratio      {_num(eq['sharpe_ratio'])} (daily closes, annualised, risk-free 0)",
        f"  max drawdown      {_share(eq['max_drawdown'])}",
        "",
        "Trading",
        f"  trades            {tr['trades']} ({tr['buys']} buys, {tr['sells']} sells;"
        f" {tr['linked_to_predictions']} from predictions)",
        f"  win rate          {_share(tr['win_rate'])} of {tr['closed_trades']} closed trades"
        f" ({tr['winning_trades']} won, {tr['losing_trades']} lost)",
        f"  profit factor     {_num(tr['profit_factor'])}",
        f"  realised P&L      {_money(tr['realized_pnl'])} before commissions",
        f"  commissions       {_money(tr['commissions'])}   slippage {_money(tr['slippage'])}",
        "",
        "Signals and model",
        f"  predictions       {sig['total']} (BUY {sig['counts']['BUY']}, HOLD {sig['counts']['HOLD']},"
        f" SELL {sig['counts']['SELL']})",
        f"  buy rate          {_share(sig['buy_rate'])}",
        f"  model accuracy    {_share(model['accuracy'])} ({model['correct']}/{model['scored']}"
        " directions right, next close vs last close)",
    ]
    if "always_up" in model:  # a report built before the baselines has none
        up, last = model["always_up"], model["yesterday_direction"]
        lines += [
            f"  always up         {_share(up['accuracy'])} ({up['correct']}/{model['scored']} right,"
            ' "up" every time)',
            f"  yesterday's move  {_share(last['accuracy'])} ({last['correct']}/{model['scored']} right,"
            " the next close moves like the last one)",
        ]
    if "run" in report:
        run = report["run"]
        lines += [
            "",
            f"Run: {run['seconds']:.1f} s in all; the {eq['trading_days']} days took {run['day_loop_seconds']:.1f} s"
            f" ({run['days_per_minute']:.1f} trading days per minute)",
        ]
    if notes:
        lines += ["", "Notes", *(f"  - {n}" for n in notes)]
    return "\n".join(lines)


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.2f}%"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _money(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"
