"""Unpickle a hash-checked scikit-learn model file and convert it to its inference form.

    python services/ml-model/model_converter.py FILE SHA256 [FILE SHA256 ...]

The ml-model service runs this as a short-lived child process so that scikit-learn (with scipy,
pandas, numpy and joblib) is imported here, never in the long-running service; the service
evaluates the forms in pure Python (model_inference, which documents the maths). For each pair
the file's bytes are read once and their SHA-256 checked against SHA256 (the manifest's, already
checked once by the service) BEFORE unpickling (pickles run code: see model_store); the same
bytes are then unpickled and converted. The output on stdout is one JSON line per pair, in
order, so the service can parse one model at a time rather than all of them at once:

    {"sha256": ..., "form": {...}}   or   {"sha256": ..., "reason": ..., "error": ...}

reason is "integrity_check_failed", "unsupported_model" or "unpickling_failed". Exit status 0
when every pair was processed (whatever the results), 2 on bad usage.

The training script uses `to_inference_form` on the models it has just fitted, so the forms are
normally cached before the service first starts.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from services.base.model_inference import FORM_VERSION, LEAF
from services.base.model_sets import write_file
from services.base.model_store import (
    ModelEntry,
    ModelIntegrityError,
    safe_model_path,
    sha256_bytes,
    verified_model_bytes,
)

DECISION_MAPPING = "decision_function mapped by the logistic 1/(1+e^-d)"


class UnsupportedModel(ValueError):
    """An estimator this converter cannot reproduce exactly: retrain with model_catalog's models."""


def load_verified_model(models_dir: Path, entry: ModelEntry) -> Any:
    """Unpickle the entry's file only if its bytes hash to the manifest's SHA-256."""
    return joblib.load(io.BytesIO(verified_model_bytes(models_dir, entry.file, entry.sha256)))


def dump_model(models_dir: Path, file_name: str, model: Any) -> str:
    """Write one model file and return the SHA-256 of exactly the bytes written."""
    path = safe_model_path(models_dir, file_name)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    data = buffer.getvalue()
    write_file(path, data)
    return sha256_bytes(data)


def to_inference_form(model: Any, source_sha256: str) -> dict[str, Any]:
    """The JSON-ready inference form of a fitted binary classifier (classes 0 and 1)."""
    scaler, estimator = _split_pipeline(model)
    if [int(c) for c in getattr(estimator, "classes_", [])] != [0, 1]:
        raise UnsupportedModel(f"expected classes [0, 1], got {getattr(estimator, 'classes_', None)}")
    if isinstance(estimator, LogisticRegression | LinearSVC):
        body = _linear_form(scaler, estimator)
    elif scaler is not None:
        raise UnsupportedModel(f"a scaler in front of {type(estimator).__name__} is not supported")
    elif isinstance(estimator, RandomForestClassifier):
        body = _forest_form(estimator)
    elif isinstance(estimator, HistGradientBoostingClassifier):
        body = _boosted_form(estimator)
    else:
        raise UnsupportedModel(f"no inference form for {type(estimator).__name__}")
    return {
        "format": FORM_VERSION,
        "source_sha256": source_sha256,
        "estimator": f"{type(estimator).__module__}.{type(estimator).__name__}",
        "sklearn_version": sklearn.__version__,
        "n_features": int(estimator.n_features_in_),
        "native_importance": _native_importance(estimator),
        **body,
    }


def _split_pipeline(model: Any) -> tuple[StandardScaler | None, Any]:
    if not isinstance(model, Pipeline):
        return None, model
    steps = [step for _, step in model.steps]
    if len(steps) == 2 and isinstance(steps[0], StandardScaler):
        return steps[0], steps[1]
    raise UnsupportedModel(f"only StandardScaler + estimator pipelines are supported, got {model.steps}")


def _linear_form(scaler: StandardScaler | None, estimator: Any) -> dict[str, Any]:
    n = estimator.n_features_in_
    # A scaler without centring or scaling leaves x as it is: subtracting 0.0 and dividing by
    # 1.0 are exact, so the evaluator needs no special case.
    mean = getattr(scaler, "mean_", None)
    scale = getattr(scaler, "scale_", None)
    return {
        "kind": "linear",
        "probability_source": "predict_proba" if hasattr(estimator, "predict_proba") else DECISION_MAPPING,
        "mean": np.zeros(n).tolist() if mean is None else mean.tolist(),
        "scale": np.ones(n).tolist() if scale is None else scale.tolist(),
        "coef": np.ravel(estimator.coef_).tolist(),
        "intercept": float(np.ravel(estimator.intercept_)[0]),
    }


