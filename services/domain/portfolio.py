"""Paper portfolio: long positions in whole shares, cash, average cost and P&L.

Pure: no I/O, no clock reads. Money is Decimal, rounded to cents at every fill so the books add
up exactly: cash + cost of open positions == starting capital + realised P&L - commissions paid.
Realised P&L here is gross (proceeds minus the cost of the shares sold); commissions are kept
apart so the identity above holds without rounding drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from types import MappingProxyType

CENT = Decimal("0.01")
# ASX quotes go to 3 decimals below $2 (tick 0.001); one more digit keeps slippage visible.
PRICE_QUANTUM = Decimal("0.0001")
RATIO_QUANTUM = Decimal("0.000001")
ZERO = Decimal("0")


class PortfolioError(ValueError):
    """A fill that would break the books (negative cash, selling shares not held)."""


class Action(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


def to_decimal(value: Decimal | float | int | str) -> Decimal:
    """Decimal from a JSON number without binary-float noise (0.1 -> Decimal('0.1'))."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError("a bool is not a number here")
    result = Decimal(str(value))
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def to_money(value: Decimal | float | int | str) -> Decimal:
    return to_decimal(value).quantize(CENT, ROUND_HALF_UP)


def to_price(value: Decimal | float | int | str) -> Decimal:
    return to_decimal(value).quantize(PRICE_QUANTUM, ROUND_HALF_UP)


def trade_value(quantity: int, price: Decimal) -> Decimal:
    """Gross value of a fill, in cents."""
    return to_money(quantity * price)


def fill_price(quote: Decimal, action: Action, slippage_bps: Decimal) -> Decimal:
    """The price actually paid or received: slippage always works against the trader."""
    if quote <= 0:
        raise ValueError(f"quote must be positive, got {quote}")
    if slippage_bps < 0:
        raise ValueError(f"slippage must not be negative, got {slippage_bps}")
    factor = slippage_bps / Decimal(10_000)
    signed = factor if action is Action.BUY else -factor
    return to_price(quote * (1 + signed))


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    quantity: int
    cost_basis: Decimal  # what the shares held cost, commissions excluded
    open_commission: Decimal  # buy commissions not yet charged against a sale
    opened_at: datetime

    @property
    def avg_cost(self) -> Decimal:
        return to_price(self.cost_basis / self.quantity)

    def market_value(self, price: Decimal) -> Decimal:
        return trade_value(self.quantity, price)

    def unrealized_pnl(self, price: Decimal) -> Decimal:
        return self.market_value(price) - self.cost_basis


@dataclass(frozen=True, slots=True)
class Fill:
    symbol: str
    action: Action
    quantity: int
    price: Decimal
    commission: Decimal

    @property
    def gross(self) -> Decimal:
        return trade_value(self.quantity, self.price)


@dataclass(frozen=True, slots=True)
class FillResult:
    portfolio: Portfolio
    realized_pnl: Decimal  # gross, for sells; zero for buys
    net_pnl: Decimal  # realised minus this sale's and the sold shares' buy commissions


@dataclass(frozen=True, slots=True)
class Valuation:
    cash: Decimal
    positions_value: Decimal
    equity: Decimal
    unrealized_pnl: Decimal
    exposure: Decimal  # positions value / equity, 0..1 (can pass the cap through price moves)


