"""The alerts process on its real socket, with a real redis-server, real SQLite and local fakes
of the channels (an HTTP server as the webhook and ntfy). Events are published on the real bus
as their publishers do; the suite clock is a control file the test moves (quiet hours).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.base.base_service import BaseService, rpc
from services.base.clock import SuiteClock, write_clock_file
from services.base.config import Settings
from services.base.events import EventBus
from services.base.rpc import InvalidParams
from tests.alert_fakes import FakeHttpEndpoint, Reply
from tests.support import ServiceProcess, SuiteDirs, async_wait_until, rpc_call_sync

pytestmark = pytest.mark.timeout(120)

SYDNEY = ZoneInfo("Australia/Sydney")
HMAC_SECRET = "hmac-secret-7f3a"
BOT_TOKEN = "987654:telegram-secret-token"
# A Monday afternoon, out of quiet hours.
MONDAY_2PM = datetime(2026, 11, 30, 14, 0, tzinfo=SYDNEY)


@dataclass
class Alerts:
    suite: SuiteDirs
    process: ServiceProcess
    webhook: FakeHttpEndpoint
    clock_file: object

    def call(self, method: str, **params):
        return rpc_call_sync(self.suite.socket("alerts"), method, params or None)

    def messages(self) -> list[dict]:
        return [r.json() for r in self.webhook.received()]

    def set_clock(self, when: datetime) -> None:
        write_clock_file(self.clock_file, when)  # type: ignore[arg-type]


async def publish(suite: SuiteDirs, source: str, event_type: str, *payloads: dict) -> None:
    """Publish as `source` does: the same bus and envelope."""
    bus = EventBus(suite.env["TRADING_REDIS_URL"], source, SuiteClock())
    await bus.start()
    try:
        assert await bus.wait_connected(5)
        for data in payloads:
            await bus.publish(event_type, data)
    finally:
        await bus.close()


def status_changed(service: str, state: str, reason: str | None = None, restarts: int = 0) -> dict:
    return {"service": service, "state": state, "previous": "running", "pid": 1, "restarts": restarts,
            "reason": reason, "at": MONDAY_2PM.isoformat()}  # fmt: skip


@pytest.fixture
def webhook() -> Iterator[FakeHttpEndpoint]:
    with FakeHttpEndpoint(Reply(200, b"ok")) as fake:
        yield fake


def start_alerts(
    suite: SuiteDirs, processes, webhook: FakeHttpEndpoint, start: datetime, **env: str
) -> Alerts:
    clock_file = suite.root / "clock.json"
    write_clock_file(clock_file, start)
    extra = {
        "TRADING_CLOCK_FILE": str(clock_file),
        "TRADING_ALERTS_WEBHOOK_URL": f"{webhook.url}/hook",
        "TRADING_ALERTS_WEBHOOK_SECRET": HMAC_SECRET,
        # Telegram half set up: the process must start, name it, and use the webhook anyway.
        "TRADING_ALERTS_TELEGRAM_BOT_TOKEN": BOT_TOKEN,
        "TRADING_ALERTS_GROUP_WINDOW_S": "60",
        "TRADING_ALERTS_TICK_S": "0.1",
        "TRADING_ALERTS_POLL_S": "0.5",
        "TRADING_ALERTS_RETRY_BASE_S": "0.05",
        "TRADING_ALERTS_DAILY_SUMMARY_AT": "off",
        **env,
    }
    process = processes.start("alerts", suite, extra_env=extra)
    return Alerts(suite, process, webhook, clock_file)


async def test_a_misconfigured_channel_degrades_health_by_name_and_the_others_still_deliver(
    suite, processes, webhook
):
    alerts = start_alerts(suite, processes, webhook, MONDAY_2PM)
    health = alerts.call("health")
    assert health["status"] == "degraded"
    assert health["warnings"] == ["channel telegram is not used: TRADING_ALERTS_TELEGRAM_CHAT_ID is not set"]
    assert health["channels"]["telegram"]["state"] == "misconfigured"
    assert health["channels"]["webhook"]["state"] == "ok"

    await publish(
        suite, "manager", "service_status_changed", status_changed("paper-trading", "fatal", "5 failures")
    )
    (first,) = await async_wait_until(alerts.webhook.received, 30, what="the fatal alert", until=lambda r: r)
    message = first.json()
    assert (message["kind"], message["state"], message["severity"]) == ("service_fatal", "open", "critical")
    assert message["subject"] == "paper-trading" and "5 failures" in message["text"]
    assert (
        first.headers["X-Trading-Signature"]
        == "sha256=" + hmac.new(HMAC_SECRET.encode(), first.body, hashlib.sha256).hexdigest()
    )

    await publish(suite, "manager", "service_status_changed", status_changed("paper-trading", "running"))
    received = await async_wait_until(
        alerts.webhook.received, 30, what="the resolved message", until=lambda r: len(r) >= 2
    )
    assert received[1].json()["state"] == "resolved"
    assert received[1].json()["title"] == "RESOLVED: paper-trading is fatal: no more restarts"

    listed = alerts.call("list_alerts", limit=5)["alerts"]
    assert listed[0]["kind"] == "service_fatal" and listed[0]["state"] == "resolved"
    assert [(d["channel"], d["message"], d["state"]) for d in listed[0]["deliveries"]] == [
        ("webhook", "open", "sent"),
        ("webhook", "resolved", "sent"),
    ]
    # An event that carries a secret in its text: kept out of the record and of the message.
    error = f"sync refused with token {BOT_TOKEN}"
    await publish(
        suite, "scheduler", "task_failed", {"name": "paper_trading_sync", "status": "failed", "error": error}
    )
    received = await async_wait_until(
        alerts.webhook.received, 30, what="the task alert", until=lambda r: len(r) >= 3
    )
    assert received[2].json()["text"] == "sync refused with token ***"
    assert BOT_TOKEN not in str(alerts.call("list_alerts", limit=10))
    logs = (suite.log_dir / "alerts.log").read_text() + alerts.process.output()
    assert HMAC_SECRET not in logs and BOT_TOKEN not in logs and "telegram" in logs


async def test_a_crash_loop_yields_one_grouped_message(suite, processes, webhook):
    alerts = start_alerts(suite, processes, webhook, MONDAY_2PM, TRADING_ALERTS_GROUP_WINDOW_S="2")
    storm = [
        status_changed("prediction", "backoff", f"exited (code 1); restarting in {i}s", i) for i in range(30)
    ]
    await publish(suite, "manager", "service_status_changed", *storm)
    await publish(
        suite, "manager", "service_status_changed", status_changed("prediction", "fatal", "30 failures")
    )
    await async_wait_until(alerts.messages, 30, what="the fatal alert", until=lambda m: m)
    # Then something else, published after more than a group window: once its message is there,
    # whatever the storm would have sent (deferred restarts, grouped repeats) would be there too.
    alerts.set_clock(MONDAY_2PM + timedelta(minutes=10))
    await publish(
        suite, "scheduler", "task_failed", {"name": "market_monitoring", "status": "failed", "error": "x"}
    )
    messages = await async_wait_until(alerts.messages, 30, what="the task alert", until=lambda m: len(m) >= 2)
    assert [(m["kind"], m["state"]) for m in messages] == [("service_fatal", "open"), ("task_failed", "open")]
    listed = alerts.call("list_alerts", limit=10)["alerts"]
    restarting = [a for a in listed if a["kind"] == "service_restarting"]
    assert restarting[0]["count"] == 30 and restarting[0]["state"] == "superseded"
    assert restarting[0]["deliveries"] == []


async def test_quiet_hours_hold_warnings_until_the_morning_on_the_suite_clock(suite, processes, webhook):
    night = datetime(2026, 11, 30, 23, 0, tzinfo=SYDNEY)
    alerts = start_alerts(suite, processes, webhook, night, TRADING_ALERTS_QUIET_HOURS="22:00-07:00")
    await publish(
        suite, "scheduler", "task_failed", {"name": "evening_analysis", "status": "failed", "error": "x"}
    )
    await publish(
        suite, "manager", "service_status_changed", status_changed("sentiment", "fatal", "5 failures")
    )
    messages = await async_wait_until(alerts.messages, 30, what="the critical alert", until=lambda m: m)

    def held() -> list[dict]:
        listed = alerts.call("list_alerts", kind="task_failed")["alerts"]
        return [d for a in listed for d in a["deliveries"]]

    deliveries = await async_wait_until(held, 30, until=lambda ds: ds and ds[0]["state"] == "held")
    assert deliveries[0]["hold_reason"] == "quiet_hours"
    assert datetime.fromisoformat(deliveries[0]["due_at"]) == datetime(2026, 12, 1, 7, 0, tzinfo=SYDNEY)
    assert [m["kind"] for m in messages] == ["service_fatal"]  # critical: not held

    alerts.set_clock(datetime(2026, 12, 1, 7, 0, 1, tzinfo=SYDNEY))
    messages = await async_wait_until(
        alerts.messages, 30, what="the morning delivery", until=lambda m: len(m) == 2
    )
    assert messages[1]["kind"] == "task_failed" and "held since" in messages[1]["text"]
    await async_wait_until(
        held, 30, what="the delivery recorded sent", until=lambda ds: ds[0]["state"] == "sent"
    )


async def test_a_channel_down_then_up_delivers_late_and_says_so(suite, processes, webhook):
    webhook.default = Reply(503, b"maintenance")
    alerts = start_alerts(suite, processes, webhook, MONDAY_2PM, TRADING_ALERTS_REDELIVER_S="1")
    await publish(
        suite, "scheduler", "task_failed", {"name": "market_data_refresh", "status": "failed", "error": "x"}
    )

    def health() -> dict:
        return alerts.call("health")

    down = await async_wait_until(health, 30, until=lambda h: h["channels"]["webhook"]["state"] == "failing")
    assert "webhook: HTTP 503: maintenance" in " ".join(down["warnings"])
    webhook.default = Reply(200, b"ok")  # the channel is back
    await async_wait_until(health, 30, until=lambda h: h["channels"]["webhook"]["state"] == "ok")
    accepted = [r for r in webhook.received() if r.json()["kind"] == "task_failed"]
    assert len(accepted) >= 4  # three tries while down, then the one that passed
    delivery = alerts.call("list_alerts", kind="task_failed")["alerts"][0]["deliveries"][0]
    assert delivery["state"] == "sent" and delivery["attempts"] >= 4


async def test_operator_methods_validate_their_params_and_act(suite, processes, webhook, client):
    alerts = start_alerts(suite, processes, webhook, MONDAY_2PM)
    bad = [
        ("list_alerts", {"limit": 0}, "limit"),
        ("list_alerts", {"kind": "nonsense"}, "kind"),
        ("silence", {"kind": "nonsense"}, "kind"),
        ("silence", {"kind": "task_failed", "duration": "soon"}, "duration"),
        ("silence", {"kind": "task_failed", "duration": "90d"}, "duration"),
        ("test_channel", {"channel": "pigeon"}, "channel"),
        ("get_summary", {"period": "year"}, "period"),
    ]
    for method, params, param in bad:
        with pytest.raises(InvalidParams) as raised:
            await client.call_service("alerts", method, **params)
        assert raised.value.data["param"] == param, (method, params)

    tested = alerts.call("test_channel", channel="webhook")
    assert tested["ok"] and tested["channels"]["webhook"]["attempts"] == 1
    assert alerts.messages()[-1]["kind"] == "test"
    refused = alerts.call("test_channel", channel="telegram")
    assert not refused["ok"] and "TRADING_ALERTS_TELEGRAM_CHAT_ID" in refused["channels"]["telegram"]["error"]

    silenced = alerts.call("silence", kind="task_failed", duration="2h")
    until = datetime.fromisoformat(silenced["until"]) - MONDAY_2PM
    assert timedelta(hours=2) <= until < timedelta(hours=2, minutes=5)  # the suite clock runs on
    await publish(
        suite, "scheduler", "task_failed", {"name": "sentiment_analysis", "status": "failed", "error": "x"}
    )

    def deliveries() -> list[dict]:
        listed = alerts.call("list_alerts", kind="task_failed")["alerts"]
        return [d for a in listed for d in a["deliveries"]]

    (delivery,) = await async_wait_until(deliveries, 30, until=lambda ds: ds)
    assert delivery["state"] == "silenced"
    assert [m["kind"] for m in alerts.messages()] == ["test"]


async def test_redis_down_is_alerted_without_redis_and_resolved_when_it_is_back(
    suite, processes, webhook, redis_server
):
    alerts = start_alerts(suite, processes, webhook, MONDAY_2PM, TRADING_ALERTS_POLL_S="0.3")
    redis_server.kill()  # events cannot reach anyone now; the alerts process still can
    messages = await async_wait_until(alerts.messages, 60, what="the redis_down alert", until=lambda m: m)
    assert [(m["kind"], m["state"], m["severity"]) for m in messages] == [("redis_down", "open", "critical")]
    redis_server.start()  # the same socket: the bus reconnects by itself
    messages = await async_wait_until(
        alerts.messages, 60, what="the resolved message", until=lambda m: len(m) >= 2
    )
    assert (messages[1]["kind"], messages[1]["state"]) == ("redis_down", "resolved")


async def test_polls_find_expired_models_and_a_nearly_full_disk(suite, processes, webhook):
    manifest = suite.models_dir / "manifest.json"
    manifest.write_text('{"models": [], "expired": true, "expired_reason": "trained 20 days ago (limit 14)"}')
    # Every filesystem has less than 100% free: the bound makes the disk alert certain.
    alerts = start_alerts(suite, processes, webhook, MONDAY_2PM, TRADING_ALERTS_DISK_MIN_FREE_PCT="100")
    messages = await async_wait_until(
        alerts.messages, 30, what="both poll alerts", until=lambda m: len(m) >= 2
    )
    by_kind = {m["kind"]: m for m in messages}
    assert set(by_kind) == {"models_expired", "disk_low"}
    assert by_kind["models_expired"]["text"] == "trained 20 days ago (limit 14)"
    assert (
        by_kind["disk_low"]["severity"] == "critical" and "the bound is 100%" in by_kind["disk_low"]["text"]
    )
    manifest.write_text('{"models": []}')  # retrained: the manifest no longer says so
    messages = await async_wait_until(
        alerts.messages, 30, what="models resolved", until=lambda m: len(m) >= 3
    )
    assert (messages[2]["kind"], messages[2]["state"]) == ("models_expired", "resolved")


class StaleMarketData(BaseService):
    """Stands in for market-data's health: the symbols it serves stale are the test's to set."""

    name = "market-data"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings=settings)
        self.stale: dict[str, str] = {}

    async def health_details(self) -> dict:
        return {"stale_quotes": dict(self.stale)}


async def test_market_data_stale_in_the_session_is_polled_per_symbol(suite, processes, webhook):
    fake = StaleMarketData(Settings.from_env(suite.env))
    await fake.start()
    try:
        fake.stale = {"WBC.AX": "no new bar for 25 min"}
        alerts = start_alerts(suite, processes, webhook, MONDAY_2PM)  # 14:00 on a Monday: open
        messages = await async_wait_until(alerts.messages, 30, what="the stale alert", until=lambda m: m)
        assert [(m["kind"], m["subject"], m["state"]) for m in messages] == [
            ("market_data_stale", "WBC.AX", "open")
        ]
        fake.stale = {}
        messages = await async_wait_until(
            alerts.messages, 30, what="fresh again", until=lambda m: len(m) >= 2
        )
        assert (messages[1]["kind"], messages[1]["subject"], messages[1]["state"]) == (
            "market_data_stale",
            "WBC.AX",
            "resolved",
        )
    finally:
        await fake.stop()


class HaltingPaperTrading(BaseService):
    """Stands in for paper-trading's get_portfolio_status: halted or not, as the test says."""

    name = "paper-trading"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings=settings)
        self.halted = True

    @rpc
    async def get_portfolio_status(self) -> dict:
        return {"trading_halted": self.halted, "halt_reason": "daily loss" if self.halted else None}


