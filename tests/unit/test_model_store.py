"""Model store: the manifest is the only way in, and a hash mismatch is refused before unpickling."""

import json
import pickle
from pathlib import Path

import pytest

from services.base.model_store import (
    ModelIntegrityError,
    ModelNotFound,
    ModelsNotTrained,
    load_manifest,
    sha256_file,
    verify_model_file,
    write_manifest,
)
from services.ml_model.model_converter import dump_model, load_verified_model


class _TouchOnUnpickle:
    """A pickle payload that creates a file when loaded: proof that unpickling runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _entry(file: str, sha256: str, model_name: str = "random_forest", symbol: str = "CBA.AX") -> dict:
    return {
        "symbol": symbol,
        "model_name": model_name,
        "file": file,
        "sha256": sha256,
        "feature_names": ["a", "b"],
        "feature_version": "test-1",
        "source": "synthetic",
        "trained_at": "2026-01-01T00:00:00+00:00",
        "metrics": {"accuracy": 0.5, "roc_auc": 0.5, "brier": 0.25},
    }


def _verify_only(models_dir: Path, entry) -> None:
    verify_model_file(models_dir, entry.file, entry.sha256)


# The converter's unpickling loader and the service's hash-only check refuse the same files.
CHECKS = pytest.mark.parametrize("check", [load_verified_model, _verify_only], ids=["unpickle", "verify"])


def _store_with_model(models_dir: Path, model: object = None) -> None:
    sha = dump_model(models_dir, "CBA.AX__random_forest.joblib", model or {"weights": [1, 2, 3]})
    write_manifest(models_dir, {"source": "synthetic"}, [_entry("CBA.AX__random_forest.joblib", sha)])


def test_round_trip_loads_the_same_object(tmp_path: Path) -> None:
    _store_with_model(tmp_path, {"weights": [1, 2, 3]})
    manifest = load_manifest(tmp_path)
    entry = manifest.find("random_forest", "CBA.AX")
    assert entry.sha256 == sha256_file(tmp_path / entry.file)
    assert entry.version == entry.sha256[:12]
    verify_model_file(tmp_path, entry.file, entry.sha256)  # passes: no exception
    assert load_verified_model(tmp_path, entry) == {"weights": [1, 2, 3]}


@CHECKS
def test_tampered_file_is_refused_before_unpickling(tmp_path: Path, check) -> None:
    _store_with_model(tmp_path)
    marker = tmp_path / "code-ran"
    (tmp_path / "CBA.AX__random_forest.joblib").write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    entry = load_manifest(tmp_path).find("random_forest", "CBA.AX")
    with pytest.raises(ModelIntegrityError, match="does not match the manifest"):
        check(tmp_path, entry)
    assert not marker.exists(), "the tampered pickle was executed"


def test_the_payload_really_runs_code_when_trusted(tmp_path: Path) -> None:
    # Control for the test above: with a matching hash the same payload does run, so "marker
    # absent" there means the hash check stopped it, not that the payload was harmless.
    marker = tmp_path / "code-ran"
    sha = dump_model(tmp_path, "evil.joblib", _TouchOnUnpickle(marker))
    write_manifest(tmp_path, {}, [_entry("evil.joblib", sha)])
    load_verified_model(tmp_path, load_manifest(tmp_path).entries[0])
    assert marker.exists()


@CHECKS
@pytest.mark.parametrize(
    "file_name",
    [
        "../outside.joblib",  # climbs out of the models directory
        "/tmp/absolute.joblib",  # absolute path
        "sub/dir.joblib",  # nested: the manifest names plain files only
        "..",
    ],
)
def test_file_names_outside_the_directory_are_refused(tmp_path: Path, file_name: str, check) -> None:
    write_manifest(tmp_path, {}, [_entry(file_name, "0" * 64)])
    entry = load_manifest(tmp_path).entries[0]
    with pytest.raises(ModelIntegrityError, match="plain name"):
        check(tmp_path, entry)


@CHECKS
def test_missing_model_file_is_an_integrity_error(tmp_path: Path, check) -> None:
    _store_with_model(tmp_path)
    (tmp_path / "CBA.AX__random_forest.joblib").unlink()
    with pytest.raises(ModelIntegrityError, match="unreadable"):
        check(tmp_path, load_manifest(tmp_path).entries[0])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "train models first"),  # no manifest at all
        ("{not json", "cannot read"),
        (json.dumps({"schema_version": 99, "models": []}), "schema-1"),
        (json.dumps({"schema_version": 1, "models": [{"symbol": "CBA.AX"}]}), "malformed"),
        # A hash that is not 64 hex digits could never match: refuse the manifest up front.
        (json.dumps({"schema_version": 1, "models": [_entry("x.joblib", "abc")]}), "malformed"),
    ],
)
def test_bad_manifests_tell_the_operator_to_train(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(ModelsNotTrained, match=message) as caught:
        load_manifest(tmp_path)
    assert "train_models.py" in str(caught.value)


def test_unknown_model_or_symbol_is_not_found(tmp_path: Path) -> None:
    _store_with_model(tmp_path)
    manifest = load_manifest(tmp_path)
    with pytest.raises(ModelNotFound, match=r"available: \['random_forest'\]"):
        manifest.find("svm", "CBA.AX")
    with pytest.raises(ModelNotFound, match="trained symbols"):
        manifest.find("random_forest", "XYZ.AX")


def test_manifest_write_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    _store_with_model(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CBA.AX__random_forest.joblib", "manifest.json"]
