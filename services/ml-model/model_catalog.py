"""The scikit-learn models the suite trains, and how any of them turns into P(up).

Shared by the training script and the ml-model service (the only two places that import
scikit-learn), so validation metrics and served probabilities come from the same code.

Daily bank returns are close to a random walk: the signal, if any, is weak. So every model is
strongly regularised (shallow trees, many samples per leaf, small C), and n_estimators stays
modest so training the Big 4 takes seconds on two cores.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

MODEL_NAMES = ("logistic_regression", "random_forest", "hist_gradient_boosting", "linear_svm")


def make_model(name: str, seed: int = 0) -> Any:
    """A fresh, unfitted estimator for `name` (one of MODEL_NAMES)."""
    if name == "logistic_regression":
        return Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(C=0.05, max_iter=2000))])
    if name == "random_forest":
        return RandomForestClassifier(
            n_estimators=150,
            max_depth=5,
            min_samples_leaf=25,
            max_features="sqrt",
            n_jobs=1,
            random_state=seed,
        )
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(
            max_iter=120,
            learning_rate=0.03,
            max_depth=3,
            min_samples_leaf=40,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=seed,
        )
    if name == "linear_svm":
        # No predict_proba: exercises the decision-function path below (documented mapping).
        return Pipeline([("scale", StandardScaler()), ("model", LinearSVC(C=0.01, max_iter=5000))])
    raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")


def decision_to_probability(decision: float) -> float:
    """Map a decision-function value to P(up) with the logistic function 1 / (1 + e^-d).

    For a linear SVM, d is the signed distance from the separating hyperplane in units of the
    margin: d = 0 is a coin flip (0.5), the margin d = ±1 maps to 0.73 / 0.27. This is a fixed,
    uncalibrated mapping (no Platt scaling); the Brier score in the manifest shows how far off
    it is, and the ensemble weights such a model by its ROC AUC, which the mapping cannot change.
    """
    if decision >= 0:
        return 1.0 / (1.0 + math.exp(-decision))
    z = math.exp(decision)  # the stable form for negative d: no overflow for large |d|
    return z / (1.0 + z)


def probability_up(model: Any, features: np.ndarray) -> np.ndarray:
    """P(up) for each row: predict_proba's column for class 1, else the mapped decision function."""
    if hasattr(model, "predict_proba"):
        classes = list(model.classes_)
        return model.predict_proba(features)[:, classes.index(1)]
    decisions = np.asarray(model.decision_function(features), dtype=float)
    return np.array([decision_to_probability(float(d)) for d in decisions])


def confidence_of(probability: float) -> float:
    """Distance from a coin flip, 0..1: |2p - 1| (0 at p=0.5, 1 at p=0 or 1)."""
    return abs(2.0 * probability - 1.0)


def native_importances(model: Any, feature_names: tuple[str, ...]) -> dict[str, float] | None:
    """Importances the model itself carries, named by feature; None when it has none.

    Trees: mean impurity decrease. Linear models behind a StandardScaler: |coefficient|, which
    is comparable across features because every feature was scaled to unit variance.
    """
    estimator = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if hasattr(estimator, "feature_importances_"):
        values = estimator.feature_importances_
    elif hasattr(estimator, "coef_"):
        values = np.abs(np.ravel(estimator.coef_))
    else:
        return None
    return {name: float(v) for name, v in zip(feature_names, values, strict=True)}


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
