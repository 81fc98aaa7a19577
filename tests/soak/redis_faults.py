"""Soak: Redis SIGKILLed and restarted again and again, then SIGSTOPped, under durable traffic.

    .venv/bin/python tests/soak/redis_faults.py [--kills 20] [--stop-s 60] [--seed 1]

The six services run as real processes on a private Redis with an append-only file (as the
supervisor runs its own), with the suite clock in a session and low signal thresholds, while a
traffic thread asks for a prediction every half second (prediction_generated, durable, reaches
paper-trading, which trades or records why not; trade_executed and position_closed go to their
streams). A health thread asks every service's `health` every 0.1 s. Then:

- `--kills` times: SIGKILL Redis, keep it down until every service reports it (`redis`
  disconnected, status degraded) or two health intervals and a margin have passed, start it
  again on the same directory (it reloads its append-only file), and wait until every service is
  back to the status it had before with Redis connected;
- once: SIGSTOP Redis for `--stop-s` seconds (the server is there but answers nothing), SIGCONT.

Measured per fault and service: the time from the fault to `health` saying degraded, and the time
from Redis answering again to healthy. The issue's bounds: degraded within 2 health intervals
(the supervisor's default TRADING_MANAGER_HEALTH_INTERVAL_S, 5 s: 10 s), healthy within 5 s of
Redis's return. At the end, with the traffic stopped and everything settled, the audit: the
books' invariants (tests/soak/ledger_audit.py: every saved prediction has one outcome, none
traded twice, the ledger balances, integrity ok), every service's event outbox empty, and every
trade's trade_executed (and position_closed when it closed a position) in its Redis stream:
0 durable events lost. Prints one line per fault and a summary; exits 1 when a bound or the audit
fails. The short CI version is tests/system/test_redis_faults.py.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import shutil
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

import orjson

from services.base.events import STREAM_PREFIX
from services.registry import SERVICES
from tests.soak.ledger_audit import AuditPending, audit, read_rows
from tests.support import (
    Processes,
    RedisServer,
    SuiteDirs,
    Training,
    install_models,
    rpc_call_sync,
    short_tempdir,
    trained_models,
    wait_until,
)

SYMBOLS = ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")
HEALTH_INTERVAL_S = 5.0  # the supervisor's default TRADING_MANAGER_HEALTH_INTERVAL_S
DEGRADED_BOUND_S = 2 * HEALTH_INTERVAL_S
RECOVERED_BOUND_S = 5.0
POLL_S = 0.1
ENV = {
    "TRADING_MARKET_DATA_SOURCE": "synthetic",
    "TRADING_CLOCK_START": "2024-06-18T11:00:00+10:00",  # a Tuesday, in the session
    # Low thresholds: the signals trade both ways, so the trade path is crossed too.
    "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD": "0.01",
    "TRADING_PREDICTION_SIGNAL_SELL_THRESHOLD": "0.01",
    "TRADING_PREDICTION_SIGNAL_BEAR_BUY_EXTRA": "0",
    "TRADING_PAPER_TRADING_MAX_QUOTE_AGE_S": "86400",
    "TRADING_SCHEDULER_DEFAULTS": "false",  # the traffic thread is the load, not a schedule
}
# The same models as the test session's synthetic_models fixture (tests/conftest.py).
MODELS = Training(years=1.0, symbols=SYMBOLS)


class BoundMissed(AssertionError):
    pass


@dataclass
class Fault:
    kind: str  # "kill" or "stop"
    began: float  # monotonic time of the signal
    back: float | None = None  # Redis answering again
    degraded_s: dict[str, float] = field(default_factory=dict)  # per service, from `began`
    recovered_s: dict[str, float] = field(default_factory=dict)  # per service, from `back`


class HealthWatch:
    """Asks every service's health every POLL_S in a thread; keeps the latest reply of each."""

    def __init__(self, dirs: SuiteDirs, services: list[str]):
        self.dirs = dirs
        self.services = services
        self.latest: dict[str, tuple[float, dict | None]] = {}
        self.baseline: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-watch", daemon=True)

    def __enter__(self) -> HealthWatch:
        self.baseline = {s: rpc_call_sync(self.dirs.socket(s), "health")["status"] for s in self.services}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for service in self.services:
                try:
                    reply = rpc_call_sync(self.dirs.socket(service), "health", timeout_s=2.0)
                except (OSError, RuntimeError):
                    reply = None  # not answering counts as neither degraded nor recovered
                self.latest[service] = (time.monotonic(), reply)
            self._stop.wait(POLL_S)

    def degraded(self, service: str) -> bool:
        reply = self.latest.get(service, (0.0, None))[1]
        return bool(reply) and reply["redis"] == "disconnected" and reply["status"] != "healthy"

    def recovered(self, service: str) -> bool:
        reply = self.latest.get(service, (0.0, None))[1]
        return bool(reply) and reply["redis"] == "connected" and reply["status"] == self.baseline[service]

    def seen_at(self, service: str) -> float:
        return self.latest[service][0]


