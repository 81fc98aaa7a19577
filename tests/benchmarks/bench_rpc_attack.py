"""RPC under attack: `health` latency and the service's memory while a hostile client does its worst.

    .venv/bin/python tests/benchmarks/bench_rpc_attack.py [--idle-timeout-s 5]

One demo service with the default bounds (but the idle timeout, shortened so the run is short).
A prober asks `health` every 20 ms on a connection kept open (as the supervisor does) while each
attack runs in its own process (so the attacker's CPU and the prober's do not share a GIL):

- batch:       one 1 MiB batch of `{}` (349,524 requests), 3 times on one connection
- batch-flood: 64 connections each sending 2 such batches at once
- pipeline:    200,000 requests sent on one connection whose replies are never read
- tiny:        5,000,000 frames `1` (2 bytes each, each answered -32700), replies never read
- idle:        40 connections each holding all of a 1 MiB frame but its newline
- connections: 300 connections opened and held at once

Prints, per attack: health calls, p50 and worst latency, the service's RSS and PSS growth (its
peak during the attack over its size just before it; the allocator keeps some freed pages, so
the attacks' growths add up to more than the service's), and the counters `metrics` shows under
"rpc". The contract
(README): health answered within 1 s, memory growth bounded by what the bounds allow.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
from pathlib import Path

from tests.service._rpc_attacks import (
    MIB,
    Prober,
    big_batch,
    idle_partial_frames,
    many_connections,
    pipelined_never_read,
)
from tests.support import RedisServer, ServiceProcess, make_suite_env, short_tempdir

ATTACKS = ("batch", "batch-flood", "pipeline", "tiny", "idle", "connections")


def attack(name: str, path: Path, idle_timeout_s: float) -> str:
    """Run one attack (in the child process); what it observed, one line."""
    if name == "batch":
        replies = big_batch(path, times=3)
        return f"replies: {sorted({r['error']['code'] for r in replies})}"
    if name == "batch-flood":
        threads = [threading.Thread(target=big_batch, args=(path,), kwargs={"times": 2}) for _ in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return "64 connections x 2 batches answered"
    if name == "pipeline":
        taken = pipelined_never_read(path, requests=200_000, hold_s=3.0)
        return f"the service took {taken / MIB:.2f} MiB of 9.7 MiB sent, then stopped reading"
    if name == "tiny":
        taken = pipelined_never_read(path, requests=5_000_000, hold_s=3.0, one=b"1\n")
        return f"the service took {taken / MIB:.2f} MiB of 9.5 MiB sent, then stopped reading"
    if name == "idle":
        closed = idle_partial_frames(path, connections=40, timeout_s=idle_timeout_s + 30)
        return f"{closed} of 40 closed after the idle timeout"
    if name == "connections":
        refused, kept = many_connections(path, connections=300)
        return f"{kept} kept, {refused} closed at once"
    raise SystemExit(f"unknown attack {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-timeout-s", type=float, default=5.0)
    parser.add_argument("--attack", choices=ATTACKS, help=argparse.SUPPRESS)  # the child's part
    parser.add_argument("--socket", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        print(attack(args.attack, args.socket, args.idle_timeout_s))
        return 0

    root = short_tempdir("ta-")
    redis = RedisServer(root / "redis").start()
    dirs = make_suite_env(root / "suite", redis.url)
    env = {"DEMO_NAME": "demo", "TRADING_RPC_IDLE_TIMEOUT_S": str(args.idle_timeout_s)}
    service = ServiceProcess("demo", dirs, entry="tests/service/_demo_service.py", extra_env=env).start()
    rows = []
    try:
        for name in ATTACKS:
            prober = Prober(service.socket, service.pid, interval_s=0.02).start()
            done = subprocess.run(
                [sys.executable, __file__, "--attack", name, "--socket", str(service.socket),
                 "--idle-timeout-s", str(args.idle_timeout_s)],
                capture_output=True, text=True, env=dirs.env, timeout=600,
            )  # fmt: skip
            stats = prober.call("metrics")["rpc"]
            prober.stop()
            observed = done.stdout.strip() or done.stderr.strip().splitlines()[-1]
            rows.append((name, prober, observed, stats))
    finally:
        service.stop()
        redis.stop()
    print(f"RPC under attack (default bounds, idle timeout {args.idle_timeout_s:g} s); health every 20 ms")
    print(
        f"{'attack':12} {'health n':>8} {'p50 ms':>7} {'worst ms':>8} {'RSS +MiB':>8} {'PSS +MiB':>8}  observed"
    )
    for name, prober, observed, _ in rows:
        rss, pss = prober.growth_mib()
        p50 = statistics.median(prober.latencies_s) * 1000 if prober.latencies_s else float("nan")
        failed = f"  FAILED: {prober.failures[0]}" if prober.failures else ""
        print(
            f"{name:12} {len(prober.latencies_s):8} {p50:7.1f} {prober.worst_s * 1000:8.1f} "
            f"{rss:8.1f} {pss:8.1f}  {observed}{failed}"
        )
    worst = max(p.worst_s for _, p, _, _ in rows)
    print(f"\nworst health latency over all attacks: {worst * 1000:.0f} ms (contract: < 1000 ms)")
    print(f"rpc counters at the end: {rows[-1][3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
