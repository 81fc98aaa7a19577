"""OutboxWatch: growing past the bound, cleared at half of it, announcements owed until sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.base.outbox import OutboxWatch

T0 = datetime(2024, 6, 17, 1, 0, tzinfo=UTC)


def test_growing_past_the_bound_then_cleared_at_half_of_it():
    watch = OutboxWatch("prediction", "predictions", bound=10)
    assert watch.observe(10, T0) is None and watch.warning() is None
    growing = watch.observe(11, T0 + timedelta(seconds=2))
    assert growing == {
        "service": "prediction",
        "outbox": "predictions",
        "state": "growing",
        "size": 11,
        "bound": 10,
        "since": (T0 + timedelta(seconds=2)).isoformat(),
    }
    watch.announced = True
    assert watch.observe(40, T0 + timedelta(seconds=4)) is None  # still growing: said once
    assert "40 predictions saved but not yet on the bus (more than 10" in (watch.warning() or "")
    assert watch.observe(6, T0 + timedelta(seconds=6)) is None  # above half the bound: not yet
    cleared = watch.observe(5, T0 + timedelta(seconds=8))
    assert cleared is not None and cleared["state"] == "cleared" and cleared["size"] == 5
    assert watch.warning() is None


async def test_an_announcement_redis_did_not_take_stays_owed():
    watch = OutboxWatch("paper-trading", "trades", bound=2)
    sent: list[dict] = []
    redis_up = False

    async def announce(data: dict) -> bool:
        if redis_up:
            sent.append(data)
        return redis_up

    await watch.check(3, T0, announce)
    await watch.check(5, T0 + timedelta(seconds=2), announce)
    assert sent == [] and watch.growing
    redis_up = True
    await watch.check(4, T0 + timedelta(seconds=4), announce)
    await watch.check(4, T0 + timedelta(seconds=6), announce)
    assert [(d["state"], d["size"], d["since"]) for d in sent] == [("growing", 4, T0.isoformat())]
    await watch.check(0, T0 + timedelta(seconds=8), announce)
    assert [d["state"] for d in sent] == ["growing", "cleared"]


async def test_growing_never_announced_needs_no_cleared():
    watch = OutboxWatch("prediction", "predictions", bound=2)
    calls: list[dict] = []

    async def refuse(data: dict) -> bool:
        calls.append(data)
        return False

    await watch.check(3, T0, refuse)
    await watch.check(0, T0 + timedelta(seconds=2), refuse)
    await watch.check(0, T0 + timedelta(seconds=4), refuse)
    assert [d["state"] for d in calls] == ["growing"]