class Traffic:
    """A prediction every half second, round the Big 4, until stopped; counts what it asked."""

    def __init__(self, dirs: SuiteDirs):
        self.dirs = dirs
        self.asked = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        for symbol in itertools.cycle(SYMBOLS):
            if self._stop.wait(0.5):
                return
            try:
                rpc_call_sync(
                    self.dirs.socket("prediction"),
                    "generate_single_prediction",
                    {"symbol": symbol, "force_refresh": True},
                    timeout_s=30,
                )
                self.asked += 1
            except (OSError, RuntimeError):
                self.failed += 1  # answered with an error: nothing saved, nothing owed


def start_desk(processes: Processes, redis: RedisServer) -> SuiteDirs:
    dirs = processes.suite_dirs("rf-", redis.url, **ENV, TRADING_CLOCK_EPOCH=repr(time.time()))
    install_models(trained_models(MODELS), dirs.models_dir)
    for name in SERVICES:  # the registry's order: each after its dependencies
        processes.start(name, dirs)
    return dirs


def wait_each(watch: HealthWatch, fault: Fault, attr: str, since: float, deadline_s: float) -> None:
    """Record, per service, when `watch.<attr>(service)` first held (seconds after `since`)."""
    found: dict[str, float] = getattr(fault, attr + "_s")
    check = getattr(watch, attr)

    def all_seen() -> bool:
        for service in watch.services:
            if service not in found and check(service):
                found[service] = max(0.0, watch.seen_at(service) - since)
        return len(found) == len(watch.services)

    with contextlib.suppress(AssertionError):  # what is missing is reported by the caller
        wait_until(all_seen, deadline_s, 0.02, what=f"every service {attr}")


def kill_round(redis: RedisServer, watch: HealthWatch, notice_s: float) -> Fault:
    assert redis.process is not None
    fault = Fault("kill", time.monotonic())
    redis.process.send_signal(signal.SIGKILL)
    redis.process.wait(10)
    # Down until every service said so, or `notice_s`: a service that did not notice by then
    # missed the bound anyway.
    wait_each(watch, fault, "degraded", fault.began, notice_s)
    redis.start(timeout_s=60)  # the same directory: it reloads its append-only file
    fault.back = time.monotonic()
    wait_each(watch, fault, "recovered", fault.back, 120)
    return fault


def stop_round(redis: RedisServer, watch: HealthWatch, stop_s: float, notice_s: float) -> Fault:
    assert redis.process is not None
    fault = Fault("stop", time.monotonic())
    redis.process.send_signal(signal.SIGSTOP)
    try:
        wait_each(watch, fault, "degraded", fault.began, max(stop_s, notice_s))
        time.sleep(max(0.0, fault.began + stop_s - time.monotonic()))  # the stop lasts stop_s
    finally:
        redis.process.send_signal(signal.SIGCONT)
    fault.back = time.monotonic()
    wait_each(watch, fault, "recovered", fault.back, 120)
    return fault


def fault_line(n: int, fault: Fault, services: list[str]) -> str:
    def times(found: dict[str, float]) -> str:
        return " ".join(f"{s}={found[s]:.1f}" if s in found else f"{s}=NEVER" for s in services)

    return f"{n:>2} {fault.kind:<4} degraded after [{times(fault.degraded_s)}] s; healthy after [{times(fault.recovered_s)}] s"


def misses(faults: list[Fault], services: list[str]) -> list[str]:
    """Every fault and service outside the issue's bounds (or never seen degraded / recovered)."""
    found = []
    for n, fault in enumerate(faults, 1):
        for service in services:
            degraded = fault.degraded_s.get(service)
            recovered = fault.recovered_s.get(service)
            if degraded is None or degraded > DEGRADED_BOUND_S:
                found.append(f"fault {n} ({fault.kind}): {service} degraded after {degraded} s")
            if recovered is None or recovered > RECOVERED_BOUND_S:
                found.append(f"fault {n} ({fault.kind}): {service} healthy after {recovered} s")
    return found


def streamed_trades(redis: RedisServer, event_type: str) -> list[int]:
    """The trade ids of every entry of a durable event's stream (duplicates kept)."""
    import redis as redis_py

    client = redis_py.Redis(unix_socket_path=str(redis.path))
    try:
        entries = client.xrange(STREAM_PREFIX + event_type)
    finally:
        client.close()
    return [int(orjson.loads(fields[b"event"])["data"]["trade_id"]) for _, fields in entries]


