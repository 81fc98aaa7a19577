"""Versioned model sets on disk (services/base/model_sets.py): names, the pointer, verification,
promote, rollback, pruning, and adopting a flat models folder. Real files, no training."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.base import model_sets
from services.base.model_sets import (
    SetNotVerified,
    UnknownSet,
    adopt_flat,
    current_name,
    new_set_dir,
    promote,
    prune,
    rollback,
    serving_dir,
    set_names,
    verify_set,
)

T0 = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)


def write_set(folder: Path, payload: bytes = b"model bytes", generated_at: datetime = T0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "CBA.AX__logistic_regression.joblib").write_bytes(payload)
    manifest = {
        "schema_version": 1,
        "generated_at": generated_at.isoformat(),
        "source": "csv",
        "symbols": ["CBA.AX"],
        "models": [
            {
                "symbol": "CBA.AX",
                "model_name": "logistic_regression",
                "file": "CBA.AX__logistic_regression.joblib",
                "sha256": hashlib.sha256(payload).hexdigest(),
                "data": {"label_end": "2026-11-27"},
            }
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def trained(models: Path, at: datetime, payload: bytes = b"m") -> str:
    """A set as a training run leaves it, promoted."""
    folder = write_set(new_set_dir(models, at), payload, at)
    promote(models, folder.name, at, "trained")
    return folder.name


def test_names_sort_by_time_and_a_taken_second_gets_a_suffix(tmp_path):
    first = new_set_dir(tmp_path, T0)
    second = new_set_dir(tmp_path, T0)
    later = new_set_dir(tmp_path, T0 + timedelta(seconds=1))
    assert (first.name, second.name, later.name) == (
        "20261128T060000Z",
        "20261128T060000Z-1",
        "20261128T060001Z",
    )
    assert set_names(tmp_path) == [first.name, second.name, later.name]


def test_two_trainings_give_two_sets_and_current_points_at_the_newer(tmp_path):
    a = trained(tmp_path, T0)
    b = trained(tmp_path, T0 + timedelta(days=7))
    assert set_names(tmp_path) == [a, b] and current_name(tmp_path) == b
    assert serving_dir(tmp_path) == tmp_path / "sets" / b
    assert (tmp_path / "current").read_text() == f"{b}\n"


def test_rollback_goes_back_and_forth(tmp_path):
    a = trained(tmp_path, T0)
    b = trained(tmp_path, T0 + timedelta(days=7))
    record = rollback(tmp_path, T0 + timedelta(days=8))
    assert (record["set"], record["previous"], current_name(tmp_path)) == (a, b, a)
    assert rollback(tmp_path, T0 + timedelta(days=9))["set"] == b  # undoes the rollback


def test_rollback_skips_a_set_that_no_longer_verifies(tmp_path):
    a = trained(tmp_path, T0)
    b = trained(tmp_path, T0 + timedelta(days=1))
    trained(tmp_path, T0 + timedelta(days=2))
    (tmp_path / "sets" / b / "CBA.AX__logistic_regression.joblib").write_bytes(b"tampered")
    with pytest.raises(model_sets.ModelSetError, match="no earlier set"):
        rollback(tmp_path, T0 + timedelta(days=3))  # b was the one before: gone bad, nothing else recorded
    promote(tmp_path, a, T0 + timedelta(days=4), "by hand")
    assert current_name(tmp_path) == a


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "CBA.AX__logistic_regression.joblib").write_bytes(b"other"), "does not match"),
        (lambda f: (f / "CBA.AX__logistic_regression.joblib").unlink(), "unreadable"),
        (lambda f: (f / "manifest.json").write_text("{not json"), "no readable manifest"),
        (
            lambda f: (f / "manifest.json").write_text('{"schema_version": 1, "models": []}'),
            "lists no models",
        ),
        # a manifest naming a file outside the set is refused before anything is read
        (
            lambda f: (f / "manifest.json").write_text(
                json.dumps({"schema_version": 1, "models": [{"file": "../x", "sha256": "0" * 64}]})
            ),
            "not a plain name",
        ),
    ],
)
def test_a_set_that_does_not_verify_is_never_promoted(tmp_path, damage, message):
    good = trained(tmp_path, T0)
    bad = write_set(new_set_dir(tmp_path, T0 + timedelta(days=1)))
    damage(bad)
    with pytest.raises(SetNotVerified, match=message):
        promote(tmp_path, bad.name, T0, "by hand")
    assert current_name(tmp_path) == good


@pytest.mark.parametrize("name", ["nope", "20991231T000000Z", "../sets"])
def test_promote_of_an_unknown_set(tmp_path, name):
    trained(tmp_path, T0)
    with pytest.raises(UnknownSet):
        promote(tmp_path, name, T0, "by hand")


def test_pruning_keeps_the_newest_and_never_the_current(tmp_path):
    names = [trained(tmp_path, T0 + timedelta(days=i)) for i in range(12)]
    promote(tmp_path, names[0], T0 + timedelta(days=20), "rollback by hand")  # the oldest serves
    removed = prune(tmp_path, keep=10)
    assert removed == names[1:3]
    assert set_names(tmp_path) == [names[0], *names[3:]] and current_name(tmp_path) == names[0]
    assert prune(tmp_path, keep=10) == []


def test_a_flat_folder_serves_as_it_is_and_is_adopted_into_a_set(tmp_path):
    write_set(tmp_path)  # the layout before model sets: manifest.json at the top
    (tmp_path / ".inference").mkdir()
    (tmp_path / ".inference" / "x.json").write_text("{}")
    assert serving_dir(tmp_path) == tmp_path and current_name(tmp_path) is None
    name = adopt_flat(tmp_path, T0 + timedelta(days=1))
    assert name == "20261128T060000Z"  # named after the manifest's generation time
    assert current_name(tmp_path) == name and not (tmp_path / "manifest.json").exists()
    verify_set(tmp_path / "sets" / name)
    assert (tmp_path / "sets" / name / ".inference" / "x.json").is_file()
    assert adopt_flat(tmp_path, T0) is None  # only once


# ---- trust: who may write the models ------------------------------------------------------------


def _trusted_tree(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir(mode=0o755)
    trained(models, T0)
    for path in [models, *models.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return models


def test_a_tree_owned_by_this_user_and_not_group_writable_is_trusted(tmp_path):
    models = _trusted_tree(tmp_path)
    model_sets.check_trusted(models)
    model_sets.check_trusted(tmp_path / "not-yet")  # nothing there yet: nothing to refuse
    for path in [models, *models.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)  # private is fine too
    model_sets.check_trusted(models)


@pytest.mark.parametrize(
    ("where", "mode", "says"),
    [
        ("", 0o775, "models folder .*models is writable by group \\(mode 0775\\)"),
        ("", 0o757, "writable by others \\(mode 0757\\)"),
        ("", 0o777, "writable by group and others \\(mode 0777\\)"),
        ("sets", 0o775, "models folder .*sets is writable by group"),
        (
            "set",
            0o1777,
            "models folder .*sets/20261128T060000Z is writable by group and others \\(mode 1777\\)",
        ),
        ("set/manifest.json", 0o664, "models file .*manifest.json is writable by group"),
        ("current", 0o646, "models file .*current is writable by others"),
    ],
)
def test_group_or_other_write_anywhere_that_decides_what_runs_is_refused(tmp_path, where, mode, says):
    models = _trusted_tree(tmp_path)
    target = models / where.replace("set", "sets/20261128T060000Z") if where != "sets" else models / "sets"
    target.chmod(mode)
    with pytest.raises(model_sets.UntrustedModels, match=says) as caught:
        model_sets.check_trusted(models)
    message = str(caught.value)
    assert "\n" not in message and f"chmod -R go-w {models}" in message and "run code" in message


def test_a_tree_owned_by_another_user_is_refused(tmp_path):
    # Checked as if the service ran as another uid: ownership, not permission, decides.
    models = _trusted_tree(tmp_path)
    other = os.geteuid() + 1
    with pytest.raises(model_sets.UntrustedModels, match=f"is owned by .*, not by .*uid {other}"):
        model_sets.check_trusted(models, uid=other)


def test_what_the_suite_writes_is_never_group_or_other_writable(tmp_path):
    old = os.umask(0)  # the widest umask: only the modes the code asks for remain
    try:
        models = tmp_path / "models"
        model_sets.make_dir(models)
        folder = write_set(new_set_dir(models, T0))  # (the test's own files: written 0666)
        written_by_test = {folder / "manifest.json", folder / "CBA.AX__logistic_regression.joblib"}
        promote(models, folder.name, T0, "trained")  # current, promotions.jsonl, status.json
        model_sets.write_file(folder / "report.txt", b"r")
        wide = tmp_path / "wide.txt"
        wide.write_bytes(b"x")
        wide.chmod(0o666)
        model_sets.write_file(wide, b"y")  # an existing file loses group/other write
    finally:
        os.umask(old)
    written = [wide, *(p for p in models.rglob("*") if p not in written_by_test)]
    assert len(written) == 7
    for path in written:
        assert path.stat().st_mode & 0o022 == 0, f"{path} is {path.stat().st_mode:o}"
