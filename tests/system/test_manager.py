"""The service manager with real processes: the supervisor daemon, the real services, a managed
redis-server, all in temporary directories. Timers are shrunk through configuration."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import orjson
import psutil
import pytest

from services.base.base_service import socket_is_live
from services.domain.supervision import UP, start_order
from services.registry import DEPENDENCIES, ENTRY_FILES, SERVICES
from tests.support import (
    EventWatcher,
    Processes,
    SuiteDirs,
    manager_cli,
    manager_command,
    rpc_call_sync,
    suite_processes,
    wait_until,
)

pytestmark = pytest.mark.slow

FAST_TIMERS = {
    "TRADING_MANAGER_HEALTH_INTERVAL_S": "0.25",
    "TRADING_MANAGER_HEALTH_TIMEOUT_S": "0.5",
    "TRADING_MANAGER_HANG_CHECKS": "3",
    "TRADING_MANAGER_STOP_GRACE_S": "3",
    "TRADING_MANAGER_BACKOFF_BASE_S": "0.1",
    "TRADING_MANAGER_BACKOFF_MAX_S": "0.5",
    "TRADING_MANAGER_START_TIMEOUT_S": "30",
}


def status(dirs: SuiteDirs) -> dict:
    return rpc_call_sync(dirs.socket("manager"), "status")


def by_name(dirs: SuiteDirs) -> dict[str, dict]:
    return {s["name"]: s for s in status(dirs)["services"]}


def wait_for_service(dirs: SuiteDirs, name: str, until, timeout_s: float = 60.0, what: str = "") -> dict:
    """The supervisor's row for `name` once `until(row)` holds (a timeout shows the last row)."""
    return wait_until(
        lambda: by_name(dirs)[name],
        timeout_s,
        what=what or f"{name} in the supervisor's status",
        until=until,
        ignoring=(OSError,),  # a status call that timed out on busy cores is asked again
    )


def service_pids(dirs: SuiteDirs) -> dict[str, list[int]]:
    """Service name -> pids of processes running its entry file (to count copies)."""
    pids: dict[str, list[int]] = {name: [] for name in ENTRY_FILES}
    for proc in suite_processes(dirs):
        cmd = " ".join(proc.cmdline())
        for name, entry in ENTRY_FILES.items():
            if entry in cmd:
                pids[name].append(proc.pid)
    return pids


@pytest.fixture(scope="module", params=["zygote", "exec"])
def launch_mode(request) -> str:
    """Every test here runs in both launch modes (TRADING_MANAGER_LAUNCH): supervision means the
    same whether a service is forked from the zygote or started as its own interpreter."""
    return request.param


def make_dirs(processes: Processes, launch_mode: str, **env: str) -> SuiteDirs:
    """Directories for a suite with fast timers, stopped and removed at teardown."""
    return processes.suite(
        processes.suite_dirs("tm-", **FAST_TIMERS, TRADING_MANAGER_LAUNCH=launch_mode, **env)
    )


@pytest.fixture(scope="module")
def running_suite(launch_mode):
    with Processes() as processes:
        yield processes.start_suite(make_dirs(processes, launch_mode, TRADING_MANAGER_MAX_FAILURES="100"))


def test_start_brings_everything_up_in_dependency_order(running_suite, launch_mode):
    assert status(running_suite)["supervisor"]["launch"] == launch_mode
    services = by_name(running_suite)
    assert all(s["state"] == "running" for s in services.values())
    assert all(s["health"] in UP for s in services.values())
    # The order of "running" transitions in the supervisor's log: dependencies first.
    became_running = []
    for line in (running_suite.log_dir / "manager.log").read_text().splitlines():
        entry = orjson.loads(line)
        if entry.get("state") == "running" and entry.get("previous") == "starting":
            became_running.append(entry["target"])
    for service, deps in DEPENDENCIES.items():
        for dep in deps:
            assert became_running.index(dep) < became_running.index(service), (dep, service, became_running)
    # Every service's health is reachable over its own socket, Redis included.
    for name in start_order():
        assert rpc_call_sync(running_suite.socket(name), "health")["redis"] == "connected"


def test_start_twice_starts_no_second_copy(running_suite):
    before = {n: s["pid"] for n, s in by_name(running_suite).items()}
    again = manager_cli(running_suite, "start")
    assert again.returncode == 0, again.stderr
    assert {n: s["pid"] for n, s in by_name(running_suite).items()} == before
    assert all(len(p) == 1 for p in service_pids(running_suite).values()), service_pids(running_suite)


def test_status_and_health_commands(running_suite):
    table = manager_cli(running_suite, "status")
    assert table.returncode == 0
    for name in start_order():
        assert name in table.stdout
    data = orjson.loads(manager_cli(running_suite, "status", "--json").stdout)
    assert {s["name"] for s in data["services"]} == set(SERVICES)
    health = manager_cli(running_suite, "health", "--json")
    replies = orjson.loads(health.stdout)
    assert set(replies) == set(SERVICES)
    assert health.returncode == (0 if all(h["status"] == "healthy" for h in replies.values()) else 1)
    logs = manager_cli(running_suite, "logs", "sentiment", "-n", "5")
    assert logs.returncode == 0 and 0 < len(logs.stdout.strip().splitlines()) <= 5 + 5
    assert "sentiment" in logs.stdout and not logs.stdout.lstrip().startswith("{")  # readable, not raw JSON


