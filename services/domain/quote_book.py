"""market-data's quotes between refreshes, and the two rules around them. Pure: callers pass `now`.

- QuoteBook: the last good quote per symbol, why the latest refresh brought no new one (then the
  good quote is served marked stale with that reason), the quotes discarded by reason, and
  whether a refresh changed a symbol's quote (what `market_data_updated` is published for).
- price_view: `price`/`change`/`change_pct` and `price_basis` of get_market_data and the event:
  the quote's during the session, the last close otherwise.
- next_quote_refresh: when the refresh loop wakes next (every `every_s` while the session's bars
  are arriving, else at the next open).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.domain import asx_calendar
from services.domain.bars import bar_visible_from
from services.domain.intraday import Quote, QuoteDiscard, quote_problem, session_day


@dataclass(frozen=True, slots=True)
class QuoteFailure:
    reason: str
    unavailable: bool = False  # the source failed (may pass), rather than having no data


class QuoteBook:
    def __init__(self) -> None:
        self._good: dict[str, Quote] = {}
        self._failures: dict[str, QuoteFailure] = {}
        self.discarded: Counter[str] = Counter({str(reason): 0 for reason in QuoteDiscard})
        self.refreshed_at: datetime | None = None  # the end of the last refresh (suite time)

    def record(self, symbol: str, quote: Quote, now: datetime) -> bool:
        """Keep `quote` unless it must be discarded; True when the symbol's quote changed."""
        problem = quote_problem(quote, now)
        if problem is not None:
            self.discarded[str(problem)] += 1
            detail = (
                f"{quote.quote_time.isoformat()} is after now"
                if problem is QuoteDiscard.FUTURE_TIME
                else f"price {quote.price}"
            )
            self.failed(symbol, f"the latest quote from {quote.source} was discarded ({problem}: {detail})")
            return False
        previous = self._good.get(symbol)
        self._good[symbol] = quote
        self._failures.pop(symbol, None)
        return previous is None or (previous.price, previous.quote_time) != (quote.price, quote.quote_time)

    def failed(self, symbol: str, reason: str, unavailable: bool = False) -> None:
        """The latest refresh brought no quote for `symbol`: the last good one is now stale."""
        self._failures[symbol] = QuoteFailure(reason, unavailable)

    def current(self, symbol: str, now: datetime) -> Quote | None:
        """The last good quote, marked stale with the reason when the latest refresh failed.

        None when there is none, or when it is later than `now`: the suite clock was set back
        (a replay), and a price from after now must never be served.
        """
        quote = self._good.get(symbol)
        if quote is None or quote.quote_time > now:
            return None
        failure = self._failures.get(symbol)
        if failure is None:
            return quote
        return quote.as_stale(failure.reason, "unavailable" if failure.unavailable else "no_data")

    def failure(self, symbol: str) -> QuoteFailure | None:
        return self._failures.get(symbol)

    def stale_symbols(self) -> list[str]:
        return sorted(s for s in self._failures if s in self._good)


def price_view(close: dict, quote: Quote | None, now: datetime) -> dict:
    """`price, change, change_pct, price_basis`: the quote's while the market is open (a quote of
    today's session, stale or not), else the last close's (`close` holds its price and change)."""
    in_session = asx_calendar.is_market_open(now)
    if quote is not None and in_session and session_day(quote.quote_time) == session_day(now):
        return {
            "price": quote.price,
            "change": quote.change,
            "change_pct": quote.change_pct,
            "price_basis": "quote",
        }
    return {
        "price": close["price"],
        "change": close["change"],
        "change_pct": close["change_pct"],
        "price_basis": "close",
    }


def refresh_window(moment: datetime, delay_s: float) -> tuple[datetime, datetime] | None:
    """[open, close + delay] of the session on `moment`'s Sydney date, or None on a closed day.

    Past the close by the source's delay, so the session's last bars (which show only then) are
    still fetched once: the day's last quote is its close.
    """
    day = asx_calendar.to_sydney(moment).date()
    if not asx_calendar.is_trading_day(day):
        return None
    return asx_calendar.session_open(day), asx_calendar.session_close(day) + timedelta(seconds=delay_s)


def day_bar_refresh(moment: datetime) -> datetime | None:
    """The refresh once the day's daily bar is final (16:10), or None on a closed day.

    With daily bars only (a CSV source without intraday files) that is when the day's close and
    range become known: its quote (basis daily_close, the whole session as its bar) is what the
    paper trader checks stop-loss and take-profit against. With intraday bars it changes nothing.
    """
    day = asx_calendar.to_sydney(moment).date()
    return bar_visible_from(day) if asx_calendar.is_trading_day(day) else None


def in_refresh_window(moment: datetime, delay_s: float) -> bool:
    window = refresh_window(moment, delay_s)
    return window is not None and (window[0] <= moment <= window[1] or moment == day_bar_refresh(moment))


def next_quote_refresh(now: datetime, every_s: float, delay_s: float) -> datetime:
    """After a refresh (or a check) at `now`: `every_s` later inside the session's window, the
    window's end if that comes first, then the day's bar's refresh at 16:10 (when it falls after
    the window), else the next session's open."""
    window = refresh_window(now, delay_s)
    if window is not None:
        opens, ends = window
        if now < opens:
            return opens
        if now < ends:
            return min(now + timedelta(seconds=every_s), ends)
        final = day_bar_refresh(now)
        if final is not None and now < final:
            return final
    return asx_calendar.next_open(now)
