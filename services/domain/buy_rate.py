"""Share of BUY signals over the most recent predictions, and when it crosses the alert threshold.

Pure: the state is an immutable value; ``record`` returns the next state and, exactly on the
prediction that takes the rate above the threshold (or back to or below it), a ``Crossing``.
While the rate stays above, nothing more fires, so a consumer gets one alert per episode.

The rate only counts once the window holds ``min_samples`` predictions: two BUYs out of two is
100% but says little. When the window first becomes full enough with the rate already above the
threshold, that is a crossing too (from "not alerting" to "alerting").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

CrossingDirection = Literal["above", "below"]


@dataclass(frozen=True, slots=True)
class BuyRateConfig:
    window_size: int = 50
    threshold: float = 0.70
    min_samples: int = 10

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {self.window_size!r}")
        if not 1 <= self.min_samples <= self.window_size:
            raise ValueError(f"min_samples must be in 1..window_size, got {self.min_samples!r}")
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold!r}")


@dataclass(frozen=True, slots=True)
class BuyRateState:
    signals: tuple[str, ...] = ()
    alerting: bool = False


@dataclass(frozen=True, slots=True)
class Crossing:
    direction: CrossingDirection
    rate: float
    threshold: float
    window: int

    def as_dict(self) -> dict:
        return {
            "direction": self.direction,
            "rate": self.rate,
            "threshold": self.threshold,
            "window": self.window,
        }


def buy_rate(signals: Iterable[str]) -> float | None:
    """Share of "BUY" among ``signals``; None when there are none (a rate of nothing is not 0)."""
    items = list(signals)
    if not items:
        return None
    return sum(1 for s in items if s == "BUY") / len(items)


def current_rate(state: BuyRateState, config: BuyRateConfig) -> float | None:
    """The rate, or None while the window has fewer than ``min_samples`` predictions."""
    if len(state.signals) < config.min_samples:
        return None
    return buy_rate(state.signals)


def record(state: BuyRateState, signal: str, config: BuyRateConfig) -> tuple[BuyRateState, Crossing | None]:
    """Add one prediction's signal; return the new state and the crossing it caused, if any."""
    signals = (*state.signals, signal)[-config.window_size :]
    rate = current_rate(BuyRateState(signals), config)
    above = rate is not None and rate > config.threshold
    crossing = None
    if above != state.alerting and rate is not None:
        direction: CrossingDirection = "above" if above else "below"
        crossing = Crossing(direction, rate, config.threshold, len(signals))
    return BuyRateState(signals, above), crossing


def replay(signals: Iterable[str], config: BuyRateConfig) -> BuyRateState:
    """Rebuild the state from stored history (oldest first) without reporting old crossings."""
    state = BuyRateState()
    for signal in signals:
        state, _ = record(state, signal, config)
    return state
