"""IG Markets as a price source: quotes from GET /markets/{epic}, intraday bars from GET /prices/{epic}.

The market-data service plugs `IgQuoteSource` in as its real-time source. Everything IG cannot
answer is raised as IgSourceUnavailable (a symbol without an epic, the historical allowance used
up, IG refusing or unreachable, an answer with nothing to price), whose `reason` labels the
fallback to the next source. Nothing is served from after `now`: a quote's time is never later
than now, and a bar is returned only from its end plus the source's delay on
(services.domain.intraday.visible_intraday).

Bars cost historical allowance (10,000 points a week on live accounts, every point served
counts), so they are cached per epic and interval and each call asks IG only for the bars that
can have been added since the last complete one it holds (services.domain.ig_quotes.
bar_starts_between), plus the bar in progress and those still inside the delay, and one already
held to check that the answers join (else one full request replaces the cache). A quote costs
none (the snapshot is not historical data), except once per symbol and session: the snapshot
has no day open, so the first quote of a session asks for the session's hourly bars (at most 7
points) and takes the first one's open; when that fails or the allowance is used up, the
previous close stands in. Volume so far is that of the day's complete bars held (the snapshot
has none), 0 without them.

The delay IG states for a market's snapshot (delayTime) is applied to its bars too: IG gives no
delay for /prices, and bars of a delayed market are at least as delayed as its quotes.

IG serves the present only: its snapshot is the price of the real moment (with a dateless
updateTime) and /prices the latest bars. Asked about another moment (a replay, a clock at speed),
it would put today's prices into another day, so the source refuses (reason "not_live") whenever
`now` is more than LIVE_TOLERANCE_S from the wall clock.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import TypeVar

from services.clients.ig_client import (
    HistoricalAllowance,
    IgAllowanceExhausted,
    IgAuthError,
    IgClient,
    IgError,
    IgRateLimited,
    IgRequestError,
    IgServerError,
    IgTokenInvalid,
    IgUnavailable,
)
from services.domain.asx_calendar import is_trading_day as asx_is_trading_day
from services.domain.bars import SYDNEY
from services.domain.ig_quotes import (
    SOURCE,
    IgPriceFormatError,
    bar_starts_between,
    bars_from_ig_prices,
    quote_from_ig_snapshot,
    resolution_for,
)
from services.domain.intraday import (
    CloseTimeOf,
    IntradayBar,
    Quote,
    asx_close_time,
    interval_seconds,
    session_day,
    session_open_at,
    visible_from,
    visible_intraday,
)

log = logging.getLogger("ig_prices")

T = TypeVar("T")
MAX_CACHED_BARS = 2_000  # per epic and interval: 27 sessions of 5m bars, more than any request needs
OPEN_RESOLUTION = "HOUR"  # the session's first hourly bar gives its open, for at most 7 points
SESSION_HOURS = 7  # 10:00 ... 16:00 starts: the most hourly bars one session has
# Asking again for a session's open: when IG had no bar of the session yet (the ASX opens its
# groups from 10:00 to about 10:09) or the call failed. Never when IG had the day's bars but none
# at the open: it will not have one later.
OPEN_RETRY = timedelta(minutes=15)
LIVE_TOLERANCE_S = 300.0  # how far `now` may be from the wall clock for IG's present to be its


def wall_clock() -> datetime:
    return datetime.now(UTC)


class IgSourceUnavailable(Exception):
    """IG cannot give this price now: use the next source. `reason` labels the fallback."""

    def __init__(self, symbol: str, reason: str, detail: str):
        super().__init__(f"IG has no price for {symbol} ({reason}): {detail}")
        self.symbol = symbol
        self.reason = reason

    @property
    def label(self) -> str:
        """How the fallback is labelled, e.g. "ig allowance_exhausted"."""
        return f"{SOURCE} {self.reason}"


class NoEpic(IgSourceUnavailable, LookupError):
    """No IG epic is configured for the symbol (TRADING_PAPER_TRADING_IG_EPICS or the shared map)."""

    def __init__(self, symbol: str):
        super().__init__(symbol, "no_epic", "no IG epic is configured for it")


class AllowanceExhausted(IgSourceUnavailable):
    """IG's historical-price allowance is used up; `resets_in_s` until it resets (None: unknown)."""

    def __init__(self, symbol: str, resets_in_s: float | None):
        when = "at an unknown time" if resets_in_s is None else f"in {math.ceil(resets_in_s)} s"
        super().__init__(symbol, "allowance_exhausted", f"historical-price allowance used up, resets {when}")
        self.resets_in_s = resets_in_s


# IG's failures as fallback reasons, most specific first (IgAllowanceExhausted is handled before).
_REASONS: tuple[tuple[type[IgError], str], ...] = (
    (IgAuthError, "auth_failed"),
    (IgRateLimited, "rate_limited"),
    (IgTokenInvalid, "token_invalid"),
    (IgUnavailable, "unreachable"),
    (IgServerError, "server_error"),
    (IgRequestError, "request_refused"),
)


