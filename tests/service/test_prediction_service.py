"""The prediction service over its real socket, with market-data, sentiment and ml-model running
as real processes on a private redis-server (market data from the synthetic source, sentiment
without a MarketAux token, so its honest fallback).

Covers: the batch and its traceability, the cache and its refresh on `market_data_updated`,
dependencies killed or hung mid-batch, the caller's deadline, and the buy-rate alert firing
exactly on the prediction that crosses the threshold.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable
from datetime import datetime, timedelta

import orjson
import pytest
import redis.asyncio as aioredis

from services.base.base_service import BaseService
from services.base.clock import SuiteClock, write_clock_file
from services.base.events import STREAM_PREFIX, EventBus
from services.base.rpc import DependencyUnavailable, InvalidParams, NotFound, RpcError
from services.domain import buy_rate
from services.domain.bars import SYDNEY, bar_from_dict
from services.domain.features import FEATURE_NAMES, build_latest_features
from services.domain.signals import SignalConfig, decide
from services.prediction.prediction_knobs import PredictionKnobs
from services.prediction.prediction_service import (
    Gathered,
    cache_fresh,
    may_reuse,
    needs_refresh,
    normalise_symbols,
    prediction_document,
    read_inputs,
    same_inputs,
    technical_from_market,
)
from tests.support import (
    EventWatcher,
    Processes,
    ServiceProcess,
    SuiteDirs,
    async_wait_until,
    install_models,
    rpc_call_sync,
)

BIG4 = ["CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX"]
# market-data publishes market_data_updated on every quote change while the ASX is open: a suite
# on the wall clock would see extra events (and recomputations) during ASX hours. A Saturday:
# nothing moves unless a test makes it.
SATURDAY_NOON = "2024-06-15T12:00:00+10:00"
WEDNESDAY_11AM = "2024-06-12T11:00:00+10:00"
DEPENDENCIES = ("market-data", "sentiment", "ml-model")


# ---- pure pieces of the shell (no sockets) ------------------------------------------------------


def test_technical_readings_follow_the_contract_names_and_never_default():
    market = {
        "price": 101.5,
        "technical": {
            "rsi": 28.0,
            "macd": {"macd": 0.4, "signal": 0.3, "histogram": 0.1},
            "bollinger": {"percent_b": float("nan")},  # not finite: missing, not 0
            "volume": {"ratio": None},
        },
    }
    t = technical_from_market(market)
    assert (t.rsi, t.macd_histogram, t.bollinger_percent_b, t.volume_ratio, t.price) == (
        28.0,
        0.1,
        None,
        None,
        101.5,
    )
    assert technical_from_market({}).rsi is None


MARKET = {
    "price": 100.0,
    "technical": {"rsi": 45.0},
    "market_context": {"context": "bear", "strength": 0.4},
    "quality": {"score": 0.9, "reasons": []},
}


@pytest.mark.parametrize(
    ("gathered", "missing", "why"),
    [
        (
            Gathered(
                MARKET, {"score": 0.1, "confidence": 0.5, "source": "cache"}, None, None, {"model": "x"}
            ),
            {"model"},
            "what the gathering step found missing is carried through",
        ),
        (
            Gathered(MARKET, {"score": "high", "confidence": 0.5}),
            {"sentiment"},
            "a non-number is not a score",
        ),
        (Gathered(MARKET, None, {"probability": 1.7, "confidence": 0.1}), {"model"}, "P(up) outside 0..1"),
        (
            Gathered({**MARKET, "market_context": {"context": None, "error": "index feed down"}}),
            {"market_context"},
            "the context's own error is kept as the reason",
        ),
        (Gathered({**MARKET, "quality": {"score": 3}}), {"data_quality"}, "a score outside 0..1 is no score"),
        (
            Gathered({**MARKET, "market_context": {"context": "boom", "strength": 0.5}}),
            {"market_context"},
            "a regime outside bull/bear/sideways is not guessed at",
        ),
    ],
)
def test_read_inputs_reports_what_is_missing(gathered, missing, why):
    inputs, got = read_inputs(gathered)
    assert set(got) == missing, why
    assert inputs.technical.rsi == 45.0
    if "market_context" in missing and "error" in gathered.market["market_context"]:
        assert got["market_context"] == "index feed down"


QUOTE_1105 = {"price": 100.5, "quote_time": "2024-03-04T11:05:00+11:00", "delay_s": 1200.0,
              "source": "yfinance", "stale": False, "bid": None, "ask": None}  # fmt: skip
QUOTE_1106 = {**QUOTE_1105, "quote_time": "2024-03-04T11:06:00+11:00"}


@pytest.mark.parametrize(
    ("event", "refresh"),
    [
        ({"symbol": "CBA.AX", "as_of": "2024-03-01", "price": 100.0}, False),  # same data again
        ({"symbol": "CBA.AX", "as_of": "2024-03-04", "price": 100.0}, True),  # a new bar
        ({"symbol": "CBA.AX", "as_of": "2024-03-01", "price": 100.5}, True),  # a corrected price
        ({"symbol": "CBA.AX"}, True),  # cannot tell: recompute rather than serve old data
        # A quote where the prediction had none (the session opened): new data.
        ({"symbol": "CBA.AX", "as_of": "2024-03-01", "price": 100.0, "quote": QUOTE_1105}, True),
    ],
)
def test_needs_refresh(event, refresh):
    cached = {"inputs": {"market_data": {"as_of": "2024-03-01", "price": 100.0}}}
    assert needs_refresh(cached, event) is refresh
    assert needs_refresh(None, event) is True


@pytest.mark.parametrize(
    ("event", "refresh"),
    [
        # In session the daily as_of stays put all day: the quote's time is what is new.
        ({"as_of": "2024-03-01", "price": 100.5, "quote": QUOTE_1105}, False),  # the same quote
        ({"as_of": "2024-03-01", "price": 100.5, "quote": QUOTE_1106}, True),  # a later quote
        ({"as_of": "2024-03-01", "price": 100.7, "quote": {**QUOTE_1106, "price": 100.7}}, True),
        ({"as_of": "2024-03-01", "price": 100.5, "quote": {**QUOTE_1105, "stale": True}}, False),
        ({"as_of": "2024-03-01", "price": 100.5, "quote": None}, True),  # the quote is gone
    ],
)
def test_needs_refresh_on_quotes(event, refresh):
    market = {"as_of": "2024-03-01", "price": 100.5, "price_basis": "quote", "quote": QUOTE_1105}
    cached = prediction_of(market)
    assert cached["inputs"]["market_data"]["quote_time"] == QUOTE_1105["quote_time"]
    assert needs_refresh(cached, {"symbol": "CBA.AX", **event}) is refresh


def prediction_of(market: dict, sentiment: dict | None = None, *, complete: bool = False) -> dict:
    """A prediction made on `market` (and `sentiment`); `complete`: recorded with nothing missing."""
    inputs, missing = read_inputs(Gathered({**MARKET, **market}, sentiment=sentiment))
    config = SignalConfig()
    return prediction_document(
        symbol="CBA.AX",
        now_iso="2024-03-04T11:07:00+11:00",
        market={**MARKET, **market},
        sentiment=sentiment,
        ensemble=None,
        feature_values=None,
        inputs=inputs,
        decision=decide(inputs, config),
        missing={} if complete else missing,
        config=config,
    )


def test_inputs_record_the_quote_used():
    market = {"as_of": "2024-03-01", "price": 100.5, "price_basis": "quote", "quote": QUOTE_1105}
    p = prediction_of(market)
    assert p["inputs"]["quote"] == {
        "price": 100.5,
        "quote_time": "2024-03-04T11:05:00+11:00",
        "delay_s": 1200.0,
        "source": "yfinance",
        "stale": False,
        "price_basis": "quote",
    }
    assert p["price"] == p["inputs"]["market_data"]["price"] == 100.5
    assert p["inputs"]["market_data"]["price_basis"] == "quote"
    # Out of session (or a source without quotes): no quote, the close is the price.
    closed = prediction_of({"as_of": "2024-03-01", "price": 100.0, "price_basis": "close", "quote": None})
    assert closed["inputs"]["quote"] is None
    assert closed["inputs"]["market_data"]["quote_time"] is None


SENTIMENT = {"score": 0.2, "confidence": 0.6, "source": "marketaux", "news_count": 3, "as_of": "x"}
MARKET_1105 = {"as_of": "2024-03-01", "price": 100.5, "price_basis": "quote", "quote": QUOTE_1105}


def complete_prediction(market: dict, sentiment: dict = SENTIMENT) -> dict:
    """A prediction made on `market` and `sentiment` with nothing missing (a reusable one)."""
    return prediction_of(market, sentiment, complete=True)


@pytest.mark.parametrize(
    "market, sentiment, same",
    [
        ({}, {}, True),
        ({}, {"source": "cache", "as_of": "y", "news_count": 4}, True),  # served from cache: same reading
        ({"price": 100.6, "quote": {**QUOTE_1105, "price": 100.6}}, {}, False),  # the price moved
        ({"quote": QUOTE_1106}, {}, False),  # a later quote at the same price
        ({"as_of": "2024-03-04"}, {}, False),  # a new bar
        ({"quote": {**QUOTE_1105, "stale": True}}, {}, False),  # the quote went stale
        ({"market_context": {"context": "bull", "strength": 0.4}}, {}, False),
        ({"quality": {"score": 0.5}}, {}, False),
        ({"technical": {"rsi": 71.0}}, {}, False),
        ({}, {"score": 0.3}, False),
        ({}, {"confidence": 0.5}, False),
        ({}, {"source": "fallback"}, False),  # fallback sentiment lowers the confidence
    ],
)
def test_a_prediction_is_reused_only_on_the_same_inputs(market, sentiment, same):
    made = complete_prediction(MARKET_1105)
    now = {**MARKET, **MARKET_1105, **market}
    assert same_inputs(made, now, {**SENTIMENT, **sentiment}) is same
    # A stored prediction reads back from JSON: the same answer.
    assert same_inputs(orjson.loads(orjson.dumps(made)), now, {**SENTIMENT, **sentiment}) is same


def test_a_prediction_may_be_reused_only_when_complete_recent_and_on_this_config():
    made = complete_prediction(MARKET_1105)
    at = datetime.fromisoformat(made["created_at"])
    config = SignalConfig()
    assert may_reuse(made, at + timedelta(seconds=300), 300, config)
    assert not may_reuse(made, at + timedelta(seconds=301), 300, config)  # too old
    assert not may_reuse(made, at - timedelta(seconds=1), 300, config)  # the clock went back
    assert not may_reuse(made, at, 0, config)  # reuse off
    assert not may_reuse({**made, "degraded": True}, at, 300, config)
    assert not may_reuse(made, at, 300, SignalConfig(buy_threshold=config.buy_threshold + 0.01))
    assert not may_reuse({**made, "inputs": {**made["inputs"], "feature_version": -1}}, at, 300, config)
    assert not may_reuse({"degraded": False}, at, 300, config)  # not a prediction document


def test_a_degraded_prediction_is_answered_from_the_cache_only_for_a_while():
    made = complete_prediction(MARKET_1105)
    at = datetime.fromisoformat(made["created_at"])
    assert cache_fresh(made, at + timedelta(days=3), 60)  # complete: until new market data
    degraded = {**made, "degraded": True}
    assert cache_fresh(degraded, at + timedelta(seconds=60), 60)
    assert not cache_fresh(degraded, at + timedelta(seconds=61), 60)
    assert not cache_fresh(degraded, at - timedelta(seconds=1), 60)  # the clock went back
    assert not cache_fresh(degraded, at, -1) and cache_fresh(degraded, at, 0)
    assert not cache_fresh({"degraded": True}, at, 60)  # not a prediction document


async def test_a_cached_degraded_prediction_is_made_again_once_it_may_be_stale(
    stack, suite, synthetic_models
):
    """Sentiment away: a degraded prediction, cached; sentiment back: an unforced call still gets
    the cached one within TRADING_PREDICTION_DEGRADED_CACHE_S, and a complete one after it."""
    install_models(synthetic_models, suite.models_dir)
    stack.start_dependencies("market-data", "ml-model")
    stack.start_prediction(
        TRADING_PREDICTION_DEGRADED_CACHE_S="2", TRADING_PREDICTION_DEPENDENCY_TIMEOUT_S="2"
    )
    first = await stack.call("generate_single_prediction", symbol="CBA.AX", timeout_s=8)
    assert first["degraded"] is True and "sentiment" in first["missing"], first["missing"]
    stack.start_dependencies("sentiment")
    again = await stack.call("generate_single_prediction", symbol="CBA.AX", timeout_s=8)
    if again["cached"]:  # within the bound (a slow machine may have passed it already)
        assert again["prediction_id"] == first["prediction_id"]
    fresh = await async_wait_until(
        lambda: stack.call("generate_single_prediction", symbol="CBA.AX", timeout_s=8),
        60, 0.2, what="a prediction made again", until=lambda p: not p["cached"],
    )  # fmt: skip
    assert fresh["prediction_id"] != first["prediction_id"]
    waited_s = (
        datetime.fromisoformat(fresh["created_at"]) - datetime.fromisoformat(first["created_at"])
    ).total_seconds()
    assert waited_s >= 2  # not before the bound (suite seconds)
    assert "sentiment" not in fresh.get("missing", {}), fresh.get("missing")


def test_normalise_symbols():
    assert normalise_symbols([" cba.ax", "CBA.AX", "^axjo"]) == ["CBA.AX", "^AXJO"]
    for bad in ([], ["CBA AX"], ["../etc"], ["X" * 21]):
        with pytest.raises(InvalidParams):
            normalise_symbols(bad)


# ---- real processes ------------------------------------------------------------------------------


def _implements(process: ServiceProcess, method: str) -> bool:
    return any(m["name"] == method for m in rpc_call_sync(process.socket, "list_methods"))


KEY_METHOD = {
    "market-data": "get_market_data",
    "sentiment": "analyze_sentiment",
    "ml-model": "get_ensemble_prediction",
}


class Stack:
    """The three dependency processes and the prediction service, in one suite."""

    def __init__(self, suite: SuiteDirs, processes: Processes, client: BaseService):
        self.suite = suite
        self.processes = processes
        self.deps: dict[str, ServiceProcess] = {}
        self.prediction: ServiceProcess | None = None
        self.client = client
        suite.env.setdefault("TRADING_CLOCK_START", SATURDAY_NOON)

    def universe(self, symbols: list[str]) -> None:
        """market-data serves only the universe: widen it (for every process started after)."""
        self.suite.env["TRADING_SYMBOLS"] = ",".join(symbols)

    def start_dependencies(self, *names: str) -> None:
        for name in names or DEPENDENCIES:
            process = self.processes.start(name, self.suite)
            if not _implements(process, KEY_METHOD[name]):
                pytest.skip(f"{name} does not implement {KEY_METHOD[name]} yet")
            self.deps[name] = process

    def start_prediction(self, **env: str) -> ServiceProcess:
        self.prediction = self.processes.start("prediction", self.suite, extra_env=env)
        return self.prediction

    async def call(self, method: str, timeout: float = 30.0, **params):
        return await self.client.call_service("prediction", method, timeout=timeout, **params)


@pytest.fixture
def stack(suite, processes, client) -> Stack:
    """Whatever it starts, the `processes` fixture stops (resumed first if a test stopped it)."""
    return Stack(suite, processes, client)


def synthetic_symbols(n: int, prefix: str = "SYN") -> list[str]:
    return [f"{prefix}{i:03d}.AX" for i in range(n)]


# ---- the batch -------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_batch_with_real_dependencies_is_traceable_cached_and_published(stack, suite, synthetic_models):
    install_models(synthetic_models, suite.models_dir)
    stack.start_dependencies()
    # Forced predictions computed afresh even on unchanged inputs (reuse: the next test).
    stack.start_prediction(TRADING_PREDICTION_REUSE_S="0")
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "prediction_generated") as watcher:
        first = await stack.call("generate_predictions", symbols=BIG4, timeout_s=25)
        assert first["errors"] == {}
        assert sorted(first["predictions"]) == sorted(BIG4)
        assert first["from_cache"] == 0
        for symbol, p in first["predictions"].items():
            check_prediction(symbol, p)
            stored = await stack.call("get_prediction", prediction_id=p["prediction_id"])
            assert stored == {k: v for k, v in p.items() if k != "cached"}
            event = await watcher.wait_for(
                "prediction_generated", lambda e, i=p["prediction_id"]: e["data"]["prediction_id"] == i
            )
            assert event["source"] == "prediction"
            assert event["data"]["price"] == p["price"]

        again = await stack.call("generate_predictions", symbols=BIG4)
        assert again["from_cache"] == 4
        assert {s: p["prediction_id"] for s, p in again["predictions"].items()} == {
            s: p["prediction_id"] for s, p in first["predictions"].items()
        }
        forced = await stack.call("generate_predictions", symbols=BIG4, force_refresh=True)
        assert forced["from_cache"] == 0
        assert not {p["prediction_id"] for p in forced["predictions"].values()} & {
            p["prediction_id"] for p in first["predictions"].values()
        }
        # Cached answers are not new predictions: 8 published, not 12.
        await watcher.settle()  # the publish precedes each reply: all 8 are in by now
        assert len(watcher.of_type("prediction_generated")) == 8

    # Durable: also on the stream, where a consumer that was down finds them later.
    redis = aioredis.from_url(suite.env["TRADING_REDIS_URL"])
    try:
        entries = await redis.xrange(STREAM_PREFIX + "prediction_generated")
    finally:
        await redis.aclose()
    streamed = {orjson.loads(fields[b"event"])["data"]["prediction_id"] for _, fields in entries}
    assert streamed == {p["prediction_id"] for r in (first, forced) for p in r["predictions"].values()}

    health = await stack.call("health")
    signals = [p["signal"] for r in (first, forced) for p in r["predictions"].values()]
    assert health["prediction_count"] == 8
    assert health["cache_size"] == 4
    assert health["current_buy_rate"] == pytest.approx(buy_rate.buy_rate(signals))
    recent = await stack.call("get_recent_predictions", limit=3)
    assert recent["count"] == 3
    assert {p["prediction_id"] for p in recent["predictions"]} <= {
        p["prediction_id"] for p in forced["predictions"].values()
    }
    assert (await stack.call("clear_cache")) == {"cleared": 4}
    assert (await stack.call("health"))["cache_size"] == 0


@pytest.mark.slow
async def test_a_forced_prediction_on_unchanged_inputs_is_not_made_twice(stack, suite, synthetic_models):
    # E.g. the open's quote re-predicts every symbol, then the monitoring task forces a batch on
    # the same quote: the one prediction stands (nothing stored or published again).
    install_models(synthetic_models, suite.models_dir)
    # One suite clock for every process, the restarted one included (as the supervisor gives):
    # with its own epoch a restarted prediction service would be back at the start time, before
    # the predictions it stored, and a prediction from its future is never reused.
    suite.env["TRADING_CLOCK_EPOCH"] = repr(time.time())
    stack.start_dependencies()
    first_process = stack.start_prediction()
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "prediction_generated") as watcher:
        made = await stack.call("generate_predictions", symbols=BIG4, force_refresh=True, timeout_s=25)
        assert made["errors"] == {} and made["reused"] == 0 and made["from_cache"] == 0
        ids = {s: p["prediction_id"] for s, p in made["predictions"].items()}
        forced = await stack.call("generate_predictions", symbols=BIG4, force_refresh=True, timeout_s=25)
        assert forced["errors"] == {} and forced["reused"] == forced["from_cache"] == 4
        assert list(forced["predictions"]) == BIG4
        assert {s: p["prediction_id"] for s, p in forced["predictions"].items()} == ids
        assert all(p["reused"] and p["cached"] for p in forced["predictions"].values())
        single = await stack.call("generate_single_prediction", symbol="WBC.AX", force_refresh=True)
        assert single["prediction_id"] == ids["WBC.AX"] and single["reused"]
        await watcher.settle()  # a new prediction's event would be in by now
        assert sorted(e["data"]["prediction_id"] for e in watcher.of_type("prediction_generated")) == sorted(
            ids.values()
        )
    health = await stack.call("health")
    assert (health["prediction_count"], health["reused_count"]) == (4, 5)
    # A restart remembers each symbol's latest prediction (from the store): still reused.
    await stack.client.close_clients()
    first_process.stop()
    stack.start_prediction()
    again = await stack.call("generate_predictions", symbols=BIG4, force_refresh=True, timeout_s=25)
    assert {s: p["prediction_id"] for s, p in again["predictions"].items()} == ids
    # clear_cache forgets them: a forced request computes afresh.
    await stack.call("clear_cache")
    fresh = await stack.call("generate_predictions", symbols=BIG4, force_refresh=True, timeout_s=25)
    assert fresh["reused"] == 0 and fresh["errors"] == {}
    assert not {p["prediction_id"] for p in fresh["predictions"].values()} & set(ids.values())
    assert (await stack.call("health"))["prediction_count"] == 8


@pytest.mark.slow
async def test_a_prediction_older_than_the_reuse_window_is_made_again(stack, suite, synthetic_models):
    install_models(synthetic_models, suite.models_dir)
    stack.start_dependencies()
    stack.start_prediction(TRADING_PREDICTION_REUSE_S="0.2")  # suite seconds (the clock runs at 1x)
    made = await stack.call("generate_single_prediction", symbol="CBA.AX", force_refresh=True, timeout_s=25)
    await asyncio.sleep(0.5)  # past the window on the suite clock: the point of the test
    again = await stack.call("generate_single_prediction", symbol="CBA.AX", force_refresh=True, timeout_s=25)
    assert again["prediction_id"] != made["prediction_id"] and not again.get("reused")


def check_prediction(symbol: str, p: dict) -> None:
    assert p["symbol"] == symbol
    assert p["signal"] in ("BUY", "HOLD", "SELL")
    assert 0.0 <= p["confidence"] <= 1.0
    assert p["created_at"][-6] in "+-"  # carries an offset
    inputs = p["inputs"]
    assert inputs["market_data"]["source"] == "synthetic"
    assert inputs["market_data"]["as_of"]
    assert p["price"] == inputs["market_data"]["price"] > 0
    assert inputs["technical"]["rsi"] is not None
    assert inputs["market_context"]["context"] in ("bull", "bear", "sideways")
    assert inputs["thresholds"]["buy"] > 0 > inputs["thresholds"]["sell"]
    # No MarketAux token in the suite: the sentiment service answers with its labelled fallback,
    # which the prediction must carry and pay for in confidence.
    assert inputs["sentiment"]["source"] == "fallback"
    assert any("fallback" in r for r in p["reasons"])
    assert "model" not in p["missing"], p["missing"]
    assert inputs["model"]["members"], "each model's vote must be recorded"
    assert all(m["version"] and m["model_name"] for m in inputs["model"]["members"])
    assert list(inputs["features"]) == list(FEATURE_NAMES)


@pytest.mark.slow
async def test_invalid_params_and_not_found(stack):
    stack.start_prediction()
    cases = [
        ("generate_predictions", {"symbols": []}, -32602, "symbols"),
        ("generate_predictions", {"symbols": ["CBA AX"]}, -32602, "symbols[0]"),
        ("generate_predictions", {"symbols": "CBA.AX"}, -32602, "symbols"),
        ("generate_predictions", {"symbols": ["CBA.AX"], "timeout_s": 0}, -32602, "timeout_s"),
        ("generate_single_prediction", {}, -32602, "symbol"),
        ("generate_single_prediction", {"symbol": "CBA;DROP"}, -32602, "symbol"),
        ("get_recent_predictions", {"symbol": "a b"}, -32602, "symbol"),
        ("get_recent_predictions", {"limit": 0}, -32602, "limit"),
        ("get_prediction", {"prediction_id": "nope"}, -32006, None),
    ]
    for method, params, code, param in cases:
        with pytest.raises(RpcError) as info:
            await stack.call(method, **params)
        assert info.value.code == code, (method, params)
        if param is not None:
            assert info.value.data["param"] == param


# ---- events: market_data_updated -> prediction_generated -------------------------------------------


async def publish_market_update(suite: SuiteDirs, data: dict, sent_at: str | None = None) -> None:
    """Publish as market-data does (same bus, same envelope), to control what is 'new'; stamped
    with the suite's clock (its start), or `sent_at`."""
    stamp = sent_at or suite.env.get("TRADING_CLOCK_START")
    clock = SuiteClock(datetime.fromisoformat(stamp)) if stamp else SuiteClock()
    bus = EventBus(suite.env["TRADING_REDIS_URL"], "market-data", clock)
    await bus.start()
    try:
        assert await bus.wait_connected(5)
        await bus.publish("market_data_updated", data)
    finally:
        await bus.close()


