"""Gateway figures: HTTP latency and throughput at 16 concurrent clients, next to a direct RPC
call measured in the same run, and the gateway's memory.

    .venv/bin/python tests/benchmarks/bench_gateway.py [--requests 2000]

A whole suite is started by the manager CLI in temporary directories (synthetic data). Then, in
rounds that alternate the three: `GET /api/portfolio` and `GET /metrics` through the gateway (16
clients, each its own keep-alive connection, httpx's client), and paper-trading's
`get_portfolio_status` called directly over its Unix socket (16 in flight on one connection, as a
service calls another). Prints p50/p99 latency and requests/s of each, the ratio of the gateway's
portfolio to the direct call, and the gateway's PSS before and after the load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import httpx

from services.base.rpc.client import RpcClient
from tests.benchmarks.bench_suite import memory_kib, percentile
from tests.support import make_suite_env, manager_cli, rpc_call_sync, short_tempdir

REPO = Path(__file__).resolve().parents[2]
TOKEN = "bench-token-0123456789abcdef"
CLIENTS = 16


async def http_round(url: str, path: str, total: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def client(count: int) -> None:
        async with httpx.AsyncClient(headers=headers, timeout=60) as session:
            for _ in range(count):
                started = time.perf_counter()
                answer = await session.get(url + path)
                if answer.status_code != 200:
                    raise RuntimeError(f"{path}: HTTP {answer.status_code}")
                latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(client(total // CLIENTS) for _ in range(CLIENTS)))
    return latencies, time.perf_counter() - began


async def rpc_round(socket: Path, total: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    rpc = RpcClient(socket)

    async def caller(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await rpc.call("get_portfolio_status", {})
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    try:
        await asyncio.gather(*(caller(total // CLIENTS) for _ in range(CLIENTS)))
    finally:
        await rpc.close()
    return latencies, time.perf_counter() - began


def line(name: str, latencies: list[float], wall_s: float) -> str:
    return (
        f"  {name:28} p50 {percentile(latencies, 0.5) * 1000:7.2f} ms  p99 {percentile(latencies, 0.99) * 1000:7.2f} ms"
        f"  {len(latencies) / wall_s:8.0f} req/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per kind and round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dirs = make_suite_env(
        short_tempdir("bg-"),
        None,
        TRADING_GATEWAY_TOKEN=TOKEN,
        TRADING_GATEWAY_RATE_BURST="100000",
        TRADING_GATEWAY_RATE_LIMIT_PER_S="100000",
        TRADING_MODELS_DIR=os.environ.get("TRADING_MODELS_DIR", str(REPO / "models")),
    )
    try:
        result = manager_cli(dirs.env, "start", timeout_s=300)
        if result.returncode != 0:
            print(result.stdout, result.stderr)
            return 1
        url = rpc_call_sync(dirs.socket("gateway"), "get_url")["url"]
        gateway_pid = rpc_call_sync(dirs.socket("gateway"), "health")["pid"]
        idle_kib = memory_kib(gateway_pid)[0]  # (PSS, USS)
        figures: dict[str, tuple[list[float], float]] = {
            "portfolio": ([], 0.0),
            "metrics": ([], 0.0),
            "rpc": ([], 0.0),
        }

        def add(kind: str, measured: tuple[list[float], float]) -> None:
            latencies, wall = figures[kind]
            figures[kind] = (latencies + measured[0], wall + measured[1])

        asyncio.run(http_round(url, "/api/portfolio", 160))  # warm: connections, caches
        for _ in range(args.rounds):
            add("portfolio", asyncio.run(http_round(url, "/api/portfolio", args.requests)))
            add("metrics", asyncio.run(http_round(url, "/metrics", args.requests // 4)))
            add("rpc", asyncio.run(rpc_round(dirs.socket("paper-trading"), args.requests)))
        loaded_kib = memory_kib(gateway_pid)[0]
    finally:
        manager_cli(dirs.env, "stop", timeout_s=300)

    print(f"gateway at {CLIENTS} concurrent clients, {args.rounds} interleaved rounds:")
    print(line("GET /api/portfolio", *figures["portfolio"]))
    print(line("GET /metrics", *figures["metrics"]))
    print(line("RPC get_portfolio_status direct", *figures["rpc"]))
    ratio = percentile(figures["portfolio"][0], 0.5) / percentile(figures["rpc"][0], 0.5)
    print(f"  /api/portfolio p50 is {ratio:.1f}x the direct RPC call's")
    print(f"gateway PSS: {idle_kib / 1024:.1f} MB idle, {loaded_kib / 1024:.1f} MB after the load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
