"""Benchmark: replay throughput, trading days per minute, for the Big 4 over one year of daily data.

Runs the real replay driver (its own suite: supervisor, managed Redis, every service) over the
real ASX CSVs of ../shared/data/asx when present, else over synthetic CSVs written in the same
format. Models are trained once, before the period (not timed: the replay reuses them, as it
does a TRADING_MODELS_DIR trained before --from). Prints figures; asserts nothing about time.

    .venv/bin/python tests/benchmarks/bench_replay.py [--from 2019-05-20] [--to 2020-05-19]

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
from tests.system._replay_helpers import market_csv_dir, models_trained_before, using_real_data

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="first", type=date.fromisoformat, default=date(2019, 5, 20))
    parser.add_argument("--to", dest="last", type=date.fromisoformat, default=date(2020, 5, 19))
    args = parser.parse_args()
    days = asx_calendar.trading_days_between(args.first, args.last)
    data = "real ASX CSVs" if using_real_data() else "synthetic CSVs (no ../shared/data/asx)"
    print(f"replay {args.first} .. {args.last}: {len(days)} trading days, Big 4 + index, {data}")
    started = time.perf_counter()
    models = models_trained_before(args.first, years=3.0)
    print(f"models trained before {args.first} in {time.perf_counter() - started:.1f} s (not timed below)")
    options = ReplayOptions(
        first=args.first,
        last=args.last,
        data_dir=market_csv_dir(),
        out=Path(tempfile.mkdtemp(prefix="bench-replay-")),
        models_dir=models,
    )
    result = ReplayDriver(options).run()
    run = result.report["run"]
    print(result.text)
    print()
    print(f"{'trading days':<34} {len(days)}")
    print(f"{'day loop (s)':<34} {run['day_loop_seconds']:.1f}")
    print(f"{'throughput (trading days / minute)':<34} {run['days_per_minute']:.1f}")
    print(f"{'with the suite start (s)':<34} {result.seconds:.1f}")
    print(f"outputs in {result.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
