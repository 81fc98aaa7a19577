"""Deliveries with a moved clock, a real SQLite store and real HTTP fakes as the channels:
quiet hours, rate limits, a channel down then up, refusals, silences; every delivery recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.alerts.alert_dispatch import DeliveryRules, Dispatcher
from services.alerts.alert_store import AlertStore
from services.clients.alert_channels.webhook import WebhookChannel
from services.domain.alert_incidents import (
    IncidentBook,
    Occurrence,
    RoutingPolicy,
    parse_quiet_hours,
)
from tests.alert_fakes import FakeHttpEndpoint, Reply

SYDNEY = ZoneInfo("Australia/Sydney")
NOON = datetime(2026, 11, 30, 12, 0, tzinfo=SYDNEY).astimezone(UTC)
NIGHT = datetime(2026, 11, 30, 23, 0, tzinfo=SYDNEY).astimezone(UTC)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def endpoints():
    with FakeHttpEndpoint() as a, FakeHttpEndpoint() as b:
        yield {"webhook": a, "ntfy": b}


@pytest.fixture
def store(tmp_path):
    store = AlertStore(tmp_path / "alerts.db")
    yield store
    store.close()


def dispatcher(store, endpoints, **rules) -> Dispatcher:
    channels = {name: WebhookChannel(f"{fake.url}/{name}", name=name) for name, fake in endpoints.items()}
    return Dispatcher(store, channels, DeliveryRules(local_tz=SYDNEY, **rules), sleep=Sleeps())


def notices(book: IncidentBook, store: AlertStore, occurrence: Occurrence, now: datetime):
    sent, changed = book.observe(occurrence, now)
    for incident in changed:
        store.save_incident(incident)
    return sent


def states(store: AlertStore) -> list[tuple[str, str, str | None]]:
    rows = store.db.execute("SELECT channel, state, hold_reason FROM deliveries ORDER BY id").fetchall()
    return [(r["channel"], r["state"], r["hold_reason"]) for r in rows]


def task_failed(name: str) -> Occurrence:
    return Occurrence("task_failed", name, f"Task {name} failed", "boom")


async def test_a_message_goes_to_every_routed_channel_and_is_recorded_sent(store, endpoints):
    d = dispatcher(store, endpoints)
    book = IncidentBook(300)
    for notice in notices(book, store, task_failed("a"), NOON):
        d.enqueue(notice, NOON)
    assert await d.flush(NOON) == 2
    assert states(store) == [("webhook", "sent", None), ("ntfy", "sent", None)]
    body = endpoints["webhook"].received()[0].json()
    assert body["kind"] == "task_failed" and body["subject"] == "a" and body["state"] == "open"
    assert await d.flush(NOON + timedelta(seconds=1)) == 0  # nothing sent twice


async def test_routes_and_minimum_severity_pick_the_channels(store, endpoints):
    routing = RoutingPolicy(routes={"daily_summary": ("ntfy",)}, min_severity={"ntfy": "critical"})
    d = dispatcher(store, endpoints, routing=routing)
    book = IncidentBook(300)
    for occurrence in (task_failed("a"), Occurrence("daily_summary", "2026-11-30", "Daily summary")):
        for notice in notices(book, store, occurrence, NOON):
            d.enqueue(notice, NOON)
    await d.flush(NOON)
    # task_failed (warning): the webhook only (ntfy takes critical); the summary: routed to ntfy,
    # whose minimum it does not meet, so nowhere
    assert states(store) == [("webhook", "sent", None)]


async def test_quiet_hours_hold_non_critical_alerts_until_they_end_then_send_one_digest(store, endpoints):
    d = dispatcher(store, {"webhook": endpoints["webhook"]}, quiet=parse_quiet_hours("22:00-07:00"))
    book = IncidentBook(300)
    for occurrence, at in ((task_failed("a"), NIGHT), (task_failed("b"), NIGHT + timedelta(minutes=5))):
        for notice in notices(book, store, occurrence, at):
            d.enqueue(notice, at)
        await d.flush(at)
    fatal = Occurrence("service_fatal", "prediction", "prediction is fatal", "5 failures")
    for notice in notices(book, store, fatal, NIGHT + timedelta(minutes=10)):
        d.enqueue(notice, NIGHT)
    await d.flush(NIGHT + timedelta(minutes=10))
    received = endpoints["webhook"].received()
    assert [r.json()["kind"] for r in received] == ["service_fatal"]  # critical: at once
    assert [s for s in states(store) if s[1] == "held"] == [("webhook", "held", "quiet_hours")] * 2
    assert await d.flush(datetime(2026, 12, 1, 6, 59, tzinfo=SYDNEY)) == 0
    assert await d.flush(datetime(2026, 12, 1, 7, 0, tzinfo=SYDNEY)) == 1
    digest = endpoints["webhook"].received()[-1].json()
    assert digest["kind"] == "digest" and digest["count"] == 2
    assert digest["title"] == "2 alerts held during quiet hours (the worst: warning)"
    assert "Task a failed" in digest["text"] and "Task b failed" in digest["text"]
    assert {s[1] for s in states(store)} == {"sent"}


async def test_the_rate_limit_holds_the_excess_and_sends_it_when_the_window_frees(store, endpoints):
    d = dispatcher(store, {"webhook": endpoints["webhook"]}, rate_limit=2, rate_window_s=3600)
    book = IncidentBook(300)
    for i, name in enumerate("abcd"):
        at = NOON + timedelta(minutes=i)
        for notice in notices(book, store, task_failed(name), at):
            d.enqueue(notice, at)
        await d.flush(at)
    assert len(endpoints["webhook"].received()) == 2
    assert [s[2] for s in states(store)] == [None, None, "rate_limited", "rate_limited"]
    assert await d.flush(NOON + timedelta(minutes=59)) == 0
    assert await d.flush(NOON + timedelta(minutes=60)) == 1  # the oldest send left the window
    assert endpoints["webhook"].received()[-1].json()["count"] == 2  # one digest of the two held


async def test_a_channel_down_then_up_delivers_what_failed_and_loses_nothing(store, endpoints):
    fake = endpoints["webhook"]
    fake.default = Reply(503, b"down for maintenance")
    d = dispatcher(store, {"webhook": fake}, attempts=3, redeliver_s=60)
    book = IncidentBook(300)
    for notice in notices(book, store, task_failed("a"), NOON):
        d.enqueue(notice, NOON)
    assert await d.flush(NOON) == 0
    assert len(fake.received()) == 3  # retried with backoff within the send
    (row,) = store.db.execute("SELECT * FROM deliveries").fetchall()
    assert row["state"] == "retrying" and row["attempts"] == 3
    assert row["error"] == "webhook: HTTP 503: down for maintenance"
    assert await d.flush(NOON + timedelta(seconds=59)) == 0 and len(fake.received()) == 3  # not yet due
    fake.default = Reply(200, b"ok")  # the channel is back
    assert await d.flush(NOON + timedelta(seconds=60)) == 1
    (row,) = store.db.execute("SELECT * FROM deliveries").fetchall()
    assert row["state"] == "sent" and row["attempts"] == 4
    assert "held since" in fake.received()[-1].json()["text"]  # says it is late


async def test_a_refusal_is_not_retried_and_is_recorded(store, endpoints):
    fake = endpoints["webhook"]
    fake.default = Reply(401, b"bad token")
    d = dispatcher(store, {"webhook": fake}, attempts=5)
    for notice in notices(IncidentBook(300), store, task_failed("a"), NOON):
        d.enqueue(notice, NOON)
    await d.flush(NOON)
    assert len(fake.received()) == 1
    (row,) = store.db.execute("SELECT * FROM deliveries").fetchall()
    assert (row["state"], row["error"]) == ("rejected", "webhook: HTTP 401: bad token")
    assert await d.flush(NOON + timedelta(hours=1)) == 0 and len(fake.received()) == 1


async def test_a_delivery_failing_past_its_maximum_age_ends_failed(store, endpoints):
    fake = endpoints["webhook"]
    fake.default = Reply(500, b"")
    d = dispatcher(store, {"webhook": fake}, attempts=1, redeliver_s=600, max_age_s=1800)
    for notice in notices(IncidentBook(300), store, task_failed("a"), NOON):
        d.enqueue(notice, NOON)
    for minutes in range(0, 31, 10):
        await d.flush(NOON + timedelta(minutes=minutes))
    (row,) = store.db.execute("SELECT * FROM deliveries").fetchall()
    assert row["state"] == "failed" and row["attempts"] == 4


async def test_a_silenced_kind_is_recorded_not_sent(store, endpoints):
    d = dispatcher(store, {"webhook": endpoints["webhook"]})
    store.silence("task_failed", NOON + timedelta(hours=2), NOON)
    for notice in notices(IncidentBook(300), store, task_failed("a"), NOON):
        d.enqueue(notice, NOON)
    await d.flush(NOON)
    assert endpoints["webhook"].received() == []
    assert states(store)[0][:2] == ("webhook", "silenced")
    later = NOON + timedelta(hours=2, seconds=1)  # the silence is over
    for notice in notices(IncidentBook(300), store, task_failed("b"), later):
        d.enqueue(notice, later)
    await d.flush(later)
    assert len(endpoints["webhook"].received()) == 1


async def test_a_test_message_bypasses_quiet_hours_and_is_recorded(store, endpoints):
    d = dispatcher(store, endpoints, quiet=parse_quiet_hours("22:00-07:00"))
    delivery_id, report = await d.send_test("ntfy", NIGHT)
    assert report.ok and endpoints["ntfy"].received()[0].json()["kind"] == "test"
    delivery = store.delivery(delivery_id)
    assert delivery is not None and delivery.state == "sent" and delivery.incident_id is None


async def test_no_secret_leaves_in_a_message_whatever_the_event_said(store, endpoints):
    channels = {"webhook": WebhookChannel(f"{endpoints['webhook'].url}/w", hmac_secret="hmac-secret-1")}
    d = Dispatcher(store, channels, DeliveryRules(local_tz=SYDNEY), sleep=Sleeps(), secrets=["ig-password-9"])
    leaky = Occurrence(
        "task_failed", "sync", "Task sync failed", "login ig-password-9 refused; key hmac-secret-1"
    )
    for notice in notices(IncidentBook(300), store, leaky, NOON):
        d.enqueue(notice, NOON)
    await d.flush(NOON)
    body = endpoints["webhook"].received()[0].body.decode()
    assert "ig-password-9" not in body and "hmac-secret-1" not in body
    assert "login *** refused; key ***" in body


async def test_a_slow_channel_does_not_hold_up_the_others(store, endpoints):
    """The slow channel's send waits until the fast one has sent: one after the other, it never would."""
    import asyncio

    from services.clients.alert_channels import DeliveryReport

    fast_sent = asyncio.Event()

    async def sender(channel, message, **_):
        if channel.name == "webhook":  # the slow one, first in the table
            await fast_sent.wait()
        else:
            fast_sent.set()
        return DeliveryReport(ok=True, attempts=1)

    channels = {name: WebhookChannel(f"{fake.url}/{name}", name=name) for name, fake in endpoints.items()}
    d = Dispatcher(store, channels, DeliveryRules(local_tz=SYDNEY), sleep=Sleeps(), sender=sender)
    for notice in notices(IncidentBook(300), store, task_failed("a"), NOON):
        d.enqueue(notice, NOON)
    assert await asyncio.wait_for(d.flush(NOON), 30) == 2
