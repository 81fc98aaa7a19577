"""Benchmark: sweep throughput (replayed trading days per minute) with 1 and 2 local workers, and
across two "hosts" (network namespaces joined by a veth pair, as root), and memory per replay.

Runs `service_manager.py sweep` on a spec of --settings settings over one period (default four
settings over 2019-06-03 .. 2019-08-30, 64 trading days each) with the replay tests' models
(trained before the period, not timed) and market CSVs. Throughput counts the whole sweep's wall
time: each replay's suite start and stop are part of a sweep's cost. Memory: the largest PSS sum
of one running replay (its child process and its whole suite), sampled every second. Prints
figures; asserts nothing.

    .venv/bin/python tests/benchmarks/bench_sweep.py [--settings 4] [--from 2019-06-03] [--to 2019-08-30]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import psutil

from services.domain import asx_calendar
from tests.support import Processes, manager_command, wait_until
from tests.system._replay_helpers import MODELS_BEFORE, market_csv_dir, models_trained_before
from tests.system._sweep_hosts import TwoHosts, netns_unavailable

REPO = Path(__file__).resolve().parents[2]


def spec_text(models: Path, first: date, last: date, settings: int) -> str:
    thresholds = ", ".join(f"{0.01 + 0.02 * k:.2f}" for k in range(settings))
    return f"""
data_dir = "{market_csv_dir()}"
models_dir = "{models}"
[[periods]]
from = {first.isoformat()}
to = {last.isoformat()}
[fixed]
TRADING_PREDICTION_SIGNAL_SELL_THRESHOLD = 0.15
TRADING_PREDICTION_SIGNAL_BEAR_BUY_EXTRA = 0
[grid]
TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD = [{thresholds}]
"""


class MemorySampler:
    """The largest PSS of one run (processes sharing a SWEEP_RUN_ID), sampled every second."""

    def __init__(self, tag: str):
        self.tag, self.peak_bytes, self._stop = tag, 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            runs: dict[str, int] = {}
            for proc in psutil.process_iter(["environ"]):
                with contextlib.suppress(psutil.Error):
                    env = proc.info["environ"] or {}
                    if env.get("BENCH_SWEEP_TAG") == self.tag and "SWEEP_RUN_ID" in env:
                        runs[env["SWEEP_RUN_ID"]] = (
                            runs.get(env["SWEEP_RUN_ID"], 0) + proc.memory_full_info().pss
                        )
            self.peak_bytes = max([self.peak_bytes, *runs.values()])

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.peak_bytes


def sweep(
    spec: Path, out: Path, args: list[str], env: dict, prefix: list[str] | None = None
) -> tuple[float, int]:
    sampler = MemorySampler(env["BENCH_SWEEP_TAG"])
    started = time.perf_counter()
    result = subprocess.run(
        [*(prefix or []), *manager_command("sweep", str(spec), "--out", str(out), *args)],
        env=env, capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    peak = sampler.stop()
    if result.returncode != 0:
        sys.exit(f"sweep {args} failed ({result.returncode}): {result.stderr[-2000:]}")
    return seconds, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", type=int, default=4)
    parser.add_argument("--from", dest="first", type=date.fromisoformat, default=date(2019, 6, 3))
    parser.add_argument("--to", dest="last", type=date.fromisoformat, default=date(2019, 8, 30))
    args = parser.parse_args()
    days = len(asx_calendar.trading_days_between(args.first, args.last))
    total_days = days * args.settings
    models = models_trained_before(MODELS_BEFORE)
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    spec = work / "bench.toml"
    spec.write_text(spec_text(models, args.first, args.last, args.settings))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    print(
        f"sweep of {args.settings} settings x {args.first} .. {args.last} ({days} trading days each,"
        f" {total_days} in all), commit {commit.stdout.strip()}, {date.today()}, {os.cpu_count()} cores"
    )
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
    base_env.update(PYTHONPATH=str(REPO), TRADING_DATA_DIR=str(work / "data"))
    figures: dict[str, tuple[float, int]] = {}
    for workers in (1, 2):
        env = {**base_env, "BENCH_SWEEP_TAG": f"local-{workers}"}
        figures[f"{workers} local worker(s)"] = sweep(
            spec, work / f"out-{workers}", ["--workers", str(workers)], env
        )
    reason = netns_unavailable()
    if reason is None:
        env = {**base_env, "BENCH_SWEEP_TAG": "netns"}
        hosts = TwoHosts()
        with Processes() as processes:
            try:
                hosts.open()
                for command in hosts.cluster_commands():
                    processes.popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_until(hosts.worker_count, 120, 0.5, what="both workers", until=lambda n: n == 2)
                figures["2 namespaced hosts, 1 worker each"] = sweep(
                    spec, work / "out-netns", ["--scheduler", hosts.scheduler], env, hosts.run_in(1, [])
                )
            finally:
                processes.close()
                hosts.close()
    else:
        print(f"(two namespaced hosts skipped: {reason})")
    shutil.rmtree(work, ignore_errors=True)
    print(f"{'':<36} {'wall (s)':>9} {'days/min':>9} {'PSS/replay':>11}")
    for name, (seconds, peak) in figures.items():
        print(f"{name:<36} {seconds:>9.1f} {total_days / seconds * 60:>9.1f} {peak / 2**20:>8.0f} MiB")
    one, two = figures["1 local worker(s)"][0], figures["2 local worker(s)"][0]
    print(f"scaling 1 -> 2 local workers: {one / two:.2f}x")
    if "2 namespaced hosts, 1 worker each" in figures:
        print(f"scaling 1 local -> 2 hosts: {one / figures['2 namespaced hosts, 1 worker each'][0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