@pytest.mark.slow
async def test_market_data_updated_refreshes_only_on_new_data(stack, suite):
    stack.start_dependencies("market-data", "sentiment")
    stack.start_prediction()
    first = await stack.call("generate_single_prediction", symbol="CBA.AX")
    made_on = first["inputs"]["market_data"]
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "prediction_generated") as watcher:
        # The same as_of and price: not new data, the cached prediction stands.
        await publish_market_update(
            suite, {"symbol": "CBA.AX", "as_of": made_on["as_of"], "price": made_on["price"]}
        )
        # A symbol outside the universe and not cached: nobody asked for it.
        await publish_market_update(suite, {"symbol": "XYZ.AX", "as_of": "2099-01-01", "price": 1.0})
        # New data for CBA: recomputed and published without anyone asking.
        await publish_market_update(suite, {"symbol": "CBA.AX", "as_of": "2099-01-01", "price": 1.0})
        event = await watcher.wait_for("prediction_generated", lambda e: e["data"]["symbol"] == "CBA.AX")
        assert event["data"]["prediction_id"] != first["prediction_id"]
        # ... and nothing more happens.
        await asyncio.sleep(1.0)
        assert [e["data"]["symbol"] for e in watcher.of_type("prediction_generated")] == ["CBA.AX"]
    cached = await stack.call("generate_single_prediction", symbol="CBA.AX")
    assert cached["cached"] and cached["prediction_id"] == event["data"]["prediction_id"]


