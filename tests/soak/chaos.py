"""Chaos soak: a replay disturbed by random SIGKILLs and SIGSTOPs must trade as an undisturbed one.

    .venv/bin/python tests/soak/chaos.py [--minutes 30] [--seed 1] [--redis-every-s 30]

First an undisturbed replay of a period (services/management/replay.py: a private suite under the
supervisor, with its own Redis, on the market CSVs of tests/system/_replay_helpers.py and models
trained before the period). Then the same period again, as many times as the minutes allow (at
least once), while a chaos thread every 2-8 s picks one of the six services at random and either
SIGKILLs it (the supervisor restarts it) or SIGSTOPs it for 1-5 s and then SIGCONTs it, and every
`--redis-every-s` SIGKILLs the suite's Redis (the supervisor's watcher restarts it from its
append-only file). Each disturbed replay must give the undisturbed one's trades (day, symbol,
action, quantity, price and commission to the cent, reason, in order), its equity curve, no
degraded prediction, and, audited before its suite stops (tests/soak/ledger_audit.py), books whose
invariants hold: every prediction has one outcome, no prediction traded twice, each trade id
once, the ledger balances, both databases pass integrity_check.

The period is sized to the minutes (40 trading days a minute asked, from 2019-06-03, at
most the year the CSVs hold); training the models the first time is not counted. The disturbed
replays' supervisor allows 100 failures in its window instead of 5: these deaths are the test's,
not a crash loop to give up on. Prints one line per fault and per replay and a summary; exits 1
when a disturbed replay differs or an invariant breaks (with CHAOS_KEEP=1 in the environment each
replay's suite folder, its logs and databases, and the outputs are kept to look into it). The CI
version is tests/system/test_chaos.py.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from services.base.base_service import socket_is_live
from services.base.clock import SYDNEY
from services.domain import asx_calendar
from services.management.replay import ReplayDriver, ReplayOptions, ReplayResult
from services.registry import SERVICES
from tests.soak.ledger_audit import AuditPending, audit
from tests.support import rpc_call_sync, short_tempdir, wait_until
from tests.system._replay_helpers import (
    MODELS_BEFORE,
    TRADING_KNOBS,
    market_csv_dir,
    models_trained_before,
    using_real_data,
)

FIRST = MODELS_BEFORE  # the models are trained on the data before it
LAST_AVAILABLE = date(2020, 5, 19) if using_real_data() else date(2019, 12, 30)
DAYS_PER_MINUTE = 40  # period length per minute asked: an undisturbed run and a disturbed one fit
FAULT_EVERY_S = (2.0, 8.0)  # a year's replay takes 30-150 s: several faults in each
STOP_FOR_S = (1.0, 5.0)
MANAGER = {
    "TRADING_MANAGER_HEALTH_INTERVAL_S": "0.5",
    "TRADING_MANAGER_BACKOFF_BASE_S": "0.2",
    "TRADING_MANAGER_MAX_FAILURES": "100",
}


class Diverged(AssertionError):
    pass


def period(minutes: float) -> tuple[date, date]:
    days = asx_calendar.trading_days_between(FIRST, LAST_AVAILABLE)
    wanted = max(10, min(len(days), round(minutes * DAYS_PER_MINUTE)))
    return days[0], days[wanted - 1]


def trade_signature(trades: list[dict]) -> list[tuple]:
    """What no fault may change: everything but ids and fill seconds."""
    return [
        (
            t["timestamp"][:10],
            t["symbol"],
            t["action"],
            t["quantity"],
            t["price"],
            t["commission"],
            t["reason"],
        )
        for t in trades
    ]


@dataclass
class Chaos:
    """The fault thread of one disturbed replay: started once its suite runs, stopped before the
    audit (a stopped service is always continued)."""

    root: Path
    rng: random.Random
    redis_every_s: float
    log: Callable[[str], object] = print
    fault_every_s: tuple[float, float] = FAULT_EVERY_S
    counts: collections.Counter = field(default_factory=collections.Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _stopped_pid: int | None = None

    @property
    def manager(self) -> Path:
        return self.root / "sock" / "manager.sock"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def _status(self) -> dict:
        return rpc_call_sync(self.manager, "status", timeout_s=10)

    def _run(self) -> None:
        # The day loop begins once the supervisor has every service up (the replay's start).
        wait_until(
            lambda: (
                socket_is_live(self.manager)
                and all(s["state"] == "running" for s in self._status()["services"])
            ),
            300,
            0.2,
            what="the replay suite up",
            ignoring=(OSError, RuntimeError),
        )
        # The first Redis kill at a random point of the first period: a replay shorter than the
        # period would otherwise never see one.
        last_redis = time.monotonic() - self.rng.uniform(0, self.redis_every_s)
        while not self._stop.wait(self.rng.uniform(*self.fault_every_s)):
            try:
                if time.monotonic() - last_redis >= self.redis_every_s:
                    self._kill_redis()
                    last_redis = time.monotonic()
                else:
                    self._hit_service(self.rng.choice(list(SERVICES)), self.rng.choice(("kill", "stop")))
            except (OSError, RuntimeError) as exc:  # the supervisor busy or the suite stopping
                self.log(f"  chaos: skipped a fault ({exc})")

    def _kill_redis(self) -> None:
        status = self._status()
        pid = status["supervisor"]["redis"]["pid"]
        if pid:
            os.kill(pid, signal.SIGKILL)
            self.counts["redis SIGKILL"] += 1
            self.log(f"  chaos: redis SIGKILL (pid {pid}) at {suite_time(status)}")

    def _hit_service(self, name: str, kind: str) -> None:
        status = self._status()
        service = next(s for s in status["services"] if s["name"] == name)
        pid = service["pid"]
        if service["state"] != "running" or not pid:
            return  # restarting already: the next fault picks again
        if kind == "kill":
            os.kill(pid, signal.SIGKILL)
            self.counts["service SIGKILL"] += 1
            self.log(f"  chaos: {name} SIGKILL (pid {pid}) at {suite_time(status)}")
            return
        stop_s = self.rng.uniform(*STOP_FOR_S)
        self._stopped_pid = pid
        try:
            os.kill(pid, signal.SIGSTOP)
            self.counts["service SIGSTOP"] += 1
            self.log(f"  chaos: {name} SIGSTOP for {stop_s:.1f} s (pid {pid}) at {suite_time(status)}")
            self._stop.wait(stop_s)
        finally:
            self._stopped_pid = None
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def suite_time(status: dict) -> str:
    """The replay's Sydney time when a fault struck, for the log (e.g. 2019-08-16 10:15)."""
    return (
        datetime.fromisoformat(status["supervisor"]["suite_time"])
        .astimezone(SYDNEY)
        .strftime("%Y-%m-%d %H:%M")
    )


