"""Stands in for a service that writes much to its stdout: CHATTY_BURSTS bursts of
CHATTY_BURST_BYTES, each written once the supervisor has rotated the previous one away (its stdout
file, seen through its own descriptor, is small again), so every rotated copy is one whole burst.
`health` counts the bursts written."""

import asyncio
import os

from services.base.base_service import BaseService, run_service


class Chatty(BaseService):
    name = os.environ.get("TRADING_SERVICE_NAME", "chatty")
    bursts = 0

    async def on_start(self) -> None:
        self._chatter_task = asyncio.create_task(self._chatter())

    async def _chatter(self) -> None:
        size, count = int(os.environ["CHATTY_BURST_BYTES"]), int(os.environ["CHATTY_BURSTS"])
        for number in range(count):
            line = f"burst {number:03d} ".encode().ljust(127, b"x") + b"\n"
            os.write(1, line * (size // 128))
            self.bursts += 1
            while os.fstat(1).st_size >= size:
                await asyncio.sleep(0.01)

    async def health_details(self) -> dict:
        return {"bursts": self.bursts}


if __name__ == "__main__":
    run_service(Chatty)