@pytest.mark.slow
async def test_a_closed_market_makes_no_prediction_when_told_not_to(stack, suite):
    """TRADING_PREDICTION_REFRESH_WHILE_CLOSED=false (a replay): new bars on a Saturday make no
    prediction (the test above: they do by default)."""
    stack.start_dependencies("market-data", "sentiment")
    stack.start_prediction(TRADING_PREDICTION_REFRESH_WHILE_CLOSED="false")
    first = await stack.call("generate_single_prediction", symbol="CBA.AX")
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "prediction_generated") as watcher:
        await publish_market_update(suite, {"symbol": "CBA.AX", "as_of": "2099-01-01", "price": 1.0})
        await asyncio.sleep(1.0)
        assert watcher.of_type("prediction_generated") == []
    cached = await stack.call("generate_single_prediction", symbol="CBA.AX")
    assert cached["cached"] and cached["prediction_id"] == first["prediction_id"]


@pytest.mark.slow
async def test_a_closed_markets_event_handled_in_the_session_makes_no_prediction(stack, suite):
    """With REFRESH_WHILE_CLOSED=false an event is judged at its own time: one sent at Tuesday's
    16:15 and handled on Wednesday at 11:00 (a replay's clock jumped meanwhile) makes no prediction
    ahead of the session's own events; one sent in the session does."""
    suite.env["TRADING_CLOCK_START"] = WEDNESDAY_11AM
    stack.start_dependencies("market-data", "sentiment")
    stack.start_prediction(TRADING_PREDICTION_REFRESH_WHILE_CLOSED="false")
    first = await stack.call("generate_single_prediction", symbol="CBA.AX")
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "prediction_generated") as watcher:
        closed = {"symbol": "CBA.AX", "as_of": "2099-01-01", "price": 1.0}
        await publish_market_update(suite, closed, sent_at="2024-06-11T16:15:00+10:00")
        await publish_market_update(suite, {"symbol": "WBC.AX", "as_of": "2099-01-01", "price": 1.0})
        made = await async_wait_until(
            lambda: watcher.of_type("prediction_generated"), 60, what="the session event's prediction"
        )
        # Events are handled in the order sent: the closed one was looked at first.
        assert [e["data"]["symbol"] for e in made] == ["WBC.AX"]
    cached = await stack.call("generate_single_prediction", symbol="CBA.AX")
    assert cached["cached"] and cached["prediction_id"] == first["prediction_id"]


