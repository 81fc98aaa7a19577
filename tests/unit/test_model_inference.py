"""Inference forms: the pure-Python evaluators equal scikit-learn on every model the suite trains,
and a malformed, stale or foreign form is refused before it can serve a number."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.base.model_inference import (
    INFERENCE_DIR,
    SIDECAR_SUFFIX,
    InferenceFormError,
    cache_path,
    from_form,
    prune_cache,
    read_cached,
    round_to_float32,
    write_cached,
)
from services.ml_model.model_catalog import MODEL_NAMES, make_model, probability_up
from services.ml_model.model_converter import to_inference_form

N_FEATURES = 16
SHA = "ab" * 32
OTHER_SHA = "cd" * 32


@pytest.fixture(scope="module")
def fitted() -> dict:
    """Each catalog model fitted on a small synthetic set with a real (noisy) signal in it."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(700, N_FEATURES))
    y = ((0.8 * x[:, 0] - 0.5 * x[:, 3] + 0.3 * x[:, 7] * x[:, 2] + rng.normal(size=700)) > 0).astype(int)
    return {name: make_model(name, seed=3).fit(x, y) for name in MODEL_NAMES}


def _form(model, sha: str = SHA) -> dict:
    # Through JSON text, exactly as the cache and the converter's stdout carry it.
    return json.loads(json.dumps(to_inference_form(model, sha)))


def _threshold_rows(form: dict, rng: np.random.Generator) -> np.ndarray:
    """Rows that put one feature exactly on, or a hair either side of, a split threshold: the
    only places where `<=` versus `<`, or float64 versus float32 comparison, change a path."""
    rows = []
    for tree in form.get("trees", [])[:20]:
        for node, left in enumerate(tree["left"]):
            if left == -1:
                continue
            threshold = tree["threshold"][node]
            for value in (threshold, np.nextafter(threshold, np.inf), threshold * (1 + 1e-9) + 1e-12):
                row = rng.normal(size=N_FEATURES)
                row[tree["feature"][node]] = value
                rows.append(row)
    return np.array(rows).reshape(-1, N_FEATURES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_light_evaluator_equals_sklearn(fitted: dict, name: str) -> None:
    model = fitted[name]
    form = _form(model)
    light = from_form(form, SHA, N_FEATURES)
    rng = np.random.default_rng(11)
    rows = np.vstack(
        [
            rng.normal(size=(1500, N_FEATURES)),
            rng.normal(scale=25.0, size=(200, N_FEATURES)),  # far outside the training range
            np.zeros((1, N_FEATURES)),
            _threshold_rows(form, rng),
        ]
    )
    expected = probability_up(model, rows)
    got = np.array([light.probability_up(row.tolist()) for row in rows])
    assert np.max(np.abs(got - expected)) < 1e-9
    assert light.kind == {"random_forest": "forest", "hist_gradient_boosting": "boosted"}.get(name, "linear")


def test_forest_rows_on_thresholds_need_the_float32_rounding(fitted: dict) -> None:
    # Control for the test above: comparing float64 inputs (no rounding) sends some of the
    # threshold rows down other branches, so those rows really do test the rounding.
    model = fitted["random_forest"]
    form = _form(model)
    light = from_form(form, SHA, N_FEATURES)
    rows = _threshold_rows(form, np.random.default_rng(5))
    expected = probability_up(model, rows)
    trees = light.scorer.trees
    unrounded = np.array([sum(t.leaf_value(row.tolist()) for t in trees) / len(trees) for row in rows])
    assert np.any(np.abs(unrounded - expected) > 1e-9)


def test_probability_sources_and_native_importances(fitted: dict) -> None:
    forms = {name: from_form(_form(m), SHA, N_FEATURES) for name, m in fitted.items()}
    assert forms["logistic_regression"].probability_source == "predict_proba"
    assert forms["linear_svm"].probability_source.startswith("decision_function")
    assert forms["hist_gradient_boosting"].native_importance is None  # sklearn's HGB has none
    forest = forms["random_forest"].native_importance
    assert forest["method"] == "impurity decrease"
    assert forest["values"] == pytest.approx(fitted["random_forest"].feature_importances_.tolist())
    linear = forms["logistic_regression"].native_importance
    assert linear["values"] == pytest.approx(np.abs(fitted["logistic_regression"][-1].coef_[0]).tolist())


def _break(form: dict, path: tuple, value) -> dict:
    broken = copy.deepcopy(form)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("model_name", "path", "value", "message"),
    [
        ("random_forest", ("format",), 99, "format-1"),
        ("random_forest", ("source_sha256",), OTHER_SHA, "was made from"),
        ("random_forest", ("n_features",), 15, "15 features"),
        ("random_forest", ("kind",), "svm", "malformed"),
        # A child pointing back at its parent would make the walk loop for ever.
        ("random_forest", ("trees", 0, "left", 1), 0, "out of order"),
        ("random_forest", ("trees", 0, "right", 0), 10_000, "out of order"),
        ("hist_gradient_boosting", ("trees", 0, "feature", 0), 16, "splits on feature 16"),
        ("hist_gradient_boosting", ("trees", 0, "threshold", 0), math.nan, "splits on feature"),
        ("hist_gradient_boosting", ("trees", 0, "value"), [0.0], "different lengths"),
        ("hist_gradient_boosting", ("baseline",), math.inf, "not finite"),
        ("random_forest", ("trees",), [], "at least one tree"),
        ("logistic_regression", ("scale", 3), 0.0, "zero"),
        ("logistic_regression", ("coef",), [1.0] * 15, "16 finite numbers"),
        ("linear_svm", ("intercept",), "x", "malformed"),
        ("linear_svm", ("native_importance", "values", 0), math.nan, "16 finite numbers"),
    ],
)
def test_malformed_or_foreign_forms_are_refused(fitted, model_name, path, value, message) -> None:
    broken = _break(_form(fitted[model_name]), path, value)
    with pytest.raises(InferenceFormError, match=message):
        from_form(broken, SHA, N_FEATURES)