def test_sigkill_twenty_times_comes_back_each_time(running_suite):
    restarts_before = by_name(running_suite)["sentiment"]["restarts"]
    for n in range(20):
        pid = by_name(running_suite)["sentiment"]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_for_service(
            running_suite,
            "sentiment",
            lambda s, pid=pid: s["state"] == "running" and s["pid"] not in (None, pid) and s["health"] in UP,
            what=f"sentiment back after kill {n + 1}",
        )
    assert by_name(running_suite)["sentiment"]["restarts"] == restarts_before + 20
    assert len(service_pids(running_suite)["sentiment"]) == 1


def test_sigstop_hang_is_killed_and_restarted(running_suite):
    pid = by_name(running_suite)["market-data"]["pid"]
    os.kill(pid, signal.SIGSTOP)  # the module's teardown kills it if the supervisor does not
    wait_for_service(
        running_suite,
        "market-data",
        lambda s: s["state"] == "running" and s["pid"] != pid,
        what="hung market-data to be replaced",
    )
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_restart_and_usage_errors(running_suite):
    pid = by_name(running_suite)["scheduler"]["pid"]
    result = manager_cli(running_suite, "restart", "scheduler")
    assert result.returncode == 0, result.stderr
    assert by_name(running_suite)["scheduler"]["pid"] != pid
    for args in (["restart", "nosuch"], ["frobnicate"], ["logs", "-n", "x"], ["start", "nosuch"]):
        bad = manager_cli(running_suite, *args)
        assert bad.returncode == 2, (args, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_supervisor_killed_then_start_adopts_without_copies(processes, launch_mode):
    dirs = make_dirs(processes, launch_mode)
    assert manager_cli(dirs, "start").returncode == 0
    time.sleep(1.0)  # let the services age a little: an adopted one keeps its own uptime
    before = {n: s["pid"] for n, s in by_name(dirs).items()}
    manager_pid = rpc_call_sync(dirs.socket("manager"), "health")["pid"]
    os.kill(manager_pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(manager_pid), 30, what="supervisor gone")
    result = manager_cli(dirs, "start")
    assert result.returncode == 0, result.stdout + result.stderr
    after = by_name(dirs)
    assert {n: s["pid"] for n, s in after.items()} == before  # adopted, not restarted
    assert all(s["adopted"] for s in after.values())
    assert all(s["uptime"] >= 1.0 for s in after.values())  # counted from process start
    assert all(len(p) == 1 for p in service_pids(dirs).values())
    # An adopted service that dies is still restarted.
    os.kill(before["sentiment"], signal.SIGKILL)
    wait_for_service(
        dirs,
        "sentiment",
        lambda s: s["state"] == "running" and s["pid"] != before["sentiment"],
        what="adopted sentiment restarted",
    )
    stop = manager_cli(dirs, "stop")
    assert stop.returncode == 0, stop.stderr
    wait_until(lambda: suite_processes(dirs), 30, what="no processes left", until=lambda left: not left)
    assert [p.name for p in dirs.socket_dir.iterdir() if p.suffix == ".sock"] == []
    assert manager_cli(dirs, "status").returncode == 3


def test_exit_at_startup_ends_fatal_and_stays_quiet(processes, launch_mode):
    dirs = make_dirs(
        processes,
        launch_mode,
        TRADING_MANAGER_ENTRY_SENTIMENT="tests/system/_exit_at_start.py",
        TRADING_MANAGER_MAX_FAILURES="3",
    )
    result = manager_cli(dirs, "start", "sentiment", "--timeout", "30")
    assert result.returncode == 1
    assert "not healthy: sentiment" in result.stderr
    fatal = wait_for_service(dirs, "sentiment", lambda s: s["state"] == "fatal")
    assert fatal["restarts"] == 2  # three tries in all, then fatal
    assert "failures within" in fatal["reason"]
    time.sleep(1.5)  # the quiet period: nothing more happens
    assert by_name(dirs)["sentiment"]["restarts"] == 2 and by_name(dirs)["sentiment"]["state"] == "fatal"
    events = [e for e in status(dirs)["recent_events"] if e["service"] == "sentiment"]
    assert events[-1]["state"] == "fatal"
    assert manager_cli(dirs, "status").returncode == 3


def test_crash_after_start_loop_ends_fatal_and_restart_clears_it(processes, launch_mode):
    dirs = make_dirs(
        processes,
        launch_mode,
        TRADING_MANAGER_ENTRY_MARKET_DATA="tests/system/_crash_after_start.py",
        TRADING_MANAGER_MAX_FAILURES="3",
    )
    starter = processes.popen(
        manager_command("start", "market-data"),
        env=dirs.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # The supervisor's Redis comes up first: listen there for the fatal state change.
    wait_until(lambda: socket_is_live(dirs.socket("redis")), 60, what="managed redis")

    async def fatal_event() -> dict:
        async with EventWatcher(f"unix://{dirs.socket('redis')}", "service_status_changed") as watcher:
            return await watcher.wait_for(
                "service_status_changed", lambda e: e["data"]["state"] == "fatal", timeout_s=60
            )

    event = asyncio.run(fatal_event())
    assert event["source"] == "manager" and event["data"]["service"] == "market-data"
    starter.wait(120)  # it came up healthy each time before dying, so `start` may say 0 or 1
    wait_for_service(dirs, "market-data", lambda s: s["state"] == "fatal")
    log = (dirs.log_dir / "manager.log").read_text()
    assert log.count('"state":"running","previous":"starting"') >= 3  # it did start each time
    restarts = by_name(dirs)["market-data"]["restarts"]
    time.sleep(1.5)
    assert by_name(dirs)["market-data"]["restarts"] == restarts
    # A person runs restart: the service gets fresh tries.
    manager_cli(dirs, "restart", "market-data", "--timeout", "3")
    wait_for_service(dirs, "market-data", lambda s: s["restarts"] > restarts, what="fresh tries")
