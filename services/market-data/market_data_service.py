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
"""

import asyncio
import time
from dataclasses import dataclass, field
from datetime import date

from services.base import (
    BaseService,
    DependencyUnavailable,
    InvalidParams,
    NotFound,
    RpcError,
    ServiceError,
    rpc,
    run_service,
)
from services.base.knobs import read_knobs
from services.domain import asx_calendar, data_quality, indicators, market_context
from services.domain.bars import bar_to_dict, bar_visible_from, last_visible_date
from services.domain.price_history import normalise_symbol
from services.market_data import providers
from services.market_data.market_data_knobs import MarketDataKnobs


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


def _price_summary(history: providers.History) -> dict:
    bars = history.bars
    last = bars[-1]
    prev = bars[-2].close if len(bars) > 1 else None
    change = last.close - prev if prev else None
    return {
        "price": last.close,
        "change": change,
        "change_pct": change / prev * 100.0 if change is not None else None,
        "date": last.date.isoformat(),
        "as_of": bar_visible_from(last.date).isoformat(),
    }


class MarketDataService(BaseService):
    name = "market-data"

    async def on_start(self) -> None:
        env = self.settings
        self.knobs = read_knobs(MarketDataKnobs, env.environ)
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
        }
        warnings = []
        if self.source.name == "synthetic":
            warnings.append("synthetic data: seeded random walks, not real prices")
        if stale:
            details["status"] = "degraded"
            warnings.append(f"serving stale data for {', '.join(stale)}")
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
        if task is None:
            task = asyncio.create_task(self._refresh(symbol))
            self.inflight[symbol] = task
            task.add_done_callback(lambda done, s=symbol: self._fetch_done(s, done))
        # shield: one caller giving up (timeout, disconnect) must not cancel the others' fetch
        return await asyncio.shield(task), False

    def _fetch_done(self, symbol: str, task: asyncio.Task) -> None:
        self.inflight.pop(symbol, None)
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
        self.cache[symbol] = entry
        self.failures.pop(symbol, None)
        await self._publish_update(symbol, entry)
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

    async def _publish_update(self, symbol: str, entry: CacheEntry) -> None:
        data = {"symbol": symbol, "source": entry.history.source, **_price_summary(entry.history)}
        await self.publish("market_data_updated", data)
        self.counters["events_published"] += 1

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
    async def get_market_data(self, symbol: str) -> dict:
        """Price, change, recent bars, technicals, market context and quality for one symbol."""
        name = self._symbol(symbol)
        entry, cached = await self._entry(name)
        try:
            context = await self._market_context()
        except RpcError as exc:
            context = {"context": None, "error": exc.message}
        return {
            **self._envelope(name, entry, cached),
            **_price_summary(entry.history),
            "bars": [bar_to_dict(b) for b in entry.history.bars[-self.knobs.recent_bars :]],
            "technical": self._technical(entry),
            "market_context": context,
            "quality": self._quality(name, entry),
        }

    @rpc
    async def get_price_history(self, symbol: str, days: int = 250) -> dict:
        """The last `days` daily bars (trading days), oldest first."""
        if not 1 <= days <= self.knobs.history_bars:
            raise InvalidParams("days", f"must be between 1 and {self.knobs.history_bars}, got {days}")
        name = self._symbol(symbol)
        entry, cached = await self._entry(name)
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
        """Refetch every symbol and the index now; per-symbol success or error."""
        symbols = list(dict.fromkeys([*self.settings.symbols, self.index]))  # the index may be listed too
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
            return {"ok": True, **_price_summary(entry.history)}

        results = dict(zip(symbols, await asyncio.gather(*(one(s) for s in symbols)), strict=True))
        ok = sum(r["ok"] for r in results.values())
        return {
            "source": self.source.name,
            "refreshed_at": self.clock.now().isoformat(),
            "succeeded": ok,
            "failed": len(results) - ok,
            "results": results,
        }


if __name__ == "__main__":
    run_service(MarketDataService)
