"""How P(up) becomes a direction, a confidence and an ensemble vote: pure, no numpy, no sklearn.

Shared by the training script (through model_catalog) and the ml-model service, which must not
import scikit-learn, scipy, pandas or numpy (see model_inference for why).
"""

from __future__ import annotations

import math


def decision_to_probability(decision: float) -> float:
    """Map a decision-function value to P(up) with the logistic function 1 / (1 + e^-d).

    For a linear SVM, d is the signed distance from the separating hyperplane in units of the
    margin: d = 0 is a coin flip (0.5), the margin d = ±1 maps to 0.73 / 0.27. This is a fixed,
    uncalibrated mapping (no Platt scaling); the Brier score in the manifest shows how far off
    it is, and the ensemble weights such a model by its ROC AUC, which the mapping cannot change.
    The same function is scikit-learn's link for logistic regression and binary gradient
    boosting (scipy's expit), so the light evaluators use it for those too.
    """
    if decision >= 0:
        return 1.0 / (1.0 + math.exp(-decision))
    z = math.exp(decision)  # the stable form for negative d: no overflow for large |d|
    return z / (1.0 + z)


def confidence_of(probability: float) -> float:
    """Distance from a coin flip, 0..1: |2p - 1| (0 at p=0.5, 1 at p=0 or 1)."""
    return abs(2.0 * probability - 1.0)


def ensemble_weights(validation_aucs: list[float | None]) -> tuple[list[float], str]:
    """Weights (summing to 1) from each member's walk-forward ROC AUC, and how they were chosen.

    A member's weight is its skill over a coin flip, max(AUC - 0.5, 0): a model that ranked no
    better than chance out of sample gets no say. If no member beat chance, every member gets
    the same weight (and the method says so) rather than the ensemble having no vote at all.
    """
    if not validation_aucs:
        raise ValueError("an ensemble needs at least one member")
    skill = [max((auc or 0.5) - 0.5, 0.0) for auc in validation_aucs]
    total = sum(skill)
    if total <= 0:
        equal = 1.0 / len(validation_aucs)
        return [equal] * len(
            validation_aucs
        ), "equal weights: no member beat chance (ROC AUC 0.5) in validation"
    return [s / total for s in skill], "validation skill: max(walk-forward ROC AUC - 0.5, 0), normalised"


def direction_of(probability: float) -> str:
    """'up' when P(up) > 0.5; exactly 0.5 is 'down', as a flat day is 'not up' in training."""
    return "up" if probability > 0.5 else "down"


def ensemble_vote(
    probabilities: list[float], validation_aucs: list[float | None], *, expired: bool = False
) -> tuple[float, list[float], str]:
    """(P(up), weights, weighting method) of an ensemble: its members' P(up) weighted by their
    validation skill (ensemble_weights), summed in member order. An expired set's votes carry no
    weight: 0.5, no direction worth acting on. The ml-model service and the in-process replay
    engine both vote through this, so they agree to the last bit."""
    weights, method = ensemble_weights(validation_aucs)
    probability = sum(w * p for w, p in zip(weights, probabilities, strict=True))
    if expired:
        return 0.5, [0.0] * len(probabilities), "expired: no weight"
    return probability, weights, method


def ensemble_reply_numbers(probability: float) -> tuple[str, float, float]:
    """(direction, probability, confidence) as the ensemble's reply states them (rounded to 6
    places: the prediction service decides on these, not on the unrounded P(up))."""
    return direction_of(probability), round(probability, 6), round(confidence_of(probability), 6)