@dataclass(frozen=True, slots=True)
class Portfolio:
    starting_capital: Decimal
    cash: Decimal
    positions: Mapping[str, Position]
    realized_pnl: Decimal = ZERO
    commissions_paid: Decimal = ZERO

    @classmethod
    def new(cls, starting_capital: Decimal) -> Portfolio:
        capital = to_money(starting_capital)
        if capital <= 0:
            raise ValueError(f"starting capital must be positive, got {capital}")
        return cls(capital, capital, MappingProxyType({}))

    def quantity(self, symbol: str) -> int:
        position = self.positions.get(symbol)
        return position.quantity if position else 0

    def cost_of_open_positions(self) -> Decimal:
        return sum((p.cost_basis for p in self.positions.values()), ZERO)

    def apply(self, fill: Fill, now: datetime) -> FillResult:
        if fill.quantity <= 0:
            raise PortfolioError(f"quantity must be a positive whole number, got {fill.quantity}")
        if fill.action is Action.BUY:
            return self._buy(fill, now)
        return self._sell(fill)

    def _buy(self, fill: Fill, now: datetime) -> FillResult:
        cash = self.cash - fill.gross - fill.commission
        if cash < 0:
            raise PortfolioError(f"buying {fill.quantity} {fill.symbol} needs {-cash} more cash")
        old = self.positions.get(fill.symbol)
        position = (
            Position(fill.symbol, fill.quantity, fill.gross, fill.commission, now)
            if old is None
            else replace(
                old,
                quantity=old.quantity + fill.quantity,
                cost_basis=old.cost_basis + fill.gross,
                open_commission=old.open_commission + fill.commission,
            )
        )
        book = replace(
            self,
            cash=cash,
            positions=_with(self.positions, fill.symbol, position),
            commissions_paid=self.commissions_paid + fill.commission,
        )
        return FillResult(book, ZERO, ZERO)

    def _sell(self, fill: Fill) -> FillResult:
        old = self.positions.get(fill.symbol)
        held = old.quantity if old else 0
        if old is None or fill.quantity > held:
            raise PortfolioError(f"cannot sell {fill.quantity} {fill.symbol}: {held} held (no short selling)")
        cash = self.cash + fill.gross - fill.commission
        if cash < 0:
            raise PortfolioError(f"selling {fill.quantity} {fill.symbol} leaves cash at {cash}")
        # Cost and buy commissions leave the position in proportion to the shares sold; the
        # remainder stays exact, so a full sale always removes exactly what was left.
        cost_removed = to_money(old.cost_basis * fill.quantity / held)
        buy_commission = to_money(old.open_commission * fill.quantity / held)
        remaining = held - fill.quantity
        positions = (
            _without(self.positions, fill.symbol)
            if remaining == 0
            else _with(
                self.positions,
                fill.symbol,
                replace(
                    old,
                    quantity=remaining,
                    cost_basis=old.cost_basis - cost_removed,
                    open_commission=old.open_commission - buy_commission,
                ),
            )
        )
        realized = fill.gross - cost_removed
        book = replace(
            self,
            cash=cash,
            positions=positions,
            realized_pnl=self.realized_pnl + realized,
            commissions_paid=self.commissions_paid + fill.commission,
        )
        return FillResult(book, realized, realized - fill.commission - buy_commission)


def value(portfolio: Portfolio, prices: Mapping[str, Decimal]) -> Valuation:
    """Mark the portfolio to `prices`, which must hold a price for every open position."""
    missing = sorted(set(portfolio.positions) - set(prices))
    if missing:
        raise KeyError(f"no price for held symbols: {', '.join(missing)}")
    positions_value = sum((p.market_value(prices[s]) for s, p in portfolio.positions.items()), ZERO)
    equity = portfolio.cash + positions_value
    return Valuation(
        cash=portfolio.cash,
        positions_value=positions_value,
        equity=equity,
        unrealized_pnl=positions_value - portfolio.cost_of_open_positions(),
        exposure=exposure_ratio(positions_value, equity),
    )


def exposure_ratio(positions_value: Decimal, equity: Decimal) -> Decimal:
    if equity <= 0:
        # Only reachable if every position is worth nothing and cash is gone: fully exposed.
        return Decimal(1) if positions_value > 0 else ZERO
    return (positions_value / equity).quantize(RATIO_QUANTUM, ROUND_HALF_UP)


def _with(positions: Mapping[str, Position], symbol: str, position: Position) -> Mapping[str, Position]:
    return MappingProxyType({**positions, symbol: position})


def _without(positions: Mapping[str, Position], symbol: str) -> Mapping[str, Position]:
    return MappingProxyType({s: p for s, p in positions.items() if s != symbol})