class ChaosDriver(ReplayDriver):
    """A replay whose suite is disturbed by `Chaos` and audited before it stops."""

    chaos: Chaos | None = None
    books: str | None = None
    finished = False

    async def _replay(self, days: list[date], started: float) -> ReplayResult:
        result = await super()._replay(days, started)
        self.finished = True  # audited at the stop; a failed replay is not
        return result

    def _start_suite(self, first_day: date) -> None:
        super()._start_suite(first_day)
        if self.chaos is not None:
            self.chaos.start()

    def _stop_suite(self) -> None:
        if self.chaos is not None:
            self.chaos.stop()
        if self.finished:
            sock = self.root / "sock"
            self.books = wait_until(
                lambda: audit(
                    lambda s, m, **p: rpc_call_sync(sock / f"{s}.sock", m, p or None), self.root / "data"
                ),
                180,
                0.5,
                what="the replay's books settled",
                ignoring=(OSError, RuntimeError, AuditPending),
            )
        super()._stop_suite()


def replay(first: date, last: date, out: Path, chaos: Chaos | None = None) -> tuple[ReplayResult, str]:
    options = ReplayOptions(
        first=first,
        last=last,
        data_dir=market_csv_dir(),
        out=out,
        models_dir=models_trained_before(MODELS_BEFORE),
        extra_env={**TRADING_KNOBS, **MANAGER},
        keep_dir=bool(os.environ.get("CHAOS_KEEP")),  # CHAOS_KEEP=1: keep each replay's suite folder
    )
    driver = ChaosDriver(options)
    if chaos is not None:
        chaos.root = driver.root
    driver.chaos = chaos
    result = driver.run()
    assert driver.books is not None
    return result, driver.books


