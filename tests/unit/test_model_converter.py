"""The converter child: hash checked before unpickling, one JSON document out, and only the
estimators it can reproduce exactly are converted."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from services.base.model_inference import from_form
from services.base.model_store import sha256_file
from services.ml_model.model_catalog import make_model, probability_up
from services.ml_model.model_converter import UnsupportedModel, dump_model, main, to_inference_form

CONVERTER = Path(__file__).resolve().parents[2] / "services" / "ml-model" / "model_converter.py"


class _TouchOnUnpickle:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class _PrintOnUnpickle:
    def __reduce__(self):
        return (print, ("noise from inside a pickle",))


def _data(classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4))
    labels = np.digitize(x[:, 0], [-0.5, 0.5]) if classes == 3 else x[:, 0] > 0
    return x, labels.astype(int)


def test_the_cli_converts_good_files_and_reports_each_bad_one(tmp_path: Path) -> None:
    x, y = _data()
    model = make_model("random_forest").fit(x, y)
    good = dump_model(tmp_path, "good.joblib", model)
    marker = tmp_path / "code-ran"
    tampered = dump_model(tmp_path, "tampered.joblib", model)
    (tmp_path / "tampered.joblib").write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    noisy = dump_model(tmp_path, "noisy.joblib", _PrintOnUnpickle())  # unpickles to None
    (tmp_path / "garbage.joblib").write_bytes(b"not a pickle")
    garbage = sha256_file(tmp_path / "garbage.joblib")
    args = []
    for name, sha in (("good", good), ("tampered", tampered), ("noisy", noisy), ("garbage", garbage)):
        args += [str(tmp_path / f"{name}.joblib"), sha]
    run = subprocess.run([sys.executable, str(CONVERTER), *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    results = [json.loads(line) for line in run.stdout.splitlines()]  # the pickle's print went to stderr
    assert [r["sha256"] for r in results] == [good, tampered, noisy, garbage]
    assert results[0]["form"] == json.loads(json.dumps(to_inference_form(model, good)))
    assert [r.get("reason") for r in results[1:]] == [
        "integrity_check_failed",
        "unsupported_model",
        "unpickling_failed",
    ]
    assert "does not match the manifest" in results[1]["error"]
    assert not marker.exists(), "the tampered pickle ran in the converter"
    assert "noise from inside a pickle" in run.stderr


def test_bad_usage_exits_2(capsys) -> None:
    assert main(["only-a-file.joblib"]) == 2
    assert main([]) == 2
    assert "FILE SHA256" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DecisionTreeClassifier(max_depth=2), "no inference form for DecisionTreeClassifier"),
        (lambda: LogisticRegression(), None),  # a bare linear model is fine: no scaler at all
        (lambda: Pipeline([("scale", MinMaxScaler()), ("model", LogisticRegression())]), "StandardScaler"),
        (
            lambda: Pipeline([("scale", StandardScaler()), ("model", DecisionTreeClassifier())]),
            "scaler in front",
        ),
        # Three classes: P(up) would no longer be a single column.
        (lambda: HistGradientBoostingClassifier(max_iter=3), "classes"),
    ],
)
def test_only_exactly_reproducible_estimators_convert(make, message) -> None:
    x, y = _data(classes=3 if message == "classes" else 2)
    model = make().fit(x, y)
    if message is None:
        form = to_inference_form(model, "0" * 64)
        assert form["mean"] == [0.0] * 4 and form["scale"] == [1.0] * 4
        light = from_form(form, "0" * 64, 4)
        expected = probability_up(model, x)
        assert (
            max(abs(light.probability_up(row.tolist()) - p) for row, p in zip(x, expected, strict=True))
            < 1e-9
        )
        return
    with pytest.raises(UnsupportedModel, match=message):
        to_inference_form(model, "0" * 64)