@pytest.mark.slow
async def test_a_later_quote_recomputes_and_the_prediction_records_its_quote(stack, suite):
    # In session, with one quote refresh at start-up and the next an hour away: the test decides
    # which quotes are new.
    suite.env.update(TRADING_CLOCK_START=WEDNESDAY_11AM, TRADING_MARKET_DATA_QUOTE_S="3600")
    stack.start_dependencies("market-data", "sentiment")
    await async_wait_until(
        lambda: rpc_call_sync(stack.deps["market-data"].socket, "health"),
        30,
        0.1,
        what="market-data's first quote refresh",
        until=lambda health: health.get("last_quote_refresh"),
    )
    stack.start_prediction()
    first = await stack.call("generate_single_prediction", symbol="CBA.AX")
    quote = first["inputs"]["quote"]
    assert quote["price_basis"] == "quote" and quote["source"] == "synthetic"
    assert quote["price"] == first["price"] and quote["stale"] is False
    assert "2024-06-12T10:" <= quote["quote_time"] <= "2024-06-12T11:00:00+10:00", quote  # not after now
    assert first["inputs"]["market_data"]["quote_time"] == quote["quote_time"]
    made_on = first["inputs"]["market_data"]
    event = {"symbol": "CBA.AX", "as_of": made_on["as_of"], "price": made_on["price"], "price_basis": "quote"}
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "prediction_generated") as watcher:
        # The quote the prediction was made with: cached.
        await publish_market_update(suite, {**event, "quote": {"quote_time": quote["quote_time"]}})
        # A later quote at the same price: the price of the moment is new data.
        later = "2024-06-12T11:01:00+10:00"
        await publish_market_update(suite, {**event, "quote": {"quote_time": later}})
        refreshed = await watcher.wait_for("prediction_generated", lambda e: e["data"]["symbol"] == "CBA.AX")
        assert refreshed["data"]["prediction_id"] != first["prediction_id"]
        # ... and nothing more happens.
        await asyncio.sleep(1.0)
        assert len(watcher.of_type("prediction_generated")) == 1
    cached = await stack.call("generate_single_prediction", symbol="CBA.AX")
    assert cached["cached"] and cached["prediction_id"] == refreshed["data"]["prediction_id"]
    assert cached["inputs"]["quote"]["quote_time"] == quote["quote_time"]  # what market-data served


