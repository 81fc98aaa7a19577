"""ml-model's knobs (TRADING_ML_MODEL_*), read once at start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.base.knobs import knob


@dataclass(frozen=True, slots=True)
class MlModelKnobs:
    service: ClassVar[str] = "ml-model"

    lookup_timeout_s: float = knob(5.0, low=0.1, high=120.0, doc="market-data call that resolves outcomes")
    resolve_interval_s: float = knob(
        30.0, low=0.0, high=86400.0, doc="outcomes of a symbol are looked up at most this often"
    )
    convert_timeout_s: float = knob(120.0, low=1.0, high=3600.0, doc="converting a model in a subprocess")
    watch_s: float = knob(
        2.0, low=0.05, high=3600.0, doc="seconds between checks of models/current for a new model set"
    )
