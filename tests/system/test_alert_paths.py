"""The alerts about the alert path itself, through a real supervisor and real processes: the
supervisor killed (the alerts process notices and alerts), the alerts process fatal (the
supervisor sends directly through the same channel code). A local HTTP server is the webhook."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.alert_fakes import FakeHttpEndpoint
from tests.support import Processes, manager_cli, rpc_call_sync, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture
def webhook():
    with FakeHttpEndpoint() as fake:
        yield fake


def messages(fake: FakeHttpEndpoint) -> list[dict]:
    return [r.json() for r in fake.received()]


def test_the_supervisor_killed_is_alerted_by_the_alerts_process(processes: Processes, webhook):
    dirs = processes.suite_dirs(
        "alp-",
        TRADING_ALERTS_WEBHOOK_URL=f"{webhook.url}/hook",
        TRADING_ALERTS_POLL_S="0.3",
        TRADING_ALERTS_TICK_S="0.1",
        TRADING_ALERTS_DAILY_SUMMARY_AT="off",  # the wall clock may be past 16:30 in Sydney
    )
    processes.start_suite(dirs, "alerts")
    health = wait_until(
        lambda: rpc_call_sync(dirs.socket("alerts"), "health"), 60, until=lambda h: h["supervisor"] == "up"
    )
    supervisor_pid = rpc_call_sync(dirs.socket("manager"), "health")["pid"]
    os.kill(supervisor_pid, signal.SIGKILL)
    down = wait_until(lambda: messages(webhook), 60, what="the supervisor_down alert", until=lambda m: m)
    assert [(m["kind"], m["state"], m["severity"]) for m in down] == [("supervisor_down", "open", "critical")]
    assert rpc_call_sync(dirs.socket("alerts"), "health")["pid"] == health["pid"]  # it lived on
    # A new supervisor adopts the running alerts process; the incident resolves.
    started = manager_cli(dirs, "start", "alerts")
    assert started.returncode == 0, started.stderr
    back = wait_until(lambda: messages(webhook), 60, what="the resolved message", until=lambda m: len(m) >= 2)
    assert (back[1]["kind"], back[1]["state"]) == ("supervisor_down", "resolved")


def test_the_alerts_process_fatal_is_sent_by_the_supervisor_directly(processes: Processes, webhook):
    dirs = processes.suite(
        processes.suite_dirs(
            "alf-",
            TRADING_ALERTS_WEBHOOK_URL=f"{webhook.url}/hook",
            TRADING_MANAGER_ENTRY_ALERTS="tests/system/_exit_at_start.py",
            TRADING_MANAGER_MAX_FAILURES="2",
            TRADING_MANAGER_BACKOFF_BASE_S="0.05",
            TRADING_ALERTS_DAILY_SUMMARY_AT="off",
        )
    )
    started = manager_cli(dirs, "start", "alerts", "--timeout", "60")
    assert started.returncode == 1
    (message,) = wait_until(
        lambda: messages(webhook), 60, what="the supervisor's direct alert", until=lambda m: m
    )
    assert (message["kind"], message["subject"], message["severity"]) == (
        "service_fatal",
        "alerts",
        "critical",
    )
    assert message["title"] == "alerts is fatal: alerts reach nobody until it runs again"
    assert "(sent by the supervisor)" in message["text"] and "simulated start-up failure" in message["text"]


def test_operator_commands(processes: Processes, webhook):
    from tests.alert_fakes import Reply

    dirs = processes.suite_dirs(
        "alc-",
        TRADING_ALERTS_WEBHOOK_URL=f"{webhook.url}/hook",
        TRADING_ALERTS_NTFY_URL=f"{webhook.url}/",  # no topic: misconfigured
        TRADING_ALERTS_DAILY_SUMMARY_AT="off",
        TRADING_ALERTS_RETRY_BASE_S="0.05",
    )
    # Without the alerts process, `alerts test` sends from the CLI itself.
    direct = manager_cli(dirs, "alerts", "test", "webhook")
    assert direct.returncode == 0, direct.stderr
    assert "sent from here" in direct.stdout and "webhook: accepted" in direct.stdout
    assert manager_cli(dirs, "alerts", "list").returncode == 1  # needs the process: one line
    processes.start_suite(dirs, "alerts")

    tested = manager_cli(dirs, "alerts", "test", "webhook")
    assert tested.returncode == 0 and tested.stdout.strip() == "webhook: accepted"
    misconfigured = manager_cli(dirs, "alerts", "test", "ntfy")
    assert misconfigured.returncode == 1 and "TRADING_ALERTS_NTFY_URL names no topic" in misconfigured.stdout
    webhook.default = Reply(401, b"bad token")
    refused = manager_cli(dirs, "alerts", "test", "webhook")
    assert refused.returncode == 1 and "webhook: FAILED: webhook: HTTP 401: bad token" in refused.stdout
    assert manager_cli(dirs, "alerts", "test", "pigeon").returncode == 2

    silenced = manager_cli(dirs, "alerts", "silence", "task_failed", "--for", "2h")
    assert silenced.returncode == 0 and silenced.stdout.startswith("task_failed silenced until ")
    for bad in (
        ["silence", "nonsense", "--for", "2h"],
        ["silence", "task_failed", "--for", "soon"],
        ["list", "-n", "0"],
    ):
        result = manager_cli(dirs, "alerts", *bad)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, (bad, result.stderr)

    listed = manager_cli(dirs, "alerts", "list", "-n", "5")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "no alerts recorded"  # tests are deliveries, not incidents

    # A failed task (published as the scheduler does) while task_failed is silenced: recorded only.
    asyncio.run(
        publish_as(dirs, "scheduler", "task_failed", {"name": "market_monitoring", "status": "failed"})
    )

    def listing() -> str:
        return manager_cli(dirs, "alerts", "list", "-n", "5").stdout

    text = wait_until(listing, 60, until=lambda out: "webhook silenced" in out)
    header, row = text.strip().splitlines()[:2]
    assert header.split() == ["WHEN", "SEVERITY", "KIND", "ALERT", "STATE", "DELIVERIES"]
    assert "warning   task_failed  Task market_monitoring failed  open" in row
    # The silence lifted, the next one goes to the webhook, which still refuses: rejected, said why.
    lifted = manager_cli(dirs, "alerts", "silence", "task_failed", "--for", "0s")
    assert lifted.returncode == 0 and lifted.stdout.strip() == "task_failed: silence lifted"
    asyncio.run(publish_as(dirs, "scheduler", "task_failed", {"name": "daily_backup", "status": "failed"}))
    text = wait_until(listing, 60, until=lambda out: "webhook rejected" in out)
    assert text.strip().splitlines()[1].endswith("webhook rejected: webhook: HTTP 401: bad token")


async def publish_as(dirs, source: str, event_type: str, data: dict) -> None:
    from services.base.clock import SuiteClock
    from services.base.events import EventBus

    bus = EventBus(f"unix://{dirs.socket_dir / 'redis.sock'}", source, SuiteClock())
    await bus.start()
    try:
        assert await bus.wait_connected(5)
        await bus.publish(event_type, data)
    finally:
        await bus.close()
