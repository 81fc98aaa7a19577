"""Benchmark: quote refreshes for the Big 4 and for 200 symbols, and the latency from a new quote to
`market_data_updated`, `prediction_generated` and `trade_executed`.

    .venv/bin/python tests/benchmarks/bench_quotes.py [--symbols 200] [--seconds 60] [--refreshes 8]
        [--speed 60] [--skip-refresh] [--skip-yfinance] [--skip-latency]

1. Quote refresh, the whole universe at once (TRADING_SYMBOLS plus the index ^AXJO, so 5 and 201
   quotes):
   - synthetic source, in the real market-data process: it runs tests/benchmarks/_timed_market_data.py,
     the service's own class with a stopwatch on `_run_quote_refresh` (the one refresh that the
     loop, an on-demand `get_quote` and `refresh_all_data` share). A suite clock at 60x from a
     Tuesday 11:00 Sydney and TRADING_MARKET_DATA_QUOTE_S=60 make the loop refresh once a real
     second, each time with a new 1m bar, so every quote changes and every refresh sends one event
     per symbol, as a live refresh does once a minute. Per refresh: its quotes (the source and the
     QuoteBook), then its `market_data_updated` events; the first refresh of the day (each
     symbol's synthetic walk is built) apart; `refresh_all_data` (also refetches every symbol's
     daily bars) over the socket; and `get_quote` for every symbol right after a refresh;
   - yfinance's batch path, in this process: YFinanceIntradaySource with `yf.download` replaced by a
     fake that returns a yfinance-shaped frame (Ticker, Price) for the universe (6 sessions of 1m
     bars, 2% of each ticker's bars missing), so the figure is parsing one batched download and
     building every quote from it, NOT the network (Yahoo cannot be reached here; inside a real
     yf.download yfinance asks Yahoo one ticker after the other, threads=False). The synthetic
     source through the same in-process harness is the baseline beside it.
2. Latency: redis + market-data (timed, as above) + sentiment + ml-model + prediction + paper-trading
   for the Big 4, clock at --speed from 11:00 (a quote refresh every 60/speed real seconds), low signal
   thresholds (as the replay tests) and small positions so paper-trading keeps buying. From each
   refresh's start (wall clock, recorded in market-data) to the arrival at a Redis subscriber here
   of: the refresh's `market_data_updated` (by event id); the `prediction_generated` made with that
   quote (same symbol and quote_time); the `trade_executed` that fills that prediction (its
   prediction_id). p50/p99 over the refreshes after a warm-up, for --seconds.
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from services.base.clock import SYDNEY
from services.base.events import CHANNEL_PREFIX
from services.base.rpc.client import RpcClient
from services.domain import asx_calendar
from tests.support import (
    Processes,
    RedisServer,
    SuiteDirs,
    Training,
    install_models,
    make_suite_env,
    rpc_call_sync,
    short_tempdir,
    trained_models,
)

REPO = Path(__file__).resolve().parents[2]
TIMED_MARKET_DATA = Path(__file__).resolve().with_name("_timed_market_data.py")
BIG4 = ["CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX"]
INDEX = "^AXJO"
# A Tuesday in session; every run sees the same synthetic prices.
CLOCK_START = datetime(2026, 11, 24, 11, 0, tzinfo=SYDNEY)
# The models tests/conftest.py's `synthetic_models` uses (the same cache key, so shared with tests).
MODELS = Training(years=1.0, symbols=tuple(BIG4))
# Signals as the replay tests set them (tests/system/_replay_helpers.py TRADING_KNOBS), so there
# are BUYs to fill; positions of 0.25% of the book with no per-symbol or daily-loss cap, so
# paper-trading keeps buying for the whole run instead of stopping at the $10,000 per symbol.
CHAIN_KNOBS = {
    "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD": "0.01",
    "TRADING_PREDICTION_SIGNAL_SELL_THRESHOLD": "0.15",
    "TRADING_PREDICTION_SIGNAL_BEAR_BUY_EXTRA": "0",
    "TRADING_PAPER_TRADING_POSITION_SIZE_PCT": "0.25",
    "TRADING_PAPER_TRADING_MAX_POSITION_VALUE": "1000000",
    "TRADING_PAPER_TRADING_MAX_DAILY_LOSS": "1000000",
}
EVENTS = ("market_data_updated", "prediction_generated", "trade_executed")
GRACE_S = 3.0  # latency: listening goes on this long after the last measured refresh


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def universe(count: int) -> list[str]:
    """The Big 4 first, then made-up tickers (the synthetic source prices any name)."""
    return (BIG4 + [f"S{i:03d}.AX" for i in range(count - len(BIG4))])[:count]


def clock_env(speed: float, epoch: float) -> dict[str, str]:
    return {
        "TRADING_CLOCK_START": CLOCK_START.isoformat(),
        "TRADING_CLOCK_SPEED": repr(speed),
        "TRADING_CLOCK_EPOCH": repr(epoch),
    }


async def call(client: RpcClient, method: str, timeout_s: float = 120.0, **params: Any) -> Any:
    async with asyncio.timeout(timeout_s):
        return await client.call(method, params or None)


async def refreshes_after(client: RpcClient, since: int, count: int, timeout_s: float = 120.0) -> list[dict]:
    """The timing records of `count` quote refreshes from the `since`-th on (waits for them)."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = await call(client, "bench_quote_refreshes", since=since)
        if len(reply["refreshes"]) >= count:
            return reply["refreshes"][:count]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} quote refreshes after #{since} did not come in {timeout_s:g} s")
        await asyncio.sleep(0.01)


