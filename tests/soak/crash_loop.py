"""Soak: kill the money path at each named crashpoint, again and again, and audit the books.

    .venv/bin/python tests/soak/crash_loop.py [--rounds 100] [--points all]

A private Redis and the real market-data (synthetic, clock in a session), sentiment, prediction
and paper-trading processes (prediction events verified with the prediction service). Each round
restarts one service with TRADING_CRASHPOINT set to one point, asks for a prediction, lets the
process die exactly there (exit 86), starts it again without the crashpoint and waits until
everything settled. The round `market_data.outage` instead stops market-data for `--outage-s`
(60) seconds while paper-trading holds a fresh prediction: it must wait and act once market-data
is back, never decide (or lose it) meanwhile. After every round the audit
(tests/soak/ledger_audit.py) must hold: no prediction lost (each saved one has one outcome in
paper-trading, the outbox is empty), no trade doubled, the ledger balances, both databases pass
PRAGMA integrity_check.

Prints one line per round and a summary; exits 1 at the first broken invariant. The short CI
version is tests/system/test_crash_loop.py.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.base.crashpoints import CRASHPOINT_EXIT
from tests.soak.ledger_audit import AuditFailed, AuditPending, audit
from tests.support import Processes, RedisServer, ServiceProcess, rpc_call_sync, short_tempdir, wait_until

POINTS = {
    "prediction.after_save": "prediction",
    "prediction.after_publish": "prediction",
    "paper_trading.after_outcome": "paper-trading",
}
#: Not a crashpoint: market-data stopped while paper-trading holds a fresh prediction; it must wait
#: (no delivery spent, not expired) and act once market-data is back (`--outage-s`, default 60).
OUTAGE = "market_data.outage"
SYMBOLS = ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")
ENV = {
    "TRADING_MARKET_DATA_SOURCE": "synthetic",
    "TRADING_CLOCK_START": "2024-06-18T11:00:00+10:00",  # a Tuesday, in the session
    # Low thresholds: the signals trade both ways, so the trade path is crossed too.
    "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD": "0.01",
    "TRADING_PREDICTION_SIGNAL_SELL_THRESHOLD": "0.01",
    "TRADING_PREDICTION_SIGNAL_BEAR_BUY_EXTRA": "0",
    "TRADING_PAPER_TRADING_MAX_QUOTE_AGE_S": "86400",
}


@dataclass
class Desk:
    processes: Processes
    dirs: object
    running: dict[str, ServiceProcess] = field(default_factory=dict)

    epoch: float = field(default_factory=time.time)  # one suite clock for every process, restarts too

    def start(self, name: str, **env: str) -> ServiceProcess:
        shared = {**ENV, "TRADING_CLOCK_EPOCH": repr(self.epoch), **env}
        process = self.processes.start(name, self.dirs, extra_env=shared, wait=not env)
        self.running[name] = process
        return process

    def call(self, service: str, method: str, timeout_s: float = 30.0, **params):
        return rpc_call_sync(self.dirs.socket(service), method, params or None, timeout_s=timeout_s)


def run_round(desk: Desk, point: str, symbol: str, outage_s: float = 60.0) -> str:
    if point == OUTAGE:
        return outage_round(desk, symbol, outage_s)
    service = POINTS[point]
    desk.running[service].stop()
    dying = desk.start(service, TRADING_CRASHPOINT=point)
    wait_until(
        lambda: desk.call(service, "health"), 60, what=f"{service} up", ignoring=(OSError, RuntimeError)
    )
    try:
        desk.call("prediction", "generate_single_prediction", symbol=symbol, force_refresh=True, timeout_s=20)
    except (OSError, RuntimeError):
        pass  # the prediction service died answering: expected at its own crashpoints
    code = dying.wait_exit(60)
    if code != CRASHPOINT_EXIT:
        raise AuditFailed(f"{service} exited {code}, not at the crashpoint {point}")
    desk.start(service)
    settled = wait_until(
        lambda: audit(desk.call, Path(desk.dirs.data_dir)),
        120,
        0.2,
        what="the desk settled",
        ignoring=(OSError, RuntimeError, AuditPending),
    )
    return settled


def outage_round(desk: Desk, symbol: str, outage_s: float) -> str:
    """paper-trading paused while a prediction is made and market-data stops, then resumed: it
    receives the event with no quote to be had. After `outage_s` market-data starts again and the
    prediction must be acted on then (its outcome recorded only after the return)."""
    paper = desk.running["paper-trading"]
    paper.signal(signal.SIGSTOP)
    try:
        made = desk.call(
            "prediction", "generate_single_prediction", symbol=symbol, force_refresh=True, timeout_s=20
        )
        desk.running["market-data"].stop()
    finally:
        paper.signal(signal.SIGCONT)
    waits = desk.call("paper-trading", "metrics")["events"]["dependency_waits"]
    if made["signal"] != "HOLD":  # a HOLD needs no quote: ignored at once
        wait_until(
            lambda: desk.call("paper-trading", "metrics")["events"]["dependency_waits"],
            60,
            what="paper-trading waiting for market-data",
            until=lambda n: n > waits,
        )
    time.sleep(outage_s)  # the fault itself: market-data stays away this long
    if made["signal"] != "HOLD":
        try:
            early = desk.call("paper-trading", "get_prediction_outcome", prediction_id=made["prediction_id"])
        except RuntimeError:
            early = None
        if early is not None:
            raise AuditFailed(f"decided while market-data was away: {early}")
    back = time.monotonic()
    desk.start("market-data")
    outcome = wait_until(
        lambda: desk.call("paper-trading", "get_prediction_outcome", prediction_id=made["prediction_id"]),
        120,
        0.1,
        what="the outcome after market-data returned",
        ignoring=(OSError, RuntimeError),
    )
    after = time.monotonic() - back
    settled = wait_until(
        lambda: audit(desk.call, Path(desk.dirs.data_dir)),
        120,
        0.2,
        what="the desk settled",
        ignoring=(OSError, RuntimeError, AuditPending),
    )
    return (
        f"{made['signal']} {outcome['outcome']} {after:.1f} s after market-data returned"
        f" (away {outage_s:.0f} s); {settled}"
    )


def soak(rounds: int, points: list[str], log=print, outage_s: float = 60.0) -> dict:
    started = time.monotonic()
    root = short_tempdir("soak-")
    with Processes() as processes:
        redis = RedisServer(root / "redis").start()
        try:
            dirs = processes.suite_dirs("crash-", redis.url)
            desk = Desk(processes, dirs)
            for name in ("market-data", "sentiment", "prediction", "paper-trading"):
                desk.start(name)
            for n, (point, symbol) in enumerate(
                zip(itertools.islice(itertools.cycle(points), rounds), itertools.cycle(SYMBOLS)), 1
            ):
                line = run_round(desk, point, symbol, outage_s)
                log(f"round {n}/{rounds} {point:<28} {symbol}: {line}")
        finally:
            redis.stop()
    return {"rounds": rounds, "seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument(
        "--points", default="all", help=f"comma-separated crashpoints and/or {OUTAGE}, or all"
    )
    parser.add_argument(
        "--outage-s", type=float, default=60.0, help=f"how long {OUTAGE} keeps market-data away"
    )
    args = parser.parse_args()
    points = [*POINTS, OUTAGE] if args.points == "all" else args.points.split(",")
    unknown = [p for p in points if p not in POINTS and p != OUTAGE]
    if unknown:
        print(
            f"crash_loop.py: unknown crashpoint {unknown[0]!r}; known: {', '.join(POINTS)}", file=sys.stderr
        )
        return 2
    try:
        result = soak(args.rounds, points, outage_s=args.outage_s)
    except AuditFailed as exc:
        print(f"crash_loop.py: AUDIT FAILED: {exc}", file=sys.stderr)
        return 1
    print(
        f"{result['rounds']} rounds in {result['seconds']} s: 0 predictions lost, 0 trades doubled, books balanced"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