@pytest.mark.slow
async def test_the_index_history_is_read_again_once_a_new_daily_bar_is_due(stack, suite, synthetic_models):
    """The index's history is kept for a minute of wall time, or until its market_data_updated.
    That event can be lost (pub/sub while Redis or market-data restarts), and a replay passes a
    day in less than a second: past 16:10 by the suite clock a new bar is due, and a prediction
    must see it, not yesterday's index (a chaos replay once traded on both)."""
    install_models(synthetic_models, suite.models_dir)
    clock_file = suite.root / "clock.json"
    write_clock_file(clock_file, datetime(2024, 6, 12, 15, 0, tzinfo=SYDNEY), speed=0)
    suite.env.update(TRADING_CLOCK_FILE=str(clock_file), TRADING_MARKET_DATA_QUOTE_S="3600")
    # market-data's events are lost: it publishes to a Redis that is not there.
    lost = {"TRADING_REDIS_URL": f"unix://{suite.root}/no-redis.sock"}
    stack.deps["market-data"] = stack.processes.start("market-data", suite, extra_env=lost)
    stack.start_dependencies("sentiment", "ml-model")
    stack.start_prediction()
    before = await stack.call("generate_single_prediction", symbol="CBA.AX")
    # 16:15: Wednesday's bars are final.
    write_clock_file(clock_file, datetime(2024, 6, 12, 16, 15, tzinfo=SYDNEY), speed=0)
    after = await stack.call("generate_single_prediction", symbol="CBA.AX", force_refresh=True)

    async def history(symbol: str) -> list:
        answer = await stack.client.call_service(
            "market-data", "get_price_history", symbol=symbol, days=PredictionKnobs().history_days
        )
        return [bar_from_dict(b) for b in answer["bars"]]

    index = await history("^AXJO")
    assert index[-1].date.isoformat() == "2024-06-12"  # market-data serves the new bar
    expected = build_latest_features(
        await history("CBA.AX"), index, after["inputs"]["features"]["sentiment_score"]
    )
    assert after["inputs"]["features"] == pytest.approx(expected)
    assert after["inputs"]["features"]["index_return_1d"] != before["inputs"]["features"]["index_return_1d"]