# ---- 1. quote refresh -----------------------------------------------------------------------


class Row:
    """One line of the refresh table: seconds per refresh for each universe size."""

    def __init__(self, label: str):
        self.label = label
        self.seconds: dict[int, float] = {}  # quotes in the refresh -> seconds per refresh
        self.note = ""


def median_s(records: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in records)


async def synthetic_in_service(symbols: list[str], refreshes: int, root: Path, rows: dict[str, Row]) -> None:
    redis = RedisServer(root / f"redis-{len(symbols)}").start()
    try:
        dirs = make_suite_env(
            root / f"md-{len(symbols)}",
            redis.url,
            TRADING_SYMBOLS=",".join(symbols),
            TRADING_MARKET_DATA_QUOTE_S="60",
            **clock_env(60.0, time.time()),
        )
        with Processes() as processes:
            service = processes.start("market-data", dirs, entry=TIMED_MARKET_DATA)
            client = RpcClient(service.socket)
            try:
                await measure_service(client, symbols, refreshes, rows)
            finally:
                await client.close()
    finally:
        redis.stop()


async def measure_service(
    client: RpcClient, symbols: list[str], refreshes: int, rows: dict[str, Row]
) -> None:
    cold = (await refreshes_after(client, 0, 1))[0]
    quotes = cold["quotes"]
    rows["cold"].seconds[quotes] = cold["total_s"]

    # refresh_all_data, started right after a loop refresh so it runs its own quote refresh
    count = (await call(client, "bench_quote_refreshes"))["count"]
    await refreshes_after(client, count, 1)
    before = count + 1
    started = time.perf_counter()
    reply = await call(client, "refresh_all_data", timeout_s=300)
    rows["forced"].seconds[quotes] = time.perf_counter() - started
    during = (await call(client, "bench_quote_refreshes", since=before))["refreshes"]
    own = [r for r in during if r["refresh_all_data"]]
    if own:
        rows["forced_quotes"].seconds[quotes] = own[0]["total_s"]
    else:
        rows["forced_quotes"].note = "joined a loop refresh already running: not timed on its own"
    meanwhile = len(during) - len(own)
    rows["forced"].note = f"{reply['succeeded']}/{quotes} ok; {meanwhile} loop refreshes ran meanwhile"

    # the loop's refreshes, every symbol's quote changed (a new 1m bar each time)
    since = (await call(client, "bench_quote_refreshes"))["count"]
    warm = await refreshes_after(client, since, refreshes)
    for key, field in (("quotes", "quotes_s"), ("whole", "total_s")):
        rows[key].seconds[quotes] = median_s(warm, field)
    events = [r["total_s"] - r["quotes_s"] for r in warm]
    rows["events"].seconds[quotes] = statistics.median(events)
    changed = statistics.median(r["changed"] for r in warm)
    rows["events"].note = f"{changed:g} events a refresh"
    rows["whole"].note = f"median of {len(warm)}"

    # get_quote for every symbol right after a refresh: reads of the refreshed book
    count = (await call(client, "bench_quote_refreshes"))["count"]
    await refreshes_after(client, count, 1)
    latencies = []
    started = time.perf_counter()
    for symbol in [*symbols, INDEX]:
        t0 = time.perf_counter()
        quote = await call(client, "get_quote", symbol=symbol)
        latencies.append(time.perf_counter() - t0)
        assert not quote["stale"], quote
    rows["reads"].seconds[quotes] = time.perf_counter() - started
    after = (await call(client, "bench_quote_refreshes"))["count"]
    ms = sorted(x * 1000 for x in latencies)
    rows["reads"].note = f"p50 {statistics.median(ms):.2f} ms a call" + (
        f" ({after - count - 1} refreshes ran meanwhile)" if after > count + 1 else ""
    )


