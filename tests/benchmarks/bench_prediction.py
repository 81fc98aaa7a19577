"""Benchmark: predictions for the Big 4 and for 200 synthetic symbols, cold and cached, and the
latency from a `market_data_updated` event to the `prediction_generated` it causes.

Starts a private redis-server and the real market-data (synthetic source), sentiment (no token:
its fallback), ml-model (models trained by the real pipeline on synthetic bars, Big 4 only: the
synthetic symbols get no model vote, which the predictions say) and prediction processes, and
calls them over their sockets. Prints figures; asserts nothing about time.

    .venv/bin/python tests/benchmarks/bench_prediction.py [--symbols 200] [--events 100]

Cold passes:
- "cold, all": nothing cached anywhere (market-data fetches too);
- "cold, predictions": prediction cache cleared, dependencies warm (what a refresh costs);
- "cached": straight from the prediction cache.
Event latency: the synthetic source does not change within a day, and the service rightly
ignores an update with an unchanged as_of and price, so the benchmark publishes the updates
itself (as market-data does, on the same bus) with a new as_of; the service then recomputes the
prediction through every dependency. Measured from just before the publish to the receipt of the
matching `prediction_generated`: one event at a time, then all at once (a burst).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

from services.base import clock, config
from services.base.base_service import BaseService
from services.base.clock import SuiteClock
from services.base.events import CHANNEL_PREFIX, EventBus
from tests.support import RedisServer, ServiceProcess, make_suite_env, rpc_call_sync, short_tempdir

REPO = Path(__file__).resolve().parents[2]

BIG4 = ["CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX"]
TRAIN_SCRIPT = REPO / "services" / "ml-model" / "train_models.py"


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def train(models_dir: Path, env: dict[str, str]) -> None:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(TRAIN_SCRIPT),
            "--synthetic",
            "--years",
            "2",
            "--symbols",
            *BIG4,
            "--out",
            str(models_dir),
        ],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    print(f"trained the Big 4 models on synthetic bars in {time.perf_counter() - started:.1f} s")


async def batch(client: BaseService, symbols: list[str], label: str) -> None:
    started = time.perf_counter()
    reply = await client.call_service(
        "prediction", "generate_predictions", timeout=600, symbols=symbols, timeout_s=590
    )
    wall = time.perf_counter() - started
    made = reply["predictions"].values()
    degraded = sum(1 for p in made if p["degraded"])
    print(
        f"  {label:<20} wall {wall * 1000:9.1f} ms  {len(symbols) / wall:8.1f} symbols/s  "
        f"from cache {reply['from_cache']:>3}/{len(symbols)}  errors {len(reply['errors'])}  degraded {degraded}"
    )


async def passes(client: BaseService, symbols: list[str], title: str) -> None:
    print(title)
    await batch(client, symbols, "cold, all")
    await client.call_service("prediction", "clear_cache")
    await batch(client, symbols, "cold, predictions")
    await batch(client, symbols, "cached")


class Arrivals:
    """Receipt times of prediction_generated, by symbol, straight off the pub/sub channel."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self.seen: dict[str, list[float]] = {}
        self.changed = asyncio.Event()

    async def listen(self, ready: asyncio.Event) -> None:
        import redis.asyncio as aioredis

        client = aioredis.from_url(self.redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(CHANNEL_PREFIX + "prediction_generated")
        ready.set()
        try:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    symbol = orjson.loads(message["data"])["data"]["symbol"]
                    self.seen.setdefault(symbol, []).append(time.perf_counter())
                    self.changed.set()
        finally:
            await pubsub.aclose()
            await client.aclose()

    async def wait(self, symbol: str, count: int, timeout_s: float = 60.0) -> float:
        async with asyncio.timeout(timeout_s):
            while len(self.seen.get(symbol, [])) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.seen[symbol][count - 1]


async def event_latency(redis_url: str, symbols: list[str], events: int) -> None:
    arrivals = Arrivals(redis_url)
    ready = asyncio.Event()
    listener = asyncio.create_task(arrivals.listen(ready))
    await ready.wait()
    bus = EventBus(redis_url, "market-data", SuiteClock())
    await bus.start()
    await bus.wait_connected(5)
    try:
        targets = [symbols[i % len(symbols)] for i in range(events)]
        serial = []
        for k, symbol in enumerate(targets):
            count = len(arrivals.seen.get(symbol, [])) + 1
            started = time.perf_counter()
            await bus.publish("market_data_updated", {"symbol": symbol, "as_of": f"serial-{k}", "price": 1.0})
            serial.append(await arrivals.wait(symbol, count) - started)
        report_latency(f"one at a time ({events} events)", serial)

        burst_symbols = symbols[:events]
        counts = {s: len(arrivals.seen.get(s, [])) + 1 for s in burst_symbols}
        started = time.perf_counter()
        for symbol in burst_symbols:
            await bus.publish("market_data_updated", {"symbol": symbol, "as_of": "burst", "price": 2.0})
        done = await asyncio.gather(*(arrivals.wait(s, counts[s]) for s in burst_symbols))
        report_latency(f"burst ({len(burst_symbols)} events at once)", [t - started for t in done])
    finally:
        await bus.close()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


def report_latency(label: str, seconds: list[float]) -> None:
    ms = sorted(x * 1000 for x in seconds)
    print(
        f"  {label:<32} p50 {statistics.median(ms):8.1f} ms  p99 {percentile(ms, 0.99):8.1f} ms  "
        f"max {ms[-1]:8.1f} ms"
    )


async def run(synthetic: list[str], events: int, redis_url: str) -> None:
    client = BaseService("bench")
    try:
        await passes(client, BIG4, "Big 4 (with model votes)")
        await passes(client, synthetic, f"{len(synthetic)} synthetic symbols (no models: degraded)")
        print("market_data_updated -> prediction_generated")
        await event_latency(redis_url, BIG4 + synthetic, events)
    finally:
        await client.close_clients()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16, help="TRADING_PREDICTION_CONCURRENCY")
    args = parser.parse_args()
    synthetic = [f"SYN{i:03d}.AX" for i in range(args.symbols)]
    root = short_tempdir("tb-")
    redis = RedisServer(root / "redis").start()
    processes: list[ServiceProcess] = []
    try:
        dirs = make_suite_env(
            root / "suite",
            redis.url,
            TRADING_SYMBOLS=",".join(BIG4 + synthetic),
            TRADING_PREDICTION_CONCURRENCY=str(args.concurrency),
        )
        for key, value in dirs.env.items():
            if key.startswith("TRADING_"):
                os.environ[key] = value  # the in-process client must find the same sockets
        config.reset_settings()
        clock.set_clock(None)
        train(dirs.models_dir, dirs.env)
        for name in ("market-data", "sentiment", "ml-model", "prediction"):
            processes.append(ServiceProcess(name, dirs).start())
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; concurrency {args.concurrency}")
        asyncio.run(run(synthetic, args.events, redis.url))
        health = rpc_call_sync(processes[-1].socket, "health")
        print(
            f"prediction: {health['prediction_count']} predictions stored, cache {health['cache_size']}, "
            f"RSS {health['memory_usage'] / 2**20:.1f} MiB"
        )
    finally:
        for process in reversed(processes):
            process.stop()
        redis.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
