"""The suite clock: every service reads time from here, never from datetime.now().

With `TRADING_CLOCK_START` unset it is the wall clock. With it set, suite time starts at that
instant and runs `TRADING_CLOCK_SPEED` suite seconds per real second. All processes of one suite
must agree on "now", so the anchor is a shared wall-clock epoch (`TRADING_CLOCK_EPOCH`, exported
by the supervisor to its children), not each process's own start time.

A replay moves the suite clock by jumps: with `TRADING_CLOCK_FILE` set, every process re-reads
(start, speed, epoch) from that small JSON file whenever it changes (one stat per reading), so a
driver can set the whole suite to "10:15 on the next trading day" at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

SYDNEY = ZoneInfo("Australia/Sydney")


class SuiteClock:
    def __init__(
        self,
        start: datetime | None = None,
        speed: float = 1.0,
        epoch: float | None = None,
        control_file: Path | None = None,
    ):
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.start = start.astimezone(UTC) if start is not None else None
        self.speed = speed if start is not None else 1.0
        self.epoch = epoch if epoch is not None else time.time()
        self.control_file = control_file
        self._control_key: tuple[int, int] | None = None
        if control_file is not None:
            self._reload()

    @property
    def simulated(self) -> bool:
        return self.start is not None

    def _reload(self) -> None:
        """Pick up a jump written to the control file (cheap when nothing changed)."""
        if self.control_file is None:
            return
        try:
            stat = os.stat(self.control_file)
        except FileNotFoundError:
            return
        key = (stat.st_ino, stat.st_mtime_ns)
        if key == self._control_key:
            return
        try:
            state = json.loads(Path(self.control_file).read_text())
        except (OSError, ValueError):
            return  # keep the last good reading; the writer replaces the file atomically
        self._control_key = key
        self.start = datetime.fromisoformat(state["start"]).astimezone(UTC)
        self.speed = float(state["speed"])
        self.epoch = float(state["epoch"])

    def time(self) -> float:
        """Suite time as Unix seconds."""
        if self.control_file is not None:
            self._reload()
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
        """Sleep until suite time `when`; with a control file, in short steps so a jump counts."""
        while (remaining := (when - self.now()).total_seconds()) > 0:
            real = self.real_seconds(remaining)
            await asyncio.sleep(min(real, 0.25) if self.control_file is not None else real)
            if self.control_file is None:
                return

    def env(self) -> dict[str, str]:
        """Variables that give a child process this same clock."""
        if self.control_file is not None:
            return {"TRADING_CLOCK_FILE": str(self.control_file)}
        if self.start is None:
            return {}
        return {
            "TRADING_CLOCK_START": self.start.isoformat(),
            "TRADING_CLOCK_SPEED": repr(self.speed),
            "TRADING_CLOCK_EPOCH": repr(self.epoch),
        }


def write_clock_file(path: Path, start: datetime, speed: float = 1.0) -> None:
    """Set the suite clock of every process reading `path` to `start`, running at `speed`."""
    if start.tzinfo is None:
        raise ValueError("the clock needs an aware datetime")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"start": start.isoformat(), "speed": speed, "epoch": time.time()}))
    os.replace(tmp, path)  # atomic: readers see the old or the new state, never half of one


_clock: SuiteClock | None = None


def get_clock() -> SuiteClock:
    """The process-wide suite clock, built from the settings once."""
    global _clock
    if _clock is None:
        from services.base.config import get_settings

        settings = get_settings()
        control = settings.environ.get("TRADING_CLOCK_FILE")
        _clock = SuiteClock(
            settings.clock_start,
            settings.clock_speed,
            settings.clock_epoch,
            Path(control) if control else None,
        )
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