def yahoo_frame(symbols: list[str], now: datetime, sessions: int = 6, missing: float = 0.02, seed: int = 7):
    """What `yf.download(tickers, period="6d", interval="1m", group_by="ticker", auto_adjust=False,
    ignore_tz=False)` returns for the universe: per ticker Open/High/Low/Close/Adj Close/Volume of
    the last `sessions` sessions' 1m bars (today's up to now - 20 min, Yahoo's delay), each
    ticker missing a few bars, over the union of every ticker's times (NaN rows where a ticker has
    none; yfinance reindexes and concatenates them this way)."""
    import numpy as np
    import pandas as pd

    days: list = []
    day = now.date()
    while len(days) < sessions:
        if asx_calendar.is_trading_day(day):
            days.append(day)
        day -= timedelta(days=1)
    shown_until = now - timedelta(minutes=20)
    starts = []
    for day in sorted(days):
        opens = datetime(day.year, day.month, day.day, 10, tzinfo=SYDNEY)
        starts += [
            t
            for t in (opens + timedelta(minutes=m) for m in range(360))
            if t + timedelta(minutes=1) <= shown_until
        ]
    index = pd.DatetimeIndex(starts, name="Datetime").tz_convert("Australia/Sydney")
    rng = np.random.default_rng(seed)
    frames = {}
    for k, symbol in enumerate(symbols):
        n = len(index)
        close = (20.0 + 5 * k % 150) * np.exp(np.cumsum(rng.normal(0, 0.0008, n)))
        open_ = np.concatenate([[close[0]], close[:-1]])
        spread = np.abs(rng.normal(0, 0.0005, n)) * close
        high, low = np.maximum(open_, close) + spread, np.minimum(open_, close) - spread
        volume = rng.integers(0, 20_000, n).astype(float)
        part = pd.DataFrame(
            {"Open": open_, "High": high, "Low": low, "Close": close, "Adj Close": close, "Volume": volume},
            index=index,
        )
        frames[symbol] = part[rng.random(n) >= missing]
    union = frames[symbols[0]].index
    for part in frames.values():
        union = union.union(part.index)
    frames = {s: part.reindex(union) for s, part in frames.items()}
    return pd.concat(frames.values(), axis=1, sort=True, keys=frames.keys(), names=["Ticker", "Price"])


@contextmanager
def fake_yf_download(frame, rounds: int) -> Iterator[list[float]]:
    """yfinance.download returns a fresh copy of `frame` (copied before the call: not timed)."""
    import yfinance

    copies = [frame.copy(deep=True) for _ in range(rounds)]
    calls: list[float] = []

    def download(**kwargs: Any):
        calls.append(time.perf_counter())
        return copies.pop() if copies else frame.copy(deep=True)

    original = yfinance.download
    yfinance.download = download
    try:
        yield calls
    finally:
        yfinance.download = original


