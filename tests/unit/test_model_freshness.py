"""Set age (expiry) and the drift watch: pure rules of ml-model, by table; and what prediction
makes of an expired set's ensemble."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.ml_model.model_drift import MIN_DAYS, drift
from services.ml_model.model_freshness import set_age

TRAINED = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("days", "stale", "expired"),
    [
        (0, False, False),
        (-3, False, False),  # a clock moved back: age 0, not negative
        (14, False, False),  # the maximum itself is still fresh
        (14.2, True, False),
        (28, True, False),
        (28.2, True, True),
    ],
)
def test_age_against_the_maximum(days, stale, expired):
    age = set_age("20261101T060000Z", TRAINED.isoformat(), TRAINED + timedelta(days=days), 14)
    assert (age.stale, age.expired) == (stale, expired)
    assert age.days == max(0.0, days)
    if stale:
        assert (
            f"{age.days:g} days old" in age.warning() and "TRADING_ML_MODEL_MAX_AGE_DAYS=14" in age.warning()
        )
        assert ("no weight" in age.warning()) is expired


def test_a_manifest_without_a_time_has_no_age():
    for generated_at in (None, "yesterday", "2026-11-01T06:00:00"):  # naive: no instant
        age = set_age(None, generated_at, TRAINED, 14)
        assert age.days is None and not age.stale and not age.expired


@pytest.mark.parametrize(
    ("hits", "validation", "drifting"),
    [
        ([False] * 6, [0.52, 0.54], True),  # 0 of 6 against 0.53: far more than two SEs (0.41) below
        ([True, False] * 3, [0.52, 0.54], False),  # 0.50: well within noise
        ([False] * (MIN_DAYS - 1), [0.55], False),  # too few days to say anything
        ([False] * 20, [None], False),  # no validation figure to compare with
        ([True] * 4 + [False] * 16, [0.55], True),  # 0.20 over 20 days: SE 0.111, bound 0.328
        ([True] * 8 + [False] * 12, [0.55], False),  # 0.40: above the bound
    ],
)
def test_drift(hits, validation, drifting):
    result = drift("CBA.AX", hits, validation)
    assert result.drifting is drifting
    if drifting:
        assert "more than two standard errors" in result.warning()


def test_prediction_treats_an_expired_ensemble_as_missing():
    from services.prediction.prediction_service import Gathered, read_inputs

    expired = {"model_set": "20261101T060000Z", "age_days": 30.0, "max_age_days": 14.0}
    ensemble = {"direction": "up", "probability": 0.5, "confidence": 0.0, "members": [], "expired": expired}
    inputs, missing = read_inputs(Gathered(market={}, ensemble=ensemble))
    assert inputs.ensemble is None
    assert "20261101T060000Z expired: 30.0 days old" in missing["model"]
