"""RPC benchmark: BaseService over its Unix socket against a bare echo (the floor) and HTTP.

    .venv/bin/python tests/benchmarks/bench_rpc.py [--calls N]

Prints p50/p99 latency and requests/s for each transport, sequential and with 16 requests in
flight on one connection, then the ratios. Goals: BaseService within 1.3x of the floor at p50,
and at least 2.5x faster than JSON over HTTP. All three servers run as separate processes and
answer the same payload; figures are measured in this one run, so they compare like for like.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

from services.base.rpc import RpcClient
from tests.support import RedisServer, ServiceProcess, make_suite_env, short_tempdir, wait_until

REPO = Path(__file__).resolve().parents[2]

PAYLOAD = {"symbol": "CBA.AX", "price": 112.34, "signal": "BUY", "confidence": 0.71, "tags": ["a", "b", "c"]}
IN_FLIGHT = 16
ROUNDS = 3


def summarise(latencies: list[float], wall_s: float) -> dict:
    ordered = sorted(latencies)
    return {
        "p50_us": ordered[len(ordered) // 2] * 1e6,
        "p99_us": ordered[int(len(ordered) * 0.99)] * 1e6,
        "rps": len(ordered) / wall_s,
    }


async def measure(call, calls: int, in_flight: int) -> dict:
    for _ in range(200):  # warm-up
        await call()
    latencies: list[float] = []
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    wall = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return summarise(latencies, time.perf_counter() - wall)


class EchoClient:
    """The floor's client: one line out, one line back, on one connection (multiplexed by order)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = asyncio.Lock()
        self.waiters: asyncio.Queue = asyncio.Queue()

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_unix_connection(str(self.path), limit=1 << 20)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            line = await self.reader.readuntil(b"\n")
            orjson.loads(line)  # a fair floor still decodes what it receives
            (await self.waiters.get()).set_result(line)

    async def call(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self.waiters.put_nowait(future)
        self.writer.write(
            orjson.dumps({"jsonrpc": "2.0", "method": "echo", "params": {"data": PAYLOAD}, "id": 1}) + b"\n"
        )
        await self.writer.drain()
        await future


async def run(calls: int, sock_dir: Path, http_port: int) -> dict[str, dict]:
    import httpx

    results: dict[str, dict] = {}
    rpc = RpcClient(sock_dir / "demo.sock")
    echo = EchoClient(sock_dir / "echo.sock")
    await echo.connect()
    # HTTP/1.1 cannot multiplex: 16 requests in flight need 16 keep-alive connections.
    http = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{http_port}", limits=httpx.Limits(max_connections=IN_FLIGHT)
    )
    body = orjson.dumps({"jsonrpc": "2.0", "method": "echo", "params": {"data": PAYLOAD}, "id": 1})

    async def rpc_call():
        await rpc.call("echo", {"data": PAYLOAD})

    async def http_call():
        reply = await http.post("/rpc", content=body, headers={"Content-Type": "application/json"})
        orjson.loads(reply.content)

    # Rounds interleave the transports, and each figure is the median over the rounds, so a burst
    # of load from elsewhere on the machine cannot favour one transport.
    rounds: dict[str, list[dict]] = {}
    for _ in range(ROUNDS):
        for label, call in (("baseservice", rpc_call), ("floor-echo", echo.call), ("http", http_call)):
            for mode, in_flight in (("sequential", 1), (f"{IN_FLIGHT} in flight", IN_FLIGHT)):
                rounds.setdefault(f"{label} / {mode}", []).append(await measure(call, calls, in_flight))
    for name, measured in rounds.items():
        results[name] = {key: statistics.median(m[key] for m in measured) for key in measured[0]}
    await rpc.close()
    await http.aclose()
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    root = short_tempdir("tb-")
    redis = RedisServer(root / "redis").start()
    dirs = make_suite_env(root / "suite", redis.url)
    service = ServiceProcess(
        "demo", dirs, entry="tests/service/_demo_service.py", extra_env={"DEMO_NAME": "demo"}
    )
    service.start()
    echo = subprocess.Popen(
        [sys.executable, str(REPO / "tests/benchmarks/_echo_server.py"), str(dirs.socket("echo"))]
    )
    port = free_port()
    http = subprocess.Popen(
        [sys.executable, str(REPO / "tests/benchmarks/_http_rpc_server.py"), str(port)], env=dirs.env
    )
    try:
        wait_until(lambda: dirs.socket("echo").exists(), 10, what="echo server")
        wait_until(lambda: _port_open(port), 10, what="http server")
        results = asyncio.run(run(args.calls, dirs.socket_dir, port))
    finally:
        for proc in (echo, http):
            proc.terminate()
            proc.wait(5)
        service.stop()
        redis.stop()
    print(
        f"RPC benchmark: {args.calls} calls per row, median of {ROUNDS} interleaved rounds, "
        f"payload {len(orjson.dumps(PAYLOAD))} bytes"
    )
    print(f"{'transport / mode':34} {'p50 (us)':>10} {'p99 (us)':>10} {'req/s':>10}")
    for name, r in results.items():
        print(f"{name:34} {r['p50_us']:10.1f} {r['p99_us']:10.1f} {r['rps']:10.0f}")
    print()
    for mode in ("sequential", f"{IN_FLIGHT} in flight"):
        ours, floor, http_r = (results[f"{t} / {mode}"] for t in ("baseservice", "floor-echo", "http"))
        print(
            f"{mode:14} p50 baseservice/floor = {ours['p50_us'] / floor['p50_us']:.2f}x (goal <= 1.3x)   "
            f"http/baseservice = {http_r['p50_us'] / ours['p50_us']:.2f}x (goal >= 2.5x)   "
            f"throughput baseservice/floor = {ours['rps'] / floor['rps']:.2f}"
        )
    return 0


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    sys.exit(main())