async def in_process_refreshes(
    source, symbols: list[str], rounds: int
) -> tuple[list[tuple[float, float]], int]:
    """(batch seconds, quotes seconds) per refresh, as market-data's refresh does it (the batch
    first when the source batches, then every quote, each recorded in a QuoteBook); and how many
    symbols were priced in the last one."""
    from services.domain.intraday import Quote
    from services.domain.quote_book import QuoteBook
    from services.market_data.intraday_sources import BatchedQuoteSource

    book = QuoteBook()
    timings, priced = [], 0
    for _ in range(rounds):
        now = CLOCK_START
        t0 = time.perf_counter()
        if isinstance(source, BatchedQuoteSource):
            await source.prefetch(now)
        t1 = time.perf_counter()
        outcomes = await asyncio.gather(*(source.quote(s, now) for s in symbols), return_exceptions=True)
        priced = 0
        for symbol, outcome in zip(symbols, outcomes, strict=True):
            if isinstance(outcome, Quote):
                book.record(symbol, outcome, now)
                priced += 1
        timings.append((t1 - t0, time.perf_counter() - t1))
    return timings, priced


async def in_process(symbols: list[str], rounds: int, rows: dict[str, Row], yfinance: bool) -> str:
    from services.market_data.intraday_sources import SyntheticIntradaySource, YFinanceIntradaySource

    quotes = len(symbols)
    timings, _ = await in_process_refreshes(SyntheticIntradaySource(), symbols, rounds + 1)
    rows["synthetic_in_process"].seconds[quotes] = statistics.median(b + q for b, q in timings[1:])
    if not yfinance:
        return ""
    frame = yahoo_frame(symbols, CLOCK_START)
    with fake_yf_download(frame, rounds + 1) as calls:
        source = YFinanceIntradaySource(symbols, fresh_s=60.0)
        timings, priced = await in_process_refreshes(source, symbols, rounds + 1)
    assert len(calls) == rounds + 1 and source.downloads == rounds + 1, "one download per refresh"
    warm = timings[1:]
    rows["yf_parse"].seconds[quotes] = statistics.median(b for b, _ in warm)
    rows["yf_quotes"].seconds[quotes] = statistics.median(q for _, q in warm)
    rows["yf_total"].seconds[quotes] = statistics.median(b + q for b, q in warm)
    rows["yf_total"].note = f"priced {priced}/{quotes}"
    return f"{frame.shape[0]} rows x {frame.shape[1]} columns"


def print_refresh_table(rows: dict[str, Row], sizes: list[int], frames: dict[int, str]) -> None:
    small, large = sizes[0], sizes[-1]
    print()
    print(
        f"1. Quote refresh of the whole universe: Big 4 + index = {small} quotes, "
        f"{large - 1} symbols + index = {large} quotes (median ms; per quote = per refresh / quotes)"
    )
    header = (
        f"  {'':<62} {'per refresh':>11} {'per quote':>9} {'per refresh':>11} {'per quote':>9} {'ratio':>7}"
    )
    print(f"  {'':<62} {f'{small} quotes':>21} {f'{large} quotes':>21} {f'{large}/{small}':>7}")
    print(header)
    for row in rows.values():
        if not row.seconds and not row.note:
            continue
        cells = []
        for size in (small, large):
            s = row.seconds.get(size)
            cells += (
                [f"{s * 1000:11.1f}", f"{s * 1000 / size:9.3f}"]
                if s is not None
                else [f"{'-':>11}", f"{'-':>9}"]
            )
        ratio = (
            row.seconds[large] / row.seconds[small] if small in row.seconds and large in row.seconds else None
        )
        ratio_text = f"{ratio:6.1f}x" if ratio is not None else f"{'-':>7}"
        print(f"  {row.label:<62} {' '.join(cells)} {ratio_text}  {row.note}")
    for size, shape in frames.items():
        if shape:
            print(f"  fake yf.download frame for {size} tickers: {shape}")
    print(
        "  yfinance rows: parsing one batched yf.download and building the quotes, in this process; the\n"
        "  network time (Yahoo, asked ticker by ticker inside yf.download) is NOT included."
    )


