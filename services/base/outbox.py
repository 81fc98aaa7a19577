"""Watching a SQLite outbox: when it grows past its bound, and when it has drained again.

A producer of durable events (prediction's predictions, paper-trading's trades) saves each event
with its state, publishes it, then marks it sent; what is unmarked is sent again every few
seconds. While Redis is away or refuses writes the unmarked rows pile up. Nothing is lost, but a
person must know: past `bound` the service's health says so (degraded) and an `outbox_backlog`
event goes out with `state: "growing"`; once it is down to half the bound again, one with
`state: "cleared"`. An announcement that cannot be sent yet (Redis is what is away) is tried
again at the next check, so the alert reaches Redis as soon as anything can.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

#: Unsent events past which a service says its outbox is growing (health degraded, an alert).
OUTBOX_BOUND = 100

State = Literal["growing", "cleared"]


@dataclass(slots=True)
class OutboxWatch:
    """The growing/cleared state of one outbox, and whether that state has been announced."""

    service: str
    #: What the outbox holds, for the person reading the alert ("predictions", "trades").
    holds: str
    bound: int = OUTBOX_BOUND
    growing: bool = False
    since: datetime | None = None
    announced: bool = True  # "cleared" at start needs no announcement
    size: int = 0

    def observe(self, size: int, now: datetime) -> dict | None:
        """The outbox holds `size` unsent events at `now`: the `outbox_backlog` event data to
        announce when the state changed or an earlier announcement is still owed, else None."""
        self.size = size
        if not self.growing and size > self.bound:
            self.growing, self.since, self.announced = True, now, False
        elif self.growing and size <= self.bound // 2:
            # Cleared: owed only if "growing" went out (else neither needs saying any more).
            self.growing, self.announced = False, not self.announced
        if self.announced:
            return None
        return {
            "service": self.service,
            "outbox": self.holds,
            "state": "growing" if self.growing else "cleared",
            "size": size,
            "bound": self.bound,
            "since": self.since.isoformat() if self.since else None,
        }

    async def check(self, size: int, now: datetime, announce: Callable[[dict], Awaitable[bool]]) -> None:
        """observe(), and announce the change; kept owed when `announce` says it was not sent."""
        data = self.observe(size, now)
        if data is not None and await announce(data):
            self.announced = True

    def warning(self) -> str | None:
        """The health warning while growing."""
        if not self.growing:
            return None
        return (
            f"outbox: {self.size} {self.holds} saved but not yet on the bus (more than {self.bound};"
            f" since {self.since.isoformat() if self.since else '?'}; Redis away or refusing writes?)"
        )
