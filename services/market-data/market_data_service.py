"""market-data service: daily bars, technical analysis, market context and quality, cached.

The shell is thin: pick a source at start (providers.choose_source), fetch through a per-symbol
cache, and hand bars to the pure functions in services/domain (indicators, market_context,
data_quality). Behaviour that callers rely on:
- one cache entry per symbol, fresh for TRADING_MARKET_DATA_CACHE_S (default 300 s) and never past
  the next bar's close on the suite clock (a replay at speed must not serve yesterday as today);
- concurrent requests for a symbol share one fetch;
- a failed refresh keeps serving the last good data with `stale: true` and the reason;
- every successful fetch publishes `market_data_updated` for that symbol;
- nothing dated after the suite clock's now is ever served (the providers enforce it).

Quotes (intraday_sources.quote_source_for picks the intraday source that goes with the daily one):
- one refresh fetches the whole universe's quotes (one batched request for yfinance); concurrent
  callers share it. It runs every TRADING_MARKET_DATA_QUOTE_S (default 60) suite seconds from the
  open to the close plus the source's delay, on demand when the last one is older than that, and
  from refresh_all_data;
- a refresh that changes a symbol's quote (price or time) publishes `market_data_updated` for it
  once; refresh_all_data holds its events back and publishes one per symbol at its end;
- no new quote (no data, the source down, a discarded quote) keeps the last good one, served
  marked stale with the reason; a quote later than now or not positive is discarded and counted.
"""

import asyncio
import contextlib
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime

from services.base import (
    BaseService,
    ConfigError,
    DependencyUnavailable,
    InvalidParams,
    NotFound,
    RpcError,
    ServiceError,
    rpc,
    run_service,
)
from services.base.knobs import read_knobs
from services.clients.ig_client import IgClient, IgCredentials
from services.clients.ig_epics import epic_overrides, epics_for
from services.clients.ig_prices import IgQuoteSource
from services.domain import asx_calendar, data_quality, indicators, market_context
from services.domain.bars import SYDNEY, bar_to_dict, bar_visible_from, last_visible_date
from services.domain.intraday import INTERVALS, NoIntradayData, Quote
from services.domain.price_history import close_summary, normalise_symbol
from services.domain.quote_book import QuoteBook, in_refresh_window, next_quote_refresh, price_view
from services.market_data import intraday_sources, providers
from services.market_data.ig_first_source import IgFirstSource, served_bars
from services.market_data.market_data_knobs import MarketDataKnobs

MAX_INTRADAY_BARS = 1000  # get_intraday_bars' `limit`: a 60m request then spans ~170 sessions
MAX_QUOTES = 500  # symbols in one get_quotes call
# Symbols whose market_data_updated is held back while refresh_all_data runs (it publishes one
# per symbol at its end; its daily refetch and its quote refresh would each announce them).
_held_events: ContextVar[set[str] | None] = ContextVar("held_events", default=None)


@dataclass
class CacheEntry:
    """The last good history of one symbol, plus what is derived from it (computed once)."""

    history: providers.History
    fetched_mono: float
    visible_date: date  # the last bar date servable when fetched; a later one means refetch
    fetched_at: str
    error: str | None = None  # the last refresh failed: serving this entry stale
    retry_mono: float = 0.0
    derived: dict = field(default_factory=dict)


def _sydney_iso(moment: datetime | None) -> str | None:
    return moment.astimezone(SYDNEY).isoformat() if moment is not None else None


