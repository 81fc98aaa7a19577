"""Suite figures: cold start, restart after SIGKILL, and memory of the running suite.

    .venv/bin/python tests/benchmarks/bench_suite.py [--kills 20]

- cold start: `service_manager.py start` on empty temporary directories until every service is up;
- restart: SIGKILL one service, time until the supervisor has it healthy again (p50/p99). The
  supervisor restarts the first crash after a stable run at once; later ones back off, so the
  benchmark waits out a short stable period (TRADING_MANAGER_STABLE_S=1) between kills and measures
  the restart itself, not the backoff;
- memory: the sum of PSS (proportional set size, from /proc/<pid>/smaps_rollup) of the supervisor,
  every service and the managed redis-server, after one full prediction cycle for the Big 4.
Goals: cold start under 3 s, restart under 1 s, total under 180 MB PSS.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from tests.support import make_suite_env, manager_cli, rpc_call_sync, short_tempdir, wait_until

REPO = Path(__file__).resolve().parents[2]


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--service", default="sentiment", help="the service to kill")
    args = parser.parse_args()
    dirs = make_suite_env(
        short_tempdir("bs-"),
        None,
        TRADING_MANAGER_STABLE_S="1",
        TRADING_MANAGER_MAX_FAILURES="1000",
        TRADING_MODELS_DIR=os.environ.get("TRADING_MODELS_DIR", str(REPO / "models")),
    )
    env = dirs.env
    try:
        started = time.perf_counter()
        result = manager_cli(env, "start", timeout_s=300)
        cold_s = time.perf_counter() - started
        if result.returncode != 0:
            print(result.stdout, result.stderr)
            return 1

        def service(name: str) -> dict:
            status = rpc_call_sync(dirs.socket("manager"), "status")
            return next(s for s in status["services"] if s["name"] == name)

        restarts = []
        for _ in range(args.kills):
            time.sleep(1.1)  # a stable run: the next crash restarts at once (see the docstring)
            pid = service(args.service)["pid"]
            killed = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda pid=pid: (
                    (s := service(args.service))["pid"] not in (None, pid) and s["state"] == "running"
                ),
                30,
                0.005,
            )
            restarts.append(time.perf_counter() - killed)

        cycle = rpc_call_sync(
            dirs.socket("prediction"), "generate_predictions", {"symbols": None}, timeout_s=120
        )
        status = rpc_call_sync(dirs.socket("manager"), "status")
        pids = {"supervisor": status["supervisor"]["pid"], "redis": status["supervisor"]["redis"]["pid"]}
        pids.update({s["name"]: s["pid"] for s in status["services"]})
        memory = {name: pss_kib(pid) for name, pid in pids.items() if pid}
    finally:
        manager_cli(env, "stop", timeout_s=300)

    total_mb = sum(memory.values()) / 1024
    print(f"cold start to all healthy: {cold_s:.2f} s (goal < 3 s, ratio {cold_s / 3:.2f})")
    print(
        f"SIGKILL {args.service} -> healthy over {len(restarts)} kills: p50 {percentile(restarts, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(restarts, 0.99) * 1000:.0f} ms (goal < 1 s, ratio {percentile(restarts, 0.5):.2f})"
    )
    predicted = len(cycle.get("predictions", {}))
    print(f"memory after one prediction cycle ({predicted} predictions), PSS per process:")
    for name, kib in sorted(memory.items(), key=lambda kv: -kv[1]):
        print(f"  {name:14} {kib / 1024:7.1f} MB")
    print(f"  {'total':14} {total_mb:7.1f} MB (goal < 180 MB, ratio {total_mb / 180:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
