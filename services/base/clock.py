"""The suite clock: every service reads time from here, never from datetime.now().

With `TRADING_CLOCK_START` unset it is the wall clock. With it set, suite time starts at that
instant and runs `TRADING_CLOCK_SPEED` suite seconds per real second. All processes of one suite
must agree on "now", so the anchor is a shared wall-clock epoch (`TRADING_CLOCK_EPOCH`, exported
by the supervisor to its children), not each process's own start time.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

SYDNEY = ZoneInfo("Australia/Sydney")


class SuiteClock:
    def __init__(self, start: datetime | None = None, speed: float = 1.0, epoch: float | None = None):
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.start = start.astimezone(UTC) if start is not None else None
        self.speed = speed if start is not None else 1.0
        self.epoch = epoch if epoch is not None else time.time()

    @property
    def simulated(self) -> bool:
        return self.start is not None

    def time(self) -> float:
        """Suite time as Unix seconds."""
        real = time.time()
        if self.start is None:
            return real
        return self.start.timestamp() + (real - self.epoch) * self.speed

    def now(self) -> datetime:
        """Suite time, timezone-aware UTC."""
        return datetime.fromtimestamp(self.time(), UTC)

    def now_sydney(self) -> datetime:
        return self.now().astimezone(SYDNEY)

    def real_seconds(self, suite_seconds: float) -> float:
        """How long a real wait lasts for `suite_seconds` of suite time."""
        return max(0.0, suite_seconds / self.speed)

    async def sleep(self, suite_seconds: float) -> None:
        await asyncio.sleep(self.real_seconds(suite_seconds))

    async def sleep_until(self, when: datetime) -> None:
        await self.sleep((when - self.now()).total_seconds())

    def env(self) -> dict[str, str]:
        """Variables that give a child process this same clock."""
        if self.start is None:
            return {}
        return {
            "TRADING_CLOCK_START": self.start.isoformat(),
            "TRADING_CLOCK_SPEED": repr(self.speed),
            "TRADING_CLOCK_EPOCH": repr(self.epoch),
        }


_clock: SuiteClock | None = None


def get_clock() -> SuiteClock:
    """The process-wide suite clock, built from the settings once."""
    global _clock
    if _clock is None:
        from services.base.config import get_settings

        settings = get_settings()
        _clock = SuiteClock(settings.clock_start, settings.clock_speed, settings.clock_epoch)
        if settings.clock_start is not None and settings.clock_epoch is None:
            # A process that starts the suite clock shares its anchor with the children it starts.
            os.environ["TRADING_CLOCK_EPOCH"] = repr(_clock.epoch)
    return _clock


def set_clock(clock: SuiteClock | None) -> None:
    """Replace the process clock (tests)."""
    global _clock
    _clock = clock


def now() -> datetime:
    return get_clock().now()


def isoformat(moment: datetime) -> str:
    """ISO-8601 with an offset, second precision kept to the microsecond."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: suite times always carry an offset")
    return moment.isoformat()