async def test_a_trading_halt_is_critical_and_resolves_when_the_portfolio_buys_again(
    suite, processes, webhook
):
    fake = HaltingPaperTrading(Settings.from_env(suite.env))
    await fake.start()
    try:
        alerts = start_alerts(suite, processes, webhook, MONDAY_2PM)
        halt = {
            "rule": "max_daily_loss", "detail": "new buys halted until the next trading day: loss 5,210",
            "limit": 5000.0, "attempted": 5210.0, "excess": 210.0, "halted_until": "2026-12-01T10:00:00+11:00",
        }  # fmt: skip
        await publish(suite, "paper-trading", "risk_limit_hit", halt)
        messages = await async_wait_until(alerts.messages, 30, what="the halt alert", until=lambda m: m)
        assert [(m["kind"], m["severity"], m["state"]) for m in messages] == [
            ("trading_halted", "critical", "open")
        ]
        assert messages[0]["text"].endswith("(until 2026-12-01T10:00:00+11:00)")
        fake.halted = False  # the next trading day
        messages = await async_wait_until(
            alerts.messages, 30, what="buying again", until=lambda m: len(m) >= 2
        )
        assert (messages[1]["kind"], messages[1]["state"]) == ("trading_halted", "resolved")
    finally:
        await fake.stop()
