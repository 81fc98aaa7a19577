"""Drift watch: live accuracy of the served ensemble against the model set's validation. Pure.

Over the last N resolved days (each day's latest ensemble vote of the set in service), the live
accuracy is compared with the validation accuracy the set's models scored walk-forward (the mean
over the symbol's models: the ensemble blends them). With the validation accuracy p and n live
days, chance alone moves the live figure by sqrt(p(1-p)/n); more than two of those below p is
drift, and ml-model warns. Fewer than MIN_DAYS resolved days say nothing yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_DAYS = 5


@dataclass(frozen=True, slots=True)
class Drift:
    symbol: str
    days: int
    live_accuracy: float | None
    validation_accuracy: float | None
    se: float | None
    drifting: bool

    def as_dict(self) -> dict:
        return {
            "days": self.days,
            "live_accuracy": self.live_accuracy,
            "validation_accuracy": self.validation_accuracy,
            "se": self.se,
            "drifting": self.drifting,
        }

    def warning(self) -> str:
        return (
            f"{self.symbol}: live accuracy {self.live_accuracy:.2f} over the last {self.days} resolved days is "
            f"more than two standard errors ({self.se:.3f}) below the model set's validation "
            f"{self.validation_accuracy:.2f}: drift; retrain or roll back"
        )


def drift(symbol: str, hits: Sequence[bool], validation: Sequence[float | None]) -> Drift:
    """`hits`: whether each resolved day's ensemble direction was right; `validation`: the
    symbol's models' walk-forward accuracies."""
    known = [v for v in validation if v is not None]
    expected = sum(known) / len(known) if known else None
    n = len(hits)
    live = sum(hits) / n if n else None
    if expected is None or live is None or n < MIN_DAYS:
        return Drift(symbol, n, None if live is None else round(live, 4), expected, None, False)
    se = math.sqrt(max(expected * (1 - expected), 1e-9) / n)
    return Drift(symbol, n, round(live, 4), round(expected, 4), round(se, 4), live < expected - 2 * se)