@pytest.mark.slow
async def test_concurrent_requests_for_one_symbol_share_one_computation(stack, suite):
    stack.start_dependencies("market-data", "sentiment")
    stack.start_prediction()
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "prediction_generated") as watcher:
        replies = await asyncio.gather(
            *(
                stack.call("generate_single_prediction", symbol="WBC.AX", force_refresh=True)
                for _ in range(6)
            ),
            stack.call("generate_predictions", symbols=["WBC.AX", "wbc.ax"]),
        )
        ids = {r["prediction_id"] for r in replies[:-1]} | {
            replies[-1]["predictions"]["WBC.AX"]["prediction_id"]
        }
        assert len(ids) == 1, "seven callers, one computation"
        await watcher.wait_for("prediction_generated")
        await asyncio.sleep(0.5)  # a second computation would have published by now
        assert len(watcher.of_type("prediction_generated")) == 1
    assert (await stack.call("health"))["prediction_count"] == 1


# ---- degradation -----------------------------------------------------------------------------------


async def run_batch_killing(stack: Stack, suite: SuiteDirs, victim: str, symbols: list[str]) -> dict:
    """Start a batch, SIGKILL `victim` as soon as the first prediction is published, return the batch."""
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "prediction_generated") as watcher:
        batch = asyncio.create_task(
            stack.call("generate_predictions", timeout=60, symbols=symbols, timeout_s=50)
        )
        await watcher.wait_for("prediction_generated", timeout_s=30)
        stack.deps[victim].signal(signal.SIGKILL)
        result = await batch
    assert set(result["predictions"]) | set(result["errors"]) == set(symbols)
    return result


@pytest.mark.slow
@pytest.mark.parametrize(("victim", "missing_key"), [("sentiment", "sentiment"), ("ml-model", "model")])
async def test_optional_dependency_killed_mid_batch(stack, suite, synthetic_models, victim, missing_key):
    install_models(synthetic_models, suite.models_dir)
    stack.start_dependencies()
    stack.start_prediction(TRADING_PREDICTION_CONCURRENCY="1")
    # Only the Big 4 have models; one at a time, so the kill lands between symbols.
    result = await run_batch_killing(stack, suite, victim, BIG4)
    # An optional dependency lost: every symbol still gets a prediction, the late ones degraded.
    assert result["errors"] == {}
    degraded = [p for p in result["predictions"].values() if missing_key in p["missing"]]
    assert degraded, "the predictions made after the kill must say what is missing"
    assert len(degraded) < len(BIG4), "the first prediction was made before the kill, with everything"
    for p in degraded:
        assert p["degraded"] is True
        assert p["inputs"][missing_key] is None
        assert victim in p["missing"][missing_key]  # names the dependency that was lost
    health = await stack.call("health")
    assert health["status"] == "degraded"
    assert any(victim in w for w in health["warnings"])


async def test_with_degrading_off_a_missing_dependency_fails_the_prediction_naming_it(stack, suite):
    # As a replay runs it: no degraded prediction, whose decision would depend on the machine's
    # speed; -32001 naming the dependency, and the same call succeeds once it is back.
    stack.start_dependencies("market-data")
    stack.start_prediction(TRADING_PREDICTION_DEGRADE="false", TRADING_PREDICTION_DEPENDENCY_TIMEOUT_S="1")
    with pytest.raises(DependencyUnavailable) as info:
        await stack.call("generate_single_prediction", symbol="CBA.AX", timeout_s=8)
    assert info.value.data["dependency"] == "sentiment"
    assert "sentiment unavailable for CBA.AX (degraded predictions are off)" in info.value.message
    stack.start_dependencies("sentiment")
    # At once: the call right after sentiment's start uses it, even when it shares a computation
    # begun before (the refresh on market-data's first market_data_updated for CBA.AX).
    with pytest.raises(DependencyUnavailable) as info:  # no ml-model either
        await stack.call("generate_single_prediction", symbol="CBA.AX", timeout_s=8)
    assert info.value.data["dependency"] == "ml-model"
    stack.start_dependencies("ml-model")
    prediction = await stack.call("generate_single_prediction", symbol="CBA.AX", timeout_s=8)
    # Made once all answer; a symbol without a trained model is still a degraded prediction
    # (nothing to wait for: that is not a dependency being away).
    assert set(prediction["missing"]) <= {"model"} and "no manifest" in prediction["missing"].get(
        "model", "no manifest"
    )
    assert (await stack.call("get_recent_predictions"))["count"] == 1  # the failures stored nothing


