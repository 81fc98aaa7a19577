"""The one risk gate every paper order passes, plus sizing and exit rules.

Pure: the clock arrives as `now`, the market-hours rule as an injected callable. A rejection
names the rule, the limit and how far the order went past it, so an operator can act on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum

from services.domain.portfolio import (
    ZERO,
    Action,
    Portfolio,
    Position,
    to_money,
    trade_value,
    value,
)


class Rule(StrEnum):
    MARKET_HOURS = "market_hours"
    QUANTITY = "quantity"
    POSITION_SIZE = "position_size"
    MAX_POSITION = "max_position"
    MAX_EXPOSURE = "max_exposure"
    MAX_DAILY_LOSS = "max_daily_loss"
    INSUFFICIENT_CASH = "insufficient_cash"
    NO_SHORT_SELLING = "no_short_selling"


class ExitReason(StrEnum):
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"


@dataclass(frozen=True, slots=True)
class RiskRules:
    position_size_fraction: Decimal = Decimal("0.05")  # of portfolio value, per trade
    max_position_value: Decimal = Decimal("10000")  # per symbol, after the trade
    max_exposure_fraction: Decimal = Decimal("0.80")  # positions value / portfolio value
    max_daily_loss: Decimal = Decimal("5000")  # halts new buys until the next trading day
    commission_fixed: Decimal = Decimal("10")
    commission_rate: Decimal = Decimal("0.001")  # of trade value
    stop_loss_fraction: Decimal = Decimal("0.05")
    take_profit_fraction: Decimal = Decimal("0.10")

    def __post_init__(self) -> None:
        for name in ("position_size_fraction", "max_exposure_fraction", "stop_loss_fraction"):
            fraction = getattr(self, name)
            if not ZERO < fraction <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {fraction}")
        for name in ("max_position_value", "max_daily_loss", "take_profit_fraction"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.commission_fixed < 0 or self.commission_rate < 0:
            raise ValueError("commission must not be negative")

    def commission_formula(self) -> str:
        return f"${self.commission_fixed} + {_pct(self.commission_rate)} of trade value"


@dataclass(frozen=True, slots=True)
class Rejection:
    rule: Rule
    detail: str
    limit: Decimal | None = None
    attempted: Decimal | None = None

    @property
    def excess(self) -> Decimal | None:
        if self.limit is None or self.attempted is None:
            return None
        return self.attempted - self.limit

    def as_dict(self) -> dict[str, object]:
        return {
            "rule": str(self.rule),
            "detail": self.detail,
            "limit": _num(self.limit),
            "attempted": _num(self.attempted),
            "excess": _num(self.excess),
        }


@dataclass(frozen=True, slots=True)
class Order:
    symbol: str
    action: Action
    quantity: int
    price: Decimal  # the price it would fill at (slippage included)


@dataclass(frozen=True, slots=True)
class TradingDay:
    """Today's loss so far and whether the daily-loss halt has tripped (it stays until tomorrow)."""

    day_pnl: Decimal
    halted: bool = False


def commission(gross: Decimal, rules: RiskRules) -> Decimal:
    return to_money(rules.commission_fixed + rules.commission_rate * gross)


def daily_loss_hit(day_pnl: Decimal, rules: RiskRules) -> bool:
    """Losing exactly the maximum counts as hitting it: the limit is what may be lost, no more."""
    return day_pnl <= -rules.max_daily_loss


def check_order(
    order: Order,
    portfolio: Portfolio,
    marks: Mapping[str, Decimal],
    rules: RiskRules,
    *,
    day: TradingDay,
    now: datetime,
    is_market_open: Callable[[datetime], bool],
) -> Rejection | None:
    """None when the order may fill; otherwise the first rule it breaks."""
    if not is_market_open(now):
        return Rejection(Rule.MARKET_HOURS, f"the market is closed at {now.isoformat()}")
    if not isinstance(order.quantity, int) or isinstance(order.quantity, bool) or order.quantity <= 0:
        return Rejection(Rule.QUANTITY, f"quantity must be a positive whole number, got {order.quantity!r}")
    if order.action is Action.SELL:
        return _check_sell(order, portfolio, rules)
    return _check_buy(order, portfolio, {**marks, order.symbol: order.price}, rules, day)


def _check_sell(order: Order, portfolio: Portfolio, rules: RiskRules) -> Rejection | None:
    held = portfolio.quantity(order.symbol)
    if order.quantity > held:
        return Rejection(
            Rule.NO_SHORT_SELLING,
            f"selling {order.quantity} {order.symbol} but {held} held; short selling is not allowed",
            Decimal(held),
            Decimal(order.quantity),
        )
    gross = trade_value(order.quantity, order.price)
    cash_after = portfolio.cash + gross - commission(gross, rules)
    if cash_after < 0:
        # A tiny sale whose commission exceeds its proceeds must not drive cash below zero.
        return Rejection(
            Rule.INSUFFICIENT_CASH,
            f"the commission exceeds proceeds and cash by ${-cash_after}",
            ZERO,
            -cash_after,
        )
    return None


def _check_buy(
    order: Order, portfolio: Portfolio, marks: Mapping[str, Decimal], rules: RiskRules, day: TradingDay
) -> Rejection | None:
    # Cash before exposure: with a 100% exposure cap the two coincide and cash is the clearer reason.
    for check in (_daily_loss, _position_size, _max_position, _cash, _max_exposure):
        rejection = check(order, portfolio, marks, rules, day)
        if rejection is not None:
            return rejection
    return None


