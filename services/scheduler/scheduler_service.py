"""scheduler service: ASX-hours-aware tasks that call other services over RPC.

The process is a thin shell over pure code: `services.domain.schedule` decides when slots fall
due, whether a missed slot is still owed, how long to back off and whether dependencies block;
`services.domain.asx_calendar` answers market questions; `services.domain.day_plan` is the default
trading day it seeds; `task_store` persists tasks and runs.

Time: schedules follow the suite clock (TRADING_CLOCK_START/SPEED), so a sped-up replay fires
tasks at the right suite times. Timeouts and retry delays are *real* seconds: they bound work
(an RPC round trip), which does not go faster when the replay clock does.
"""

import asyncio
import contextlib
import random
import uuid
from dataclasses import dataclass
from datetime import datetime

from services.base import (
    BaseService,
    InvalidParams,
    MarketClosed,
    MethodNotFound,
    NotConfigured,
    NotFound,
    RiskRejected,
    RpcError,
    ServiceError,
    rpc,
    run_service,
)
from services.base.backups import BackupFailed, backup_databases
from services.base.knobs import read_knobs
from services.domain import asx_calendar
from services.domain import schedule as sch
from services.domain.day_plan import default_tasks
from services.registry import SERVICES
from services.scheduler.scheduler_knobs import SchedulerKnobs
from services.scheduler.task_store import DuplicateTaskName, RunRow, TaskRow, TaskStore

KNOWN_SERVICES = frozenset(SERVICES)  # what a task may call: the registry's services
# What a task may call on the scheduler itself: never its control methods (a task that runs
# execute_task, cancel_task or shutdown on its own scheduler is a loop or a foot-gun).
SELF_METHODS = frozenset({"backup_databases", "get_market_status"})
# call_service() takes these as its own keywords, so they cannot be passed through as params.
RESERVED_PARAMS = frozenset({"service", "method", "timeout", "retries"})
# Years `get_market_status` answers for: the search for the next open runs past year 9999 (an
# error), and before 1900 Sydney kept local mean time, so a session would be at no real offset.
MARKET_STATUS_YEARS = (1900, 2100)
# A slot whose wake-up is late by at most this much real time still counts as on time
# (event-loop latency is real time; at replay speed S it is S times as many suite seconds).
ON_TIME_REAL_S = 5.0
# The loop re-reads the clock at least this often, so a wrong sleep cannot miss a slot long.
MAX_NAP_REAL_S = 30.0


class RunFailed(Exception):
    """Every attempt of a run failed; the message is the last attempt's error."""


class RunSkipped(Exception):
    """The called service is not configured for this (e.g. no IG credentials): nothing to run."""


# Errors a retry cannot mend: the same call would get the same answer.
NOT_RETRYABLE = {
    NotConfigured.code,
    MethodNotFound.code,
    InvalidParams.code,
    RiskRejected.code,
    MarketClosed.code,
    NotFound.code,
}


@dataclass
class RunState:
    attempts: int = 0
    last_error: str | None = None


@dataclass
class LiveTask:
    task_id: str
    spec: sch.TaskSpec
    origin: str
    created_at: datetime
    next: sch.Slot | None = None
    running: asyncio.Task | None = None

    @property
    def is_running(self) -> bool:
        return self.running is not None and not self.running.done()


