"""A service used only by the platform tests: the JSON-RPC specification's example methods, a
slow method for shutdown tests, and event handlers that record what they receive."""

import asyncio
import os
from typing import Literal

from services.base.base_service import BaseService, Event, InvalidParams, on_event, rpc, run_service
from services.base.rpc import DependencyUnavailable, NotFound
from services.registry import EventType, events_with


class DemoService(BaseService):
    name = os.environ.get("DEMO_NAME", "demo")
    # Outside the suite, so its own event types join the registry's (only for this process).
    event_types = events_with(
        EventType("demo_plain", publishers=("demo",), consumers=("demo",)),
        EventType("demo_durable", publishers=("demo",), consumers=("demo",), durable=True),
    )

    def __init__(self):
        super().__init__()
        self.seen: list[dict] = []
        self.durable_seen: list[dict] = []
        self.fail_durable = int(os.environ.get("DEMO_FAIL_DURABLE", "0"))
        self.sleeping = 0
        self.most_sleeping = 0

    @rpc
    async def subtract(self, minuend: int, subtrahend: int) -> int:
        """minuend - subtrahend (the JSON-RPC specification's example)."""
        return minuend - subtrahend

    @rpc
    async def sum(self, a: int, b: int, c: int = 0) -> int:
        """a + b + c."""
        return a + b + c

    @rpc
    async def update(self, a: int, b: int, c: int, d: int, e: int) -> None:
        """A notification target."""

    @rpc
    async def notify_hello(self, n: int) -> None:
        """A notification target."""

    @rpc
    async def echo(self, data: dict) -> dict:
        """Return `data` (benchmarks)."""
        return data

    @rpc
    async def get_data(self) -> list:
        """The specification's get_data."""
        return ["hello", 5]

    @rpc
    async def sleep_counted(self, seconds: float) -> int:
        """Sleep, then answer the most sleep_counted calls that ran at once so far (the tests of
        the requests-in-flight cap)."""
        self.sleeping += 1
        self.most_sleeping = max(self.most_sleeping, self.sleeping)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.sleeping -= 1
        return self.most_sleeping

    @rpc
    async def sleep(self, seconds: float) -> float:
        """Sleep, then answer (in-flight requests during shutdown)."""
        await asyncio.sleep(seconds)
        return seconds

    @rpc
    async def bounded_sleep(self, seconds: float, limit_s: float) -> str:
        """Sleep under asyncio.timeout (state pinned to the current task must survive dispatch)."""
        try:
            async with asyncio.timeout(limit_s):
                await asyncio.sleep(seconds)
        except TimeoutError:
            return "timed out"
        return "slept"

    @rpc
    async def pick(self, side: Literal["BUY", "SELL"], tags: list[str] | None = None) -> dict:
        """Typed params: a Literal and an optional list of strings."""
        if side == "SELL" and tags == ["bad"]:
            raise InvalidParams("tags", "'bad' is not allowed with SELL")
        return {"side": side, "tags": tags}

    @rpc
    async def missing(self, key: str) -> dict:
        """Always raises NotFound (typed domain error)."""
        raise NotFound(f"no such key: {key}")

    @rpc
    async def crash(self) -> None:
        """Raises an unexpected error (-32603 without internals)."""
        raise RuntimeError("secret internals")

    @rpc
    async def emit(self, event_type: str, data: dict, durable: bool = False) -> dict:
        """Publish an event."""
        event = await self.publish(event_type, data, durable)
        return {"id": event.id, "seq": event.seq}

    @rpc
    async def received(self) -> dict:
        """Events received so far by the handlers."""
        return {"plain": self.seen, "durable": self.durable_seen}

    @on_event("demo_plain")
    async def on_plain(self, event: Event) -> None:
        self.seen.append({"id": event.id, "data": event.data, "source": event.source, "seq": event.seq})

    @on_event("demo_durable", durable=True)
    async def on_durable(self, event: Event) -> None:
        if self.fail_durable and event.data.get("poison"):
            raise ValueError("poison event")
        if event.data.get("crash") and os.environ.get("DEMO_CRASH_DURABLE") == "1":
            os._exit(3)  # dies while handling it: the entry stays pending, delivered again at start
        away = os.environ.get("DEMO_DEPENDENCY_FLAG")
        if away and os.path.exists(away):  # noqa: ASYNC240 (a test double: one stat)
            raise DependencyUnavailable("demo dependency is unavailable", data={"dependency": "flag"})
        if event.data.get("slow") and os.environ.get("DEMO_SLOW_DURABLE") == "1":
            await asyncio.sleep(60)  # killed here: the entry stays pending, unacknowledged
        self.durable_seen.append({"id": event.id, "data": event.data})


if __name__ == "__main__":
    run_service(DemoService)
