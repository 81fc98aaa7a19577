"""sentiment service: MarketAux news scored per symbol, the Big 4 aggregate and the AU market.

Life of a reading: a refresh asks MarketAux once for every symbol of the universe (one quota unit
for the whole batch), scores each symbol's articles with `services.domain.sentiment_scoring`,
keeps the result in memory and in SQLite (`<data dir>/sentiment.db`, so it survives restarts)
and publishes `sentiment_updated`. Within TRADING_SENTIMENT_CACHE_S a reading is served as
`cache`. When MarketAux is not configured or fails, the answer is an honest `fallback`: the last
good reading decayed toward neutral with its age, or neutral with zero confidence, always with
the reason. A failed refresh never replaces the last good reading, and after a failure the next
attempt waits TRADING_SENTIMENT_FAILURE_RETRY_S so a spent quota is not hammered.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.base import BaseService, InvalidParams, rpc, run_service
from services.base.knobs import read_knobs
from services.base.storage import StorageKnobs
from services.domain import sentiment_scoring as scoring
from services.sentiment.marketaux_client import (
    MarketauxArticle,
    MarketauxBadResponse,
    MarketauxClient,
    MarketauxError,
    MarketauxNotConfigured,
    MarketauxRateLimited,
    MarketauxRequestRejected,
    MarketauxServerError,
    MarketauxTokenInvalid,
    MarketauxUnreachable,
    MarketauxUsageLimitReached,
)
from services.sentiment.sentiment_knobs import SentimentKnobs
from services.sentiment.sentiment_store import Reading, SentimentReadingStore

MARKET_KEY = "market"  # the reading of AU market-wide news, stored beside the symbols
NOT_CONFIGURED_REASON = "not configured: MARKETAUX_API_TOKEN is not set"
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,10}(\.[A-Z]{1,4})?$")
_SOURCE_RANK = {"marketaux": 0, "cache": 1, "fallback": 2}


def fallback_reason(exc: MarketauxError) -> str:
    """What the caller (and the operator) should read: no token ever, no stack trace."""
    if isinstance(exc, MarketauxNotConfigured):
        return NOT_CONFIGURED_REASON
    if isinstance(exc, MarketauxUsageLimitReached):
        return "usage limit reached: the MarketAux daily quota is spent"
    if isinstance(exc, MarketauxTokenInvalid):
        return "invalid API token: MarketAux rejected MARKETAUX_API_TOKEN"
    if isinstance(exc, MarketauxRateLimited):
        return "rate limited: too many MarketAux requests in the last minute"
    if isinstance(exc, MarketauxServerError):
        return f"MarketAux unavailable: HTTP {exc.status} {exc.code}"
    if isinstance(exc, MarketauxUnreachable):
        return f"MarketAux unreachable: {exc.code}"
    if isinstance(exc, MarketauxBadResponse):
        return "MarketAux sent a response in an unexpected format"
    if isinstance(exc, MarketauxRequestRejected):
        return f"MarketAux rejected the request: HTTP {exc.status} {exc.code}"
    return f"MarketAux error: {exc.code}"


# --- readings: what a successful refresh produced for one key ------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    at: datetime


def body_of(article: MarketauxArticle) -> str:
    """Description and snippet often repeat each other: keep one when it contains the other."""
    d, s = article.description.strip(), article.snippet.strip()
    if not s or s in d:
        return d
    if not d or d in s:
        return s
    return f"{d} {s}"


def news_item_for(article: MarketauxArticle, symbol: str) -> scoring.NewsItem | None:
    entity = article.entity_for(symbol)
    if entity is None:
        return None
    return _news_item(article, entity.sentiment_score, entity.match_score)


def market_news_item(article: MarketauxArticle) -> scoring.NewsItem:
    """Market-wide news has no single subject: average the entities' sentiment and use the
    strongest match as the article's relevance."""
    sentiments = [e.sentiment_score for e in article.entities if e.sentiment_score is not None]
    matches = [e.match_score for e in article.entities if e.match_score is not None]
    return _news_item(
        article, sum(sentiments) / len(sentiments) if sentiments else None, max(matches) if matches else None
    )