@pytest.mark.slow
async def test_a_call_after_a_dependency_is_back_does_not_share_an_earlier_failure(stack, suite):
    # A refresh on market_data_updated runs while sentiment is away and waits on a stopped
    # ml-model; sentiment starts; a call for the same symbol shares the refresh. Its failure
    # ("sentiment is unavailable: No such file or directory") was decided before the call: the
    # call computes again and sentiment answers it.
    stack.start_dependencies("market-data", "ml-model")
    stack.start_prediction(TRADING_PREDICTION_DEGRADE="false", TRADING_PREDICTION_DEPENDENCY_TIMEOUT_S="30")
    stack.deps["ml-model"].signal(signal.SIGSTOP)  # alive, socket open, never answers
    await publish_market_update(suite, {"symbol": "CBA.AX", "as_of": "2099-01-01", "price": 1.0})

    def dependencies() -> Awaitable[dict]:
        return stack.call("health", timeout=10)

    health = await async_wait_until(
        dependencies, 60, 0.05, what="the refresh's sentiment call failing",
        until=lambda h: "sentiment" in h.get("dependencies", {}),
    )  # fmt: skip
    assert "No such file or directory" in health["dependencies"]["sentiment"]
    stack.start_dependencies("sentiment")
    health = await stack.call("health", timeout=10)
    assert "ml-model" not in health["dependencies"], "the refresh must still be running for this test"
    call = asyncio.create_task(
        stack.call("generate_single_prediction", timeout=120, symbol="CBA.AX", timeout_s=100)
    )
    # The refresh gives up on ml-model after 30 s; then ml-model answers again.
    await async_wait_until(
        dependencies, 60, 0.05, what="the refresh's ml-model call timing out",
        until=lambda h: "ml-model" in h.get("dependencies", {}),
    )  # fmt: skip
    stack.deps["ml-model"].signal(signal.SIGCONT)
    prediction = await call
    assert prediction["inputs"]["sentiment"] is not None and "sentiment" not in prediction["missing"]
    assert (await stack.call("health"))["dependencies"]["sentiment"] == "ok"


async def stream_ids(suite) -> list[str]:
    """The prediction ids in the prediction_generated stream, in order (duplicates kept)."""
    async with aioredis.from_url(suite.env["TRADING_REDIS_URL"]) as r:
        entries = await r.xrange(STREAM_PREFIX + "prediction_generated")
    return [orjson.loads(fields[b"event"])["data"]["prediction_id"] for _, fields in entries]


@pytest.mark.parametrize(
    ("point", "copies"),
    [
        ("prediction.after_save", 1),  # saved, never sent: sent once by the restarted service
        ("prediction.after_publish", 2),  # sent, not marked: sent again (consumers act once)
    ],
)
async def test_a_crash_between_save_and_the_bus_loses_nothing(stack, suite, point, copies):
    stack.start_dependencies("market-data", "sentiment")
    dying = stack.start_prediction(TRADING_CRASHPOINT=point)
    with pytest.raises(RpcError):
        await stack.call("generate_single_prediction", symbol="CBA.AX", timeout_s=8)
    assert dying.wait_exit(30) == 86
    stack.start_prediction()
    (made,) = (await stack.call("get_recent_predictions", limit=5))["predictions"]
    await async_wait_until(
        lambda: stream_ids(suite),
        30,
        what="the outbox sent",
        until=lambda ids: ids.count(made["prediction_id"]) == copies,
    )
    health = await stack.call("health")
    assert health["outbox"] == 0 and health["outbox_resent"] == 1


async def test_with_redis_away_predictions_wait_in_the_outbox(stack, suite, redis_server):
    stack.start_dependencies("market-data", "sentiment")
    stack.start_prediction()
    redis_server.kill()
    made = await stack.call("generate_single_prediction", symbol="CBA.AX", timeout_s=8)  # still served
    health = await stack.call("health")
    assert health["outbox"] == 1
    redis_server.start()
    await async_wait_until(
        lambda: stream_ids(suite),
        60,
        what="the outbox drained",
        until=lambda ids: ids == [made["prediction_id"]],
    )
    assert (await stack.call("health"))["outbox"] == 0


async def test_an_outbox_past_its_bound_is_announced_and_cleared(stack, suite):
    """Redis full (XADD refused, pub/sub flows): predictions are still made and saved; past the
    bound health degrades and outbox_backlog says so; once Redis takes writes they go out."""
    stack.start_dependencies("market-data", "sentiment")
    stack.start_prediction(TRADING_EVENTS_OUTBOX_BOUND="1")
    url = suite.env["TRADING_REDIS_URL"]
    async with aioredis.from_url(url) as admin, EventWatcher(url, "outbox_backlog") as watcher:
        await admin.config_set("maxmemory", "1")  # noeviction: writes that need memory fail
        try:
            made = [
                await stack.call("generate_single_prediction", symbol=symbol, timeout_s=8)
                for symbol in ("CBA.AX", "WBC.AX")
            ]
            growing = await watcher.wait_for("outbox_backlog", lambda e: e["data"]["state"] == "growing")
            assert (growing["data"]["service"], growing["data"]["outbox"]) == ("prediction", "predictions")
            assert growing["data"]["size"] == 2 and growing["data"]["bound"] == 1
            health = await stack.call("health")
            assert health["status"] == "degraded"
            assert any("2 predictions saved but not yet on the bus" in w for w in health["warnings"])
        finally:
            await admin.config_set("maxmemory", "0")
        await watcher.wait_for("outbox_backlog", lambda e: e["data"]["state"] == "cleared")
    assert sorted(await stream_ids(suite)) == sorted(p["prediction_id"] for p in made)
    assert (await stack.call("health"))["outbox"] == 0


@pytest.mark.slow
async def test_a_batch_is_sent_in_the_order_asked_however_its_computations_finish(stack, suite):
    # The first four symbols are new to market-data (their history is computed on the first
    # fetch), the last four are in its cache: computed concurrently, the last four finish first.
    # paper-trading acts in the stream's order and sizes each order on the cash the previous one
    # left, so the order must be the one asked for, not the one the computations finished in.
    symbols = synthetic_symbols(8, prefix="ORD")
    stack.universe(symbols)
    stack.start_dependencies("market-data", "sentiment")
    stack.start_prediction()
    await stack.call("generate_predictions", symbols=symbols[4:], timeout_s=25)
    made = await stack.call("generate_predictions", symbols=symbols, force_refresh=True, timeout_s=25)
    assert made["errors"] == {} and made["from_cache"] == 0
    ids = {p["prediction_id"]: s for s, p in made["predictions"].items()}
    streamed = [ids[i] for i in await stream_ids(suite) if i in ids]
    assert streamed == symbols
    stored = (await stack.call("get_recent_predictions", limit=8))["predictions"]  # newest first
    assert [p["symbol"] for p in reversed(stored)] == symbols