def _forest_form(forest: RandomForestClassifier) -> dict[str, Any]:
    if forest.n_outputs_ != 1:
        raise UnsupportedModel("multi-output forests are not supported")
    trees = []
    for tree in (e.tree_ for e in forest.estimators_):
        # predict_proba normalises each leaf's class weights to sum to 1 (0 sums left as they are).
        weights = tree.value[:, 0, :]
        totals = weights.sum(axis=1)
        totals[totals == 0.0] = 1.0
        trees.append(
            _tree_arrays(
                tree.children_left, tree.children_right, tree.feature, tree.threshold, weights[:, 1] / totals
            )
        )
    return {"kind": "forest", "probability_source": "predict_proba", "input_dtype": "float32", "trees": trees}


def _boosted_form(model: HistGradientBoostingClassifier) -> dict[str, Any]:
    # Private attributes (_predictors, _baseline_prediction): the form records sklearn_version,
    # and the exactness tests fail loudly if a new release changes them.
    if model.n_trees_per_iteration_ != 1 or type(model._loss).__name__ != "HalfBinomialLoss":
        raise UnsupportedModel("only binary (log-loss) gradient boosting is supported")
    if model.is_categorical_ is not None and np.any(model.is_categorical_):
        raise UnsupportedModel("categorical features are not supported")
    trees = []
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        left = np.where(leaf, LEAF, nodes["left"].astype(np.int64))
        right = np.where(leaf, LEAF, nodes["right"].astype(np.int64))
        trees.append(_tree_arrays(left, right, nodes["feature_idx"], nodes["num_threshold"], nodes["value"]))
    return {
        "kind": "boosted",
        "probability_source": "predict_proba",
        "baseline": float(np.ravel(model._baseline_prediction)[0]),
        "trees": trees,
    }


def _tree_arrays(left, right, feature, threshold, value) -> dict[str, list]:
    is_leaf = np.asarray(left) == LEAF
    return {
        "left": np.asarray(left, dtype=np.int64).tolist(),
        "right": np.asarray(right, dtype=np.int64).tolist(),
        # Leaves carry placeholder split fields (sklearn: feature -2, threshold -2): store 0.
        "feature": np.where(is_leaf, 0, feature).astype(np.int64).tolist(),
        "threshold": np.where(is_leaf, 0.0, threshold).astype(float).tolist(),
        "value": np.where(is_leaf, value, 0.0).astype(float).tolist(),
    }


def _native_importance(estimator: Any) -> dict[str, Any] | None:
    """Trees: mean impurity decrease. Linear models behind a StandardScaler: |coefficient|, which
    is comparable across features because every feature was scaled to unit variance."""
    if isinstance(estimator, RandomForestClassifier):
        return {"method": "impurity decrease", "values": estimator.feature_importances_.tolist()}
    if hasattr(estimator, "coef_"):
        return {
            "method": "|coefficient| on standardised features",
            "values": np.abs(np.ravel(estimator.coef_)).tolist(),
        }
    return None  # HistGradientBoosting has no native importances


def convert_file(path: Path, sha256: str) -> dict[str, Any]:
    """One result entry: the form, or why there is none."""
    try:
        data = verified_model_bytes(path.parent, path.name, sha256)
    except ModelIntegrityError as exc:
        return {"sha256": sha256, "reason": "integrity_check_failed", "error": str(exc)}
    try:
        # Anything the unpickled code prints must not corrupt the JSON on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            model = joblib.load(io.BytesIO(data))
    except Exception as exc:  # a hash-matching file that still fails to load: report, go on
        return {"sha256": sha256, "reason": "unpickling_failed", "error": f"{path.name}: {exc!r}"}
    try:
        return {"sha256": sha256, "form": to_inference_form(model, sha256)}
    except UnsupportedModel as exc:
        return {"sha256": sha256, "reason": "unsupported_model", "error": f"{path.name}: {exc}"}


def main(argv: list[str]) -> int:
    if not argv or len(argv) % 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    for file, sha in zip(argv[::2], argv[1::2], strict=True):
        sys.stdout.write(json.dumps(convert_file(Path(file), sha), separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
