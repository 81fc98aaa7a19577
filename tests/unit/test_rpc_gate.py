"""RequestGate: the per-connection cap on requests running at once (a batch's counted one by one)."""

from __future__ import annotations

import asyncio

from services.base.rpc.server import RequestGate


async def test_places_pass_in_order_and_a_cancelled_waiter_gives_its_place_back():
    gate = RequestGate(2)
    assert gate.try_enter() and gate.try_enter() and not gate.try_enter()
    order: list[str] = []

    async def wait(name: str) -> None:
        await gate.enter()
        order.append(name)

    first, second, third = (asyncio.create_task(wait(n)) for n in ("first", "second", "third"))
    await asyncio.sleep(0)
    second.cancel()  # waiting: leaves the queue
    gate.leave()  # the first waiter gets this place
    await first
    gate.leave()  # the place goes past the cancelled one to the third
    await third
    assert order == ["first", "third"] and second.cancelled() and gate.running == 2
    gate.leave()
    gate.leave()
    assert gate.running == 0 and gate.try_enter()


async def test_a_waiter_cancelled_as_it_is_handed_the_place_passes_it_on():
    gate = RequestGate(1)
    assert gate.try_enter()
    handed = asyncio.create_task(gate.enter())
    after = asyncio.create_task(gate.enter())
    await asyncio.sleep(0)
    gate.leave()  # handed's place is set...
    handed.cancel()  # ...and it is cancelled before it runs: the place goes on to `after`
    await asyncio.gather(handed, return_exceptions=True)
    await asyncio.wait_for(after, 5)
    assert gate.running == 1
    gate.leave()
    assert gate.running == 0
