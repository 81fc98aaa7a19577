"""scheduler's knobs (TRADING_SCHEDULER_*), read once at start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.base.knobs import knob


@dataclass(frozen=True, slots=True)
class SchedulerKnobs:
    service: ClassVar[str] = "scheduler"

    defaults: bool = knob(True, doc="add the default tasks at start (false: only the stored ones)")
    backup_keep: int = knob(7, low=1, high=365, doc="backups kept by backup_databases")