def compare(calm: ReplayResult, disturbed: ReplayResult) -> None:
    if disturbed.report["degraded_predictions"]:
        raise Diverged(f"{disturbed.report['degraded_predictions']} degraded prediction(s)")
    want, got = trade_signature(calm.trades), trade_signature(disturbed.trades)
    if got != want:
        at = next(
            (i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got))
        )

        def shown(trades: list[dict]) -> list[str]:
            return [
                f"#{t['trade_id']} {t['timestamp']} {t['symbol']} {t['action']} {t['quantity']} @ {t['price']}"
                f" ({t['reason']}, prediction {t['prediction_id']})"
                for t in trades[max(0, at - 1) : at + 3]
            ]

        raise Diverged(
            f"trades differ from #{at} ({len(want)} vs {len(got)} trades):"
            f" undisturbed {shown(calm.trades)}, disturbed {shown(disturbed.trades)}"
        )
    if [round(e, 2) for _, e in disturbed.curve] != [round(e, 2) for _, e in calm.curve]:
        raise Diverged("same trades but another equity curve")


def soak(
    minutes: float,
    seed: int = 1,
    redis_every_s: float = 30.0,
    log=print,
    fault_every_s: tuple[float, float] = FAULT_EVERY_S,
) -> dict:
    """Undisturbed replay, then disturbed ones until the minutes are used; Diverged or AuditFailed
    (tests/soak/ledger_audit.py) at the first difference."""
    rng = random.Random(seed)
    first, last = period(minutes)
    models_trained_before(MODELS_BEFORE)  # trained once, before the clock starts
    started = time.monotonic()
    work = short_tempdir("chaos-")  # the replays' outputs (trades.csv, report.json, ...)
    try:
        return rounds_of_chaos(first, last, work, minutes, started, rng, redis_every_s, log, fault_every_s)
    finally:
        if not os.environ.get("CHAOS_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def rounds_of_chaos(
    first: date,
    last: date,
    work: Path,
    minutes: float,
    started: float,
    rng: random.Random,
    redis_every_s: float,
    log: Callable[[str], object],
    fault_every_s: tuple[float, float] = FAULT_EVERY_S,
) -> dict:
    calm, books = replay(first, last, work / "calm")
    log(f"undisturbed {first} .. {last}: {len(calm.trades)} trades in {calm.seconds:.0f} s; {books}")
    counts: collections.Counter = collections.Counter()
    rounds: list[float] = []
    while not rounds or time.monotonic() - started + max(rounds) < minutes * 60:
        chaos = Chaos(Path(), rng, redis_every_s, log, fault_every_s)
        began = time.monotonic()
        disturbed, books = replay(first, last, work / f"disturbed-{len(rounds) + 1}", chaos)
        rounds.append(time.monotonic() - began)
        counts += chaos.counts
        compare(calm, disturbed)
        log(
            f"disturbed #{len(rounds)}: {sum(chaos.counts.values())} faults ({dict(chaos.counts)}),"
            f" {len(disturbed.trades)} trades equal to the cent, in {rounds[-1]:.0f} s; {books}"
        )
    return {
        "first": first,
        "last": last,
        "days": len(calm.curve) - 1,
        "trades": len(calm.trades),
        "rounds": len(rounds),
        "faults": dict(counts),
        "undisturbed_s": round(calm.seconds, 1),
        "disturbed_s": [round(r, 1) for r in rounds],
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--redis-every-s", type=float, default=30.0, help="seconds between Redis kills")
    args = parser.parse_args()
    try:
        result = soak(args.minutes, args.seed, args.redis_every_s)
    except AssertionError as exc:  # Diverged, AuditFailed, or a settling deadline
        print(f"chaos.py: FAILED: {exc}", file=sys.stderr)
        return 1
    faults = ", ".join(f"{n} {kind}" for kind, n in sorted(result["faults"].items()))
    print(
        f"{result['rounds']} disturbed replay(s) of {result['first']} .. {result['last']}"
        f" ({result['days']} trading days, {result['trades']} trades) in {result['seconds']} s: {faults};"
        f" trades equal to the cent every time, books balanced (undisturbed {result['undisturbed_s']} s,"
        f" disturbed {result['disturbed_s']} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
