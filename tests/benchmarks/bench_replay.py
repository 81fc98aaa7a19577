"""Benchmark: replay throughput, trading days per minute, for the Big 4 over one year of daily data.

Runs the real replay driver (its own suite: supervisor, managed Redis, every service) over the
real ASX CSVs of ../shared/data/asx when present, else over synthetic CSVs written in the same
format. Models are trained once, before the period (not timed: the replay reuses them, as it
does a TRADING_MODELS_DIR trained before --from). Prints figures; asserts nothing about time.

    .venv/bin/python tests/benchmarks/bench_replay.py [--from 2019-05-20] [--to 2020-05-19]
        [--intraday-days 20]

With --intraday-days N (default 20; 0 skips it) it then replays the first N trading days of the
period again with 5m CSVs beside the daily ones (the seeded synthetic path through each day's
bar, as the intraday replay test writes them), stepping each session bar by bar, and prints both
throughputs and their ratio: the same days per minute measured in the same run.

With --baseline DIR (a checkout of other code, e.g. `git archive main | tar -x -C DIR`) the
daily-bar replay is run first with DIR's code (its own suite: DIR's services) and then with this
checkout's, in the same run on the same machine load, and both figures and their ratio are
printed: before and after. Without it, the figure is set beside the README's recorded one
(RECORDED_DAYS_PER_MINUTE, measured before the replay was made faster).

The daily-bar year is then replayed again by the in-process engine (--engine inproc:
services/management/fast_replay.py, the same domain functions in one process, no suite) with the
same models, and both figures are printed with their ratio, measured in the same run, and whether
the two gave the same trades (to the cent, at the same step) and the same equity curve.

Throughput counts the day loop only (three clock jumps, a refresh at each, the trading step and
paper-trading's processing per day); the suite's start and the final report are one-off costs,
printed separately.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from services.domain import asx_calendar
from services.management.fast_replay import InprocReplay
from services.management.replay import ReplayDriver, ReplayOptions, ReplayResult
from tests.system._replay_helpers import (
    intraday_csv_dir,
    market_csv_dir,
    models_trained_before,
    using_real_data,
)

REPO = Path(__file__).resolve().parents[2]
# The README's figure for the daily-bar year before the replay was made faster (issue 21).
RECORDED_DAYS_PER_MINUTE = 543.0
BASELINE_RUN = """
import json, sys, tempfile
from datetime import date
from pathlib import Path
from services.management.replay import ReplayDriver, ReplayOptions
first, last, data, models = sys.argv[1:5]
options = ReplayOptions(first=date.fromisoformat(first), last=date.fromisoformat(last),
    data_dir=Path(data), out=Path(tempfile.mkdtemp(prefix="bench-replay-base-")), models_dir=Path(models))
