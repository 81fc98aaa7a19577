"""Benchmark: get_market_data for 200 symbols (synthetic source), cold then warm.

Starts a private redis-server and the real market-data process on a temporary socket, then
calls it over the socket the way other services do. Prints figures; asserts nothing about time.

    .venv/bin/python tests/benchmarks/bench_market_data.py [--symbols 200] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import time
from pathlib import Path

from services.base import clock, config
from services.base.base_service import BaseService
from tests.support import RedisServer, ServiceProcess, make_suite_env, rpc_call_sync, short_tempdir

REPO = Path(__file__).resolve().parents[2]


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed_pass(
    client: BaseService, symbols: list[str], concurrency: int
) -> tuple[float, list[float], int]:
    """(wall seconds, per-call latencies, calls answered from cache) for one call per symbol."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    cached = 0

    async def one(symbol: str) -> None:
        nonlocal cached
        async with gate:
            started = time.perf_counter()
            reply = await client.call_service("market-data", "get_market_data", timeout=120.0, symbol=symbol)
            latencies.append(time.perf_counter() - started)
            cached += reply["cached"]

    started = time.perf_counter()
    await asyncio.gather(*(one(s) for s in symbols))
    return time.perf_counter() - started, sorted(latencies), cached


def report(label: str, wall_s: float, latencies: list[float], cached: int) -> None:
    ms = [x * 1000 for x in latencies]
    print(
        f"{label:<22} wall {wall_s:7.3f} s  {len(ms) / wall_s:8.1f} calls/s  "
        f"p50 {statistics.median(ms):8.2f} ms  p90 {percentile(ms, 0.9):8.2f} ms  "
        f"p99 {percentile(ms, 0.99):8.2f} ms  max {ms[-1]:8.2f} ms  cached {cached}/{len(ms)}"
    )


async def run(symbols: list[str], concurrency: int, service: ServiceProcess) -> None:
    client = BaseService("bench")
    try:
        for label, conc in (("cold (concurrent)", concurrency), ("warm (concurrent)", concurrency)):
            report(label, *await timed_pass(client, symbols, conc))
        report("warm (one at a time)", *await timed_pass(client, symbols, 1))
    finally:
        await client.close_clients()
    status = rpc_call_sync(service.socket, "health")
    print(
        f"service: source {status['source']}, {status['fetches']} fetches, {status['cache_hits']} cache hits, "
        f"RSS {status['memory_usage'] / 2**20:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    symbols = [f"S{i:03d}.AX" for i in range(args.symbols)]
    root = short_tempdir("tb-")
    redis = RedisServer(root / "redis").start()
    try:
        dirs = make_suite_env(root / "suite", redis.url, TRADING_SYMBOLS=",".join(symbols))
        for key, value in dirs.env.items():
            if key.startswith("TRADING_"):
                os.environ[key] = value  # the in-process client must find the same sockets
        config.reset_settings()
        clock.set_clock(None)
        service = ServiceProcess("market-data", dirs).start()
        try:
            print(f"get_market_data, {len(symbols)} synthetic symbols, concurrency {args.concurrency}")
            asyncio.run(run(symbols, args.concurrency, service))
        finally:
            service.stop()
    finally:
        redis.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
