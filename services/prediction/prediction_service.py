"""prediction service process: market-aware BUY / HOLD / SELL signals.

Per symbol it gathers, concurrently, the market data and price history (market-data), the index
history (for the features' market measures), the news sentiment (sentiment) and then the model
ensemble (ml-model, once the features can be built), combines them with the pure
`services.domain.signals.decide`, stores the prediction with everything it was made from, and
publishes `prediction_generated` (durable).

Degradation: market-data is essential (no price, no technicals, no features): without it a
symbol fails with -32001 naming market-data. Sentiment or the model missing still gives a
prediction, marked `degraded` with what is `missing` and why, and a lower confidence. Every wait
is bounded: each dependency call by `TRADING_PREDICTION_DEPENDENCY_TIMEOUT_S`, each request by the
caller's `timeout_s` (the batch answers before it, reporting unfinished symbols as -32005).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
import uuid
from collections import OrderedDict
from datetime import date, datetime
from typing import Any

import orjson

from services.base import (
    BaseService,
    DependencyUnavailable,
    Event,
    InvalidParams,
    NotFound,
    RpcError,
    RpcTimeout,
    Settings,
    on_event,
    rpc,
    run_service,
)
from services.base.crashpoints import crashpoint
from services.base.knobs import read_knobs
from services.base.storage import StorageKnobs
from services.domain import asx_calendar, buy_rate, features
from services.domain.bars import bar_from_dict, last_visible_date
from services.domain.prediction_inputs import Gathered, number, read_inputs, technical_from_market
from services.domain.signals import (
    SENTIMENT_FALLBACK_SOURCE,
    SignalConfig,
    SignalDecision,
    SignalInputs,
    TechnicalReadings,
    decide,
)
from services.prediction.prediction_knobs import PredictionKnobs
from services.prediction.prediction_store import PredictionStore

MARKET_DATA, SENTIMENT, ML_MODEL = "market-data", "sentiment", "ml-model"
SYMBOL_RE = re.compile(r"^[A-Z0-9^][A-Z0-9.^_-]{0,19}$")
MAX_BATCH = 1000
OUTBOX_CHECK_S = 2.0  # how often saved-but-unsent predictions are sent again
# The answer must reach the caller before its own timeout fires: reply this much earlier.
REPLY_MARGIN_S = 0.5


# --------------------------------------------------------------------------------------------
# The stored prediction. Pure. (The dependencies' results are read into the combiner's inputs by
# services.domain.prediction_inputs.)


def prediction_document(
    *,
    symbol: str,
    now_iso: str,
    market: dict,
    sentiment: dict | None,
    ensemble: dict | None,
    feature_values: dict | None,
    inputs: SignalInputs,
    decision: SignalDecision,
    missing: dict[str, str],
    config: SignalConfig,
) -> dict:
    """The stored and published prediction: the contract's fields plus everything it came from."""
    return {
        "prediction_id": uuid.uuid4().hex,
        "symbol": symbol,
        "signal": decision.signal,
        "confidence": round(decision.confidence, 6),
        "created_at": now_iso,
        "price": number(market, "price"),
        "score": decision.score,
        "degraded": bool(missing),
        "missing": missing,
        "reasons": list(decision.reasons),
        "inputs": {
            **market_inputs(market, inputs.technical),
            "sentiment": _sentiment_summary(sentiment),
            "model": _ensemble_summary(ensemble),
            "features": feature_values,
            "feature_version": features.FEATURE_VERSION,
            "thresholds": {"buy": decision.buy_threshold, "sell": -decision.sell_threshold},
            "components": decision.as_dict()["components"],
            "signal_config": config.as_dict(),
        },
    }


def market_inputs(market: dict, technical: TechnicalReadings | None = None) -> dict:
    """What a prediction keeps of get_market_data's reply: its market data, quote, technicals and
    market context (`technical`: the readings already taken from `market`, else taken here)."""
    tech = technical or technical_from_market(market)
    return {
        "market_data": {
            "as_of": market.get("as_of"),
            "date": market.get("date"),
            "source": market.get("source"),
            "price": number(market, "price"),
            "stale": market.get("stale"),
            "quality": market.get("quality"),
            "price_basis": market.get("price_basis"),
            "quote_time": quote_time(market),
        },
        "quote": quote_summary(market),
        "technical": {
            "rsi": tech.rsi,
            "macd_histogram": tech.macd_histogram,
            "bollinger_percent_b": tech.bollinger_percent_b,
            "volume_ratio": tech.volume_ratio,
        },
        "market_context": _context_summary(market.get("market_context")),
    }


