"""scheduler's knobs (TRADING_SCHEDULER_*), read once at start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.base.backups import BackupKnobs
from services.base.knobs import knob


@dataclass(frozen=True, slots=True)
class SchedulerKnobs(BackupKnobs):
    """`backup_keep` comes from BackupKnobs: `service_manager.py backup` reads the same knob."""

    service: ClassVar[str] = "scheduler"

    defaults: bool = knob(True, doc="add the default tasks at start (false: only the stored ones)")
