"""Market orders and exits against market-data's quote: the pure decisions behind paper fills.

No I/O, `now` passed in. A quote arrives as market-data's `get_quote` reply (or the `quote`
object inside `market_data_updated`); `MarketQuote.from_wire` reads it once into Decimal money
so the fill path never touches a binary float.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.domain.intraday_fills import (
    ExitFill,
    FillBasis,
    exit_levels,
    market_fill_price,
    quote_exit_fill,
)
from services.domain.portfolio import Action, Position, to_decimal
from services.domain.risk import RiskRules


class UnusableQuote(ValueError):
    """market-data's reply is not a quote one can fill at (no positive price, no time)."""


@dataclass(frozen=True, slots=True)
class MarketQuote:
    symbol: str
    price: Decimal
    bid: Decimal | None
    ask: Decimal | None
    quote_time: datetime
    delay_s: float
    source: str
    stale: bool
    stale_reason: str | None
    # What the price is (intraday, daily_open, daily_close: see services.domain.intraday.Quote)
    basis: str = "intraday"

    @classmethod
    def from_wire(cls, symbol: str, data: Any) -> MarketQuote:
        """From get_quote's reply (or an event's `quote`); UnusableQuote when it cannot be filled at."""
        if not isinstance(data, dict):
            raise UnusableQuote(f"no quote for {symbol}: {data!r}")
        price = _positive(data.get("price"))
        if price is None:
            raise UnusableQuote(f"quote for {symbol} has no usable price: {data.get('price')!r}")
        try:
            quote_time = datetime.fromisoformat(str(data.get("quote_time")))
        except ValueError:
            raise UnusableQuote(
                f"quote for {symbol} has no usable time: {data.get('quote_time')!r}"
            ) from None
        if quote_time.tzinfo is None:
            raise UnusableQuote(f"quote for {symbol} has a time without an offset: {quote_time.isoformat()}")
        delay = data.get("delay_s")
        return cls(
            symbol=symbol,
            price=price,
            bid=_positive(data.get("bid")),
            ask=_positive(data.get("ask")),
            quote_time=quote_time,
            delay_s=float(delay) if isinstance(delay, int | float) and not isinstance(delay, bool) else 0.0,
            source=str(data.get("source")),
            stale=bool(data.get("stale")),
            stale_reason=data.get("stale_reason") or None,
            basis=str(data.get("basis") or "intraday"),
        )

    @property
    def as_of(self) -> str:
        return self.quote_time.isoformat()

    def age_s(self, now: datetime) -> float:
        """Seconds from the price's own instant to `now` (not from when it was fetched)."""
        return (now - self.quote_time).total_seconds()

    def as_record(self) -> dict[str, Any]:
        """What a fill records of the quote it used."""
        return {
            "quote_price": float(self.price),
            "quote_bid": float(self.bid) if self.bid is not None else None,
            "quote_ask": float(self.ask) if self.ask is not None else None,
            "quote_time": self.as_of,
            "quote_delay_s": self.delay_s,
            "quote_source": self.source,
            "quote_stale": self.stale,
            "quote_basis": self.basis,
        }


def _positive(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = to_decimal(value)
    except (ValueError, ArithmeticError):
        return None
    return number if number > 0 else None


def refusal(quote: MarketQuote, now: datetime, max_age_s: float) -> str | None:
    """Why an order must not fill at `quote` now (stale, too old, from the future), or None.

    A quote's age is from its own time, so a delayed source (Yahoo's ~20 minutes) counts its
    delay: the knob's default 1500 s is that delay plus a margin.
    """
    if quote.stale:
        return f"the quote for {quote.symbol} is stale: {quote.stale_reason or 'no reason given'}"
    age = quote.age_s(now)
    if age < 0:
        return f"the quote for {quote.symbol} is {-age:.0f} s in the future ({quote.as_of})"
    if age > max_age_s:
        return (
            f"the quote for {quote.symbol} is {age:.0f} s old (from {quote.as_of}), "
            f"older than the {max_age_s:.0f} s limit"
        )
    return None


def order_fill(action: Action, quote: MarketQuote, slippage_bps: Decimal) -> tuple[Decimal, FillBasis]:
    """A market order's (price, basis): the ask/bid when both are known, else price +/- slippage."""
    return market_fill_price(action, quote.price, quote.bid, quote.ask, slippage_bps)


def exit_for(position: Position | None, quote: MarketQuote, rules: RiskRules) -> ExitFill | None:
    """The stop-loss or take-profit a held position takes on this quote, or None.

    Levels are the position's average cost -/+ the rules' fractions (as get_positions shows);
    a quote at a level fills there, one past it (a gap between two checks) fills at the quote.
    """
    if position is None:
        return None
    stop, take_profit = exit_levels(position.avg_cost, rules)
    return quote_exit_fill(stop, take_profit, quote.price)
