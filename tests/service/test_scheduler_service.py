"""The scheduler as a real process on its real socket, with a real redis-server and SQLite.

The services it calls are a real BaseService ("market-data") served from this test process over
its own Unix socket, so calls, failures, slowness and absence are all real RPC behaviour.
Suite time: every process gets the same TRADING_CLOCK_START/SPEED/EPOCH, so the scheduler and
the fake agree on "now" and a sped-up clock fires slots at the right suite times.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from services.base.base_service import BaseService, DependencyUnavailable, rpc
from services.base.clock import SuiteClock
from services.base.config import Settings
from services.base.rpc import InvalidParams, NotConfigured, NotFound
from tests.support import EventWatcher, Processes, ServiceProcess, SuiteDirs, async_wait_until

pytestmark = pytest.mark.timeout(120)


@dataclass
class Call:
    method: str
    suite_at: datetime
    real_at: float


class FakeMarketData(BaseService):
    """Stands in for market-data: records each call; can fail or be slow on demand."""

    name = "market-data"
    shutdown_grace_s = 1.0  # its slow handlers sleep long; teardown need not wait for them

    def __init__(self, settings: Settings, clock: SuiteClock) -> None:
        super().__init__(settings=settings)
        self.clock = clock
        self.calls: list[Call] = []
        self.failures_left = 0
        self.delay_s = 0.0

    def _record(self, method: str) -> None:
        self.calls.append(Call(method, self.clock.now(), time.monotonic()))

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    @rpc
    async def refresh_all_data(self) -> dict:
        """Counts calls; fails while failures_left > 0; sleeps delay_s first."""
        self._record("refresh_all_data")
        await asyncio.sleep(self.delay_s)
        if self.failures_left > 0:
            self.failures_left -= 1
            raise DependencyUnavailable("yahoo is down")
        return {"refreshed": 4}

    @rpc
    async def sync_feed(self) -> dict:
        """Like an IG sync without credentials: always -32002 not configured."""
        self._record("sync_feed")
        raise NotConfigured("not configured: feed credentials are not set")

    @rpc
    async def get_market_context(self) -> dict:
        """Always answers."""
        self._record("get_market_context")
        return {"context": "bull"}


@dataclass
class Harness:
    suite: SuiteDirs
    env: dict[str, str]
    clock: SuiteClock
    client: BaseService
    fake: FakeMarketData
    processes: Processes
    procs: list[ServiceProcess] = field(default_factory=list)

    async def start(self) -> ServiceProcess:
        proc = self.processes.service("scheduler", self.suite, extra_env=self.env)
        self.procs.append(proc)
        # Started in a thread: the fake market-data in this event loop must keep serving.
        await asyncio.to_thread(proc.start)
        return proc

    async def stop(self, proc: ServiceProcess) -> None:
        assert await asyncio.to_thread(proc.stop) == 0

    async def call(self, method: str, **params):
        # A fresh client per restart would be needed otherwise: the old connection dies with it.
        await self.client.close_clients()
        return await self.client.call_service("scheduler", method, timeout=20.0, **params)

    async def history(self, task_id: str) -> list[dict]:
        return (await self.call("get_task_history", task_id=task_id, limit=50))["runs"]


def sydney(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
async def harness_factory(suite: SuiteDirs, processes: Processes) -> AsyncIterator:
    made: list[Harness] = []

    async def make(start: str, speed: float = 1.0, defaults: bool = False, **extra: str) -> Harness:
        epoch = time.time()
        clock = SuiteClock(sydney(start), speed, epoch)
        env = {
            "TRADING_CLOCK_START": start,
            "TRADING_CLOCK_SPEED": repr(speed),
            "TRADING_CLOCK_EPOCH": repr(epoch),
            "TRADING_SCHEDULER_DEFAULTS": "true" if defaults else "false",
            **extra,
        }
        fake = FakeMarketData(Settings.from_env({**suite.env, **env}), clock)
        await fake.start()
        harness = Harness(suite, env, clock, BaseService("tests"), fake, processes)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        for proc in harness.procs:  # stopped while the fake still answers it (processes: a backstop)
            await asyncio.to_thread(proc.stop)
        await harness.client.close_clients()
        await harness.fake.stop()


def task(name: str, schedule: dict | None = None, **extra) -> dict:
    config = {"name": name, "service": "market-data", "method": "refresh_all_data", **extra}
    if schedule is not None:
        config["schedule"] = schedule
    return config


FAST_RETRY = {"max_attempts": 3, "base_delay_s": 0.1, "max_delay_s": 1.0, "jitter": 0.0}


# ---------------------------------------------------------------- market status


async def test_market_status_follows_the_suite_clock(harness_factory) -> None:
    h = await harness_factory("2025-04-18T11:00:00+10:00")  # Good Friday
    await h.start()
    status = await h.call("get_market_status")
    assert status["phase"] == "closed"
    assert status["holiday"] == "Good Friday"
    assert status["is_trading_day"] is False
    assert status["next_open"] == "2025-04-22T10:00:00+10:00"  # after Easter Monday
    assert status["now"].startswith("2025-04-18T11:00")

    asked = await h.call("get_market_status", at="2025-12-31T02:30:00+00:00")  # 13:30 AEDT
    assert asked["phase"] == "open" and asked["early_close"] is True
    assert asked["next_close"] == "2025-12-31T14:10:00+11:00"

    for bad in ("tomorrow", "2025-06-10T10:00:00"):  # not ISO; no offset
        with pytest.raises(InvalidParams) as info:
            await h.call("get_market_status", at=bad)
        assert info.value.param == "at"


# ---------------------------------------------------------------- validation and defaults


INVALID_CONFIGS = [
    (task("x", {"type": "daily", "at": "25:00"}), "config.schedule.at"),
    (task("x", {"type": "cron", "cron": "0 0 31 2 *"}), "config.schedule"),  # never matches
    ({**task("x"), "service": "nonexistent"}, "config.service"),
    ({**task("x"), "params": {"timeout": 3}}, "config.params"),  # clashes with the RPC client
    (task("x", depends_on=["missing"]), "config.depends_on"),
    ({**task("x"), "method": "no_such_method", "service": "scheduler"}, "config.method"),
    ({**task("x"), "method": "shutdown", "service": "scheduler"}, "config.method"),  # control
    (task("x", retry={"max_attempts": 99}), "config.retry.max_attempts"),
    ({"name": "x"}, "config.service"),
]


async def test_schedule_task_rejects_invalid_configs(harness_factory) -> None:
    # One process for the whole table: each row is a separate call against the same service.
    h = await harness_factory("2025-06-10T08:00:00+10:00")
    await h.start()
    for config, param in INVALID_CONFIGS:
        with pytest.raises(InvalidParams) as info:
            await h.call("schedule_task", config=config)
        assert info.value.param == param, config
    assert await h.call("list_tasks") == []
    first = await h.call("schedule_task", config=task("dup"))
    with pytest.raises(InvalidParams) as info:  # names are unique among live tasks
        await h.call("schedule_task", config=task("dup"))
    assert info.value.param == "config.name"
    assert [t["task_id"] for t in await h.call("list_tasks")] == [first["task_id"]]


async def test_default_schedule_is_seeded_at_the_seed_times(harness_factory) -> None:
    h = await harness_factory("2025-04-17T18:00:00+10:00", defaults=True)  # Thursday before Easter
    await h.start()
    tasks = {t["name"]: t for t in await h.call("list_tasks")}
    assert {name: t["next_run"] for name, t in tasks.items()} == {
        "daily_backup": "2025-04-18T02:00:00+10:00",  # every day, holidays included
        "morning_analysis": "2025-04-22T09:30:00+10:00",  # trading days: after Easter Monday
        "market_data_refresh": "2025-04-22T09:45:00+10:00",
        "sentiment_analysis": "2025-04-22T09:50:00+10:00",
        "market_monitoring": "2025-04-22T10:15:00+10:00",
        "evening_analysis": "2025-04-22T17:00:00+10:00",
        "paper_trading_sync": "2025-04-22T17:30:00+10:00",
        "model_retrain": "2025-04-19T06:00:00+10:00",  # Saturdays, whatever the calendar
    }
    assert tasks["market_monitoring"]["config"]["depends_on"] == ["market_data_refresh"]
    assert all(t["origin"] == "default" and t["last_run"] is None for t in tasks.values())


# ---------------------------------------------------------------- firing on the suite clock


async def test_slots_fire_at_the_right_suite_times_on_a_sped_up_clock(harness_factory) -> None:
    speed = 30.0
    # Starts 2.5 suite minutes (5 real seconds) early: time to start and schedule the task.
    h = await harness_factory("2025-06-10T09:27:30+10:00", speed=speed)
    await h.start()
    every_minute = {"type": "interval", "every_minutes": 1, "start": "09:30", "end": "12:00"}
    created = await h.call("schedule_task", config=task("tick", every_minute))
    assert created["next_run"] == "2025-06-10T09:30:00+10:00"
    async with EventWatcher(h.suite.env["TRADING_REDIS_URL"], "task_completed") as events:
        await async_wait_until(
            lambda: h.fake.calls, 30, what="three slots", until=lambda calls: len(calls) >= 3
        )
        await events.wait_for("task_completed", lambda e: e["data"]["slot"] == "2025-06-10T09:32")
    expected = [sydney(f"2025-06-10T09:3{m}:00+10:00") for m in range(3)]
    for call, slot_at in zip(h.fake.calls, expected, strict=False):
        # Fired at the slot, never before it, and late by at most ~1 real second.
        assert slot_at <= call.suite_at < slot_at + timedelta(seconds=speed)
    runs = await h.history(created["task_id"])
    assert [r["slot"] for r in reversed(runs)][:3] == [
        "2025-06-10T09:30",
        "2025-06-10T09:31",
        "2025-06-10T09:32",
    ]
    assert all(r["trigger"] == "schedule" and r["status"] == "succeeded" for r in runs)


# ---------------------------------------------------------------- retries, failures, timeouts


async def test_retries_back_off_then_succeed(harness_factory) -> None:
    h = await harness_factory("2025-06-10T12:00:00+10:00")
    await h.start()
    created = await h.call("schedule_task", config=task("flaky", retry=FAST_RETRY))
    h.fake.failures_left = 2
    run = await h.call("execute_task", task_id=created["task_id"])
    assert run["status"] == "succeeded" and run["attempts"] == 3 and run["trigger"] == "manual"
    gaps = [b.real_at - a.real_at for a, b in zip(h.fake.calls, h.fake.calls[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # exponential: 0.1 s, then 0.2 s


async def test_exhausted_retries_record_a_failure_and_publish_task_failed(harness_factory) -> None:
    h = await harness_factory("2025-06-10T12:00:00+10:00")
    await h.start()
    created = await h.call("schedule_task", config=task("doomed", retry=FAST_RETRY))
    h.fake.failures_left = 10
    async with EventWatcher(h.suite.env["TRADING_REDIS_URL"], "task_failed") as events:
        run = await h.call("execute_task", task_id=created["task_id"])
        event = await events.wait_for("task_failed")
    assert run["status"] == "failed" and run["attempts"] == 3
    assert "dependency_unavailable" in run["error"] and "yahoo is down" in run["error"]
    assert len(h.fake.calls) == 3  # bounded: no fourth attempt
    assert event["data"]["task_id"] == created["task_id"] and event["data"]["status"] == "failed"
    listed = (await h.call("list_tasks"))[0]
    assert listed["last_status"] == "failed" and listed["last_run"] == run["started_at"]


async def test_not_configured_is_skipped_at_once_not_retried_or_failed(harness_factory) -> None:
    h = await harness_factory("2025-06-10T12:00:00+10:00")
    await h.start()
    config = {"name": "sync", "service": "market-data", "method": "sync_feed", "retry": FAST_RETRY}
    created = await h.call("schedule_task", config=config)
    async with EventWatcher(h.suite.env["TRADING_REDIS_URL"], "task_completed", "task_failed") as events:
        run = await h.call("execute_task", task_id=created["task_id"])
        await events.wait_for("task_completed")
        assert events.of_type("task_failed") == []
    assert run["status"] == "skipped" and run["attempts"] == 1
    assert "not configured" in run["error"]
    assert len(h.fake.called("sync_feed")) == 1  # a retry cannot mend missing credentials
    assert (await h.call("health"))["failed_today"] == 0


async def test_a_service_that_is_down_is_a_failed_run_not_a_crash(harness_factory) -> None:
    h = await harness_factory("2025-06-10T12:00:00+10:00")
    proc = await h.start()
    config = {"name": "news", "service": "sentiment", "method": "refresh_sentiment_cache"}
    created = await h.call("schedule_task", config={**config, "retry": {"max_attempts": 1}})
    run = await h.call("execute_task", task_id=created["task_id"])
    assert run["status"] == "failed" and run["error"].startswith("dependency_unavailable")
    health = await h.call("health")
    assert health["status"] == "healthy" and proc.process.poll() is None
    assert health["failed_today"] == 1 and health["running"] == []


async def test_a_run_that_overruns_its_timeout_is_cancelled_and_failed(harness_factory) -> None:
    h = await harness_factory("2025-06-10T12:00:00+10:00")
    await h.start()
    created = await h.call("schedule_task", config=task("slow", timeout_s=0.5))
    h.fake.delay_s = 30.0
    started = time.monotonic()
    run = await h.call("execute_task", task_id=created["task_id"])
    assert time.monotonic() - started < 5.0
    assert run["status"] == "failed" and run["error"] == "timed out after 0.5s: cancelled"
    assert (await h.call("list_tasks"))[0]["running"] is False


# ---------------------------------------------------------------- dependencies


async def test_a_task_whose_dependency_failed_today_is_blocked(harness_factory) -> None:
    h = await harness_factory("2025-06-10T12:00:00+10:00")
    await h.start()
    refresh = await h.call("schedule_task", config=task("refresh", retry={"max_attempts": 1}))
    context = {"name": "context", "service": "market-data", "method": "get_market_context"}
    dependent = await h.call("schedule_task", config={**context, "depends_on": ["refresh"]})

    h.fake.failures_left = 1
    assert (await h.call("execute_task", task_id=refresh["task_id"]))["status"] == "failed"
    async with EventWatcher(h.suite.env["TRADING_REDIS_URL"], "task_failed") as events:
        blocked = await h.call("execute_task", task_id=dependent["task_id"])
        event = await events.wait_for("task_failed", lambda e: e["data"]["status"] == "blocked")
    assert blocked["status"] == "blocked" and blocked["error"] == "dependency refresh failed today"
    assert event["data"]["name"] == "context"
    assert h.fake.called("get_market_context") == []  # not run on bad data

    # The operator re-runs the dependency; once it succeeds, the dependent runs.
    assert (await h.call("execute_task", task_id=refresh["task_id"]))["status"] == "succeeded"
    assert (await h.call("execute_task", task_id=dependent["task_id"]))["status"] == "succeeded"


async def test_a_scheduled_task_is_blocked_when_its_dependency_failed_earlier(harness_factory) -> None:
    h = await harness_factory("2025-06-10T09:27:30+10:00", speed=30.0)
    await h.start()
    h.fake.failures_left = 100
    once = {"max_attempts": 1}
    await h.call("schedule_task", config=task("refresh", {"type": "daily", "at": "09:30"}, retry=once))
    context = {"name": "context", "service": "market-data", "method": "get_market_context"}
    config = {**context, "schedule": {"type": "daily", "at": "09:31"}, "depends_on": ["refresh"]}
    dependent = await h.call("schedule_task", config=config)
    async with EventWatcher(h.suite.env["TRADING_REDIS_URL"], "task_failed") as events:
        event = await events.wait_for("task_failed", lambda e: e["data"]["name"] == "context")
    assert event["data"]["status"] == "blocked" and event["data"]["slot"] == "2025-06-10T09:31"
    assert h.fake.called("get_market_context") == []
    (listed,) = [t for t in await h.call("list_tasks") if t["task_id"] == dependent["task_id"]]
    assert listed["last_status"] == "blocked" and listed["next_run"] == "2025-06-11T09:31:00+10:00"


async def test_a_task_waits_for_a_running_dependency(harness_factory) -> None:
    h = await harness_factory("2025-06-10T12:00:00+10:00")
    await h.start()
    refresh = await h.call("schedule_task", config=task("refresh"))
    context = {"name": "context", "service": "market-data", "method": "get_market_context"}
    dependent = await h.call("schedule_task", config={**context, "depends_on": ["refresh"]})
    h.fake.delay_s = 1.0
    started = await h.call("execute_task", task_id=refresh["task_id"], wait=False)
    assert started["status"] == "running"
    await async_wait_until(lambda: h.fake.called("refresh_all_data"), 30, what="refresh to start")
    run = await h.call("execute_task", task_id=dependent["task_id"])
    assert run["status"] == "succeeded"
    # The dependent ran only after the dependency's call had finished (1 s later).
    (refresh_call,), (context_call,) = h.fake.called("refresh_all_data"), h.fake.called("get_market_context")
    assert context_call.real_at - refresh_call.real_at >= 1.0


# ---------------------------------------------------------------- restarts


async def test_restart_never_reruns_a_slot_and_keeps_user_tasks(harness_factory) -> None:
    h = await harness_factory("2025-06-10T09:29:52+10:00", defaults=True)
    proc = await h.start()
    daily = {"type": "daily", "at": "09:30"}
    created = await h.call("schedule_task", config=task("morning", daily, catch_up_grace_s=3600))
    await h.call("cancel_task", task_id="evening_analysis")  # a default the operator removed
    h.fake.delay_s = 60.0  # the run will still be going when the scheduler is killed
    await async_wait_until(lambda: h.fake.called("refresh_all_data"), 30, what="the 09:30 slot")
    proc.signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait_exit)

    await h.start()  # same suite timeline: now just after 09:30, inside the catch-up grace
    runs = await h.history(created["task_id"])
    assert len(runs) == 1 and runs[0]["slot"] == "2025-06-10T09:30"
    assert runs[0]["status"] == "failed" and runs[0]["error"].startswith("interrupted")
    assert len(h.fake.called("refresh_all_data")) == 1  # the claimed slot was not re-run
    names = {t["name"] for t in await h.call("list_tasks")}
    assert "morning" in names and "evening_analysis" not in names and "daily_backup" in names
    with pytest.raises(NotFound):
        await h.call("cancel_task", task_id="evening_analysis")


async def test_a_missed_slot_runs_once_after_restart_when_still_meaningful(harness_factory) -> None:
    h = await harness_factory("2025-06-10T09:29:52+10:00")
    proc = await h.start()
    daily = {"type": "daily", "at": "09:30"}
    owed = await h.call("schedule_task", config=task("owed", daily, catch_up_grace_s=3600))
    context = {"name": "stale", "service": "market-data", "method": "get_market_context"}
    stale = await h.call("schedule_task", config={**context, "schedule": daily})  # no catch-up
    await h.stop(proc)  # down over the 09:30 slot
    slot = sydney("2025-06-10T09:30:00+10:00")
    await async_wait_until(h.clock.now, 30, what="09:30", until=lambda now: now > slot + timedelta(seconds=1))
    assert h.fake.calls == []

    proc = await h.start()
    await async_wait_until(lambda: h.fake.called("refresh_all_data"), 30, what="the catch-up run")
    runs = await h.history(owed["task_id"])
    assert [(r["slot"], r["trigger"]) for r in runs] == [("2025-06-10T09:30", "catch_up")]
    assert await h.history(stale["task_id"]) == []

    await h.stop(proc)  # and a second restart does not catch up the same slot again
    await h.start()
    assert len(await h.history(owed["task_id"])) == 1
    assert len(h.fake.called("refresh_all_data")) == 1


async def test_sigterm_during_a_run_exits_cleanly_and_records_the_run_failed(harness_factory) -> None:
    h = await harness_factory("2025-06-10T12:00:00+10:00")
    proc = await h.start()
    created = await h.call("schedule_task", config=task("long"))
    h.fake.delay_s = 30.0
    await h.call("execute_task", task_id=created["task_id"], wait=False)
    await async_wait_until(lambda: h.fake.calls, 30, what="the run to start")
    await h.stop(proc)  # asserts exit status 0
    await h.start()
    (run,) = await h.history(created["task_id"])
    assert run["status"] == "failed" and run["error"] == "cancelled: scheduler stopping"
    assert run["finished_at"] is not None


async def test_cancel_task(harness_factory) -> None:
    h = await harness_factory("2025-06-10T12:00:00+10:00")
    await h.start()
    created = await h.call("schedule_task", config=task("gone", {"type": "daily", "at": "13:00"}))
    h.fake.delay_s = 30.0
    await h.call("execute_task", task_id=created["task_id"], wait=False)
    await async_wait_until(lambda: h.fake.calls, 30, what="the run to start")
    result = await h.call("cancel_task", task_id=created["task_id"])
    assert result == {"task_id": created["task_id"], "name": "gone", "cancelled": True, "run_stopped": True}
    assert await h.call("list_tasks") == []
    (run,) = await h.history(created["task_id"])  # history outlives the task
    assert run["status"] == "failed" and run["error"] == "cancelled: cancelled by the operator"
    with pytest.raises(NotFound):
        await h.call("execute_task", task_id=created["task_id"])
    with pytest.raises(InvalidParams):
        await h.call("get_task_history", task_id=created["task_id"], limit=0)


# ---------------------------------------------------------------- backups


def _make_db(path: Path, rows: int) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # keep the rows in the WAL: backup must see them
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    db.executemany("INSERT INTO t(v) VALUES (?)", [(f"row {i}",) for i in range(rows)])
    return db


async def test_daily_backup_copies_every_database_checked_and_keeps_seven(harness_factory) -> None:
    h = await harness_factory("2025-06-10T03:00:00+10:00", defaults=True)
    data = h.suite.data_dir
    writers = [_make_db(data / "trades.db", 500), _make_db(data / "sub" / "predictions.db", 30)]
    for day in range(1, 9):  # eight older backups
        (data / "backups" / f"2025-06-0{day}").mkdir(parents=True)
    (h.suite.models_dir / "manifest.json").write_text('{"models": []}')
    await h.start()
    try:
        run = await h.call("execute_task", task_id="daily_backup")
    finally:
        for db in writers:
            db.close()
    assert run["status"] == "succeeded", run["error"]
    today = data / "backups" / "2025-06-10"
    assert {d["source"] for d in run["result"]["databases"]} == {
        "scheduler.db",
        "trades.db",
        "sub/predictions.db",
    }
    for name, rows in (("trades.db", 500), ("sub/predictions.db", 30)):
        copy = sqlite3.connect(today / name)
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT count(*) FROM t").fetchone() == (rows,)
        copy.close()
    kept = sorted(p.name for p in (data / "backups").iterdir() if p.is_dir())
    assert kept == [f"2025-06-0{d}" for d in range(3, 9)] + ["2025-06-10"]  # 9 -> newest 7
    assert not list(today.rglob("*.partial"))
    # The models folder is part of the set, with each file's hash for the restore to check.
    assert (today / "models" / "manifest.json").read_text() == '{"models": []}'
    assert run["result"]["models"]["files"] == 1
    hashes = json.loads((today / "backup.json").read_text())["models"]["files"]
    assert set(hashes) == {"manifest.json"}


# ---------------------------------------------------------------- the store on its own (real files)


def test_store_claims_a_slot_once_even_across_connections(short_tmp: Path) -> None:
    from services.scheduler.task_store import TaskStore

    first = TaskStore(short_tmp / "scheduler.db")
    first.add_task("t1", "morning", {"name": "morning"}, "user", "2025-06-10T09:00:00+10:00")
    run_id = first.claim_slot("t1", "2025-06-10T09:30", "2025-06-10", "schedule", "2025-06-10T09:30:00+10:00")
    second = TaskStore(short_tmp / "scheduler.db")  # as a restarted process would open it
    assert run_id is not None
    assert second.claim_slot("t1", "2025-06-10T09:30", "2025-06-10", "catch_up", "x") is None
    assert second.fail_interrupted("2025-06-10T09:31:00+10:00") == 1
    (run,) = second.history("t1", 10)
    assert (run.status, run.trigger) == ("failed", "schedule")
    assert second.status_on("t1", "2025-06-10") == "failed" and second.status_on("t1", "2025-06-11") is None
    first.close()
    second.close()


def test_a_backup_that_fails_integrity_check_is_refused_and_not_kept(short_tmp: Path) -> None:
    from services.base.backups import BackupFailed, backup_databases

    data = short_tmp / "data"
    _make_db(data / "good.db", 10).close()
    db = _make_db(data / "broken.db", 2000)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    # Overwrite the middle of the file: the B-tree pages no longer agree with each other.
    raw = bytearray((data / "broken.db").read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 4096] = b"\xff" * 4096
    (data / "broken.db").write_bytes(bytes(raw))
    for old in ("2025-06-01", "2025-06-02"):
        (data / "backups" / old).mkdir(parents=True)
    with pytest.raises(BackupFailed, match=r"broken\.db") as info:
        backup_databases(data, datetime(2025, 6, 10).date(), keep=1)
    assert "good.db" not in str(info.value)
    # No dated folder for a half set (a restore of "latest" must never pick one): the copies that
    # passed are kept aside, and the error says where.
    assert not (data / "backups" / "2025-06-10").exists()
    incomplete = data / "backups" / "2025-06-10.incomplete"
    assert str(incomplete) in str(info.value)
    assert sorted(p.name for p in incomplete.iterdir()) == ["backup.json", "good.db"]
    assert (data / "backups" / "2025-06-01").exists()  # nothing pruned after a failure
    assert not [p for p in (data / "backups").iterdir() if p.name.startswith(".partial")]