class MarketDataService(BaseService):
    name = "market-data"

    async def on_start(self) -> None:
        env = self.settings
        self.knobs = read_knobs(MarketDataKnobs, env.environ)
        try:  # paper-trading's knob (one variable has one knob), read here too: one epic mapping
            self.ig_epic_overrides = epic_overrides(env.environ)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.context_params = market_context.ContextParams()
        self.index = normalise_symbol(env.market_index)
        self.cache: dict[str, CacheEntry] = {}
        self.failures: dict[str, tuple[float, providers.MarketDataError]] = {}  # no data to fall back on
        self.inflight: dict[str, asyncio.Task] = {}
        self.counters = {"fetches": 0, "fetch_errors": 0, "cache_hits": 0, "events_published": 0}
        choice = await providers.choose_source(
            env.market_data_source,
            env.market_data_dir,
            self.clock.now(),
            is_trading_day=asx_calendar.is_trading_day,
            probe_symbol=self.index,
            probe_timeout_s=self.knobs.probe_timeout_s,
            yfinance_factory=self._yfinance_factory,
        )
        self.source, self.source_reason = choice.source, choice.reason
        self.log.info("market data source: %s (%s)", self.source.name, self.source_reason)
        self.quote_source: intraday_sources.QuoteSource = intraday_sources.quote_source_for(
            self.source.name,
            env.market_data_dir,
            self._universe(),
            fresh_s=self.knobs.quote_s,
            timeout_s=self.knobs.yf_timeout_s,
            attempts=self.knobs.yf_attempts,
        )
        self._ig_client: IgClient | None = None
        self.ig_skipped = self._ig_skipped_because()
        if self.ig_skipped is None:
            self.quote_source = self._ig_first(self.quote_source)
        self.log.info(
            "quote source: %s%s",
            self.quote_source.name,
            f" (IG not used: {self.ig_skipped})" if self.ig_skipped else f" ({self.quote_source!r})",
        )
        self.quotes = QuoteBook()
        self.counters.update(quote_refreshes=0, quote_failures=0)
        self._quote_task: asyncio.Task | None = None
        self._quote_loop = asyncio.create_task(self._refresh_quotes_in_session(), name="quote-loop")

    async def on_stop(self) -> None:
        self._quote_loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._quote_loop
        if self._ig_client is not None:
            await self._ig_client.aclose()

    # ---- IG Markets -----------------------------------------------------------------------------

    def _ig_setting(self, name: str) -> str | None:
        return self.settings.secret(name) or self.settings.environ.get(name)

    def _ig_credentials(self) -> IgCredentials | None:
        return IgCredentials.from_lookup(self._ig_setting, self.settings.ig_base_url)

    def _ig_skipped_because(self) -> str | None:
        """Why quotes do not come from IG, or None when they do."""
        if self._ig_credentials() is None:
            return "not configured (IG_API_KEY, IG_USERNAME, IG_PASSWORD)"
        if not self.knobs.ig_quotes:
            return "TRADING_MARKET_DATA_IG_QUOTES is false"
        if self.settings.market_data_source not in ("auto", "yfinance"):
            # csv and synthetic are chosen for data that is not the live market's (replays, tests)
            return f"TRADING_MARKET_DATA_SOURCE is {self.settings.market_data_source}"
        return None

    def _ig_first(self, fallback: intraday_sources.QuoteSource) -> IgFirstSource:
        credentials = self._ig_credentials()
        assert credentials is not None
        # No backoff inside a quote refresh: a rate-limited IG falls back at once and is held back.
        self._ig_client = IgClient(credentials, timeout_s=self.knobs.ig_timeout_s, rate_limit_retries=0)
        epics = epics_for(self.settings.symbols, self.ig_epic_overrides)
        return IgFirstSource(IgQuoteSource(self._ig_client, epics), fallback, retry_s=self.knobs.ig_retry_s)

    def _ig_health(self) -> dict:
        if isinstance(self.quote_source, IgFirstSource):
            return self.quote_source.health()
        return {"used": False, "why_not": self.ig_skipped}

    def _universe(self) -> list[str]:
        return list(dict.fromkeys([*self.settings.symbols, self.index]))  # the index may be listed too

    def _yfinance_factory(self, is_trading_day=None, **kwargs) -> providers.YFinanceSource:
        kwargs.setdefault("timeout_s", self.knobs.yf_timeout_s)
        kwargs.setdefault("attempts", self.knobs.yf_attempts)
        return providers.YFinanceSource(is_trading_day, **kwargs)

    async def health_details(self) -> dict:
        stale = sorted(s for s, e in self.cache.items() if e.error)
        details = {
            "source": self.source.name,
            "source_reason": self.source_reason,
            "cache_size": len(self.cache),
            "cache_ttl_s": self.knobs.cache_s,
            "stale_symbols": stale,
            **self.counters,
            "quote_source": self.quote_source.name,
            "quote_delay_s": self.quote_source.delay_s,
            "quote_refresh_s": self.knobs.quote_s,
            "last_quote_refresh": _sydney_iso(self.quotes.refreshed_at),
            "stale_quotes": self.quotes.stale_symbols(),
            "quotes_discarded": dict(self.quotes.discarded),
            "ig": self._ig_health(),
        }
        warnings = []
        if self.source.name == "synthetic":
            warnings.append("synthetic data: seeded random walks, not real prices")
        if stale:
            details["status"] = "degraded"
            warnings.append(f"serving stale data for {', '.join(stale)}")
        if self._quote_loop.done():
            details["status"] = "unhealthy"
            warnings.append("the quote refresh loop stopped")
        if warnings:
            details["warnings"] = warnings
        return details

    # ---- the cache ----------------------------------------------------------------------------

    def _symbol(self, symbol: str) -> str:
        try:
            name = normalise_symbol(symbol)
        except ValueError as exc:
            raise InvalidParams("symbol", str(exc)) from None
        if name not in self.settings.symbols and name != self.index:
            known = ", ".join(self.settings.symbols)
            problem = f"unknown symbol {name!r}: not in TRADING_SYMBOLS ({known}) nor the index {self.index}"
            raise InvalidParams("symbol", problem)
        return name

    def _is_fresh(self, entry: CacheEntry, now_mono: float) -> bool:
        if entry.visible_date != last_visible_date(self.clock.now()):
            return False  # a newer bar has closed since (matters when replaying at speed)
        if entry.error:
            return now_mono < entry.retry_mono
        return now_mono - entry.fetched_mono < self.knobs.cache_s

    async def _entry(self, symbol: str, force: bool = False) -> tuple[CacheEntry, bool]:
        """(entry, cached): the cached entry when fresh, else one shared fetch for all waiters."""
        entry = self.cache.get(symbol)
        if entry is not None and not force and self._is_fresh(entry, time.monotonic()):
            self.counters["cache_hits"] += 1
            return entry, True
        failure = self.failures.get(symbol)
        if failure is not None and not force and time.monotonic() < failure[0]:
            # It failed moments ago and there is nothing to fall back on: do not hammer the source.
            raise self._rpc_error(symbol, failure[1])
        task = self.inflight.get(symbol)
        if task is None or task.done():  # done, its callback not run yet: start a new one
            task = asyncio.create_task(self._refresh(symbol))
            self.inflight[symbol] = task
            task.add_done_callback(lambda done, s=symbol: self._fetch_done(s, done))
        # shield: one caller giving up (timeout, disconnect) must not cancel the others' fetch
        return await asyncio.shield(task), False

    def _fetch_done(self, symbol: str, task: asyncio.Task) -> None:
        if self.inflight.get(symbol) is task:
            del self.inflight[symbol]
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have given up already

    async def _refresh(self, symbol: str) -> CacheEntry:
        now = self.clock.now()
        self.counters["fetches"] += 1
        try:
            history = await self.source.fetch(symbol, now)
            if not history.bars:
                raise providers.UnknownSymbolError(
                    f"no bars for {symbol} on or before {now.date().isoformat()}"
                )
        except providers.MarketDataError as exc:
            return self._refresh_failed(symbol, exc)
        trimmed = providers.History(
            symbol, history.source, history.bars[-self.knobs.history_bars :], history.cleaning
        )
        entry = CacheEntry(trimmed, time.monotonic(), last_visible_date(now), now.isoformat())
        old = self.cache.get(symbol)
        if old is not None and old.history.bars == trimmed.bars:
            # The same bars again (a refresh before the next bar closes): what is derived from
            # them alone (technicals, market context) stands; recomputing RSI and MACD over the
            # whole history was most of a refresh's cost.
            entry.derived = old.derived
        self.cache[symbol] = entry
        self.failures.pop(symbol, None)
        await self._announce(symbol, entry)
        return entry

    def _refresh_failed(self, symbol: str, exc: providers.MarketDataError) -> CacheEntry:
        self.counters["fetch_errors"] += 1
        old = self.cache.get(symbol)
        self.log.warning("refresh of %s failed: %s%s", symbol, exc, " (serving stale data)" if old else "")
        if old is None:
            self.failures[symbol] = (time.monotonic() + self.knobs.failure_retry_s, exc)
            raise self._rpc_error(symbol, exc)
        old.error = str(exc)
        old.retry_mono = time.monotonic() + self.knobs.failure_retry_s
        return old

    def _rpc_error(self, symbol: str, exc: providers.MarketDataError) -> RpcError:
        data = {"symbol": symbol, "source": self.source.name}
        if isinstance(exc, providers.UnknownSymbolError):
            return NotFound(str(exc), data=data)
        if isinstance(exc, providers.SourceUnavailableError):
            return DependencyUnavailable(str(exc), data=data)
        return ServiceError(str(exc), data=data)

    # ---- events ---------------------------------------------------------------------------------

    def _price_fields(self, entry: CacheEntry, quote: Quote | None) -> dict:
        """The close's `date, as_of, price, change, change_pct`, the price on its basis, the quote."""
        close = close_summary(entry.history)
        view = price_view(close, quote, self.clock.now())
        return {**close, **view, "quote": quote.to_dict() if quote else None}

    def _event_data(self, symbol: str, entry: CacheEntry | None) -> dict:
        quote = self.quotes.current(symbol, self.clock.now())
        if entry is not None:
            return {"symbol": symbol, "source": entry.history.source, **self._price_fields(entry, quote)}
        assert quote is not None  # announced for a quote change before any daily bars were fetched
        return {
            "symbol": symbol,
            "source": quote.source,
            "price": quote.price,
            "change": quote.change,
            "change_pct": quote.change_pct,
            "as_of": quote.quote_time.isoformat(),
            "price_basis": "quote",
            "quote": quote.to_dict(),
        }

    async def _announce(self, symbol: str, entry: CacheEntry | None) -> None:
        """Publish `market_data_updated` for `symbol` (or hold it while refresh_all_data runs)."""
        held = _held_events.get()
        if held is not None:
            held.add(symbol)
            return
        await self.publish("market_data_updated", self._event_data(symbol, entry))
        self.counters["events_published"] += 1

    # ---- quotes -------------------------------------------------------------------------------

    async def _refresh_quotes_in_session(self) -> None:
        """The quote loop: every quote_s suite seconds from the open to the close + the delay."""
        due = self.clock.now()
        while True:
            await self.clock.sleep_until(due)
            woke = self.clock.now()
            if in_refresh_window(due, self.quote_source.delay_s):
                try:
                    await self._refresh_quotes()
                except Exception:
                    self.log.exception("quote refresh failed")
            due = next_quote_refresh(woke, self.knobs.quote_s, self.quote_source.delay_s)

    async def _refresh_quotes(self) -> set[str]:
        """Refresh every quote of the universe now (one shared run); the symbols that changed."""
        task = self._quote_task
        if task is None or task.done():  # done, its callback not run yet: as old as any other
            task = asyncio.create_task(self._run_quote_refresh())
            self._quote_task = task
            task.add_done_callback(self._quote_refresh_done)
        return await asyncio.shield(task)

    def _quote_refresh_done(self, task: asyncio.Task) -> None:
        if self._quote_task is task:
            self._quote_task = None
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have given up already

    async def _run_quote_refresh(self) -> set[str]:
        now = self.clock.now()
        symbols = self._universe()
        source = self.quote_source
        self.counters["quote_refreshes"] += 1
        outcomes: list[Quote | BaseException]
        batch_failed = False
        try:
            if isinstance(source, intraday_sources.BatchedQuoteSource):
                await source.prefetch(now)  # the one request for the universe
        except Exception as exc:  # the batch failed: no symbol has a new quote, for that reason
            expected = isinstance(exc, providers.MarketDataError)
            self.log.warning("quote refresh from %s failed: %s", source.name, exc, exc_info=not expected)
            outcomes, batch_failed = [exc] * len(symbols), True
        else:
            outcomes = await asyncio.gather(*(source.quote(s, now) for s in symbols), return_exceptions=True)
        changed = set()
        for symbol, outcome in zip(symbols, outcomes, strict=True):
            if isinstance(outcome, Quote):
                if self.quotes.record(symbol, outcome, self.clock.now()):
                    changed.add(symbol)
            else:
                self._quote_failed(symbol, outcome, logged=batch_failed)
        try:
            for symbol in sorted(changed):
                # With the daily bars held (even expired) the event has every field; without them,
                # the quote's alone: fetching them here would make a refresh one daily download per
                # symbol.
                await self._announce(symbol, self.cache.get(symbol))
        finally:
            # The instant the quotes are as of (a clock jumped mid-refresh must not make them
            # look newer), set once the events are out: whoever sees it in `health` sees them sent.
            self.quotes.refreshed_at = now
        return changed

    def _quote_failed(self, symbol: str, exc: BaseException, logged: bool = False) -> None:
        if isinstance(exc, NoIntradayData):  # expected: before the open, a holiday, no file
            self.quotes.failed(symbol, str(exc))
            return
        self.counters["quote_failures"] += 1
        if isinstance(exc, providers.MarketDataError):
            if not logged:
                self.log.warning("quote for %s failed: %s", symbol, exc)
            self.quotes.failed(
                symbol, str(exc), unavailable=isinstance(exc, providers.SourceUnavailableError)
            )
        else:
            if not logged:
                self.log.error("quote for %s failed", symbol, exc_info=exc)
            self.quotes.failed(symbol, f"internal error ({type(exc).__name__})", unavailable=True)

    async def _current_quote(self, symbol: str) -> Quote | None:
        """The symbol's quote, refreshed first when the last refresh is quote_s old (or none)."""
        for _ in range(2):  # twice at most: a shared refresh begun before a clock jump is too old
            now = self.clock.now()
            last = self.quotes.refreshed_at
            if last is not None and 0 <= (now - last).total_seconds() < self.knobs.quote_s:
                break
            await self._refresh_quotes()  # a clock set back (a replay) refreshes too
        return self.quotes.current(symbol, self.clock.now())

    def _no_quote(self, symbol: str) -> RpcError:
        failure = self.quotes.failure(symbol)
        reason = failure.reason if failure else "no quote refresh has reached it yet"
        data = {"symbol": symbol, "source": self.quote_source.name}
        if failure is not None and failure.unavailable:
            return DependencyUnavailable(f"no quote for {symbol}: {reason}", data=data)
        return NotFound(f"no quote for {symbol}: {reason}", data=data)

    # ---- derived readings, computed once per cache entry --------------------------------------

    def _technical(self, entry: CacheEntry) -> dict:
        if "technical" not in entry.derived:
            bars = entry.history.bars
            closes = [b.close for b in bars]
            volumes = [float(b.volume) for b in bars]
            entry.derived["technical"] = indicators.technical_summary(closes, volumes, self.knobs.technical)
        return entry.derived["technical"]

    def _context(self, entry: CacheEntry) -> dict:
        if "context" not in entry.derived:
            closes = [b.close for b in entry.history.bars]
            entry.derived["context"] = market_context.classify_market(closes, self.context_params)
        return entry.derived["context"]

    def _quality(self, symbol: str, entry: CacheEntry) -> dict:
        quality = data_quality.assess_quality(
            entry.history.bars,
            self.clock.now(),
            asx_calendar.is_trading_day,
            entry.history.cleaning,
            is_index=symbol == self.index,
        )
        if entry.error:
            quality["reasons"].append(f"last refresh failed: {entry.error}")
        return quality

    def _envelope(self, symbol: str, entry: CacheEntry, cached: bool) -> dict:
        return {
            "symbol": symbol,
            "source": entry.history.source,
            "as_of": bar_visible_from(entry.history.bars[-1].date).isoformat(),
            "fetched_at": entry.fetched_at,
            "cached": cached,
            "stale": entry.error is not None,
            **({"stale_reason": entry.error} if entry.error else {}),
        }

    async def _market_context(self) -> dict:
        index = self.index
        entry, cached = await self._entry(index)
        try:
            context = self._context(entry)
        except ValueError as exc:
            raise ServiceError(f"market context unavailable: {exc}", data={"index_symbol": index}) from None
        return {"index_symbol": index, **self._envelope(index, entry, cached), **context}

    # ---- RPC ----------------------------------------------------------------------------------

    @rpc
    async def get_market_data(self, symbol: str, history_days: int | None = None) -> dict:
        """Price (the quote's in the session), quote, recent bars, technicals, context, quality;
        with `history_days`, also `history`: get_price_history's reply for that many days, from
        the same bars (the prediction service's two reads of a symbol in one round trip)."""
        if history_days is not None:
            self._check_days(history_days, "history_days")
        name = self._symbol(symbol)
        entry, cached = await self._entry(name)  # first: without daily bars there is no reply
        quote = await self._current_quote(name)
        try:
            context = await self._market_context()
        except RpcError as exc:
            context = {"context": None, "error": exc.message}
        return {
            **self._envelope(name, entry, cached),
            **self._price_fields(entry, quote),
            "bars": [bar_to_dict(b) for b in entry.history.bars[-self.knobs.recent_bars :]],
            "technical": self._technical(entry),
            "market_context": context,
            "quality": self._quality(name, entry),
            **({"history": self._history(name, entry, cached, history_days)} if history_days else {}),
        }

    @rpc
    async def get_price_history(self, symbol: str, days: int = 250) -> dict:
        """The last `days` daily bars (trading days), oldest first."""
        self._check_days(days, "days")
        name = self._symbol(symbol)
        entry, cached = await self._entry(name)
        return self._history(name, entry, cached, days)

    def _check_days(self, days: int, param: str) -> None:
        if not 1 <= days <= self.knobs.history_bars:
            raise InvalidParams(param, f"must be between 1 and {self.knobs.history_bars}, got {days}")

    def _history(self, name: str, entry: CacheEntry, cached: bool, days: int) -> dict:
        return {
            **self._envelope(name, entry, cached),
            "bars": [bar_to_dict(b) for b in entry.history.bars[-days:]],
        }

    @rpc
    async def get_technical_analysis(self, symbol: str) -> dict:
        """RSI, MACD, Bollinger Bands, moving averages, volume and volatility for one symbol."""
        name = self._symbol(symbol)
        entry, cached = await self._entry(name)
        return {**self._envelope(name, entry, cached), **self._technical(entry)}

    @rpc
    async def get_market_context(self) -> dict:
        """Bull, bear or sideways from the index, with strength and the measures behind it."""
        return await self._market_context()

    @rpc
    async def refresh_all_data(self) -> dict:
        """Refetch every symbol and the index, and their quotes, now; per-symbol success or error."""
        held: set[str] = set()
        token = _held_events.set(held)
        try:
            reply = await self._refresh_all()
        finally:
            _held_events.reset(token)
        for symbol in sorted(held):  # one market_data_updated per symbol, with what is current now
            await self._announce(symbol, self.cache.get(symbol))
        return reply

    async def _refresh_all(self) -> dict:
        symbols = self._universe()
        await self._refresh_quotes()
        gate = asyncio.Semaphore(self.knobs.refresh_concurrency)

        async def one(symbol: str) -> dict:
            async with gate:
                try:
                    entry, _ = await self._entry(symbol, force=True)
                except RpcError as exc:
                    return {"ok": False, "error": exc.message, "code": exc.code}
            if entry.error:
                return {
                    "ok": False,
                    "error": entry.error,
                    "stale": True,
                    "as_of": self._envelope(symbol, entry, False)["as_of"],
                }
            fields = self._price_fields(entry, self.quotes.current(symbol, self.clock.now()))
            return {"ok": True, **{k: v for k, v in fields.items() if k != "quote"}}

        results = dict(zip(symbols, await asyncio.gather(*(one(s) for s in symbols)), strict=True))
        ok = sum(r["ok"] for r in results.values())
        return {
            "source": self.source.name,
            "refreshed_at": self.clock.now().isoformat(),
            "succeeded": ok,
            "failed": len(results) - ok,
            "results": results,
            "quote_source": self.quote_source.name,
            "quotes": {s: self._quote_outcome(s) for s in symbols},
        }

    def _quote_outcome(self, symbol: str) -> dict:
        quote = self.quotes.current(symbol, self.clock.now())
        failure = self.quotes.failure(symbol)
        return {
            "ok": failure is None and quote is not None,
            "price": quote.price if quote else None,
            "quote_time": quote.quote_time.isoformat() if quote else None,
            **({"error": failure.reason} if failure else {}),
        }

    @rpc
    async def get_quote(self, symbol: str) -> dict:
        """The latest quote (price, bid/ask, day OHLV, change, quote_time, delay_s, stale)."""
        name = self._symbol(symbol)
        quote = await self._current_quote(name)
        if quote is None:
            raise self._no_quote(name)
        return quote.to_dict()

    @rpc
    async def get_quotes(self, symbols: list[str]) -> dict:
        """get_quote of several symbols in one round trip (one shared refresh, as concurrent
        get_quote calls share it): `quotes{symbol: quote}` and `errors{symbol: {code, message,
        data}}` for those without one. An unknown symbol is -32602 for the whole call."""
        if not isinstance(symbols, list) or not symbols or len(symbols) > MAX_QUOTES:
            raise InvalidParams("symbols", f"must be a list of 1..{MAX_QUOTES} symbols")
        try:
            names = [self._symbol(s) for s in symbols]
        except InvalidParams as exc:  # the parameter is `symbols` here
            raise InvalidParams("symbols", exc.detail) from None
        found = await asyncio.gather(*(self._current_quote(n) for n in names))
        quotes, errors = {}, {}
        for name, quote in zip(names, found, strict=True):
            if quote is None:
                error = self._no_quote(name)
                errors[name] = {"code": error.code, "message": error.message, "data": error.data}
            else:
                quotes[name] = quote.to_dict()
        return {"quotes": quotes, "errors": errors}

    @rpc
    async def get_intraday_bars(self, symbol: str, interval: str = "5m", limit: int = 78) -> dict:
        """The latest `limit` visible intraday bars of `interval` (1m/5m/15m/30m/60m), oldest first."""
        name = self._symbol(symbol)
        if interval not in INTERVALS:
            raise InvalidParams("interval", f"must be one of {', '.join(INTERVALS)}, got {interval!r}")
        if not 1 <= limit <= MAX_INTRADAY_BARS:
            raise InvalidParams("limit", f"must be between 1 and {MAX_INTRADAY_BARS}, got {limit}")
        source, now = self.quote_source, self.clock.now()
        data = {"symbol": name, "source": source.name, "interval": interval}
        try:
            served = await served_bars(source, name, interval, limit, now)
        except NoIntradayData as exc:
            raise NotFound(str(exc), data=data) from None
        except providers.SourceUnavailableError as exc:
            raise DependencyUnavailable(str(exc), data=data) from None
        except providers.MarketDataError as exc:
            raise ServiceError(str(exc), data=data) from None
        return {
            **data,
            "source": served.source,
            "fallback_reason": served.fallback_reason,
            "delay_s": served.delay_s,
            "as_of": _sydney_iso(now),
            "bars": [bar.to_dict() for bar in served.bars],
        }


if __name__ == "__main__":
    run_service(MarketDataService)
