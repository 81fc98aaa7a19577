"""ml-model's knobs (TRADING_ML_MODEL_*), read once at start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from services.base.knobs import knob

RETRAIN_SOURCES = ("yfinance", "csv", "synthetic")


def _retrain_source(text: str) -> str:
    if text not in RETRAIN_SOURCES:
        raise ValueError(f"must be one of {', '.join(RETRAIN_SOURCES)}")
    return text


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
    max_age_days: float = knob(
        14.0,
        low=0.5,
        high=3650.0,
        doc="a model set older than this makes ml-model degraded; past twice this its votes carry no weight",
    )
    retrain_source: str = knob(
        "yfinance",
        parse=_retrain_source,
        doc="history the retrain task trains on: yfinance (falls back), csv, synthetic",
    )
    retrain_timeout_s: float = knob(
        1800.0, low=10.0, high=21600.0, doc="one retraining run (a child process)"
    )
    retrain_keep: int = knob(
        10, low=2, high=1000, doc="model sets kept after a retrain (never the current one)"
    )
    drift_days: int = knob(
        20,
        low=5,
        high=500,
        doc="resolved days of live accuracy compared with the set's validation (drift watch)",
    )