class SchedulerService(BaseService):
    name = "scheduler"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.store: TaskStore | None = None
        self._tasks: dict[str, LiveTask] = {}
        self._wake = asyncio.Event()
        self._finished = asyncio.Condition()
        self._loop_task: asyncio.Task | None = None
        self._random = random.Random()
        self.knobs = read_knobs(SchedulerKnobs, self.settings.environ)

    # ------------------------------------------------------------ life

    async def on_start(self) -> None:
        self.store = TaskStore(self.settings.data_dir / "scheduler.db")
        now = self.clock.now()
        interrupted = self.store.fail_interrupted(self._iso_now(now))
        if interrupted:
            self.log.warning("%d run(s) were interrupted by the last stop", interrupted)
        if self.knobs.defaults:
            for config in default_tasks(self.settings.symbols):
                spec = sch.parse_task_config(config)
                self.store.ensure_task(spec.name, spec.name, spec.to_dict(), "default", self._iso_now(now))
        for row in self.store.live_tasks():
            self._load(row, now)
        self._loop_task = asyncio.create_task(self._schedule_loop(), name="schedule-loop")
        for task in self._tasks.values():
            self._catch_up(task, now)

    async def on_stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        running = [t.running for t in self._tasks.values() if t.is_running]
        for run in running:
            run.cancel("scheduler stopping")
        await asyncio.gather(*running, return_exceptions=True)
        if self.store is not None:
            self.store.close()

    async def health_details(self) -> dict:
        now = self.clock.now()
        today = asx_calendar.to_sydney(now).date().isoformat()
        details: dict = {
            "tasks": len(self._tasks),
            "running": sorted(t.spec.name for t in self._tasks.values() if t.is_running),
            "failed_today": self.store.count_on(today, ("failed", "blocked")) if self.store else 0,
            "market_phase": str(asx_calendar.phase_at(now)),
        }
        upcoming = [t for t in self._tasks.values() if t.next is not None]
        if upcoming:
            first = min(upcoming, key=lambda t: t.next.at)
            details["next_task"] = {"name": first.spec.name, "at": first.next.at.isoformat()}
        if self._loop_task is not None and self._loop_task.done():
            details |= {"status": "unhealthy", "warnings": ["the schedule loop stopped"]}
        return details

    # ------------------------------------------------------------ RPC API

    @rpc
    async def get_market_status(self, at: str | None = None) -> dict:
        """ASX phase, trading day, holiday, early close, next open/close (now, or at ISO `at`)."""
        moment = self.clock.now() if at is None else _parse_instant("at", at)
        if not MARKET_STATUS_YEARS[0] <= moment.year <= MARKET_STATUS_YEARS[1]:
            first, last = MARKET_STATUS_YEARS
            raise InvalidParams("at", f"must be within the years {first}..{last}, got {moment.year}")
        return asx_calendar.market_status(moment)

    @rpc
    async def schedule_task(self, config: dict) -> dict:
        """Validate and add a task (service, method, params, schedule, ...); returns its task_id."""
        spec = self._validate(config)
        await self._check_methods_exist(spec, config)
        now = self.clock.now()
        task_id = f"task-{uuid.uuid4().hex[:12]}"
        try:
            self.store.add_task(task_id, spec.name, spec.to_dict(), "user", self._iso_now(now))
        except DuplicateTaskName as exc:
            raise InvalidParams("config.name", str(exc)) from None
        task = self._load(self.store.get_task(task_id), now)
        self._wake.set()
        self.log.info("task scheduled", extra={"task_id": task_id, "task": spec.name})
        return {"task_id": task_id, "name": spec.name, "next_run": _iso(task.next)}

    @rpc
    async def execute_task(self, task_id: str, wait: bool = True, ignore_dependencies: bool = False) -> dict:
        """Run a task now, outside its schedule; with wait=false return at once with the run_id."""
        task = self._live(task_id)
        if task.is_running:
            raise ServiceError(f"task {task.spec.name} is already running", data={"task_id": task_id})
        now = self.clock.now()
        run_date = asx_calendar.to_sydney(now).date().isoformat()
        run_id = self.store.start_manual_run(task_id, run_date, self._iso_now(now))
        task.running = asyncio.create_task(
            self._run(task, run_id, run_date, check_dependencies=not ignore_dependencies)
        )
        if not wait:
            return {"run_id": run_id, "task_id": task_id, "status": "running"}
        # asyncio.wait, not gather/shield: if this caller goes away the run must go on.
        await asyncio.wait({task.running})
        return self.store.get_run(run_id).to_dict()

    @rpc
    async def list_tasks(self) -> list[dict]:
        """Every live task with its config, next run, last run and last status."""
        return [self._describe(t) for t in sorted(self._tasks.values(), key=_next_key)]

    @rpc
    async def cancel_task(self, task_id: str) -> dict:
        """Unschedule a task (kept in history; survives restarts) and stop a run in progress."""
        task = self._live(task_id)
        self.store.cancel_task(task_id, self.clock.now_sydney().isoformat())
        del self._tasks[task_id]
        stopped = task.is_running
        if stopped:
            task.running.cancel("cancelled by the operator")
            await asyncio.wait({task.running})
        self._wake.set()
        return {"task_id": task_id, "name": task.spec.name, "cancelled": True, "run_stopped": stopped}

    @rpc
    async def get_task_history(self, task_id: str, limit: int = 20) -> dict:
        """The task's runs, newest first (cancelled tasks keep their history)."""
        if not 1 <= limit <= 1000:
            raise InvalidParams("limit", "must be 1..1000")
        row = self.store.get_task(task_id)
        if row is None:
            raise NotFound(f"no task {task_id}", data={"task_id": task_id})
        runs = [r.to_dict() for r in self.store.history(task_id, limit)]
        return {"task_id": task_id, "name": row.name, "runs": runs}

    @rpc
    async def backup_databases(self, keep: int | None = None) -> dict:
        """Online SQLite backup of every *.db in the data dir, and the models, into backups/<date>/, checked."""
        keep = self.knobs.backup_keep if keep is None else keep
        if not 1 <= keep <= 365:
            raise InvalidParams("keep", "must be 1..365")
        day = self.clock.now_sydney().date()
        # The backup API and integrity_check are blocking file work: keep the loop serving.
        try:
            return await asyncio.to_thread(
                backup_databases,
                self.settings.data_dir,
                day,
                keep,
                models_dir=self.settings.models_dir,
                created_at=self.clock.now().isoformat(),
            )
        except BackupFailed as exc:
            raise ServiceError(str(exc)) from None

    # ------------------------------------------------------------ validation

    def _validate(self, config: dict) -> sch.TaskSpec:
        try:
            spec = sch.parse_task_config(config)
        except sch.ScheduleError as exc:
            raise InvalidParams(f"config.{exc.field}", exc.problem) from None
        for i, call in enumerate(spec.calls):
            self._validate_call(call, f"config.calls[{i}]" if "calls" in config else "config")
        names = {t.spec.name: t for t in self._tasks.values()}
        for dep in spec.depends_on:
            if dep not in names:
                raise InvalidParams("config.depends_on", f"no live task named {dep!r}")
        graph = {name: t.spec.depends_on for name, t in names.items()} | {spec.name: spec.depends_on}
        if cycle := sch.dependency_cycle(graph):
            raise InvalidParams("config.depends_on", f"dependency cycle: {' -> '.join(cycle)}")
        if spec.schedule is not None and sch.next_slot(spec.schedule, self.clock.now()) is None:
            raise InvalidParams("config.schedule", "never matches a date")
        return spec

    def _validate_call(self, call: sch.Call, where: str) -> None:
        if call.service not in KNOWN_SERVICES:
            raise InvalidParams(f"{where}.service", f"unknown service {call.service!r}")
        if call.service == self.name and call.method not in SELF_METHODS:
            allowed = ", ".join(sorted(SELF_METHODS))
            raise InvalidParams(f"{where}.method", f"a task may call only {allowed} on the scheduler")
        if clash := RESERVED_PARAMS & set(call.params):
            raise InvalidParams(f"{where}.params", f"reserved parameter name {sorted(clash)[0]!r}")

    async def _check_methods_exist(self, spec: sch.TaskSpec, config: dict) -> None:
        """A method its service lacks would fail at every run: refuse it now. A service that is
        down cannot be asked, so its calls are accepted and checked when they run."""
        for i, call in enumerate(spec.calls):
            if call.service == self.name:
                continue
            try:
                listing = await self.call_service(call.service, "list_methods", timeout=2.0, retries=0)
            except RpcError:
                continue
            methods = {m["name"]: m["params"] for m in listing}
            where = f"config.calls[{i}]" if "calls" in config else "config"
            if call.method not in methods:
                raise InvalidParams(f"{where}.method", f"{call.service} has no method {call.method!r}")
            names = {p["name"] for p in methods[call.method]}
            if unknown := sorted(set(call.params) - names):
                raise InvalidParams(f"{where}.params", f"{call.method} has no parameter {unknown[0]!r}")
            required = [p["name"] for p in methods[call.method] if p["required"]]
            if missing := [name for name in required if name not in call.params]:
                raise InvalidParams(f"{where}.params", f"{call.method} needs parameter {missing[0]!r}")

    def _live(self, task_id: str) -> LiveTask:
        task = self._tasks.get(task_id)
        if task is None:
            raise NotFound(f"no live task {task_id}", data={"task_id": task_id})
        return task

    # ------------------------------------------------------------ the schedule loop

    def _load(self, row: TaskRow, now: datetime) -> LiveTask:
        spec = sch.parse_task_config(row.config)
        task = LiveTask(row.task_id, spec, row.origin, datetime.fromisoformat(row.created_at))
        if spec.schedule is not None and spec.enabled:
            task.next = sch.next_slot(spec.schedule, now)
        self._tasks[row.task_id] = task
        return task

    def _catch_up(self, task: LiveTask, now: datetime) -> None:
        """After a restart, run the latest missed slot once if the task says it still matters."""
        if task.spec.schedule is None or not task.spec.enabled:
            return
        last = self.store.last_slot_run(task.task_id)
        owed = sch.owed_slot(
            task.spec.schedule,
            now,
            not_before=task.created_at,
            last_slot_key=last.slot_key if last else None,
            grace_s=task.spec.catch_up_grace_s,
        )
        if owed is not None:
            self.log.info("catching up a missed slot", extra={"task": task.spec.name, "slot": owed.key})
            self._start_slot(task, owed, "catch_up")

    async def _schedule_loop(self) -> None:
        while True:
            self._wake.clear()
            now = self.clock.now()
            for task in list(self._tasks.values()):
                try:
                    self._fire_if_due(task, now)
                except Exception:  # e.g. a locked database: one task's slot, not the whole loop
                    self.log.exception("could not start %s", task.spec.name)
            await self._nap(now)

    async def _nap(self, now: datetime) -> None:
        upcoming = [t.next.at for t in self._tasks.values() if t.next is not None]
        nap_s = MAX_NAP_REAL_S
        if upcoming:
            nap_s = min(nap_s, self.clock.real_seconds((min(upcoming) - now).total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), nap_s)

    def _fire_if_due(self, task: LiveTask, now: datetime) -> None:
        slot = task.next
        if slot is None or slot.at > now:
            return
        # After a long stall several slots may have passed: only the latest one can run.
        latest = sch.previous_slot(task.spec.schedule, now) or slot
        task.next = sch.next_slot(task.spec.schedule, now)
        tolerance_s = max(task.spec.catch_up_grace_s or 0.0, ON_TIME_REAL_S * self.clock.speed)
        if (now - latest.at).total_seconds() > tolerance_s:
            self.log.warning("slot missed", extra={"task": task.spec.name, "slot": latest.key})
            return
        self._start_slot(task, latest, "schedule")

    def _start_slot(self, task: LiveTask, slot: sch.Slot, trigger: str) -> None:
        now_iso = self.clock.now_sydney().isoformat()
        run_date = slot.key[:10]
        run_id = self.store.claim_slot(task.task_id, slot.key, run_date, trigger, now_iso)
        if run_id is None:
            return  # this slot already has a run (e.g. before a restart): never twice
        if task.is_running:
            self.store.finish_run(run_id, "skipped", 0, now_iso, "the previous run is still going")
            return
        task.running = asyncio.create_task(self._run(task, run_id, run_date))

    # ------------------------------------------------------------ one run

    async def _run(self, task: LiveTask, run_id: int, run_date: str, check_dependencies: bool = True) -> None:
        state = RunState()
        status, error, result = sch.RunStatus.FAILED, None, None
        try:
            async with asyncio.timeout(task.spec.timeout_s):
                blocker = await self._wait_for_dependencies(task, run_date) if check_dependencies else None
                if blocker is not None:
                    status, error = sch.RunStatus.BLOCKED, f"dependency {blocker} failed today"
                else:
                    result = await self._attempts(task, state)
                    status = sch.RunStatus.SUCCEEDED
        except TimeoutError:
            error = f"timed out after {task.spec.timeout_s:g}s: cancelled"
        except RunFailed as exc:
            error = str(exc)
        except RunSkipped as exc:
            status, error = sch.RunStatus.SKIPPED, str(exc)
        except asyncio.CancelledError as exc:
            reason = exc.args[0] if exc.args else "cancelled"
            await self._finish(task, run_id, sch.RunStatus.FAILED, state, f"cancelled: {reason}", None)
            raise
        await self._finish(task, run_id, status, state, error, result)

    async def _attempts(self, task: LiveTask, state: RunState) -> object:
        while True:
            state.attempts += 1
            try:
                return await self._perform(task.spec)
            except RpcError as exc:
                state.last_error = f"{exc.data.get('type', 'error')}: {exc.message}"
                if exc.code == NotConfigured.code:
                    raise RunSkipped(state.last_error) from None
                if exc.code in NOT_RETRYABLE:
                    raise RunFailed(state.last_error) from None
            except Exception as exc:  # a bug or an OS error: logged with its traceback, retried
                self.log.exception("task %s raised", task.spec.name)
                state.last_error = f"{type(exc).__name__}: {exc}"
            delay_s = sch.retry_delay_s(task.spec.retry, state.attempts, self._random.random())
            if delay_s is None:
                raise RunFailed(state.last_error)
            await asyncio.sleep(delay_s)

    async def _perform(self, spec: sch.TaskSpec) -> object:
        results = []
        for call in spec.calls:
            if call.service == self.name:
                results.append(await self.dispatch(call.method, dict(call.params)))
            else:
                results.append(
                    await self.call_service(
                        call.service, call.method, timeout=spec.timeout_s, retries=1, **call.params
                    )
                )
        return results[0] if len(results) == 1 else results

    async def _wait_for_dependencies(self, task: LiveTask, run_date: str) -> str | None:
        """None when the task may run; the name of a failed dependency when it is blocked."""
        while True:
            statuses = {name: self._status_of(name, run_date) for name in task.spec.depends_on}
            decision, culprit = sch.dependency_decision(statuses)
            if decision is sch.DependencyDecision.RUN:
                return None
            if decision is sch.DependencyDecision.BLOCKED:
                return culprit
            async with self._finished:  # a dependency is running: wait for any run to finish
                await self._finished.wait()

    def _status_of(self, name: str, run_date: str) -> str | None:
        dep = next((t for t in self._tasks.values() if t.spec.name == name), None)
        return self.store.status_on(dep.task_id, run_date) if dep else None

    async def _finish(self, task: LiveTask, run_id: int, status: str, state: RunState, error, result) -> None:
        self.store.finish_run(
            run_id, str(status), state.attempts, self.clock.now_sydney().isoformat(), error, result
        )
        run = self.store.get_run(run_id)
        # A skipped run (not configured, or its slot overlapped the previous run) is no failure.
        event = "task_failed" if status in (sch.RunStatus.FAILED, sch.RunStatus.BLOCKED) else "task_completed"
        payload = run.to_dict() | {"name": task.spec.name}
        payload.pop("result")
        with contextlib.suppress(Exception):  # an unreachable Redis must not lose the record
            await self.publish(event, payload)
        log = self.log.info if event == "task_completed" else self.log.warning
        log("%s %s", task.spec.name, status, extra={"run_id": run_id, "error": error})
        async with self._finished:
            self._finished.notify_all()

    # ------------------------------------------------------------ views

    @staticmethod
    def _iso_now(now: datetime) -> str:
        """Stored times are Sydney-local ISO with their offset, readable next to slot keys."""
        return asx_calendar.to_sydney(now).isoformat()

    def _describe(self, task: LiveTask) -> dict:
        last: RunRow | None = self.store.last_run(task.task_id)
        return {
            "task_id": task.task_id,
            "name": task.spec.name,
            "origin": task.origin,
            "config": task.spec.to_dict(),
            "next_run": _iso(task.next),
            "running": task.is_running,
            "last_run": last.started_at if last else None,
            "last_status": last.status if last else None,
            "last_error": last.error if last else None,
        }


def _parse_instant(param: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParams(param, "must be an ISO-8601 instant") from None
    if moment.tzinfo is None:
        raise InvalidParams(param, "needs a UTC offset, e.g. 2025-06-10T10:30:00+10:00")
    return moment


def _iso(slot: sch.Slot | None) -> str | None:
    return slot.at.isoformat() if slot else None


def _next_key(task: LiveTask) -> tuple[float, str]:
    return (task.next.at.timestamp() if task.next else float("inf"), task.spec.name)


if __name__ == "__main__":
    run_service(SchedulerService)
