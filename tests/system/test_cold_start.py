"""What makes a cold start short, with real processes: the zygote started by the daemon before its
imports, the services' notice that they started (`service_started`), and `wait_services`, which
answers `start` at the change instead of being polled. bench_suite.py measures the time."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import orjson
import psutil
import pytest

from services.domain.supervision import UP
from tests.support import REPO, Processes, SuiteDirs, manager_command, rpc_call_sync, wait_until
from tests.system.test_manager import FAST_TIMERS, by_name, wait_for_service

pytestmark = pytest.mark.slow

CANARY = "canary-token-of-the-cold-start-test-0123456789"


def manager_log(dirs: SuiteDirs) -> list[dict]:
    return [orjson.loads(line) for line in (dirs.log_dir / "manager.log").read_text().splitlines() if line]


def call(dirs: SuiteDirs, method: str, params=None, timeout_s: float = 10.0):
    return rpc_call_sync(dirs.socket("manager"), method, params, timeout_s)


@pytest.fixture(scope="module", params=["zygote", "exec"])
def suite(request):
    """Sentiment alone (it needs only Redis), started by `start`, in both launch modes."""
    with Processes() as processes:
        dirs = processes.suite_dirs(
            "cs-", **FAST_TIMERS, TRADING_MANAGER_LAUNCH=request.param, MARKETAUX_API_TOKEN=CANARY
        )
        yield processes.start_suite(dirs, "sentiment")


def test_the_daemon_starts_its_zygote_before_its_imports(suite):
    supervisor = call(suite, "status")["supervisor"]
    if supervisor["launch"] != "zygote":
        assert supervisor["zygote"] == []
        assert not any("zygote ready" in e.get("msg", "") for e in manager_log(suite))
        return
    zygote = psutil.Process(supervisor["zygote"][0])
    ready = [e["msg"] for e in manager_log(suite) if "zygote ready" in e.get("msg", "")]
    # `start` hands the daemon its secrets on a pipe: it preloads, forks the zygote, then reads them.
    assert ready and "forked by the supervisor from their shared preload" in ready[0], ready
    assert zygote.ppid() == supervisor["pid"]  # the supervisor's child, as one the launcher starts
    assert os.getsid(zygote.pid) == zygote.pid != os.getsid(supervisor["pid"])  # its own session
    assert zygote.create_time() <= psutil.Process(supervisor["redis"]["pid"]).create_time()
    # The secret's name went on the daemon's command line, never its value; the zygote has neither.
    daemon = " ".join(psutil.Process(supervisor["pid"]).cmdline())
    assert "MARKETAUX_API_TOKEN" in daemon and CANARY not in daemon
    assert "MARKETAUX_API_TOKEN" not in zygote.environ()
    assert CANARY not in orjson.dumps(zygote.environ()).decode()
    # Nor does the block the kernel shows of the supervisor's (the secret is in its memory only).
    assert CANARY not in orjson.dumps(psutil.Process(supervisor["pid"]).environ()).decode()


def test_services_tell_the_supervisor_they_started(suite):
    methods = call(suite, "metrics")["methods"]
    assert methods["service_started"]["count"] >= 1 and methods["service_started"]["errors"] == 0
    pid = by_name(suite)["sentiment"]["pid"]
    # Only the process the supervisor is starting is noticed: not a running one, nor another pid.
    assert call(suite, "service_started", {"service": "sentiment", "pid": pid}) == {"noticed": False}
    assert call(suite, "service_started", {"service": "sentiment", "pid": 1}) == {"noticed": False}
    # An unknown service is refused naming it (test_rpc_validation.py), as every method does.
    with pytest.raises(RuntimeError, match=r"-32602.*param': 'service'"):
        call(suite, "service_started", {"service": "nope", "pid": pid})
    # A restart sends it again, and the service is running (health still decided) soon after.
    before = methods["service_started"]["count"]
    call(suite, "restart_service", {"service": "sentiment"})
    wait_for_service(suite, "sentiment", lambda s: s["state"] == "running" and s["pid"] != pid)
    wait_until(
        lambda: call(suite, "metrics")["methods"]["service_started"]["count"],
        30,
        what="the restarted service's notice",
        until=lambda count: count > before,
    )


def test_wait_services_answers_when_the_service_runs(suite):
    # Already up: at once.
    started = time.monotonic()
    reply = call(suite, "wait_services", {"services": ["sentiment"], "timeout_s": 30})
    assert time.monotonic() - started < 10
    state, health = by_state(reply)["sentiment"]
    assert state == "running" and health in UP
    # Stopped: it waits the time it was given, then answers with what it saw.
    call(suite, "stop_services", {"services": ["sentiment"]}, timeout_s=60)
    started = time.monotonic()
    reply = call(suite, "wait_services", {"services": ["sentiment"], "timeout_s": 0.5})
    assert time.monotonic() - started >= 0.5 and by_state(reply)["sentiment"][0] == "stopped"
    # Waiting while it starts: answered once it runs, long before the deadline.
    answer: dict = {}

    def wait() -> None:
        answer["reply"] = call(suite, "wait_services", {"services": ["sentiment"], "timeout_s": 120}, 150)
        answer["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    started = time.monotonic()
    call(suite, "start_services", {"services": ["sentiment"]})
    waiter.join(150)
    assert not waiter.is_alive() and answer["at"] - started < 100
    state, health = by_state(answer["reply"])["sentiment"]
    assert state == "running" and health in UP


def test_wait_services_refuses_what_it_cannot_wait_for(suite):
    for params in ({"services": ["nope"]}, {"services": []}, {"timeout_s": -1}, {"timeout_s": 1e9}):
        with pytest.raises(RuntimeError, match="-32602"):
            call(suite, "wait_services", params)


def test_a_daemon_started_by_hand_starts_its_zygote_itself(processes):
    """Without `start`'s arguments (by hand, or an older `start`): the launcher starts it, first."""
    dirs = processes.suite(processes.suite_dirs("cs-", **FAST_TIMERS))
    processes.popen(manager_command("daemon"), env=dirs.env)
    wait_until(lambda: dirs.socket("manager").exists(), 60, what="the supervisor's socket")
    wait_until(lambda: call(dirs, "health")["status"], 60, what="the supervisor", ignoring=(OSError,))
    call(dirs, "start_services", {"services": ["sentiment"]})
    reply = call(dirs, "wait_services", {"services": ["sentiment"], "timeout_s": 120}, 150)
    assert by_state(reply)["sentiment"][0] == "running"
    ready = [e["msg"] for e in manager_log(dirs) if "zygote ready" in e.get("msg", "")]
    assert ready and "before the supervisor's imports" not in ready[0], ready


