"""IG Markets first, the source chosen as before next: market-data's quote source when IG is set up.

`IgFirstSource` asks IG (services.clients.ig_prices.IgQuoteSource: real-time bid/offer from
GET /markets, bars from GET /prices) and, when IG cannot answer (IgSourceUnavailable: the
historical allowance used up, rate limited, unreachable, 5xx, refused, no epic for the symbol,
nothing to price), serves the fallback's quote or bars instead, labelled with `fallback_reason`
(IG's failure, e.g. "ig server_error"; "ig no_epic" for a symbol without an epic, such as the
index unless TRADING_PAPER_TRADING_IG_EPICS names one). Failures that are IG's as a whole (unreachable, 5xx, rate
limited, login refused) hold IG back for `retry_s`, so a refresh of the universe does not ask a
failing IG once per symbol every minute; meanwhile the fallback serves with the same label.

A clock that is not the present (a replay, a clock at speed) is no failure: IG serves the present
only and refuses it ("not_live"), and the fallback then serves unlabelled, as if IG were not set up
(counted in `health` as not_live_skips).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.clients.ig_prices import IgQuoteSource, IgSourceUnavailable
from services.domain.intraday import IntradayBar, NoIntradayData, Quote
from services.market_data.intraday_sources import QuoteSource

log = logging.getLogger("market-data.ig")

NOT_LIVE = "not_live"
NO_EPIC = "no_epic"
# IG's failures of the whole service (not of one symbol): IG is held back for retry_s after one.
HOLD_REASONS = frozenset({"unreachable", "server_error", "rate_limited", "auth_failed", "token_invalid"})


@dataclass(frozen=True, slots=True)
class IgFailure:
    label: str  # e.g. "ig server_error", as quotes and bar replies are labelled
    detail: str
    symbol: str
    at: datetime  # the suite clock's now (the present: IG refuses any other)

    def to_dict(self) -> dict:
        return {"label": self.label, "detail": self.detail, "symbol": self.symbol, "at": self.at.isoformat()}


@dataclass(frozen=True, slots=True)
class ServedBars:
    bars: list[IntradayBar]
    source: str
    delay_s: float
    fallback_reason: str | None = None


class IgFirstSource:
    """A QuoteSource: IG, else `fallback` (labelled). `name` is "ig"; a quote names who served it."""

    name = "ig"

    def __init__(
        self,
        ig: IgQuoteSource,
        fallback: QuoteSource,
        *,
        retry_s: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.ig = ig
        self.fallback = fallback
        self.retry_s = retry_s
        self._monotonic = monotonic
        self._held_until = 0.0  # monotonic: IG is not asked before then
        self.last_failure: IgFailure | None = None
        self.no_epic: set[str] = set()  # symbols IG is never asked about (no epic configured)
        self.counters = {"ig_served": 0, "ig_fallbacks": 0, "ig_not_live_skips": 0}

    @property
    def delay_s(self) -> float:
        # The refresh window runs to the close plus this: long enough for a delayed fallback's last
        # bars; IG's own markets are real time (a delayed IG market's quotes say their delay).
        return self.fallback.delay_s

    def __repr__(self) -> str:
        return f"IgFirstSource({self.ig!r}, then {self.fallback.name})"

    # -- the QuoteSource interface ------------------------------------------------------------

    async def quote(self, symbol: str, now: datetime) -> Quote:
        reason = self._held_reason()
        if reason is None:
            try:
                quote = await self.ig.quote(symbol, now)
            except IgSourceUnavailable as exc:
                reason = self._failed(exc, now)
            else:
                self.counters["ig_served"] += 1
                return quote
        try:
            quote = await self.fallback.quote(symbol, now)
        except NoIntradayData as exc:
            if reason is None:
                raise
            raise NoIntradayData(f"{exc} (IG could not price it either: {reason})") from exc
        self.counters["ig_fallbacks"] += reason is not None
        return dataclasses.replace(quote, fallback_reason=reason)

    async def intraday_bars(self, symbol: str, interval: str, limit: int, now: datetime) -> list[IntradayBar]:
        return (await self.served_bars(symbol, interval, limit, now)).bars

    async def served_bars(self, symbol: str, interval: str, limit: int, now: datetime) -> ServedBars:
        """The bars and who served them (the delay is that source's)."""
        reason = self._held_reason()
        if reason is None:
            try:
                bars = await self.ig.intraday_bars(symbol, interval, limit, now)
            except IgSourceUnavailable as exc:
                reason = self._failed(exc, now)
            else:
                self.counters["ig_served"] += 1
                return ServedBars(bars, self.name, self.ig.delay_s_of(symbol))
        try:
            bars = await self.fallback.intraday_bars(symbol, interval, limit, now)
        except NoIntradayData as exc:
            if reason is None:
                raise
            raise NoIntradayData(f"{exc} (IG could not serve them either: {reason})") from exc
        self.counters["ig_fallbacks"] += reason is not None
        return ServedBars(bars, self.fallback.name, self.fallback.delay_s, reason)

    # -- IG's failures ------------------------------------------------------------------------

    def _held_reason(self) -> str | None:
        """The last failure's label while IG is held back after it, else None (ask IG)."""
        if self.last_failure is not None and self._monotonic() < self._held_until:
            return self.last_failure.label
        return None

    def _failed(self, exc: IgSourceUnavailable, now: datetime) -> str | None:
        """Note IG's failure; the fallback's label (None for a clock that is not the present)."""
        if exc.reason == NOT_LIVE:
            self.counters["ig_not_live_skips"] += 1
            return None
        if exc.reason == NO_EPIC:  # configuration, not IG failing: labelled, listed in health
            self.no_epic.add(exc.symbol)
            return exc.label
        previous = self.last_failure
        self.last_failure = IgFailure(exc.label, str(exc), exc.symbol, now)
        if exc.reason in HOLD_REASONS:
            self._held_until = self._monotonic() + self.retry_s
        if previous is None or previous.label != exc.label:  # once per kind of failure, not per symbol
            log.warning("IG failed (%s); serving %s instead: %s", exc.label, self.fallback.name, exc)
        return exc.label

    def health(self) -> dict:
        """IG's historical allowance, the last failure, whether IG is held back, the counters."""
        allowance = self.ig.allowance
        at = self._monotonic()
        return {
            "used": True,
            "fallback": self.fallback.name,
            "allowance": None
            if allowance is None
            else {
                "remaining": allowance.remaining,
                "total": allowance.total,
                "resets_in_s": round(allowance.resets_in_s(at), 1),
            },
            "last_failure": self.last_failure.to_dict() if self.last_failure else None,
            "held_back_s": round(max(0.0, self._held_until - at), 1),
            "no_epic": sorted(self.no_epic),
            **self.counters,
        }


async def served_bars(
    source: QuoteSource, symbol: str, interval: str, limit: int, now: datetime
) -> ServedBars:
    """`source`'s bars with who served them: IgFirstSource says; any other source serves its own."""
    if isinstance(source, IgFirstSource):
        return await source.served_bars(symbol, interval, limit, now)
    return ServedBars(await source.intraday_bars(symbol, interval, limit, now), source.name, source.delay_s)
