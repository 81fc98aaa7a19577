"""Benchmark: history from Yahoo (a fake of yfinance's frames), training a model set, and the
ml-model service switching sets.

- fetch: `data fetch`'s code (services.clients.yahoo_history.fetch_daily) for ten years of the
  Big 4 and the index, the network replaced by tests/fakes/yfinance (pandas frames built from
  the synthetic walk, as yfinance returns them): a full fetch into an empty folder, then an
  incremental one a week later;
- train: the real train_models.py in a child, the Big 4 on five years (the shared ASX CSVs when
  present, else synthetic bars), as a model set;
- switch: a real ml-model process (private redis-server) serving one set while `current` moves to
  another: reload_models' own figure (load and verify every model of the new set, then swap), the
  wall time of the call, and the service's RSS before, after the switch, and after switching back
  (the old set is dropped once the new one serves: what stays is the extra memory held).
Prints figures; asserts nothing.

    .venv/bin/python tests/benchmarks/bench_models.py
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fakes"))  # the fake yfinance, before the real one

from services.base.base_service import BaseService  # noqa: E402
from services.base.model_sets import current_name, promote  # noqa: E402
from services.clients.yahoo_history import Retry, fetch_daily  # noqa: E402
from services.domain.asx_calendar import is_trading_day  # noqa: E402
from services.domain.bars import SYDNEY  # noqa: E402
from services.domain.price_history import synthetic_bars, trading_sessions  # noqa: E402
from tests.support import SHARED_ASX, RedisServer, ServiceProcess, make_suite_env, short_tempdir  # noqa: E402

SYMBOLS = ["CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX", "^AXJO"]
LAST = date(2024, 6, 14)


def yahoo_spec(until: date) -> dict:
    sessions = trading_sessions(date(2014, 1, 2), until, is_trading_day)  # one walk, whatever `until`
    return {
        "daily": {
            s: [
                [b.date.isoformat(), b.open, b.high, b.low, b.close, b.adj_close, b.volume]
                for b in synthetic_bars(s, sessions)
            ]
            for s in SYMBOLS
        }
    }


def bench_fetch(root: Path) -> None:
    spec = root / "yahoo.json"
    os.environ["FAKE_YFINANCE"] = str(spec)
    market = root / "market"
    started = time.perf_counter()
    import pandas  # noqa: F401 - paid once by the first fetch of a process: shown apart

    print(
        f"  importing pandas (the first fetch of a process pays it) {(time.perf_counter() - started) * 1000:.0f} ms"
    )
    for label, day in (("full, 10 years", LAST), ("incremental, a week later", LAST + timedelta(days=7))):
        spec.write_text(json.dumps(yahoo_spec(day)))
        now = datetime(day.year, day.month, day.day, 18, tzinfo=SYDNEY)
        started = time.perf_counter()
        reports = fetch_daily(market, SYMBOLS, now, years=10, retry=Retry(attempts=1))
        wall = time.perf_counter() - started
        rows = sum(r.rows for r in reports)
        added = sum(r.added for r in reports)
        states = ", ".join(sorted({r.status for r in reports}))
        print(f"  fetch {label:<26} {wall * 1000:8.0f} ms  {rows} rows in 5 files, {added} added ({states})")


def train(models: Path, env: dict, data: Path | None) -> float:
    args = [
        sys.executable,
        str(REPO / "services/ml-model/train_models.py"),
        "--out",
        str(models),
        "--years",
        "5",
    ]
    args += ["--data-dir", str(data)] if data else ["--synthetic"]
    started = time.perf_counter()
    subprocess.run(args, env={**env, "OMP_NUM_THREADS": "1"}, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


async def switch(client: BaseService, models: Path, name: str, pid: int) -> tuple[dict, float, int, int]:
    """(reply, wall s, RSS after, peak RSS while both sets were held: sampled every 2 ms)."""
    import threading

    peak, done = [rss(pid)], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss(pid))
            done.wait(0.002)

    sampler = threading.Thread(target=sample)
    promote(models, name, datetime.now(SYDNEY), "benchmark")
    sampler.start()
    started = time.perf_counter()
    try:
        reply = await client.call_service("ml-model", "reload_models", timeout=300)
    finally:
        done.set()
        sampler.join()
    return reply, time.perf_counter() - started, rss(pid), peak[0]


async def bench_switch(dirs, models: Path, first: str, second: str) -> None:
    os.environ.update({k: v for k, v in dirs.env.items() if k.startswith("TRADING_")})
    process = ServiceProcess("ml-model", dirs, extra_env={"TRADING_ML_MODEL_WATCH_S": "3600"}).start()
    client = BaseService("bench")
    try:
        health = await client.call_service("ml-model", "health")
        while health["models_loaded"] < health["models_available"]:  # the start-up warm-up
            await asyncio.sleep(0.1)
            health = await client.call_service("ml-model", "health")
        before = rss(process.pid)
        reply, wall, after, peak = await switch(client, models, second, process.pid)
        back, _, after_back, _ = await switch(client, models, first, process.pid)
        print(
            f"  switch to a new set ({reply['models']} models): {reply['ms']:.0f} ms in the service, "
            f"{wall * 1000:.0f} ms for the call; back again {back['ms']:.0f} ms"
        )
        mib = 1024 * 1024
        print(
            f"  ml-model RSS: {before / mib:.1f} MiB serving one set, peak {peak / mib:.1f} MiB while both sets "
            f"were held (+{(peak - before) / mib:.1f}), {after / mib:.1f} MiB after switching "
            f"(+{(after - before) / mib:.1f}), {after_back / mib:.1f} MiB after switching back"
        )
    finally:
        await client.close_clients()
        process.stop()


def main() -> None:
    root = short_tempdir("bm-")
    redis = RedisServer(root / "redis").start()
    try:
        print("history from Yahoo (fake of yfinance's frames; Big 4 + index)")
        bench_fetch(root)
        dirs = make_suite_env(root / "suite", redis.url, TRADING_SYMBOLS=",".join(SYMBOLS[:4]))
        env = {**dirs.env, "PYTHONPATH": str(REPO)}
        data = SHARED_ASX if SHARED_ASX.is_dir() else None
        took = train(dirs.models_dir, env, data)
        first = current_name(dirs.models_dir)
        print(
            f"train a set, Big 4 on 5 years ({'shared ASX CSVs' if data else 'synthetic bars'}): {took:.1f} s"
        )
        train(dirs.models_dir, env, data)
        second = current_name(dirs.models_dir)
        promote(dirs.models_dir, first, datetime.now(SYDNEY), "benchmark")
        assert first is not None and second is not None
        asyncio.run(bench_switch(dirs, dirs.models_dir, first, second))
    finally:
        redis.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