def _reason(exc: IgError) -> str:
    return next((reason for kind, reason in _REASONS if isinstance(exc, kind)), "ig_error")


def _require_aware(moment: datetime, what: str) -> None:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {moment!r}")


class IgQuoteSource:
    """Quotes and intraday bars for the symbols of `epics` (symbol -> IG epic) from one IgClient.

    `update_tz` is the zone of the snapshot's dateless updateTime (the account's local time:
    Sydney for an Australian account); `is_trading_day` and `close_time_of` are the ASX's.
    `live_clock` is the real time `now` is checked against (None: the caller vouches that `now`
    is the present, as the tests do with their fixed days).
    """

    name = SOURCE

    def __init__(
        self,
        client: IgClient,
        epics: Mapping[str, str],
        *,
        update_tz: tzinfo = SYDNEY,
        is_trading_day: Callable[[date], bool] = asx_is_trading_day,
        close_time_of: CloseTimeOf = asx_close_time,
        live_clock: Callable[[], datetime] | None = wall_clock,
    ):
        self._client = client
        self._live_clock = live_clock
        self._epics = dict(epics)
        self._update_tz = update_tz
        self._is_trading_day = is_trading_day
        self._close_time_of = close_time_of
        self._delay_s: dict[str, float] = {}  # epic -> the delay its last snapshot stated
        # (epic, interval) -> complete bars by their start (UTC): each was visible when fetched
        self._bars: dict[tuple[str, str], dict[datetime, IntradayBar]] = {}
        self._opens: dict[tuple[str, date], float] = {}  # (epic, session day) -> that session's open
        # (epic, session day) -> when its open may be asked for again (None: not this session)
        self._open_next_ask: dict[tuple[str, date], datetime | None] = {}

    def __repr__(self) -> str:
        return f"IgQuoteSource({len(self._epics)} symbols, {self._client!r})"

    @property
    def symbols(self) -> list[str]:
        return sorted(self._epics)

    @property
    def allowance(self) -> HistoricalAllowance | None:
        """IG's historical-price allowance as its last /prices answer stated it."""
        return self._client.historical_allowance

    def delay_s_of(self, symbol: str) -> float:
        """The delay the symbol's last snapshot stated (0 before its first quote, or without an epic)."""
        return self._delay_s.get(self._epics.get(symbol, ""), 0.0)

    def epic(self, symbol: str) -> str:
        """The IG epic of `symbol`; NoEpic when none is configured."""
        epic = self._epics.get(symbol)
        if not epic:
            raise NoEpic(symbol)
        return epic

    # -- quotes ----------------------------------------------------------------------------

    async def quote(self, symbol: str, now: datetime) -> Quote:
        """The symbol's quote from IG's snapshot at `now` (see quote_from_ig_snapshot).

        Raises NoEpic, IgSourceUnavailable (IG refused or unreachable, nothing to price, `now`
        not the present).
        """
        _require_aware(now, "now")
        epic = self.epic(symbol)
        self._require_live(symbol, now)
        body = await self._ask(symbol, self._client.market(epic))
        snapshot = body.get("snapshot")
        if not isinstance(snapshot, Mapping):
            raise IgSourceUnavailable(symbol, "bad_data", "IG's market answer has no snapshot")
        try:
            quote = quote_from_ig_snapshot(
                symbol, snapshot, now, tz=self._update_tz, is_trading_day=self._is_trading_day
            )
        except IgPriceFormatError as exc:
            raise IgSourceUnavailable(symbol, "bad_data", str(exc)) from exc
        self._delay_s[epic] = quote.delay_s
        day = session_day(quote.quote_time)
        day_open = await self._session_open(epic, day, now)
        complete = self._day_bars(epic, day, now)
        if day_open is None and complete:
            day_open = complete[0].open
        return replace(
            quote,
            day_open=quote.day_open if day_open is None else day_open,
            volume=sum(bar.volume for bar in complete),
        )

    async def _session_open(self, epic: str, day: date, now: datetime) -> float | None:
        """The open of session `day`: known, or asked for (today's, once it has opened; see OPEN_RETRY)."""
        key = (epic, day)
        if key in self._opens or (key in self._open_next_ask and not self._may_ask_again(key, now)):
            return self._opens.get(key)
        opens_at = session_open_at(day)
        if day != session_day(now) or now < opens_at or not self._is_trading_day(day):
            return None
        hours = max(1, min(SESSION_HOURS, math.ceil((now - opens_at).total_seconds() / 3600)))
        try:
            body = await self._client.prices(epic, OPEN_RESOLUTION, hours)
            bars = bars_from_ig_prices(body.get("prices") or [])
        except (IgError, IgPriceFormatError) as exc:
            log.info("IG session open unknown", extra={"epic": epic, "reason": type(exc).__name__})
            self._open_next_ask[key] = now + OPEN_RETRY
            return None
        # The hour in progress is there too: its open is a price of the past, so it may be used.
        first = next((b for b in bars if b.start == opens_at and b.start <= now), None)
        if first is not None:
            self._opens[key] = first.open
        elif any(session_day(b.start) == day for b in bars):
            self._open_next_ask[key] = None
        else:
            self._open_next_ask[key] = now + OPEN_RETRY
        self._merge((epic, "60m"), bars, now)
        return self._opens.get(key)

    def _may_ask_again(self, key: tuple[str, date], now: datetime) -> bool:
        next_ask = self._open_next_ask[key]
        return next_ask is not None and now >= next_ask

    def _day_bars(self, epic: str, day: date, now: datetime) -> list[IntradayBar]:
        """The session's complete bars from its open, from the interval held furthest into it."""
        opens_at = session_open_at(day)
        best: list[IntradayBar] = []
        for held_epic, interval in self._bars:
            if held_epic != epic:
                continue
            bars = [b for b in self._visible((epic, interval), interval, now) if session_day(b.start) == day]
            if bars and bars[0].start == opens_at and (not best or bars[-1].start > best[-1].start):
                best = bars
        return best

    # -- bars ------------------------------------------------------------------------------

    async def intraday_bars(self, symbol: str, interval: str, limit: int, now: datetime) -> list[IntradayBar]:
        """The latest `limit` bars of `interval` visible at `now` (end + delay <= now), oldest first.

        The delay is the one the market's last snapshot stated (none before its first quote).

        Raises ValueError for an unknown interval (naming it) or a limit below 1; NoEpic;
        AllowanceExhausted; IgSourceUnavailable.
        """
        _require_aware(now, "now")
        resolution = resolution_for(interval)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        epic = self.epic(symbol)
        self._require_live(symbol, now)
        key = (epic, interval)
        # Not yet visible at `now`: the bar in progress and those still inside the delay.
        hidden = math.ceil(self._delay_s.get(epic, 0.0) / interval_seconds(interval)) + 1
        full = limit + hidden
        held = self._bars.get(key) or {}
        wanted = full
        if len(held) >= limit:
            # The bars started since the last complete one held (the one in progress included),
            # that one again to check the answers join, and `hidden` more as a margin.
            new = bar_starts_between(max(held), now, interval, self._is_trading_day, self._close_time_of)
            wanted = min(full, new + 1 + hidden)
        self._merge(key, await self._fetch(symbol, epic, resolution, wanted), now)
        visible = self._visible(key, interval, now)
        if len(visible) < limit and wanted < full:
            # The answer did not join what was held (IG had more bars than sessions explain): once in full.
            self._bars.pop(key, None)
            self._merge(key, await self._fetch(symbol, epic, resolution, full), now)
            visible = self._visible(key, interval, now)
        return visible[-limit:]

    async def _fetch(self, symbol: str, epic: str, resolution: str, points: int) -> list[IntradayBar]:
        body = await self._ask(symbol, self._client.prices(epic, resolution, points))
        try:
            return bars_from_ig_prices(body.get("prices") or [])
        except IgPriceFormatError as exc:
            raise IgSourceUnavailable(symbol, "bad_data", str(exc)) from exc

    def _merge(self, key: tuple[str, str], bars: list[IntradayBar], now: datetime) -> None:
        """Hold the bars complete at `now`; an answer that does not reach back to the bars held
        replaces them (there may be bars between the two that neither has)."""
        if not bars:
            return
        epic, interval = key
        held = self._bars.setdefault(key, {})
        if held and bars[0].start.astimezone(UTC) > max(held):
            held.clear()
        delay_s = self._delay_s.get(epic, 0.0)
        complete = [b for b in bars if visible_from(b, interval, delay_s, self._close_time_of) <= now]
        for bar in complete:
            held[bar.start.astimezone(UTC)] = bar
        for start in sorted(held)[:-MAX_CACHED_BARS]:
            del held[start]

    def _visible(self, key: tuple[str, str], interval: str, now: datetime) -> list[IntradayBar]:
        epic = key[0]
        bars = self._sorted(self._bars.get(key) or {})
        return visible_intraday(bars, interval, now, self._delay_s.get(epic, 0.0), self._close_time_of)

    @staticmethod
    def _sorted(cache: Mapping[datetime, IntradayBar]) -> list[IntradayBar]:
        return [cache[start] for start in sorted(cache)]

    # -- IG's failures ---------------------------------------------------------------------

    def _require_live(self, symbol: str, now: datetime) -> None:
        if self._live_clock is None:
            return
        off_s = (now - self._live_clock()).total_seconds()
        if abs(off_s) > LIVE_TOLERANCE_S:
            raise IgSourceUnavailable(
                symbol, "not_live", f"IG serves the present and the clock is {off_s:+.0f} s away from it"
            )

    async def _ask(self, symbol: str, call: Awaitable[T]) -> T:
        """Await an IG call; its failures as the fallback they mean."""
        try:
            return await call
        except IgAllowanceExhausted as exc:
            raise AllowanceExhausted(symbol, exc.resets_in_s) from exc
        except IgError as exc:
            raise IgSourceUnavailable(symbol, _reason(exc), str(exc)) from exc