def refresh_rows() -> dict[str, Row]:
    labels = {
        "quotes": "synthetic, market-data process: quotes (source + QuoteBook)",
        "events": "synthetic, market-data process: its market_data_updated events",
        "whole": "synthetic, market-data process: whole refresh",
        "cold": "synthetic, market-data process: first refresh of the day",
        "forced_quotes": "synthetic, refresh_all_data: its quote refresh",
        "forced": "synthetic, refresh_all_data RPC (daily refetch + quotes)",
        "reads": "synthetic, get_quote for every symbol after a refresh",
        "synthetic_in_process": "synthetic, in this process (baseline for the yfinance rows)",
        "yf_parse": "yfinance batch, in this process: parse (frame_to_series)",
        "yf_quotes": "yfinance batch, in this process: quotes from the parsed batch",
        "yf_total": "yfinance batch, in this process: parse + quotes",
    }
    return {key: Row(label) for key, label in labels.items()}


# ---- 2. latency -------------------------------------------------------------------------------


class Subscriber:
    """Every event of EVENTS as it arrives here: (wall-clock arrival, envelope)."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self.arrivals: list[tuple[float, dict]] = []

    async def listen(self, ready: asyncio.Event) -> None:
        import redis.asyncio as aioredis

        client = aioredis.from_url(self.redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(*(CHANNEL_PREFIX + t for t in EVENTS))
        ready.set()
        try:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self.arrivals.append((time.time(), orjson.loads(message["data"])))
        finally:
            await pubsub.aclose()
            await client.aclose()


def suite_to_wall(iso: str, epoch: float, speed: float) -> float:
    """The wall-clock instant of a suite time (every process shares the clock's epoch)."""
    return epoch + (datetime.fromisoformat(iso).timestamp() - CLOCK_START.timestamp()) / speed


def start_suite(processes: Processes, dirs: SuiteDirs) -> None:
    processes.start("market-data", dirs, entry=TIMED_MARKET_DATA)
    for name in ("sentiment", "ml-model", "prediction", "paper-trading"):
        processes.start(name, dirs)


async def latency(seconds: float, warmup_s: float, speed: float, root: Path) -> None:
    models = trained_models(MODELS)  # cached under the temp dir after the first time (~15 s)
    redis = RedisServer(root / "redis-chain").start()
    try:
        epoch = time.time()
        dirs = make_suite_env(
            root / "chain",
            redis.url,
            TRADING_SYMBOLS=",".join(BIG4),
            TRADING_MARKET_DATA_QUOTE_S="60",
            **clock_env(speed, epoch),
            **CHAIN_KNOBS,
        )
        install_models(models, dirs.models_dir)
        with Processes() as processes:
            started = time.perf_counter()
            start_suite(processes, dirs)
            print(f"  suite up in {time.perf_counter() - started:.1f} s")
            subscriber = Subscriber(redis.url)
            ready = asyncio.Event()
            listener = asyncio.create_task(subscriber.listen(ready))
            await ready.wait()
            measured_from = time.time() + warmup_s
            measured_until = measured_from + seconds
            # Refreshes that start by `measured_until` count; their chains get a grace to finish.
            await asyncio.sleep(warmup_s + seconds + GRACE_S)
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            client = RpcClient(dirs.socket("market-data"))
            try:
                refreshes = (await call(client, "bench_quote_refreshes"))["refreshes"]
            finally:
                await client.close()
            health = rpc_call_sync(dirs.socket("paper-trading"), "health")
            outcomes = prediction_outcomes(dirs.log_dir / "paper-trading.log")
            suite_now = rpc_call_sync(dirs.socket("market-data"), "health")["now"]
        report_latency(
            ChainRun(
                subscriber.arrivals,
                refreshes,
                (measured_from, measured_until),
                epoch,
                speed,
                health,
                outcomes,
                suite_now,
            )
        )
    finally:
        redis.stop()


def prediction_outcomes(log_file: Path) -> Counter[str]:
    """paper-trading's outcome per prediction from its log ("prediction ID: outcome", detail)."""
    found: Counter[str] = Counter()
    if not log_file.exists():
        return found
    for line in log_file.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "prediction_id" in entry and str(entry.get("msg", "")).startswith("prediction "):
            outcome = entry["msg"].rsplit(": ", 1)[-1]
            detail = str(entry.get("detail", ""))
            found[outcome if outcome == "traded" else f"{outcome}: {detail[:70]}"] += 1
    return found


@dataclass
class ChainRun:
    """What the latency run collected: arrivals here, market-data's refresh records, paper-trading."""

    arrivals: list[tuple[float, dict]]
    refreshes: list[dict]
    window: tuple[float, float]  # wall clock: the refreshes that started within it are measured
    epoch: float
    speed: float
    paper_trading: dict  # its health
    outcomes: Counter[str]
    suite_now: str


def report_latency(run: ChainRun) -> None:
    measured = [r for r in run.refreshes if run.window[0] <= r["start"] <= run.window[1]]
    start_of = {eid: r["start"] for r in measured for eid in r["event_ids"]}
    quote_events, index_events = [], 0
    predictions: dict[tuple[str, str | None], tuple[float, dict]] = {}
    latest_quote: dict[str, str] = {}  # symbol -> the latest quote_time a prediction was made with
    trades: dict[str, tuple[float, dict]] = {}
    for arrived, event in run.arrivals:
        data = event["data"]
        if event["type"] == "market_data_updated" and event["id"] in start_of:
            if data["symbol"] in BIG4:
                quote_events.append((arrived, event))
            else:
                index_events += 1
        elif event["type"] == "prediction_generated":
            made_with = (data.get("inputs") or {}).get("market_data") or {}
            predictions.setdefault((data["symbol"], made_with.get("quote_time")), (arrived, event))
            if made_with.get("quote_time"):
                latest_quote[data["symbol"]] = max(
                    latest_quote.get(data["symbol"], ""), made_with["quote_time"]
                )
        elif event["type"] == "trade_executed" and data.get("prediction_id"):
            trades.setdefault(data["prediction_id"], (arrived, event))

    samples: dict[str, list[float]] = {label: [] for label, _ in LATENCY_ROWS}
    signals: Counter[str] = Counter()
    superseded = missing = 0
    for arrived, event in quote_events:
        start = start_of[event["id"]]
        samples["event"].append(arrived - start)
        samples["delivery"].append(arrived - suite_to_wall(event["timestamp"], run.epoch, run.speed))
        symbol, quote_time = event["data"]["symbol"], (event["data"].get("quote") or {}).get("quote_time")
        found = predictions.get((symbol, quote_time))
        if found is None:
            if quote_time and latest_quote.get(symbol, "") > quote_time:
                superseded += 1
            else:
                missing += 1
            continue
        p_arrived, prediction = found
        samples["prediction"].append(p_arrived - start)
        samples["hop_prediction"].append(p_arrived - arrived)
        signals[f"{symbol} {prediction['data']['signal']}"] += 1
        trade = trades.get(prediction["data"]["prediction_id"])
        if trade is not None:
            samples["trade"].append(trade[0] - start)
            samples["hop_trade"].append(trade[0] - p_arrived)

    if not measured:
        print("  no quote refresh started after the warm-up: nothing measured")
        return
    span = measured[-1]["start"] - measured[0]["start"]
    suite_now = datetime.fromisoformat(run.suite_now).astimezone(SYDNEY)
    print(
        f"  {len(measured)} quote refreshes measured over {span:.1f} s (suite clock at the end "
        f"{suite_now:%H:%M:%S} Sydney); a refresh took {statistics.median(r['total_s'] for r in measured) * 1000:.1f} ms"
        f" (median, {statistics.median(r['quotes_s'] for r in measured) * 1000:.1f} ms of it quotes)"
    )
    print(
        f"  {'from the quote refresh start to the arrival here of':<58} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    for key, label in LATENCY_ROWS:
        values = samples[key]
        if values:
            ms = sorted(v * 1000 for v in values)
            print(
                f"  {label:<58} {len(ms):>5} {statistics.median(ms):8.1f} {percentile(ms, 0.99):8.1f} {ms[-1]:8.1f}"
            )
        else:
            print(f"  {label:<58} {0:>5} {'-':>8} {'-':>8} {'-':>8}")
    print(
        f"  chain: {len(quote_events)} Big 4 quote events (plus {index_events} of the index, which prediction does "
        f"not predict) -> {len(samples['prediction'])} predictions made with their quote ({superseded} superseded: "
        f"re-predicted only with a later quote; {missing} never predicted) -> signals "
        f"{', '.join(f'{k} {n}' for k, n in sorted(signals.items()))} -> {len(samples['trade'])} fills"
    )
    keys = ("trades", "predictions_traded", "predictions_skipped", "rejections", "quotes_refused", "exits")
    health = run.paper_trading
    print(
        f"  paper-trading: {', '.join(f'{k} {health.get(k)}' for k in keys)}; open positions "
        f"{health.get('open_positions')}, equity {health.get('equity', 0):.2f}"
    )
    if run.outcomes:
        print("  paper-trading's outcome per prediction (whole run, warm-up included):")
        for outcome, n in run.outcomes.most_common(8):
            print(f"    {n:5}  {outcome}")


LATENCY_ROWS = (
    ("event", "market_data_updated"),
    ("prediction", "prediction_generated (made with that quote)"),
    ("trade", "trade_executed (the fill of that prediction)"),
    ("hop_prediction", "hop: market_data_updated -> prediction_generated"),
    ("hop_trade", "hop: prediction_generated -> trade_executed"),
    ("delivery", "pub/sub: market_data_updated publish -> arrival here"),
)


# ---- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--symbols", type=int, default=200, help="the large universe (the small one is the Big 4)"
    )
    parser.add_argument("--refreshes", type=int, default=8, help="quote refreshes timed per universe")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="latency: measuring time after the warm-up"
    )
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="latency: seconds not measured at the start"
    )
    parser.add_argument("--speed", type=float, default=60.0, help="latency: suite clock speed (x real time)")
    parser.add_argument("--skip-refresh", action="store_true", help="no quote refresh figures")
    parser.add_argument("--skip-yfinance", action="store_true", help="no yfinance batch figures")
    parser.add_argument("--skip-latency", action="store_true", help="no latency figures")
    args = parser.parse_args()
    if args.symbols <= len(BIG4):
        parser.error(f"--symbols must be more than {len(BIG4)}")
    # The session ends at 16:00: at --speed the suite clock gets there this many real seconds after 11:00.
    session_left_s = 5 * 3600 / args.speed - 20
    if not args.skip_latency and args.warmup + args.seconds + GRACE_S > session_left_s:
        parser.error(
            f"--warmup + --seconds must stay under {session_left_s:.0f} s at --speed {args.speed:g} (16:00)"
        )

    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; suite clock from "
        f"{CLOCK_START.isoformat()} (a {CLOCK_START:%A})"
    )
    root = short_tempdir("bq-")
    try:
        if not args.skip_refresh:
            rows = refresh_rows()
            sizes = [len(BIG4) + 1, args.symbols + 1]
            frames = {}
            for count in (len(BIG4), args.symbols):
                symbols = universe(count)
                asyncio.run(synthetic_in_service(symbols, args.refreshes, root, rows))
                frames[count + 1] = asyncio.run(
                    in_process([*symbols, INDEX], args.refreshes, rows, not args.skip_yfinance)
                )
            print_refresh_table(rows, sizes, frames)
        if not args.skip_latency:
            print()
            print(
                f"2. Latency, Big 4 suite (redis, market-data, sentiment, ml-model, prediction, paper-trading), "
                f"clock at {args.speed:g}x, a quote refresh every {60 / args.speed:g} s real, {args.seconds:g} s measured"
            )
            asyncio.run(latency(args.seconds, args.warmup, args.speed, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