def test_a_waiting_call_does_not_hold_up_the_supervisors_stop(processes):
    """`wait_services` answers when the supervisor is asked to stop: the stop's drain (which waits
    up to 10 s for calls in flight, then cuts them off) does not wait for it."""
    dirs = processes.suite_dirs("cs-", **FAST_TIMERS)
    processes.start_suite(dirs, "sentiment")
    call(dirs, "stop_services", {"services": ["sentiment"]}, timeout_s=60)
    answer: dict = {}

    def wait() -> None:
        try:
            answer["reply"] = call(dirs, "wait_services", {"services": ["sentiment"], "timeout_s": 600}, 650)
        except (OSError, RuntimeError) as exc:  # cut off by the drain
            answer["error"] = exc
        answer["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(
        lambda: call(dirs, "metrics")["inflight"],
        30,
        what="the waiting call in flight",
        until=lambda n: n >= 2,  # the metrics call counts itself: 1 is only that one
    )
    asked = time.monotonic()
    call(dirs, "shutdown")
    waiter.join(120)
    assert not waiter.is_alive()
    assert "reply" in answer, answer  # answered, not cut off
    assert by_state(answer["reply"])["sentiment"][0] == "stopped"
    assert answer["at"] - asked < 60
    wait_until(lambda: not dirs.socket("manager").exists(), 120, what="the supervisor to stop")


def by_state(status: dict) -> dict[str, tuple[str, str | None]]:
    return {s["name"]: (s["state"], s["health"]) for s in status["services"]}


def test_start_hands_the_daemon_what_to_start_and_it_starts_them_unasked(suite):
    """`start` puts `--autostart=<names>` on the daemon's command line: the supervisor starts them
    as soon as it serves, without waiting for `start` to see it up and ask."""
    daemon = psutil.Process(call(suite, "status")["supervisor"]["pid"]).cmdline()
    assert "--autostart=sentiment" in daemon, daemon


def test_a_daemon_told_to_autostart_starts_those_and_only_those():
    with Processes() as processes:
        dirs = processes.suite(processes.suite_dirs("au-", **FAST_TIMERS))
        subprocess.Popen(
            manager_command("daemon", "--autostart=sentiment"),
            env=dirs.env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: (dirs.socket_dir / "manager.sock").exists(), 60, what="the supervisor's socket")
        row = wait_for_service(dirs, "sentiment", lambda s: s["state"] == "running" and s["health"] in UP)
        assert row["pid"]
        assert {n: s["state"] for n, s in by_name(dirs).items() if n != "sentiment"} == {
            n: "stopped" for n in by_name(dirs) if n != "sentiment"
        }
