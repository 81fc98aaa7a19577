"""Market orders and exits against market-data's quote: the pure decisions behind paper fills.

No I/O, `now` passed in. A quote arrives as market-data's `get_quote` reply (or the `quote`
object inside `market_data_updated`); `MarketQuote.from_wire` reads it once into Decimal money
so the fill path never touches a binary float.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from services.domain.intraday import INTERVALS, session_day
from services.domain.intraday_fills import (
    ExitFill,
    FillBasis,
    bar_exit_fill,
    exit_levels,
    market_fill_price,
    quote_exit_fill,
)
from services.domain.portfolio import Action, Position, to_decimal
from services.domain.risk import RiskRules


class UnusableQuote(ValueError):
    """market-data's reply is not a quote one can fill at (no positive price, no time)."""


@dataclass(frozen=True, slots=True)
class RangeBar:
    """A completed bar's traded range, from a quote's `bar` or from get_intraday_bars."""

    interval: str  # an intraday interval, or "1d" for a whole session (daily bars only)
    start: datetime
    end: datetime
    open: Decimal
    high: Decimal
    low: Decimal

    @classmethod
    def from_wire(
        cls, data: Any, interval: str | None = None, length: timedelta | None = None
    ) -> RangeBar | None:
        """From a quote's `bar` (which has its interval and end) or a get_intraday_bars bar (pass
        the interval and its length); None when absent or malformed (the price alone is checked)."""
        if not isinstance(data, dict):
            return None
        try:
            start = datetime.fromisoformat(str(data["start"]))
            end = datetime.fromisoformat(str(data["end"])) if length is None else start + length
            open_, high, low = (_positive(data.get(k)) for k in ("open", "high", "low"))
        except (KeyError, ValueError):
            return None
        if start.tzinfo is None or end.tzinfo is None or not start < end:
            return None
        if open_ is None or high is None or low is None or not low <= open_ <= high:
            return None
        return cls(str(interval or data.get("interval")), start, end, open_, high, low)

    def as_record(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "open": float(self.open),
            "high": float(self.high),
            "low": float(self.low),
        }


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
    bar: RangeBar | None = None  # the completed bar behind the price, when the source has bars
    # Why stale: "unavailable" (market-data's source failed) or "no_data" (it answered with
    # nothing newer for this symbol); None when fresh or from an older market-data.
    stale_cause: str | None = None

    @property
    def source_answered(self) -> bool:
        """Market data arrived for this symbol: a fresh quote, or the source's answer that it has
        nothing newer (no bar today: nothing traded, so nothing to watch)."""
        return not self.stale or self.stale_cause == "no_data"

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
            bar=RangeBar.from_wire(data.get("bar")),
            stale_cause=data.get("stale_cause") or None,
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


def priced_before(inputs: Any, quote: MarketQuote) -> str | None:
    """Why a signal must not be filled at `quote`: it was made on an earlier session's prices
    (`inputs`: the prediction's, whose `market_data` says its price basis), or None.

    A prediction made in the session before market-data had the day's first quote (market-data
    restarting, its quote refresh slow) judged yesterday's close; filling it at today's price
    would trade on a view of a market that has moved since, and which prediction traded would
    depend on how fast the quote came. It is not acted on: the next prediction, on this
    session's quote, decides. An event without such inputs (hand-made, an older prediction
    service) is not judged by this.
    """
    market = inputs.get("market_data") if isinstance(inputs, dict) else None
    if not isinstance(market, dict):
        return None
    basis = market.get("price_basis")
    try:
        if basis == "quote":
            seen = session_day(datetime.fromisoformat(str(market.get("quote_time"))))
        elif basis == "close":
            seen = date.fromisoformat(str(market.get("date")))
        else:
            return None
    except (TypeError, ValueError):
        return None
    if seen >= session_day(quote.quote_time):
        return None
    prices = "close" if basis == "close" else "session's quote"
    return (
        f"made on the {seen.isoformat()} {prices}, before {quote.symbol}'s quote of"
        f" {quote.as_of}: a prediction on this session's prices decides"
    )


def order_fill(action: Action, quote: MarketQuote, slippage_bps: Decimal) -> tuple[Decimal, FillBasis]:
    """A market order's (price, basis): the ask/bid when both are known, else price +/- slippage."""
    return market_fill_price(action, quote.price, quote.bid, quote.ask, slippage_bps)


