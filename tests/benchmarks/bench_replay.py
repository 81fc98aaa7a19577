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

Throughput counts the day loop only (three clock jumps, a refresh at each, the trading step and
paper-trading's processing per day); the suite's start and the final report are one-off costs,
printed separately.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from services.domain import asx_calendar
from services.management.replay import ReplayDriver, ReplayOptions
from tests.system._replay_helpers import (
    intraday_csv_dir,
    market_csv_dir,
    models_trained_before,
    using_real_data,
)

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="first", type=date.fromisoformat, default=date(2019, 5, 20))
    parser.add_argument("--to", dest="last", type=date.fromisoformat, default=date(2020, 5, 19))
    parser.add_argument("--intraday-days", type=int, default=20)
    args = parser.parse_args()
    days = asx_calendar.trading_days_between(args.first, args.last)
    data = "real ASX CSVs" if using_real_data() else "synthetic CSVs (no ../shared/data/asx)"
    print(f"replay {args.first} .. {args.last}: {len(days)} trading days, Big 4 + index, {data}")
    started = time.perf_counter()
    models = models_trained_before(args.first, years=3.0)
    print(f"models trained before {args.first} in {time.perf_counter() - started:.1f} s (not timed below)")
    daily = replay(args.first, args.last, market_csv_dir(), models, show=True)
    if args.intraday_days <= 0:
        return 0
    last = days[min(args.intraday_days, len(days)) - 1]
    print(f"\nthe same suite on 5m bars, {args.first} .. {last} (the session stepped every 5 minutes)")
    intraday = replay(args.first, last, intraday_csv_dir(args.first, last, "5m"), models, show=False)
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


def replay(first: date, last: date, data_dir: Path, models: Path, show: bool) -> dict:
    options = ReplayOptions(
        first=first,
        last=last,
        data_dir=data_dir,
        out=Path(tempfile.mkdtemp(prefix="bench-replay-")),
        models_dir=models,
    )
    result = ReplayDriver(options).run()
    run = result.report["run"]
    days = result.report["equity"]["trading_days"]
    if show:
        print(result.text)
        print()
    print(f"{'trading days':<34} {days}")
    print(f"{'day loop (s)':<34} {run['day_loop_seconds']:.1f}")
    print(f"{'throughput (trading days / minute)':<34} {run['days_per_minute']:.1f}")
    print(f"{'with the suite start (s)':<34} {result.seconds:.1f}")
    print(f"outputs in {result.out}")
    return {**run, "days": days}


if __name__ == "__main__":
    sys.exit(main())
