"""Fitted models as plain arrays that the serving process evaluates in pure Python.

Why: importing scikit-learn pulls in scipy and pandas (~130 MB of PSS); numpy alone is ~16 MB.
The long-running ml-model service imports none of them. Each fitted estimator is converted once,
by a short-lived child process (model_converter.py, which does import scikit-learn), into an
"inference form": a JSON document cached next to the models as `.inference/<sha256>.json`, where
the SHA-256 is the model file's (the manifest's). The training script writes these forms too, so
a service normally finds them ready.

The evaluators reproduce scikit-learn's P(up) (class 1's column of predict_proba, or the mapped
decision function) to the last few bits; tests compare them on many inputs to 1e-9:

- linear (StandardScaler, then LogisticRegression or LinearSVC): z = (x - mean) / scale,
  d = z·coef + intercept, P(up) = 1 / (1 + e^-d): predict_proba for logistic regression, the
  documented decision-function mapping for the SVM (model_voting.decision_to_probability);
- forest (RandomForestClassifier): each tree sends a row left while x[feature] <= threshold,
  with x first rounded to float32 because scikit-learn trees compare float32 inputs; a leaf
  gives its class-1 fraction, and P(up) is the mean over trees, summed in tree order;
- boosted (binary HistGradientBoostingClassifier): the same walk on float64 inputs; raw score =
  baseline + the leaf values (which already include the learning rate), P(up) = 1 / (1 + e^-raw).

Inputs are validated finite before they get here (services.domain.features), so the trees'
missing-value branches are never taken and are not stored.

A cached form is used only when its bytes hash to the SHA-256 recorded for it (the manifest
entry's `inference_sha256`, written by training; else the `<sha256>.json.sha256` sidecar written
beside the form by whoever cached it, for sets trained before forms were hashed), never on the
strength of its file name, and only when its format version and recorded source SHA-256 match
what the service expects; it is JSON, so reading one never runs code. Forms are checked structurally on
load (array lengths, indices in range, children after their parent) so a corrupt file cannot
send a tree walk out of bounds or round in a loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.base.model_sets import INFERENCE_DIR, make_dir, write_file
from services.domain.model_voting import decision_to_probability

FORM_VERSION = 1
SIDECAR_SUFFIX = ".sha256"  # <sha256>.json.sha256: the SHA-256 of the form's bytes as written
LEAF = -1  # left/right child index of a leaf


class InferenceFormError(ValueError):
    """A form that is malformed, stale (another source SHA-256 or format) or for other features."""


@dataclass(frozen=True, slots=True)
class Tree:
    """One binary decision tree in flat arrays; node 0 is the root, leaves have left == LEAF."""

    left: array
    right: array
    feature: array
    threshold: array
    value: array

    def leaf_value(self, row: Sequence[float]) -> float:
        left, right, feature, threshold = self.left, self.right, self.feature, self.threshold
        node = 0
        while (child := left[node]) != LEAF:
            node = child if row[feature[node]] <= threshold[node] else right[node]
        return self.value[node]


@dataclass(frozen=True, slots=True)
class LinearScorer:
    mean: array
    scale: array
    coef: array
    intercept: float

    def __call__(self, row: Sequence[float]) -> float:
        decision = 0.0
        for x, mean, scale, coef in zip(row, self.mean, self.scale, self.coef, strict=True):
            decision += (x - mean) / scale * coef
        return decision_to_probability(decision + self.intercept)


@dataclass(frozen=True, slots=True)
class ForestScorer:
    trees: tuple[Tree, ...]

    def __call__(self, row: Sequence[float]) -> float:
        row32 = [round_to_float32(x) for x in row]
        total = 0.0
        for tree in self.trees:
            total += tree.leaf_value(row32)
        return total / len(self.trees)


@dataclass(frozen=True, slots=True)
class BoostedScorer:
    baseline: float
    trees: tuple[Tree, ...]

    def __call__(self, row: Sequence[float]) -> float:
        raw = 0.0 + self.baseline
        for tree in self.trees:
            raw += tree.leaf_value(row)
        return decision_to_probability(raw)


@dataclass(frozen=True, slots=True)
class InferenceModel:
    """A converted model: its provenance, how its P(up) is defined, and the scorer itself."""

    source_sha256: str
    kind: str
    estimator: str
    probability_source: str
    n_features: int
    native_importance: dict[str, Any] | None
    scorer: LinearScorer | ForestScorer | BoostedScorer

    def probability_up(self, row: Sequence[float]) -> float:
        """P(up) for one row of features in the training order."""
        if len(row) != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {len(row)}")
        if not all(math.isfinite(x) for x in row):
            raise ValueError("features must be finite")  # the tree walks assume it (see above)
        return self.scorer(row)


def from_form(form: dict[str, Any], source_sha256: str, n_features: int) -> InferenceModel:
    """Build the evaluator for `form`, or raise InferenceFormError saying what is wrong."""
    if not isinstance(form, dict) or form.get("format") != FORM_VERSION:
        raise InferenceFormError(f"not a format-{FORM_VERSION} inference form")
    if form.get("source_sha256") != source_sha256:
        raise InferenceFormError(
            f"form was made from {str(form.get('source_sha256'))[:16]}…, not {source_sha256[:16]}…"
        )
    if form.get("n_features") != n_features:
        raise InferenceFormError(f"form has {form.get('n_features')} features, expected {n_features}")
    try:
        scorer = _SCORER_BUILDERS[form["kind"]](form, n_features)
        return InferenceModel(
            source_sha256=source_sha256,
            kind=form["kind"],
            estimator=str(form["estimator"]),
            probability_source=str(form["probability_source"]),
            n_features=n_features,
            native_importance=_native_importance(form.get("native_importance"), n_features),
            scorer=scorer,
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InferenceFormError(f"malformed {form.get('kind')!r} form: {exc!r}") from None


def cache_path(models_dir: Path, source_sha256: str) -> Path:
    return models_dir / INFERENCE_DIR / f"{source_sha256}.json"


def read_cached(
    models_dir: Path, source_sha256: str, n_features: int, form_sha256: str | None = None
) -> InferenceModel | None:
    """The cached form for a model file, or None when there is none; InferenceFormError if unusable.

    Its bytes must hash to `form_sha256` (the manifest's) when given, else to its sidecar's."""
    path = cache_path(models_dir, source_sha256)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InferenceFormError(f"unreadable: {exc}") from None
    expected, where = form_sha256, "the manifest's"
    if expected is None:
        where = "its sidecar's"
        try:
            expected = path.with_name(path.name + SIDECAR_SUFFIX).read_text(encoding="utf-8").strip()
        except OSError:
            raise InferenceFormError(
                f"{path.name} has no recorded SHA-256 (none in the manifest, no sidecar): not trusted"
            ) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise InferenceFormError(
            f"{path.name} hashes to {actual[:16]}…, not {where} {expected[:16]}… (changed or tampered with)"
        )
    try:
        form = json.loads(data)
    except ValueError as exc:
        raise InferenceFormError(f"not JSON: {exc}") from None
    return from_form(form, source_sha256, n_features)


def write_cached(models_dir: Path, form: dict[str, Any]) -> tuple[Path, str]:
    """Write a form atomically (temp file + rename: a reader never sees half of one), and its
    sidecar holding the SHA-256 of the bytes written; (the form's path, that SHA-256)."""
    path = cache_path(models_dir, form["source_sha256"])
    make_dir(path.parent)
    data = json.dumps(form, separators=(",", ":")).encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    for target, content in ((path.with_name(path.name + SIDECAR_SUFFIX), digest.encode()), (path, data)):
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        write_file(temp, content)
        os.replace(temp, target)
    return path, digest


def prune_cache(models_dir: Path, keep_sha256: set[str]) -> list[Path]:
    """Delete cached forms of model files no longer in the manifest; returns what was removed."""
    removed = []
    for path in (models_dir / INFERENCE_DIR).glob("*.json"):
        if path.stem not in keep_sha256:
            path.unlink(missing_ok=True)
            path.with_name(path.name + SIDECAR_SUFFIX).unlink(missing_ok=True)
            removed.append(path)
    return removed


def _linear(form: dict[str, Any], n_features: int) -> LinearScorer:
    mean, scale, coef = (_floats(form[k], n_features, k) for k in ("mean", "scale", "coef"))
    if any(s == 0 for s in scale):
        raise ValueError("scale has a zero")
    return LinearScorer(mean, scale, coef, _finite(form["intercept"], "intercept"))


def _forest(form: dict[str, Any], n_features: int) -> ForestScorer:
    trees = tuple(_tree(t, n_features) for t in form["trees"])
    if not trees:
        raise ValueError("a forest needs at least one tree")
    return ForestScorer(trees)


def _boosted(form: dict[str, Any], n_features: int) -> BoostedScorer:
    trees = tuple(_tree(t, n_features) for t in form["trees"])
    return BoostedScorer(_finite(form["baseline"], "baseline"), trees)


_SCORER_BUILDERS: dict[str, Callable[[dict[str, Any], int], LinearScorer | ForestScorer | BoostedScorer]] = {
    "linear": _linear,
    "forest": _forest,
    "boosted": _boosted,
}


def _tree(tree: dict[str, Any], n_features: int) -> Tree:
    left, right, feature = (array("l", tree[k]) for k in ("left", "right", "feature"))
    threshold, value = array("d", tree["threshold"]), array("d", tree["value"])
    n = len(left)
    if n == 0 or any(len(a) != n for a in (right, feature, threshold, value)):
        raise ValueError("tree arrays are empty or of different lengths")
    for node in range(n):
        if left[node] == LEAF:
            if right[node] != LEAF or not math.isfinite(value[node]):
                raise ValueError(f"leaf {node} has a right child or a non-finite value")
        # Children strictly after their parent: every walk moves forward, so it ends at a leaf.
        elif not (node < left[node] < n and node < right[node] < n):
            raise ValueError(f"node {node} has children out of order or out of range")
        elif not 0 <= feature[node] < n_features or math.isnan(threshold[node]):
            raise ValueError(f"node {node} splits on feature {feature[node]} at {threshold[node]}")
    return Tree(left, right, feature, threshold, value)


def _native_importance(native: Any, n_features: int) -> dict[str, Any] | None:
    if native is None:
        return None
    return {"method": str(native["method"]), "values": list(_floats(native["values"], n_features, "values"))}


def _floats(values: Any, n: int, name: str) -> array:
    result = array("d", values)
    if len(result) != n or not all(math.isfinite(v) for v in result):
        raise ValueError(f"{name} must be {n} finite numbers")
    return result


def _finite(value: Any, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} is not finite")
    return number


def round_to_float32(value: float) -> float:
    """Round to the nearest float32, as numpy's astype(float32) does (inf beyond its range)."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)