result = ReplayDriver(options).run()
print(json.dumps({**result.report["run"], "days": result.report["equity"]["trading_days"],
    "trades": len(result.trades), "seconds": result.seconds}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="first", type=date.fromisoformat, default=date(2019, 5, 20))
    parser.add_argument("--to", dest="last", type=date.fromisoformat, default=date(2020, 5, 19))
    parser.add_argument("--intraday-days", type=int, default=20)
    parser.add_argument("--baseline", type=Path, help="a checkout whose replay is measured first")
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "services/management/replay.py").is_file():
        print(f"--baseline {args.baseline}: no services/management/replay.py there", file=sys.stderr)
        return 2
    days = asx_calendar.trading_days_between(args.first, args.last)
    data = "real ASX CSVs" if using_real_data() else "synthetic CSVs (no ../shared/data/asx)"
    print(f"replay {args.first} .. {args.last}: {len(days)} trading days, Big 4 + index, {data}")
    started = time.perf_counter()
    models = models_trained_before(args.first, years=3.0)
    print(f"models trained before {args.first} in {time.perf_counter() - started:.1f} s (not timed below)")
    before: dict | None = None
    if args.baseline is not None:
        print(f"\nbefore: the same period with the code of {args.baseline}")
        before = baseline(args.baseline, args.first, args.last, market_csv_dir(), models)
    print("\nafter: this checkout")
    daily, service_result = replay(args.first, args.last, market_csv_dir(), models, show=True)
    print("\nthe same period, in-process engine (--engine inproc)")
    inproc, inproc_result = replay(
        args.first, args.last, market_csv_dir(), models, show=False, engine=InprocReplay
    )
    print()
    print(f"{'':<34} {'service':>12} {'in-process':>12}")
    print(f"{'day loop (s)':<34} {daily['day_loop_seconds']:>12.1f} {inproc['day_loop_seconds']:>12.1f}")
    print(f"{'trades':<34} {daily['trades']:>12} {inproc['trades']:>12}")
    print(
        f"{'throughput (trading days / minute)':<34} {daily['days_per_minute']:>12.1f}"
        f" {inproc['days_per_minute']:>12.1f}"
    )
    print(
        f"in-process engine: {inproc['days_per_minute'] / daily['days_per_minute']:.1f}x the service replay"
    )
    same = same_trades(service_result, inproc_result)
    print(f"same trades and equity curve as the service replay: {'yes' if same else 'NO'}")
    print()
    if before is not None:
        print(f"{'':<34} {'before':>12} {'after':>12}")
        print(f"{'day loop (s)':<34} {before['day_loop_seconds']:>12.1f} {daily['day_loop_seconds']:>12.1f}")
        print(f"{'trades':<34} {before['trades']:>12} {daily['trades']:>12}")
        print(
            f"{'throughput (trading days / minute)':<34} {before['days_per_minute']:>12.1f}"
            f" {daily['days_per_minute']:>12.1f}"
        )
        print(f"speed-up in this run: {daily['days_per_minute'] / before['days_per_minute']:.1f}x")
    print(
        f"against the README's recorded {RECORDED_DAYS_PER_MINUTE:.0f} trading days per minute:"
        f" {daily['days_per_minute'] / RECORDED_DAYS_PER_MINUTE:.1f}x"
    )
    if args.intraday_days <= 0:
        return 0
    last = days[min(args.intraday_days, len(days)) - 1]
    print(f"\nthe same suite on 5m bars, {args.first} .. {last} (the session stepped every 5 minutes)")
    intraday, _ = replay(args.first, last, intraday_csv_dir(args.first, last, "5m"), models, show=False)
    print()
    print(f"{'':<34} {'daily bars':>12} {'5m bars':>12}")
    print(f"{'trading days':<34} {daily['days']:>12} {intraday['days']:>12}")
    print(f"{'day loop (s)':<34} {daily['day_loop_seconds']:>12.1f} {intraday['day_loop_seconds']:>12.1f}")
    print(
        f"{'throughput (trading days / minute)':<34} {daily['days_per_minute']:>12.1f}"
        f" {intraday['days_per_minute']:>12.1f}"
    )
    ratio = daily["days_per_minute"] / intraday["days_per_minute"]
    print(f"5m bars: {ratio:.0f}x fewer trading days per minute (a step every 5 minutes of the session)")
    return 0


def same_trades(service: ReplayResult, inproc: ReplayResult) -> bool:
    """The same trades (every field but the id of the prediction and the sub-minute time) and the
    same equity curve (tests/system/test_fast_replay.py checks this on three months)."""

    def rows(result: ReplayResult) -> list[tuple]:
        skip = ("trade_id", "prediction_id", "timestamp", "assumptions")
        return [
            (t["timestamp"][:16], *(v for k, v in sorted(t.items()) if k not in skip)) for t in result.trades
        ]

    return rows(service) == rows(inproc) and service.curve == inproc.curve


def replay(
    first: date, last: date, data_dir: Path, models: Path, show: bool, engine: type = ReplayDriver
) -> tuple[dict, ReplayResult]:
    options = ReplayOptions(
        first=first,
        last=last,
        data_dir=data_dir,
        out=Path(tempfile.mkdtemp(prefix="bench-replay-")),
        models_dir=models,
    )
    result = engine(options).run()
    run = {**result.report["run"], "trades": len(result.trades)}
    days = result.report["equity"]["trading_days"]
    if show:
        print(result.text)
        print()
    print(f"{'trading days':<34} {days}")
    print(f"{'day loop (s)':<34} {run['day_loop_seconds']:.1f}")
    print(f"{'throughput (trading days / minute)':<34} {run['days_per_minute']:.1f}")
    print(f"{'with the suite start (s)':<34} {result.seconds:.1f}")
    for step, seconds in run.get("step_seconds", {}).items():
        print(f"  {step:<32} {seconds:>8.1f} s  {seconds / days * 1000:>7.1f} ms a day")
    print(f"outputs in {result.out}")
    return {**run, "days": days}, result


def baseline(checkout: Path, first: date, last: date, data_dir: Path, models: Path) -> dict:
    """The daily-bar replay with `checkout`'s code, in a process of its own (its suite runs its services)."""
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
    args = [
        sys.executable,
        "-c",
        BASELINE_RUN,
        first.isoformat(),
        last.isoformat(),
        str(data_dir),
        str(models),
    ]
    done = subprocess.run(args, env=env, cwd=checkout, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"the baseline replay failed: {done.stderr.strip()[-800:]}")
    run = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'trading days':<34} {run['days']}")
    print(f"{'day loop (s)':<34} {run['day_loop_seconds']:.1f}")
    print(f"{'throughput (trading days / minute)':<34} {run['days_per_minute']:.1f}")
    return run


if __name__ == "__main__":
    sys.exit(main())