def _sentiment_key(result: dict | None) -> tuple | None:
    """What of a sentiment result the decision and the features use."""
    if not isinstance(result, dict):
        return None
    return (
        number(result, "score"),
        number(result, "confidence"),
        result.get("source") == SENTIMENT_FALLBACK_SOURCE,
    )


def _plain(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples as lists), so stored and fresh inputs compare."""
    return orjson.loads(orjson.dumps(value))


def _sent_at(event: Event, clock: Any) -> datetime:
    """When an event was published, by the suite clock of its sender (its envelope's timestamp);
    now when that is missing or unreadable."""
    try:
        sent = datetime.fromisoformat(event.timestamp)
    except (TypeError, ValueError):
        return clock.now()
    return sent if sent.tzinfo is not None else clock.now()


def may_reuse(prediction: dict, now: datetime, reuse_s: float, config: SignalConfig) -> bool:
    """Could a forced request answer with `prediction` instead of a new one, before its inputs are
    compared? Only a complete prediction (not degraded), made at most `reuse_s` suite seconds
    before `now` with this signal config and feature version. Pure."""
    if reuse_s <= 0 or prediction.get("degraded") is not False or not made_within(prediction, now, reuse_s):
        return False
    inputs = prediction.get("inputs")
    return (
        isinstance(inputs, dict)
        and inputs.get("feature_version") == features.FEATURE_VERSION
        and _plain(inputs.get("signal_config")) == _plain(config.as_dict())
    )


def cache_fresh(prediction: dict, now: datetime, degraded_s: float) -> bool:
    """May an unforced request be answered with the cached `prediction`? A complete one until new
    market data clears it; a degraded one only `degraded_s` suite seconds after it was made: what it
    missed (sentiment or ml-model away, too slow) may be back, and a desk quiet outside the session
    would otherwise keep answering with it until the next day's data. Pure."""
    return prediction.get("degraded") is not True or made_within(prediction, now, degraded_s)


def made_within(prediction: dict, now: datetime, seconds: float) -> bool:
    """Was `prediction` made at most `seconds` (suite time) before `now`, and not after it? Pure."""
    try:
        age_s = (now - datetime.fromisoformat(prediction["created_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return False
    return 0 <= age_s <= seconds


def same_inputs(prediction: dict, market: dict, sentiment: dict) -> bool:
    """Was `prediction` made on this market data (as_of, price, quote, technicals, market context,
    quality) and this sentiment (score, confidence, fallback or not)? Then the same bars, index and
    sentiment score give the model the same features, and the combiner the same inputs. Pure."""
    inputs = prediction.get("inputs") or {}
    stored = {k: inputs.get(k) for k in ("market_data", "quote", "technical", "market_context")}
    return _plain(stored) == _plain(market_inputs(market)) and _sentiment_key(
        inputs.get("sentiment")
    ) == _sentiment_key(sentiment)


def _context_summary(ctx: Any) -> dict | None:
    if not isinstance(ctx, dict):
        return None
    keep = ("context", "strength", "index_symbol", "as_of")
    return {k: ctx.get(k) for k in keep if k in ctx}


def _sentiment_summary(result: dict | None) -> dict | None:
    if result is None:
        return None
    keep = ("score", "confidence", "source", "news_count", "reason", "as_of")
    return {k: result.get(k) for k in keep if k in result}


def _ensemble_summary(result: dict | None) -> dict | None:
    if result is None:
        return None
    members = [
        {k: m.get(k) for k in ("model_name", "version", "probability", "weight")}
        for m in result.get("members") or []
        if isinstance(m, dict)
    ]
    keep = (
        "direction",
        "probability",
        "confidence",
        "version",
        "feature_version",
        "as_of",
        "synthetic",
        "excluded",
        "model_set",
        "expired",
    )
    # ml-model's own id for this vote: the key to its live-accuracy record.
    return {
        **{k: result.get(k) for k in keep if k in result},
        "ml_prediction_id": result.get("prediction_id"),
        "members": members,
    }


QUOTE_FIELDS = ("price", "quote_time", "delay_s", "source", "stale")


def quote_time(market: dict) -> str | None:
    """The time of the intraday quote in get_market_data's reply or the event's payload, if any."""
    quote = market.get("quote")
    value = quote.get("quote_time") if isinstance(quote, dict) else None
    return value if isinstance(value, str) else None


def quote_summary(market: dict) -> dict | None:
    """The quote a prediction was made with (and whether the price used was it or the close)."""
    quote = market.get("quote")
    if not isinstance(quote, dict):
        return None
    return {**{k: quote.get(k) for k in QUOTE_FIELDS}, "price_basis": market.get("price_basis")}


def needs_refresh(cached: dict | None, event_data: dict) -> bool:
    """New market data for a cached prediction? The same as_of, price and quote time is not new
    data; a later quote is (during the session the daily as_of stays put while quotes move)."""
    if cached is None:
        return True
    made_on = cached["inputs"]["market_data"]
    return (event_data.get("as_of"), number(event_data, "price"), quote_time(event_data)) != (
        made_on.get("as_of"),
        made_on.get("price"),
        made_on.get("quote_time"),
    )


def normalise_symbol(raw: str, param: str = "symbol") -> str:
    """Upper-cased and checked. Raises InvalidParams naming `param`."""
    symbol = raw.strip().upper()
    if not SYMBOL_RE.match(symbol):
        raise InvalidParams(param, f"{raw!r} is not a ticker symbol (e.g. CBA.AX)")
    return symbol


def normalise_symbols(symbols: list[str]) -> list[str]:
    """Each checked, de-duplicated in order. Raises InvalidParams."""
    if not symbols:
        raise InvalidParams("symbols", "must name at least one symbol")
    if len(symbols) > MAX_BATCH:
        raise InvalidParams("symbols", f"at most {MAX_BATCH} symbols per batch, got {len(symbols)}")
    return list(dict.fromkeys(normalise_symbol(raw, f"symbols[{i}]") for i, raw in enumerate(symbols)))


def error_entry(exc: RpcError) -> dict:
    return {"code": exc.code, "message": exc.message, "data": exc.data}


# --------------------------------------------------------------------------------------------
# The process


class PredictionService(BaseService):
    name = "prediction"

    def __init__(self, name: str | None = None, settings: Settings | None = None):
        super().__init__(name, settings)
        self.knobs = read_knobs(PredictionKnobs, self.settings.environ)
        self.synchronous = read_knobs(StorageKnobs, self.settings.environ).synchronous
        self.store: PredictionStore | None = None
        self.outbox_resent = 0  # predictions the outbox sent again (after a crash or an outage)
        # Predictions are saved and sent in the order they were asked for (see _generate): each
        # waits for the one asked before it (its turn), and one sender at a time sends the outbox.
        self._last_turn: asyncio.Future | None = None
        self._send_lock = asyncio.Lock()
        self.outbox_watch = self.make_outbox_watch("predictions")
        self.cache: dict[str, dict] = {}
        # Each symbol's latest prediction (restored from the store at start), which a forced
        # request reuses when it was made moments ago on the same inputs (see _reusable).
        self._last_made: dict[str, dict] = {}
        self.reused_count = 0
        self.prediction_count = 0
        self.predictions_by_signal: dict[str, int] = {"BUY": 0, "HOLD": 0, "SELL": 0}
        self.buy_state = buy_rate.BuyRateState()
        self.dependency_state: dict[str, str] = {}
        self._inflight: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._index: tuple[float, date, asyncio.Task] | None = None
        # The latest features built per input (the stock's and the index's bars and the sentiment
        # score, byte for byte): a symbol predicted again on the same bars (the open's quote, then
        # the monitoring task) reuses them instead of recomputing every indicator over its history.
        self._features: OrderedDict[bytes, dict[str, float]] = OrderedDict()
        self._limit = asyncio.Semaphore(self.knobs.concurrency)
        self._parsed_index: tuple[bytes, list] | None = None  # see _index_bars

    async def on_start(self) -> None:
        self.store = PredictionStore(self.settings.data_dir / "predictions.db", self.synchronous)
        self.prediction_count = self.store.count()
        self.predictions_by_signal = self.store.count_by_signal()
        # The buy-rate window survives restarts, and an episode already above is not re-alerted.
        recent = self.store.recent_signals(self.knobs.buy_rate.window_size)
        self.buy_state = buy_rate.replay(recent, self.knobs.buy_rate)
        for symbol in self.settings.symbols:
            for row in self.store.recent(1, symbol):
                self._last_made[symbol] = row
        drain = asyncio.create_task(self._drain_outbox(), name="prediction-outbox")
        self._background.add(drain)
        drain.add_done_callback(self._background.discard)

    async def on_stop(self) -> None:
        for task in list(self._background) + list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._background, *self._inflight.values(), return_exceptions=True)
        if self.store is not None:
            self.store.close()

    async def health_details(self) -> dict:
        rate = buy_rate.buy_rate(self.buy_state.signals)
        details: dict[str, Any] = {
            "prediction_count": self.prediction_count,
            "predictions_by_signal": dict(self.predictions_by_signal),
            "cache_size": len(self.cache),
            "reused_count": self.reused_count,
            "current_buy_rate": rate,
            "buy_rate_threshold": self.knobs.buy_rate.threshold,
            "buy_rate_samples": len(self.buy_state.signals),
            "buy_rate_alerting": self.buy_state.alerting,
            "dependencies": dict(self.dependency_state),
            "outbox": self.store.unpublished_count() if self.store else 0,
            "outbox_resent": self.outbox_resent,
        }
        warnings = []
        self.outbox_watch.observe(details["outbox"], self.clock.now())
        if (outbox_warning := self.outbox_watch.warning()) is not None:
            warnings.append(outbox_warning)
        if self.buy_state.alerting:
            warnings.append(
                f"buy rate {rate:.0%} over the last {len(self.buy_state.signals)} predictions "
                f"is above {self.knobs.buy_rate.threshold:.0%}"
            )
        down = {k: v for k, v in self.dependency_state.items() if v != "ok"}
        for dependency, reason in sorted(down.items()):
            warnings.append(f"{dependency}: {reason}")
        if down or self.outbox_watch.growing:
            details["status"] = "degraded"
        if warnings:
            details["warnings"] = warnings
        return details

    # ---- RPC ------------------------------------------------------------------------------

    @rpc
    async def generate_predictions(
        self, symbols: list[str] | None = None, force_refresh: bool = False, timeout_s: float | None = None
    ) -> dict:
        """Predictions for `symbols` (default: the universe); per-symbol errors never sink the batch."""
        wanted = normalise_symbols(list(self.settings.symbols) if symbols is None else symbols)
        budget = self._budget(timeout_s)
        started = time.monotonic()
        # Forced: first which symbols' latest predictions stand (made moments ago on the same
        # inputs), then the others started in the batch's order (the order they are saved and sent).
        reused = await self._reusable_batch(wanted, budget / 2) if force_refresh else {}
        tasks = {
            s: asyncio.ensure_future(self._prediction_for(s, force_refresh))
            for s in wanted
            if s not in reused
        }
        pending: set = set()
        if tasks:
            remaining = max(0.05, budget - (time.monotonic() - started))
            _, pending = await asyncio.wait(tasks.values(), timeout=remaining)
        predictions: dict[str, dict] = {
            s: {**reused[s], "cached": True, "reused": True} for s in wanted if s in reused
        }
        errors: dict[str, dict] = {}
        for symbol, task in tasks.items():
            if task in pending:
                # It keeps running: its result is cached and published when it arrives.
                task.add_done_callback(_consume)
                errors[symbol] = error_entry(
                    RpcTimeout(f"{symbol}: not ready within {budget:.1f}s; retry later")
                )
            elif (exc := task.exception()) is None:
                predictions[symbol] = task.result()
            else:
                errors[symbol] = self._error_of(symbol, exc)
        return {
            "predictions": {s: predictions[s] for s in wanted if s in predictions},
            "errors": errors,
            "requested": len(wanted),
            "from_cache": sum(1 for p in predictions.values() if p["cached"]),
            "reused": len(reused),
            "buy_rate": buy_rate.buy_rate(self.buy_state.signals),
        }

    def _error_of(self, symbol: str, exc: BaseException) -> dict:
        if isinstance(exc, RpcError):
            return error_entry(exc)
        self.log.error("prediction for %s failed", symbol, exc_info=exc)  # a bug: keep its traceback
        return {"code": -32603, "message": "internal error", "data": {"type": "internal_error"}}

    @rpc
    async def generate_single_prediction(
        self, symbol: str, force_refresh: bool = False, timeout_s: float | None = None
    ) -> dict:
        """One symbol's prediction (cached until new market data unless force_refresh; a degraded
        one TRADING_PREDICTION_DEGRADED_CACHE_S at most)."""
        symbol = normalise_symbol(symbol)
        budget = self._budget(timeout_s)
        started = time.monotonic()
        if force_refresh and (reused := await self._reusable_batch([symbol], budget / 2)):
            return {**reused[symbol], "cached": True, "reused": True}
        task = asyncio.ensure_future(self._prediction_for(symbol, force_refresh))
        done, _ = await asyncio.wait([task], timeout=max(0.05, budget - (time.monotonic() - started)))
        if not done:
            task.add_done_callback(_consume)
            raise RpcTimeout(f"{symbol}: not ready within {budget:.1f}s; retry later")
        return task.result()

    @rpc
    async def get_buy_rate(self) -> dict:
        """Share of BUY among the most recent predictions, and whether it is above the alert threshold."""
        cfg = self.knobs.buy_rate
        return {
            "buy_rate": buy_rate.buy_rate(self.buy_state.signals),
            "samples": len(self.buy_state.signals),
            "window": cfg.window_size,
            "min_samples": cfg.min_samples,
            "threshold": cfg.threshold,
            "alerting": self.buy_state.alerting,
        }

    @rpc
    async def clear_cache(self) -> dict:
        """Forget every cached prediction (the next request computes afresh)."""
        cleared = len(self.cache)
        self.cache.clear()
        self._last_made.clear()  # nor does a forced one reuse
        self._index = None
        return {"cleared": cleared}

    @rpc
    async def get_prediction(self, prediction_id: str) -> dict:
        """A stored prediction with all its inputs; -32006 when unknown."""
        found = self.store.get(prediction_id) if self.store else None
        if found is None:
            raise NotFound(f"no prediction {prediction_id!r}")
        return found

    @rpc
    async def get_recent_predictions(self, limit: int = 20, symbol: str | None = None) -> dict:
        """The latest stored predictions, newest first (optionally for one symbol)."""
        if not 1 <= limit <= 1000:
            raise InvalidParams("limit", f"must be in 1..1000, got {limit}")
        if symbol is not None:
            symbol = normalise_symbol(symbol)
        rows = self.store.recent(limit, symbol) if self.store else []
        return {"predictions": rows, "count": len(rows)}

    # ---- events ---------------------------------------------------------------------------

    @on_event("market_data_updated")
    async def on_market_data_updated(self, event: Event) -> None:
        """New bars for a symbol: recompute its prediction (the index: drop the index history)."""
        symbol = event.data.get("symbol")
        if not isinstance(symbol, str):
            return
        if symbol == self.settings.market_index:
            self._index = None
            return
        cached = self.cache.get(symbol)
        if cached is None and symbol not in self.settings.symbols:
            return
        if not self.knobs.refresh_while_closed and not asx_calendar.is_market_open(
            _sent_at(event, self.clock)
        ):
            # Nothing can trade on it: the session's first quote brings a new prediction. Judged
            # at the event's own time: a closed market's event handled late, once a replay's clock
            # has jumped into the next session, would otherwise start a prediction ahead of that
            # session's quote events, and the step's orders would follow in another order.
            return
        if not needs_refresh(cached, event.data):
            return
        task = asyncio.create_task(self._refresh(symbol, event.data), name=f"refresh-{symbol}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh(self, symbol: str, event_data: dict) -> None:
        running = self._inflight.get(symbol)
        if running is not None:
            # It may have read the market data before this update: let it finish, then check.
            await asyncio.gather(asyncio.shield(running), return_exceptions=True)
        if not needs_refresh(self.cache.get(symbol), event_data):
            return
        self.cache.pop(symbol, None)
        try:
            await self._prediction_for(symbol, force_refresh=True)
        except RpcError as exc:
            self.log.warning("refresh of %s after market_data_updated failed: %s", symbol, exc.message)
        except Exception:
            self.log.exception("refresh of %s after market_data_updated failed", symbol)

    # ---- the work -------------------------------------------------------------------------

    async def _reusable_batch(self, symbols: list[str], timeout_s: float) -> dict[str, dict]:
        """The symbols whose latest prediction a forced request may answer with (_reusable)."""
        try:
            found = await asyncio.wait_for(
                asyncio.gather(*(self._reusable(s) for s in symbols)), timeout=timeout_s
            )
        except TimeoutError:
            return {}  # slow dependencies: compute afresh, as a forced request always did
        reused = {s: p for s, p in zip(symbols, found, strict=True) if p is not None}
        self.reused_count += len(reused)
        return reused

    async def _reusable(self, symbol: str) -> dict | None:
        """The symbol's latest prediction when a forced request can stand on it: complete, made at
        most TRADING_PREDICTION_REUSE_S ago, and market-data and sentiment give now exactly the
        inputs it was made on (one get_market_data and one analyze_sentiment instead of the whole
        computation, the model's vote, storing and publishing). A computation under way for the
        symbol is shared instead (None). E.g. the open's quote re-predicts each symbol (on
        market_data_updated) and the monitoring task's forced batch follows on the same quote."""
        last = self._last_made.get(symbol)
        if last is None or symbol in self._inflight:
            return None
        if not may_reuse(last, self.clock.now(), self.knobs.reuse_s, self.knobs.signal):
            return None
        try:
            market, sentiment = await asyncio.gather(
                self._call(MARKET_DATA, "get_market_data", symbol=symbol),
                self._call(SENTIMENT, "analyze_sentiment", symbol=symbol),
            )
        except Exception:  # whatever failed is met again, and reported, by the computation
            return None
        if symbol in self._inflight or self._last_made.get(symbol) is not last:
            return None  # a newer prediction started or was made meanwhile
        return last if same_inputs(last, market, sentiment) else None

    def _budget(self, timeout_s: float | None) -> float:
        if timeout_s is not None and not 0 < timeout_s <= 3600:
            raise InvalidParams("timeout_s", f"must be in (0, 3600], got {timeout_s}")
        caller = timeout_s if timeout_s is not None else self.knobs.timeout_s
        return max(0.05, caller - min(REPLY_MARGIN_S, caller * 0.1))

    async def _prediction_for(self, symbol: str, force_refresh: bool) -> dict:
        cached = self.cache.get(symbol)
        if (
            not force_refresh
            and cached is not None
            and cache_fresh(cached, self.clock.now(), self.knobs.degraded_cache_s)
        ):
            return {**cached, "cached": True}
        joined = self._inflight.get(symbol)
        if joined is not None:
            # Concurrent requests for one symbol share one computation. This one began before the
            # call (e.g. a refresh on market_data_updated), so a failure for a dependency away or
            # slow was decided on calls made before this one arrived, and the dependency may be
            # back by now (sentiment started just before this call). Then the call tries once
            # more, in a computation begun after that failure, and answers with what the
            # dependencies say now.
            try:
                return {**await asyncio.shield(joined), "cached": False}
            except (DependencyUnavailable, RpcTimeout):
                pass
        task = self._inflight.get(symbol)
        if task is None or task is joined:  # the failed one's done callback may not have run yet
            previous, self._last_turn = self._last_turn, asyncio.get_running_loop().create_future()
            task = asyncio.create_task(
                self._generate(symbol, previous, self._last_turn), name=f"predict-{symbol}"
            )
            self._inflight[symbol] = task
            task.add_done_callback(functools.partial(self._forget_inflight, symbol))
        # shield: a caller that gives up does not cancel the computation others may share.
        prediction = await asyncio.shield(task)
        return {**prediction, "cached": False}

    def _forget_inflight(self, symbol: str, task: asyncio.Task) -> None:
        if self._inflight.get(symbol) is task:  # not a newer computation started meanwhile
            del self._inflight[symbol]

    async def _generate(self, symbol: str, previous: asyncio.Future | None, turn: asyncio.Future) -> dict:
        """Compute (concurrently with others), then save and send after the prediction asked for
        before this one: the stream then has a batch in the order it was asked for (the universe's
        order), not in the order the computations happened to finish. paper-trading acts in the
        stream's order and each fill changes the cash the next one is sized on, so a replay
        under load or faults trades the same only if that order does not depend on timing."""
        try:
            return await self._generate_in_turn(symbol, previous)
        finally:
            if not turn.done():
                turn.set_result(None)  # done, failed or cancelled: the next one's turn

    async def _generate_in_turn(self, symbol: str, previous: asyncio.Future | None) -> dict:
        async with self._limit:
            gathered = await self._gather(symbol)
        cfg = self.knobs.signal
        inputs, missing = read_inputs(gathered)
        decision = decide(inputs, cfg)
        for name in decision.missing:  # e.g. technical: no RSI, MACD (with a price) or Bollinger
            missing.setdefault(name, "market-data gave no usable reading")
        prediction = prediction_document(
            symbol=symbol,
            now_iso=self.clock.now().isoformat(),
            market=gathered.market,
            sentiment=gathered.sentiment,
            ensemble=gathered.ensemble,
            feature_values=gathered.feature_values,
            inputs=inputs,
            decision=decision,
            missing=missing,
            config=cfg,
        )
        if previous is not None:
            await asyncio.wait({previous})  # not awaited directly: cancelling us must not cancel it
        # The outbox: saved with published=0, marked once the event is on the bus; whatever a
        # crash or a Redis outage left unmarked is sent again (at start, and every few seconds).
        self.store.save(prediction)  # type: ignore[union-attr]
        crashpoint("prediction.after_save")
        self.prediction_count += 1
        self.predictions_by_signal[prediction["signal"]] += 1
        self.cache[symbol] = prediction
        self._last_made[symbol] = prediction
        await self._record_buy_rate(prediction)
        if self.bus is not None and self.bus.connected:  # else the outbox round sends it, in order
            self.outbox_resent += await self._send_outbox(prediction["prediction_id"])
        return prediction

    async def _send_prediction(self, prediction: dict) -> bool:
        """prediction_generated for a saved prediction, marked published once Redis has it."""
        assert self.bus is not None and self.store is not None
        if not await self.bus.publish_now(self.bus.make_event("prediction_generated", prediction)):
            return False
        crashpoint("prediction.after_publish")
        self.store.mark_published(prediction["prediction_id"])
        return True

    async def _send_outbox(self, own_id: str | None = None) -> int:
        """Send every saved prediction not yet on the bus, oldest first, until Redis refuses one.
        One sender at a time (a request, or the outbox round), so the stream has them in the
        order they were saved. Returns how many were sent besides `own_id` (resent ones)."""
        assert self.store is not None
        resent = 0
        async with self._send_lock:
            for prediction in self.store.unpublished():
                if not await self._send_prediction(prediction):
                    break  # Redis went away again: the next round
                resent += prediction["prediction_id"] != own_id
        return resent

    async def _drain_outbox(self) -> None:
        """Send what the outbox holds, oldest first, every OUTBOX_CHECK_S (and once at start)."""
        while True:
            try:
                if self.store is not None and self.bus is not None and self.bus.connected:
                    self.outbox_resent += await self._send_outbox()
                if self.store is not None:
                    size = self.store.unpublished_count()
                    await self.outbox_watch.check(size, self.clock.now(), self._announce_outbox)
            except Exception:
                self.log.exception("sending the prediction outbox failed")
            await asyncio.sleep(OUTBOX_CHECK_S)

    async def _announce_outbox(self, data: dict) -> bool:
        sent = await self.announce("outbox_backlog", data)
        if sent:
            log = self.log.warning if data["state"] == "growing" else self.log.info
            log("prediction outbox %s: %d unsent", data["state"], data["size"], extra=data)
        return sent

    async def _gather(self, symbol: str) -> Gathered:
        # The market data and the price history of the features in one round trip (the same bars).
        market_t = asyncio.create_task(
            self._call(MARKET_DATA, "get_market_data", symbol=symbol, history_days=self.knobs.history_days)
        )
        history_t = asyncio.create_task(_history_of(market_t))
        index_t = self._index_history()
        sentiment_t = asyncio.create_task(self._call(SENTIMENT, "analyze_sentiment", symbol=symbol))
        ensemble_t = asyncio.create_task(self._ensemble(symbol, history_t, index_t, sentiment_t))
        results = await asyncio.gather(market_t, history_t, sentiment_t, ensemble_t, return_exceptions=True)
        market, _, sentiment, ensemble = results
        if isinstance(market, BaseException):
            raise _market_failure(symbol, market)
        market = {k: v for k, v in market.items() if k != "history"}  # the features' input, used
        if not self.knobs.degrade:
            # Strict: a dependency that is away or slow fails the prediction (-32001), to be
            # made again once it answers, instead of a degraded one that decides differently.
            for service, result in ((SENTIMENT, sentiment), (ML_MODEL, ensemble)):
                if isinstance(result, InputUnavailable):  # the model's inputs, from market-data
                    service, result = MARKET_DATA, result.cause
                if isinstance(result, DependencyUnavailable | RpcTimeout):
                    how = "too slow" if isinstance(result, RpcTimeout) else "unavailable"
                    raise DependencyUnavailable(
                        f"{service} {how} for {symbol} (degraded predictions are off): {result.message}",
                        data={"dependency": service},
                    )
        g = Gathered(market=market)
        if isinstance(sentiment, BaseException):
            g.missing["sentiment"] = _why(sentiment)
        else:
            g.sentiment = sentiment
        if isinstance(ensemble, BaseException):
            g.missing["model"] = _why(ensemble)
        else:
            g.ensemble, g.feature_values = ensemble
        return g

    async def _ensemble(
        self, symbol: str, history_t: asyncio.Task, index_t: asyncio.Future, sentiment_t: asyncio.Task
    ) -> tuple[dict, dict]:
        """The model's vote once the features can be built; raises ValueError/RpcError saying why not."""
        history = await _input_of(history_t, "price history")
        index = await _input_of(asyncio.shield(index_t), "index history")
        sentiment_score = 0.0  # the feature's documented neutral value when no score is known
        with contextlib.suppress(Exception):  # no sentiment: the model still votes, on neutral
            sentiment_score = number(await sentiment_t, "score") or 0.0
        values, as_of = self._latest_features(
            history.get("bars") or [], index.get("bars") or [], sentiment_score
        )
        # as_of: the bar the features describe, so ml-model can score the vote once the next close is known.
        result = await self._call(
            ML_MODEL, "get_ensemble_prediction", features=values, symbol=symbol, as_of=as_of
        )
        return result, values

    def _latest_features(
        self, bar_rows: list[dict], index_rows: list[dict], sentiment_score: float
    ) -> tuple[dict[str, float], str]:
        """features.build_latest_features on these bars, remembered for the same inputs."""
        key = orjson.dumps([bar_rows, index_rows, sentiment_score])
        values = self._features.get(key)
        if values is None:
            bars = [bar_from_dict(b) for b in bar_rows]
            values = features.build_latest_features(bars, self._index_bars(index_rows), sentiment_score)
            self._features[key] = values
            while len(self._features) > 2 * len(self.settings.symbols) + 2:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(key)
        # build_latest_features refused an empty history, so bar_rows[-1] exists.
        return dict(values), str(bar_from_dict(bar_rows[-1]).date.isoformat())

    def _index_bars(self, index_rows: list[dict]) -> list:
        """The index's bars parsed once for all symbols (the same rows until the next bar)."""
        key = orjson.dumps(index_rows)
        if self._parsed_index is None or self._parsed_index[0] != key:
            self._parsed_index = (key, [bar_from_dict(b) for b in index_rows])
        return self._parsed_index[1]

    def _index_history(self) -> asyncio.Future:
        """The index's bars, shared by all symbols and kept for `index_ttl_s` or until it updates.

        Until it updates means: its market_data_updated, or, since that event can be lost (pub/sub
        while Redis or market-data restarts), a new daily bar due by the suite clock (16:10): a
        history read before then lacks it. A replay's day passes in a fraction of the wall-clock
        TTL, and a prediction on yesterday's index decides differently from one on today's.
        """
        now = time.monotonic()
        bars_as_of = last_visible_date(self.clock.now())
        cached = self._index
        if cached is not None:
            fetched_at, fetched_as_of, task = cached
            fresh = now - fetched_at <= self.knobs.index_ttl_s and fetched_as_of == bars_as_of
            failed = task.done() and (task.cancelled() or task.exception() is not None)
            if fresh and not failed:
                return task
        task = asyncio.create_task(
            self._call(
                MARKET_DATA,
                "get_price_history",
                symbol=self.settings.market_index,
                days=self.knobs.history_days,
            )
        )
        task.add_done_callback(_consume)
        self._index = (now, bars_as_of, task)
        return task

    async def _call(self, service: str, method: str, **params: Any) -> Any:
        try:
            # Four reconnect tries (0.05 s doubling, 0.75 s in all) outlast a supervised restart
            # (~0.2-0.3 s), so a dependency being restarted does not degrade the prediction.
            result = await self.call_service(
                service, method, timeout=self.knobs.dependency_timeout_s, retries=4, **params
            )
        except (DependencyUnavailable, RpcTimeout) as exc:
            self.dependency_state[service] = f"last call failed: {exc.message}"
            raise
        except RpcError:
            self.dependency_state[service] = "ok"  # it answered, with an error about this request
            raise
        self.dependency_state[service] = "ok"
        return result

    async def _record_buy_rate(self, prediction: dict) -> None:
        self.buy_state, crossing = buy_rate.record(self.buy_state, prediction["signal"], self.knobs.buy_rate)
        if crossing is None:
            return
        if crossing.direction == "below":
            self.log.info(
                "buy rate back to %.0f%%, at or below %.0f%%", crossing.rate * 100, crossing.threshold * 100
            )
            return
        self.log.warning(
            "buy rate %.0f%% over the last %d predictions is above %.0f%%",
            crossing.rate * 100,
            crossing.window,
            crossing.threshold * 100,
        )
        await self.publish(
            "buy_rate_alert",
            {
                **crossing.as_dict(),
                "prediction_id": prediction["prediction_id"],
                "symbol": prediction["symbol"],
            },
        )


class InputUnavailable(ValueError):
    """An input of the features could not be fetched because its service is away or slow."""

    def __init__(self, message: str, cause: RpcError):
        super().__init__(message)
        self.cause = cause


async def _history_of(market: asyncio.Future) -> dict:
    """The price history in a get_market_data reply asked with `history_days` (its errors too)."""
    history: dict = (await asyncio.shield(market))["history"]
    return history


async def _input_of(source: asyncio.Future, what: str) -> dict:
    try:
        return await source
    except (DependencyUnavailable, RpcTimeout) as exc:
        raise InputUnavailable(f"{what} unavailable: {exc.message}", exc) from None
    except RpcError as exc:
        raise ValueError(f"{what} unavailable: {exc.message}") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, RpcError):
        return exc.message
    if isinstance(exc, ValueError):
        return f"cannot build features: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _market_failure(symbol: str, exc: BaseException) -> RpcError:
    if isinstance(exc, InvalidParams | NotFound):
        return NotFound(f"{symbol}: market-data does not know it: {exc.message}")
    if isinstance(exc, RpcError):
        return DependencyUnavailable(
            f"market-data unavailable for {symbol}: {exc.message}", data={"dependency": MARKET_DATA}
        )
    raise exc


def _consume(task: asyncio.Future) -> None:
    """Retrieve a detached task's outcome so asyncio does not warn about it."""
    if not task.cancelled():
        task.exception()


if __name__ == "__main__":
    run_service(PredictionService)