def _news_item(article: MarketauxArticle, sentiment: float | None, match: float | None) -> scoring.NewsItem:
    return scoring.NewsItem(
        uuid=article.uuid,
        title=article.title,
        body=body_of(article),
        source=article.source,
        url=article.url,
        published_at=article.published_at,
        entity_sentiment=sentiment,
        match_score=match,
    )


def article_dict(scored: scoring.ScoredItem) -> dict:
    item, art = scored.item, scored.article
    return {
        "uuid": item.uuid,
        "title": item.title,
        "source": item.source,
        "url": item.url,
        "published_at": item.published_at.isoformat(),
        "score": round(art.score, 4),
        "lexicon_score": None if art.lexicon_score is None else round(art.lexicon_score, 4),
        "entity_sentiment": art.entity_sentiment,
        "match_score": item.match_score,
        "weight": round(scored.weight, 4),
    }


def reading_from(key: str, summary: scoring.SentimentSummary, now: datetime, top_n: int) -> Reading:
    return Reading(
        key=key,
        score=summary.score,
        confidence=summary.confidence,
        news_count=summary.news_count,
        signal_count=summary.signal_count,
        articles=[article_dict(s) for s in summary.items[:top_n]],
        fetched_at=now,
    )


def result_of(
    reading: Reading | None,
    source: str,
    now: datetime,
    *,
    reason: str | None = None,
    fallback_half_life_h: float = scoring.FALLBACK_HALF_LIFE_H,
) -> dict:
    """The wire shape for one key. A fallback decays the last good reading by its age (or is
    neutral with zero confidence when there never was one) and is stamped `now`."""
    if reading is None:
        reading = Reading("", 0.0, 0.0, 0, 0, [], now)
        return {**result_of(reading, "fallback", now, reason=reason), "last_good_at": None, "age_s": None}
    age_s = max(0.0, (now - reading.fetched_at).total_seconds())
    score, confidence = reading.score, reading.confidence
    if source == "fallback":
        score, confidence = scoring.decay_toward_neutral(score, confidence, age_s, fallback_half_life_h)
    result = {
        "score": round(score, 4),
        "confidence": round(confidence, 4),
        "news_count": reading.news_count,
        "signal_count": reading.signal_count,
        "articles": reading.articles,
        "source": source,
        "as_of": (now if source == "fallback" else reading.fetched_at).isoformat(),
        "fetched_at": reading.fetched_at.isoformat(),
        "age_s": round(age_s, 3),
    }
    if source == "fallback":
        result.update(reason=reason, last_good_at=reading.fetched_at.isoformat())
    return result


def aggregate(results: dict[str, dict]) -> dict:
    """Big 4 style aggregate over per-symbol results: confidence-weighted score, the worst
    source of its parts, and every fallback reason."""
    score, confidence = scoring.combine([(r["score"], r["confidence"]) for r in results.values()])
    source = max((r["source"] for r in results.values()), key=_SOURCE_RANK.__getitem__, default="fallback")
    out = {
        "score": round(score, 4),
        "confidence": round(confidence, 4),
        "news_count": sum(r["news_count"] for r in results.values()),
        "source": source,
        "as_of": min((r["as_of"] for r in results.values()), default=None),
    }
    reasons = sorted({r["reason"] for r in results.values() if r.get("reason")})
    if reasons:
        out["reason"] = "; ".join(reasons)
    return out


# --- the service ----------------------------------------------------------------------------------


