"""Fills at the price of the moment: market orders against a quote, gap-aware stop and take-profit.

Pure, Decimal money as in portfolio.py (inputs may be JSON numbers; they go through to_decimal
so 0.1 stays 0.1). Positions are long-only, so an exit is always a sale.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from services.domain.portfolio import Action, fill_price, to_decimal, to_price
from services.domain.risk import ExitReason, RiskRules

Number = Decimal | float | int | str


class FillBasis(StrEnum):
    """Which price a market order filled at (recorded with the fill)."""

    ASK = "ask"
    BID = "bid"
    PRICE_PLUS_SLIPPAGE = "price+slippage"
    PRICE_MINUS_SLIPPAGE = "price-slippage"


class ExitBasis(StrEnum):
    """Which price an exit filled at."""

    OPEN = "open"  # the bar opened through the level (a gap): the open is the first price there was
    LEVEL = "level"  # the bar traded through the level: the resting order fills at it
    QUOTE = "quote"  # a quote at or through the level: the market is already there


@dataclass(frozen=True, slots=True)
class ExitFill:
    reason: ExitReason
    price: Decimal
    basis: ExitBasis

    def as_dict(self) -> dict:
        return {"reason": str(self.reason), "price": float(self.price), "basis": str(self.basis)}


def _optional(value: Number | None) -> Decimal | None:
    return None if value is None else to_decimal(value)


def market_fill_price(
    action: Action,
    quote_price: Number,
    bid: Number | None,
    ask: Number | None,
    slippage_bps: Number,
) -> tuple[Decimal, FillBasis]:
    """(price, basis) for a market order: a BUY pays the ask, a SELL gets the bid.

    The book is used only when both sides are known and sane (0 < bid <= ask): a one-sided or
    crossed book says nothing reliable about where an order would fill, so then the quote's
    price moves against the trader by `slippage_bps`, as daily fills always have.
    """
    price, low, high = to_decimal(quote_price), _optional(bid), _optional(ask)
    if low is not None and high is not None and 0 < low <= high:
        return (to_price(high), FillBasis.ASK) if action is Action.BUY else (to_price(low), FillBasis.BID)
    basis = FillBasis.PRICE_PLUS_SLIPPAGE if action is Action.BUY else FillBasis.PRICE_MINUS_SLIPPAGE
    return fill_price(price, action, to_decimal(slippage_bps)), basis


def exit_levels(avg_cost: Number, rules: RiskRules) -> tuple[Decimal, Decimal]:
    """(stop, take-profit) for a long position, the levels risk.exit_reason triggers at."""
    cost = to_decimal(avg_cost)
    return cost * (1 - rules.stop_loss_fraction), cost * (1 + rules.take_profit_fraction)


def _check_levels(stop: Decimal | None, take_profit: Decimal | None) -> None:
    if stop is not None and take_profit is not None and stop >= take_profit:
        raise ValueError(f"stop level {stop} must be below the take-profit level {take_profit}")


def bar_exit_fill(
    stop_level: Number | None, take_profit_level: Number | None, open_: Number, high: Number, low: Number
) -> ExitFill | None:
    """The exit a long position takes during one bar (intraday or daily), or None.

    A bar that opens at or through a level fills at the open: the market gapped there, the
    level's price never traded. A bar that trades through a level fills at the level. When one
    bar touches both levels without a gap, the bar alone cannot tell which came first, so the
    stop is assumed to have filled first: the conservative reading (the worse price for the
    book), so a replay never books a profit the market may not have given.
    """
    stop, take_profit = _optional(stop_level), _optional(take_profit_level)
    _check_levels(stop, take_profit)
    first, top, bottom = to_decimal(open_), to_decimal(high), to_decimal(low)
    if not bottom <= first <= top:
        raise ValueError(f"inconsistent bar: open {first} outside low {bottom}..high {top}")
    if stop is not None and first <= stop:
        return ExitFill(ExitReason.STOP_LOSS, to_price(first), ExitBasis.OPEN)
    if take_profit is not None and first >= take_profit:
        return ExitFill(ExitReason.TAKE_PROFIT, to_price(first), ExitBasis.OPEN)
    if stop is not None and bottom <= stop:
        return ExitFill(ExitReason.STOP_LOSS, to_price(stop), ExitBasis.LEVEL)
    if take_profit is not None and top >= take_profit:
        return ExitFill(ExitReason.TAKE_PROFIT, to_price(take_profit), ExitBasis.LEVEL)
    return None


def quote_exit_fill(
    stop_level: Number | None, take_profit_level: Number | None, price: Number
) -> ExitFill | None:
    """The exit a long position takes on a single quote (on each new quote, or on a timer), or None.

    A quote is one price, not a range: nothing is known of the path since the previous check.
    When it is at or through a level, the market is already at the quote, so the exit fills at
    the quote's price: exactly the level when the quote touches it, worse than the stop (or
    better than the take-profit) when the price has gapped through it between two checks.
    """
    stop, take_profit = _optional(stop_level), _optional(take_profit_level)
    _check_levels(stop, take_profit)
    now_price = to_decimal(price)
    if not now_price > 0:
        raise ValueError(f"price must be positive, got {now_price}")
    if stop is not None and now_price <= stop:
        return ExitFill(ExitReason.STOP_LOSS, to_price(now_price), ExitBasis.QUOTE)
    if take_profit is not None and now_price >= take_profit:
        return ExitFill(ExitReason.TAKE_PROFIT, to_price(now_price), ExitBasis.QUOTE)
    return None
