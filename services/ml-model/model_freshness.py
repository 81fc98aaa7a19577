"""How old the model set in service is, against TRADING_ML_MODEL_MAX_AGE_DAYS. Pure.

The age counts from the set's `generated_at` (the suite clock when it was trained) to the suite
clock's now, so a replay or a moved clock ages a set as the real calendar would. Older than the
maximum: ml-model is `degraded` with a warning naming the age. Older than twice the maximum: the
ensemble's votes carry no weight (the prediction says so in `missing`) until a fresh set is
promoted. A set trained "after" now (a clock moved back) has age 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class SetAge:
    model_set: str | None
    days: float | None  # None: the manifest does not say when it was trained
    max_age_days: float

    @property
    def stale(self) -> bool:
        return self.days is not None and self.days > self.max_age_days

    @property
    def expired(self) -> bool:
        return self.days is not None and self.days > 2 * self.max_age_days

    def warning(self) -> str:
        name = self.model_set or "the models"
        if self.expired:
            return (
                f"model set {name} is {self.days:g} days old, over twice TRADING_ML_MODEL_MAX_AGE_DAYS="
                f"{self.max_age_days:g}: its votes carry no weight until a fresh set is promoted"
            )
        return (
            f"model set {name} is {self.days:g} days old, over TRADING_ML_MODEL_MAX_AGE_DAYS="
            f"{self.max_age_days:g}: retrain (the model_retrain task, or train_models.py)"
        )

    def as_dict(self) -> dict:
        return {"model_set": self.model_set, "age_days": self.days, "max_age_days": self.max_age_days}


def set_age(model_set: str | None, generated_at: object, now: datetime, max_age_days: float) -> SetAge:
    try:
        trained = datetime.fromisoformat(str(generated_at))
    except ValueError:
        return SetAge(model_set, None, max_age_days)
    if trained.tzinfo is None:
        return SetAge(model_set, None, max_age_days)
    days = max(0.0, (now - trained).total_seconds() / 86400)
    return SetAge(model_set, round(days, 1), max_age_days)