def test_a_leaf_must_be_a_leaf_on_both_sides(fitted: dict) -> None:
    form = _form(fitted["random_forest"])
    tree = form["trees"][0]
    leaf = tree["left"].index(-1)
    tree["right"][leaf] = leaf + 1
    with pytest.raises(InferenceFormError, match=f"leaf {leaf}"):
        from_form(form, SHA, N_FEATURES)


def test_inputs_are_checked_before_a_walk(fitted: dict) -> None:
    light = from_form(_form(fitted["hist_gradient_boosting"]), SHA, N_FEATURES)
    with pytest.raises(ValueError, match="expected 16"):
        light.probability_up([0.0] * 15)
    with pytest.raises(ValueError, match="finite"):
        light.probability_up([0.0] * 15 + [math.nan])


def test_cache_round_trip_staleness_and_pruning(fitted: dict, tmp_path: Path) -> None:
    assert read_cached(tmp_path, SHA, N_FEATURES) is None  # nothing cached yet
    path, digest = write_cached(tmp_path, to_inference_form(fitted["linear_svm"], SHA))
    assert path == cache_path(tmp_path, SHA) and path.parent.name == INFERENCE_DIR
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    # No temp file left behind; the sidecar holds the SHA-256 of the form's bytes.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, sidecar.name]
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == sidecar.read_text()
    assert read_cached(tmp_path, SHA, N_FEATURES).source_sha256 == SHA  # checked by its sidecar
    assert read_cached(tmp_path, SHA, N_FEATURES, digest).source_sha256 == SHA  # by the manifest's
    # A form copied under another model's name (with its sidecar) is refused: it records where it
    # came from.
    cache_path(tmp_path, OTHER_SHA).write_bytes(path.read_bytes())
    cache_path(tmp_path, OTHER_SHA).with_name(f"{OTHER_SHA}.json{SIDECAR_SUFFIX}").write_text(digest)
    with pytest.raises(InferenceFormError, match="was made from"):
        read_cached(tmp_path, OTHER_SHA, N_FEATURES)
    path.write_text('{"format": 1, "source_sha')  # a torn write
    with pytest.raises(InferenceFormError, match="sidecar's"):
        read_cached(tmp_path, SHA, N_FEATURES)
    assert prune_cache(tmp_path, {SHA}) == [cache_path(tmp_path, OTHER_SHA)]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, sidecar.name]


def test_a_cached_form_is_trusted_by_its_recorded_hash_never_by_its_name(
    fitted: dict, tmp_path: Path
) -> None:
    form = to_inference_form(fitted["logistic_regression"], SHA)
    path, digest = write_cached(tmp_path, form)
    # Tampered: same source SHA-256 and a valid form, other numbers. The manifest's hash refuses
    # it even when the sidecar was rewritten to match.
    tampered = json.dumps({**form, "intercept": form["intercept"] + 5.0}).encode()
    path.write_bytes(tampered)
    path.with_name(path.name + SIDECAR_SUFFIX).write_text(hashlib.sha256(tampered).hexdigest())
    with pytest.raises(InferenceFormError, match=r"not the manifest's .* tampered"):
        read_cached(tmp_path, SHA, N_FEATURES, digest)
    # No hash recorded anywhere (no manifest hash, no sidecar): not trusted either.
    path.with_name(path.name + SIDECAR_SUFFIX).unlink()
    with pytest.raises(InferenceFormError, match="no recorded SHA-256"):
        read_cached(tmp_path, SHA, N_FEATURES)


@given(st.floats(allow_nan=False))
def test_float32_rounding_matches_numpy(value: float) -> None:
    with np.errstate(over="ignore"):
        expected = float(np.float64(value).astype(np.float32))
    assert round_to_float32(value) == expected