@dataclass(frozen=True, slots=True)
class ExitCheck:
    """What one exit check found: the exit (or None), the bar it happened in, and the instant up
    to which the position's prices have now been seen (the next check starts there)."""

    fill: ExitFill | None
    bar: RangeBar | None
    checked_to: datetime | None


def exit_for(
    position: Position | None,
    quote: MarketQuote,
    rules: RiskRules,
    checked_to: datetime | None = None,
    bars: Sequence[RangeBar] = (),
) -> ExitCheck:
    """The stop-loss or take-profit a held position takes, checked on every price since `checked_to`.

    Levels are the position's average cost -/+ the rules' fractions (as get_positions shows).
    `checked_to` is the instant the position's prices have been seen up to: its entry quote's
    time, then the end of the last bar checked. A resting stop is hit by any price that traded,
    so each completed bar that starts at or after it is checked on its range, oldest first:
    the quote's own bar, and `bars` (those a refresh skipped, fetched by the caller). A bar that
    opens through a level fills at its open, one that trades through it at the level
    (intraday_fills.bar_exit_fill). Without a bar (a snapshot quote such as IG's) the quote's
    price is checked: at or through a level it fills at the quote. A quote older than
    `checked_to` says nothing new (an event delivered late, a price from before the entry).
    """
    if position is None:
        return ExitCheck(None, None, checked_to)
    stop, take_profit = exit_levels(position.avg_cost, rules)
    by_start = {b.start: b for b in bars}
    if quote.bar is not None:
        by_start[quote.bar.start] = quote.bar
    fresh = [by_start[t] for t in sorted(by_start) if checked_to is None or t >= checked_to]
    for bar in fresh:
        fill = bar_exit_fill(stop, take_profit, bar.open, bar.high, bar.low)
        checked_to = bar.end if checked_to is None else max(checked_to, bar.end)
        if fill is not None:
            return ExitCheck(fill, bar, checked_to)
    if fresh or (checked_to is not None and quote.quote_time < checked_to):
        return ExitCheck(None, None, checked_to)
    return ExitCheck(quote_exit_fill(stop, take_profit, quote.price), None, quote.quote_time)


def skipped_bar_count(quote: MarketQuote, checked_to: datetime | None, limit: int = 400) -> int:
    """How many bars to fetch so that none between `checked_to` and the quote's bar goes unchecked
    (0 when the quote's bar follows on, or has no intraday interval to fetch by)."""
    bar = quote.bar
    if bar is None or checked_to is None or bar.interval not in INTERVALS or bar.start <= checked_to:
        return 0
    missing = (bar.start - checked_to).total_seconds() / INTERVALS[bar.interval]
    return min(limit, math.ceil(missing) + 1)


@dataclass(frozen=True, slots=True)
class Silence:
    """Why new buys wait: market data has not arrived for longer than the bound."""

    reason: str
    symbols: tuple[str, ...]  # the held symbols without a usable quote (empty: none at all)
    silent_s: float


def market_data_silence(
    now: datetime,
    opened: datetime,
    last_seen: Mapping[str, datetime],
    held: Iterable[str],
    bound_s: float,
    answered: Mapping[str, datetime] | None = None,
) -> Silence | None:
    """During a session that opened at `opened`: a held symbol whose market data has not arrived
    for more than `bound_s` (`answered`: a fresh quote, or the source's answer that it has no
    newer bar for it, which is a symbol that did not trade, not a silent feed), or no usable (not
    stale) quote at all for that long (`last_seen`), halts new buys: the stop-loss and
    take-profit could not be watched. Time before the open does not count: a quote from
    yesterday is not silence today until the bound has passed since the open. None when market
    data is arriving."""
    answered = last_seen if answered is None else answered

    def silent_for(seen: datetime | None) -> float:
        since = opened if seen is None or seen < opened else seen
        return (now - since).total_seconds()

    blind = sorted(s for s in held if silent_for(answered.get(s)) > bound_s)
    if blind:
        worst = max(silent_for(answered.get(s)) for s in blind)
        return Silence(
            f"no usable quote for {', '.join(blind)} for {worst:.0f} s (more than {bound_s:.0f} s):"
            " stop-loss and take-profit cannot be watched",
            tuple(blind),
            worst,
        )
    quiet = silent_for(max(last_seen.values(), default=None))
    if quiet > bound_s:
        return Silence(
            f"no usable quote from market-data for {quiet:.0f} s (more than {bound_s:.0f} s)", (), quiet
        )
    return None