def audit_events(redis: RedisServer, dirs: SuiteDirs, services: list[str]) -> str:
    """Every trade's events in their streams, every event outbox empty: 0 durable events lost."""
    outboxes = {s: rpc_call_sync(dirs.socket(s), "metrics")["events"]["outbox"] for s in services}
    if any(outboxes.values()):
        raise AuditPending(f"event outboxes not empty: {outboxes}")
    [rows] = read_rows(dirs.data_dir / "paper_trading.db", "SELECT trade_id, closes_position FROM trades")
    executed, closed = streamed_trades(redis, "trade_executed"), streamed_trades(redis, "position_closed")
    lost = [tid for tid, _ in rows if tid not in set(executed)]
    lost += [tid for tid, closes in rows if closes and tid not in set(closed)]
    if lost:
        raise AuditPending(f"trades without their events in the streams: {sorted(set(lost))[:10]}")
    doubled = len(executed) - len(set(executed)) + len(closed) - len(set(closed))
    return f"every trade's events in the streams ({doubled} sent twice after a timeout, none lost)"


def summary(faults: list[Fault], services: list[str]) -> dict:
    def stats(kind: str, attr: str) -> dict:
        values = [v for f in faults if f.kind == kind for v in getattr(f, attr).values()]
        if not values:
            return {}
        return {
            "p50": round(statistics.median(values), 2),
            "max": round(max(values), 2),
            "n": len(values),
        }

    return {
        kind: {"degraded_s": stats(kind, "degraded_s"), "recovered_s": stats(kind, "recovered_s")}
        for kind in ("kill", "stop")
    }


def soak(kills: int, stop_s: float, seed: int = 1, log=print, notice_s: float = DEGRADED_BOUND_S + 5) -> dict:
    """Run the faults, then the audit; the measured figures (AuditFailed if the books are wrong).
    A fault lasts until every service reported it, or `notice_s` (a stop: at least `stop_s`)."""
    rng = random.Random(seed)
    started = time.monotonic()
    root = short_tempdir("soak-rf-")
    services = list(SERVICES)
    with Processes() as processes:
        redis = RedisServer(root / "redis", appendonly=True).start()
        try:
            dirs = start_desk(processes, redis)
            faults: list[Fault] = []
            with Traffic(dirs) as traffic, HealthWatch(dirs, services) as watch:
                plan = ["kill"] * kills
                plan.insert(rng.randint(0, kills), "stop")  # the stop somewhere among the kills
                for n, kind in enumerate(plan, 1):
                    time.sleep(rng.uniform(1.0, 3.0))  # traffic flows between the faults
                    fault = (
                        kill_round(redis, watch, notice_s)
                        if kind == "kill"
                        else stop_round(redis, watch, stop_s, notice_s)
                    )
                    faults.append(fault)
                    log(fault_line(n, fault, services))
            books = wait_until(
                lambda: audit(lambda s, m, **p: rpc_call_sync(dirs.socket(s), m, p or None), dirs.data_dir),
                180,
                0.5,
                what="the desk settled",
                ignoring=(OSError, RuntimeError, AuditPending),
            )
            events = wait_until(
                lambda: audit_events(redis, dirs, services),
                120,
                0.5,
                what="every trade's events in the streams",
                ignoring=(OSError, RuntimeError, AuditPending),
            )
        finally:
            if redis.process is not None and redis.process.poll() is None:
                os.kill(redis.process.pid, signal.SIGCONT)  # never leave it stopped
            redis.stop()
            shutil.rmtree(root, ignore_errors=True)
    return {
        "faults": faults,
        "services": services,
        "asked": traffic.asked,
        "failed": traffic.failed,
        "books": books,
        "events": events,
        "figures": summary(faults, services),
        "misses": misses(faults, services),
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--stop-s", type=float, default=60.0, help="how long Redis stays SIGSTOPped")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    try:
        result = soak(args.kills, args.stop_s, args.seed)
    except AssertionError as exc:  # AuditFailed (tests/soak/ledger_audit.py), or a settling deadline
        print(f"redis_faults.py: AUDIT FAILED: {exc}", file=sys.stderr)
        return 1
    figures = result["figures"]
    print(
        f"{args.kills} kills and a {args.stop_s:g} s stop in {result['seconds']} s;"
        f" {result['asked']} predictions asked ({result['failed']} refused)"
    )
    for kind, figure in figures.items():
        print(f"  {kind}: degraded after {figure['degraded_s']} s, healthy after {figure['recovered_s']} s")
    print(f"  books: {result['books']}")
    print(f"  events: {result['events']}")
    print(f"  bounds: degraded within {DEGRADED_BOUND_S:g} s, healthy within {RECOVERED_BOUND_S:g} s")
    for miss in result["misses"]:
        print(f"  MISSED: {miss}", file=sys.stderr)
    return 1 if result["misses"] else 0


if __name__ == "__main__":
    sys.exit(main())