@pytest.mark.slow
async def test_market_data_killed_mid_batch_fails_only_the_rest(stack, suite):
    symbols = synthetic_symbols(16)
    stack.universe(symbols)
    stack.start_dependencies("market-data", "sentiment")
    stack.start_prediction(TRADING_PREDICTION_CONCURRENCY="2")
    result = await run_batch_killing(stack, suite, "market-data", symbols)
    assert result["predictions"], "the symbols finished before the kill keep their predictions"
    assert result["errors"], "the symbols after the kill cannot be predicted without market data"
    for error in result["errors"].values():
        assert error["code"] == -32001
        assert error["data"]["dependency"] == "market-data"
    with pytest.raises(DependencyUnavailable) as info:
        await stack.call("generate_single_prediction", symbol="OTHER.AX")
    assert "market-data" in info.value.message


@pytest.mark.slow
async def test_hung_dependency_never_holds_the_caller_past_its_timeout(stack, suite):
    stack.start_dependencies("market-data", "sentiment")
    stack.start_prediction(TRADING_PREDICTION_DEPENDENCY_TIMEOUT_S="30")
    stack.deps["market-data"].signal(signal.SIGSTOP)  # alive, socket open, never answers
    started = time.monotonic()
    result = await stack.call("generate_predictions", timeout=5, symbols=BIG4, timeout_s=2.0)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"answered after {elapsed:.2f}s, past the caller's 2 s"
    assert {e["code"] for e in result["errors"].values()} == {-32005}
    assert set(result["errors"]) == set(BIG4)
    with pytest.raises(RpcError) as info:
        await stack.call("generate_single_prediction", timeout=5, symbol="CBA.AX", timeout_s=1.0)
    assert info.value.code == -32005
    stack.deps["market-data"].signal(signal.SIGCONT)
    # The work went on in the background: once market-data answers, the results land in the cache.
    await async_wait_until(
        lambda: stack.call("health", timeout=10),
        60,
        0.1,
        what="the late predictions to be cached",
        until=lambda health: health["cache_size"] == len(BIG4),
    )


@pytest.mark.slow
async def test_dependency_timeout_gives_minus_32001_naming_it(stack, suite):
    stack.start_dependencies("market-data", "sentiment")
    stack.start_prediction(TRADING_PREDICTION_DEPENDENCY_TIMEOUT_S="0.5")
    stack.deps["market-data"].signal(signal.SIGSTOP)  # resumed and stopped at teardown
    with pytest.raises(DependencyUnavailable) as info:
        await stack.call("generate_single_prediction", timeout=10, symbol="CBA.AX", timeout_s=5)
    assert info.value.data["dependency"] == "market-data"


# ---- buy-rate alert ---------------------------------------------------------------------------------


async def find_signals(stack: Stack, candidates: list[str]) -> dict[str, str]:
    result = await stack.call("generate_predictions", symbols=candidates, timeout_s=25)
    assert not result["errors"], result["errors"]
    return {s: p["signal"] for s, p in result["predictions"].items()}


@pytest.mark.slow
async def test_buy_rate_alert_fires_exactly_when_crossing(stack, suite):
    candidates = synthetic_symbols(12, "BR")
    stack.universe(candidates)
    stack.start_dependencies("market-data", "sentiment")
    # A low BUY bar so the deterministic synthetic symbols split into BUY and HOLD.
    env = {
        "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD": "0.02",
        "TRADING_PREDICTION_SIGNAL_SELL_THRESHOLD": "0.98",
    }
    discovery = stack.start_prediction(**env)
    signals = await find_signals(stack, candidates)
    buy = next((s for s, v in signals.items() if v == "BUY"), None)
    other = next((s for s, v in signals.items() if v != "BUY"), None)
    if buy is None or other is None:
        pytest.fail(f"the synthetic symbols did not split into BUY and non-BUY: {signals}")
    discovery.stop()

    # A fresh service (own database, so an empty window): window 10, alert above 70%, from 4.
    env.update(
        TRADING_DATA_DIR=str(suite.root / "data2"),
        TRADING_PREDICTION_BUY_RATE_WINDOW="10",
        TRADING_PREDICTION_BUY_RATE_THRESHOLD="0.7",
        TRADING_PREDICTION_BUY_RATE_MIN_SAMPLES="4",
    )
    await stack.client.close_clients()  # its connection died with the first process
    stack.start_prediction(**env)
    async with EventWatcher(suite.env["TRADING_REDIS_URL"], "buy_rate_alert") as watcher:
        # H H H then B x7: 7/10 = 70% is not above; the 11th (B) makes the last ten 8/10 = 80%.
        for symbol in [other] * 3 + [buy] * 7:
            await stack.call("generate_single_prediction", symbol=symbol, force_refresh=True)
        await watcher.settle()  # an alert would be in by now: the publish precedes the reply
        assert watcher.of_type("buy_rate_alert") == []
        assert (await stack.call("get_buy_rate"))["buy_rate"] == pytest.approx(0.7)
        crossing = await stack.call("generate_single_prediction", symbol=buy, force_refresh=True)
        alert = await watcher.wait_for("buy_rate_alert")
        assert alert["data"]["prediction_id"] == crossing["prediction_id"]
        assert alert["data"]["rate"] == pytest.approx(0.8)
        assert alert["data"]["threshold"] == 0.7
        # Still above: no second alert for the same episode.
        for _ in range(3):
            await stack.call("generate_single_prediction", symbol=buy, force_refresh=True)
        await watcher.settle()
        assert len(watcher.of_type("buy_rate_alert")) == 1
    health = await stack.call("health")
    assert health["current_buy_rate"] == pytest.approx(1.0)
    assert any("buy rate" in w for w in health["warnings"])
    assert health["buy_rate_alerting"] is True
    rate = await stack.call("get_buy_rate")
    assert rate["alerting"] is True and rate["samples"] == 10


@pytest.mark.slow
async def test_restart_keeps_predictions_and_buy_rate_window(stack, suite):
    stack.start_dependencies("market-data", "sentiment")
    first = stack.start_prediction()
    made = await stack.call("generate_predictions", symbols=BIG4)
    before = await stack.call("get_buy_rate")
    await stack.client.close_clients()
    first.stop()
    stack.start_prediction()
    after = await stack.call("get_buy_rate")
    assert (after["samples"], after["buy_rate"]) == (before["samples"], before["buy_rate"])
    assert (await stack.call("health"))["prediction_count"] == 4
    some = next(iter(made["predictions"].values()))
    assert (await stack.call("get_prediction", prediction_id=some["prediction_id"]))["symbol"] == some[
        "symbol"
    ]
    with pytest.raises(NotFound):
        await stack.call("get_prediction", prediction_id="0" * 32)