class SentimentService(BaseService):
    name = "sentiment"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        env = self.settings
        self.knobs = knobs = read_knobs(SentimentKnobs, env.environ)
        self.synchronous = read_knobs(StorageKnobs, env.environ).synchronous
        self.marketaux = MarketauxClient(
            env.secret("MARKETAUX_API_TOKEN"),
            env.marketaux_base_url,
            timeout_s=knobs.http_timeout_s,
            attempts=knobs.http_attempts,
            backoff_s=knobs.retry_backoff_s,
        )
        self.readings: dict[str, Reading] = {}
        self.failures: dict[str, Failure] = {}
        self.store: SentimentReadingStore | None = None
        self._inflight: dict[tuple[str, ...], asyncio.Task[dict[str, Reading]]] = {}
        self.last_refresh: dict[str, Any] = {"at": None, "ok": None, "reason": None}

    async def on_start(self) -> None:
        self.store = SentimentReadingStore(self.settings.data_dir / "sentiment.db", self.synchronous)
        self.readings = self.store.load_all()
        self.log.info(
            "sentiment ready",
            extra={"marketaux": self._marketaux_state(), "persisted_readings": len(self.readings)},
        )

    async def on_stop(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await self.marketaux.aclose()
        if self.store is not None:
            self.store.close()

    async def health_details(self) -> dict:
        now = self.clock.now()
        fresh = sum(1 for r in self.readings.values() if self._is_fresh(r, now))
        details: dict[str, Any] = {
            "marketaux": self._marketaux_state(),
            "marketaux_requests": self.marketaux.requests_made,
            "cache_size": fresh,
            "readings": len(self.readings),
            "last_refresh_at": self.last_refresh["at"],
            "last_error": self.last_refresh["reason"],
        }
        if self.marketaux.configured and self.last_refresh["ok"] is False:
            details.update(
                status="degraded", warnings=[f"last MarketAux refresh failed: {self.last_refresh['reason']}"]
            )
        return details

    # ---- RPC ---------------------------------------------------------------------------------

    @rpc
    async def analyze_sentiment(self, symbol: str) -> dict:
        """News sentiment for one symbol: score -1..1, confidence, top articles, source, as_of."""
        symbol = self._valid_symbol(symbol)
        return {"symbol": symbol, **await self._result(symbol)}

    @rpc
    async def get_big4_sentiment(self) -> dict:
        """Aggregate sentiment over the universe (the Big 4) plus each bank's own result."""
        banks = await self._results(self.settings.symbols)
        return {**aggregate(banks), "symbols": list(self.settings.symbols), "banks": banks}

    @rpc
    async def get_market_sentiment(self) -> dict:
        """Sentiment of market-wide news for TRADING_SENTIMENT_MARKET_COUNTRY, with the Big 4 aggregate."""
        market = await self._result(MARKET_KEY)
        big4 = aggregate(await self._results(self.settings.symbols))
        return {"scope": "market", "country": self.knobs.market_country, **market, "big4": big4}

    @rpc
    async def refresh_sentiment_cache(self) -> dict:
        """Refresh every symbol and the market now, ignoring the cache (two MarketAux requests)."""
        refreshed: list[str] = []
        failed: dict[str, str] = {}
        for batch in (tuple(self.settings.symbols), (MARKET_KEY,)):
            try:
                refreshed.extend(await self._refresh(batch))
            except MarketauxError as exc:
                failed.update(dict.fromkeys(batch, fallback_reason(exc)))
        return {"refreshed": refreshed, "failed": failed, "as_of": self.clock.now().isoformat()}

    # ---- cache, refresh, fallback -------------------------------------------------------------

    def _valid_symbol(self, symbol: str) -> str:
        cleaned = symbol.strip().upper()
        if not _SYMBOL_RE.match(cleaned):
            raise InvalidParams("symbol", f"{symbol!r} is not a symbol like CBA.AX")
        if cleaned not in self.settings.symbols:
            # Outside the universe there is no batch to share: each would spend a MarketAux request.
            universe = ", ".join(self.settings.symbols)
            raise InvalidParams("symbol", f"unknown symbol {cleaned!r}; the universe is {universe}")
        return cleaned

    def _marketaux_state(self) -> str:
        return "configured" if self.marketaux.configured else "not configured"

    def _is_fresh(self, reading: Reading, now: datetime) -> bool:
        return timedelta(0) <= now - reading.fetched_at < timedelta(seconds=self.knobs.cache_s)

    def _batch_for(self, key: str) -> tuple[str, ...]:
        """The universe is always fetched together: one request (one quota unit) for all."""
        return tuple(self.settings.symbols) if key in self.settings.symbols else (key,)

    async def _results(self, keys: tuple[str, ...]) -> dict[str, dict]:
        """Concurrently, so a stale universe is fetched once and every part reports `marketaux`."""
        return dict(zip(keys, await asyncio.gather(*(self._result(k) for k in keys)), strict=True))

    async def _result(self, key: str) -> dict:
        now = self.clock.now()
        reading = self.readings.get(key)
        if reading is not None and self._is_fresh(reading, now):
            return result_of(reading, "cache", now)
        if not self.marketaux.configured:
            return self._fallback(key, NOT_CONFIGURED_REASON, now)
        failure = self.failures.get(key)
        if failure is not None and (now - failure.at).total_seconds() < self.knobs.failure_retry_s:
            return self._fallback(key, failure.reason, now)
        try:
            fresh = await self._refresh(self._batch_for(key))
        except MarketauxError as exc:
            return self._fallback(key, fallback_reason(exc), self.clock.now())
        return result_of(fresh[key], "marketaux", fresh[key].fetched_at)

    def _fallback(self, key: str, reason: str, now: datetime) -> dict:
        reading = self.readings.get(key)
        if reading is not None and reading.fetched_at > now:
            reading = None  # fetched "later" than a replay clock's now: unknowable at this time
        return result_of(
            reading,
            "fallback",
            now,
            reason=reason,
            fallback_half_life_h=self.knobs.fallback_half_life_h,
        )

    async def _refresh(self, batch: tuple[str, ...]) -> dict[str, Reading]:
        """Fetch a batch once even when several callers ask at the same time."""
        task = self._inflight.get(batch)
        if task is None:
            task = asyncio.create_task(self._fetch(batch))
            self._inflight[batch] = task
            task.add_done_callback(lambda _: self._inflight.pop(batch, None))
        # shield: one caller giving up must not cancel the fetch the others wait for.
        return await asyncio.shield(task)

    async def _fetch(self, batch: tuple[str, ...]) -> dict[str, Reading]:
        now = self.clock.now()
        # published_before: under a replay clock the API must not hand us news from the future.
        since = now - timedelta(hours=self.knobs.lookback_h)
        try:
            if batch == (MARKET_KEY,):
                page = await self.marketaux.fetch_news(
                    countries=[self.knobs.market_country],
                    limit=self.knobs.news_limit,
                    published_after=since,
                    published_before=now,
                )
                items = {MARKET_KEY: [market_news_item(a) for a in page.articles]}
            else:
                page = await self.marketaux.fetch_news(
                    batch, limit=self.knobs.news_limit, published_after=since, published_before=now
                )
                items = {s: [i for a in page.articles if (i := news_item_for(a, s))] for s in batch}
        except MarketauxError as exc:
            self._record_failure(batch, fallback_reason(exc), now)
            raise
        return await self._store_readings(items, now)

    def _record_failure(self, batch: tuple[str, ...], reason: str, now: datetime) -> None:
        for key in batch:
            self.failures[key] = Failure(reason, now)
        self.last_refresh = {"at": now.isoformat(), "ok": False, "reason": reason}
        self.log.warning(
            "MarketAux refresh failed; serving fallback", extra={"keys": list(batch), "reason": reason}
        )

    async def _store_readings(
        self, items: dict[str, list[scoring.NewsItem]], now: datetime
    ) -> dict[str, Reading]:
        fresh: dict[str, Reading] = {}
        for key, news in items.items():
            summary = scoring.summarise(news, now, self.knobs.half_life_h)
            reading = fresh[key] = reading_from(key, summary, now, self.knobs.top_articles)
            self.readings[key] = reading
            self.failures.pop(key, None)
            if self.store is not None:
                self.store.save(reading)
            await self.publish("sentiment_updated", self._event_data(reading))
        self.last_refresh = {"at": now.isoformat(), "ok": True, "reason": None}
        self.log.info(
            "sentiment refreshed", extra={"keys": list(items), "requests": self.marketaux.requests_made}
        )
        return fresh

    @staticmethod
    def _event_data(reading: Reading) -> dict:
        market = reading.key == MARKET_KEY
        return {
            "scope": "market" if market else "symbol",
            "symbol": None if market else reading.key,
            "score": round(reading.score, 4),
            "confidence": round(reading.confidence, 4),
            "news_count": reading.news_count,
            "source": "marketaux",
            "as_of": reading.fetched_at.isoformat(),
        }


if __name__ == "__main__":
    run_service(SentimentService)
