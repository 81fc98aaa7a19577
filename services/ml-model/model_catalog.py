"""The scikit-learn models the suite trains, and how scikit-learn turns any of them into P(up).

Imported by the training script, the model converter (a short-lived child of the ml-model
service) and tests: the only places that import scikit-learn. The long-running service never
imports this module; it evaluates the converted forms (model_inference), which reproduce
`probability_up` below exactly, and shares the pure voting helpers in model_voting.

Daily bank returns are close to a random walk: the signal, if any, is weak. So every model is
strongly regularised (shallow trees, many samples per leaf, small C), and n_estimators stays
modest so training the Big 4 takes seconds on two cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from services.domain.model_voting import decision_to_probability

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


def probability_up(model: Any, features: np.ndarray) -> np.ndarray:
    """P(up) for each row: predict_proba's column for class 1, else the mapped decision function."""
    if hasattr(model, "predict_proba"):
        classes = list(model.classes_)
        return model.predict_proba(features)[:, classes.index(1)]
    decisions = np.asarray(model.decision_function(features), dtype=float)
    return np.array([decision_to_probability(float(d)) for d in decisions])