def _daily_loss(
    order: Order, portfolio: Portfolio, marks: Mapping[str, Decimal], rules: RiskRules, day: TradingDay
) -> Rejection | None:
    if not (day.halted or daily_loss_hit(day.day_pnl, rules)):
        return None
    loss = max(-day.day_pnl, ZERO)
    return Rejection(
        Rule.MAX_DAILY_LOSS,
        f"new buys are halted until the next trading day: today's loss ${loss} reached the "
        f"${rules.max_daily_loss} limit",
        rules.max_daily_loss,
        loss,
    )


def _position_size(
    order: Order, portfolio: Portfolio, marks: Mapping[str, Decimal], rules: RiskRules, day: TradingDay
) -> Rejection | None:
    gross = trade_value(order.quantity, order.price)
    limit = to_money(rules.position_size_fraction * value(portfolio, marks).equity)
    if gross <= limit:
        return None
    return Rejection(
        Rule.POSITION_SIZE,
        f"trade value ${gross} exceeds {_pct(rules.position_size_fraction)} of portfolio value "
        f"(${limit}) by ${gross - limit}",
        limit,
        gross,
    )


def _max_position(
    order: Order, portfolio: Portfolio, marks: Mapping[str, Decimal], rules: RiskRules, day: TradingDay
) -> Rejection | None:
    after = trade_value(portfolio.quantity(order.symbol) + order.quantity, order.price)
    if after <= rules.max_position_value:
        return None
    return Rejection(
        Rule.MAX_POSITION,
        f"{order.symbol} position would be worth ${after}, over the ${rules.max_position_value} "
        f"per-symbol limit by ${after - rules.max_position_value}",
        rules.max_position_value,
        after,
    )


def _max_exposure(
    order: Order, portfolio: Portfolio, marks: Mapping[str, Decimal], rules: RiskRules, day: TradingDay
) -> Rejection | None:
    before = value(portfolio, marks)
    gross = trade_value(order.quantity, order.price)
    # Buying moves cash into shares; only the commission leaves the portfolio.
    positions_after = before.positions_value + gross
    limit = to_money(rules.max_exposure_fraction * (before.equity - commission(gross, rules)))
    if positions_after <= limit:
        return None
    return Rejection(
        Rule.MAX_EXPOSURE,
        f"positions would be worth ${positions_after}, over {_pct(rules.max_exposure_fraction)} of "
        f"portfolio value (${limit}) by ${positions_after - limit}",
        limit,
        positions_after,
    )


def _cash(
    order: Order, portfolio: Portfolio, marks: Mapping[str, Decimal], rules: RiskRules, day: TradingDay
) -> Rejection | None:
    gross = trade_value(order.quantity, order.price)
    needed = gross + commission(gross, rules)
    if needed <= portfolio.cash:
        return None
    return Rejection(
        Rule.INSUFFICIENT_CASH,
        f"the trade needs ${needed} including commission, ${needed - portfolio.cash} more than the cash held",
        portfolio.cash,
        needed,
    )


def size_buy(
    portfolio: Portfolio,
    symbol: str,
    price: Decimal,
    marks: Mapping[str, Decimal],
    rules: RiskRules,
) -> int:
    """The most whole shares a signal-driven buy may take under the sizing rules (0 if none).

    Starts from each rule solved for the quantity, then steps down past commission rounding.
    """
    if price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    marks = {**marks, symbol: price}
    before = value(portfolio, marks)
    rate = rules.commission_rate
    caps = (
        rules.position_size_fraction * before.equity / price,
        (rules.max_position_value - trade_value(portfolio.quantity(symbol), price)) / price,
        (rules.max_exposure_fraction * (before.equity - rules.commission_fixed) - before.positions_value)
        / (price * (1 + rules.max_exposure_fraction * rate)),
        (portfolio.cash - rules.commission_fixed) / (price * (1 + rate)),
    )
    quantity = max(int(min(caps).to_integral_value(ROUND_FLOOR)), 0)
    calm_day = TradingDay(ZERO)
    while quantity > 0:
        order = Order(symbol, Action.BUY, quantity, price)
        if _check_buy(order, portfolio, marks, rules, calm_day) is None:
            break
        quantity -= 1
    return quantity


def exit_reason(position: Position, price: Decimal, rules: RiskRules) -> ExitReason | None:
    """Stop-loss / take-profit against the average cost; touching the level triggers it."""
    if price <= position.avg_cost * (1 - rules.stop_loss_fraction):
        return ExitReason.STOP_LOSS
    if price >= position.avg_cost * (1 + rules.take_profit_fraction):
        return ExitReason.TAKE_PROFIT
    return None


def _pct(fraction: Decimal) -> str:
    return f"{(fraction * 100).normalize():f}%"


def _num(amount: Decimal | None) -> float | None:
    return None if amount is None else float(amount)


def order_for_signal(
    signal: str,
    symbol: str,
    price: Decimal,
    portfolio: Portfolio,
    marks: Mapping[str, Decimal],
    rules: RiskRules,
) -> Order | None:
    """What a prediction asks for: BUY opens or adds as much as the rules allow, SELL closes
    the whole position, HOLD (or nothing to buy or sell) asks for nothing."""
    if signal == "BUY":
        quantity = size_buy(portfolio, symbol, price, marks, rules)
        return Order(symbol, Action.BUY, quantity, price) if quantity else None
    if signal == "SELL":
        held = portfolio.quantity(symbol)
        return Order(symbol, Action.SELL, held, price) if held else None
    if signal == "HOLD":
        return None
    raise ValueError(f"signal must be BUY, SELL or HOLD, got {signal!r}")
