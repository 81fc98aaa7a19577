"""`service_manager.py models list|promote SET|rollback|prune` in a real process, on model sets made
like the training script makes them (files and a manifest with their SHA-256)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from services.base.model_sets import current_name, new_set_dir, promote
from tests.support import make_suite_env, manager_cli
from tests.unit.test_model_sets import write_set

T0 = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)


def test_list_promote_rollback_and_their_errors(short_tmp):
    dirs = make_suite_env(short_tmp / "suite", None)
    models = dirs.models_dir
    empty = manager_cli(dirs, "models", "list")
    assert empty.returncode == 0 and "no model sets" in empty.stdout
    names = []
    for day in range(3):
        folder = write_set(
            new_set_dir(models, T0 + timedelta(days=day)), generated_at=T0 + timedelta(days=day)
        )
        names.append(folder.name)
    promote(models, names[0], T0, "trained")
    promote(models, names[1], T0, "trained")  # names[2] stays a candidate

    listing = manager_cli(dirs, "models", "list")
    assert listing.returncode == 0, listing.stderr
    rows = listing.stdout.splitlines()[1:]
    assert rows[1].startswith("* " + names[1]) and " current " in rows[1]
    assert "was current" in rows[0] and "ok" in rows[0]
    as_json = json.loads(manager_cli(dirs, "models", "list", "--json").stdout)
    assert as_json["current"] == names[1] and [s["set"] for s in as_json["sets"]] == names

    promoted = manager_cli(dirs, "models", "promote", names[2])
    assert promoted.returncode == 0, promoted.stderr
    assert f"promoted {names[2]} (was {names[1]})" in promoted.stdout and "not running" in promoted.stdout
    assert current_name(models) == names[2]

    back = manager_cli(dirs, "models", "rollback")
    assert back.returncode == 0 and current_name(models) == names[1]

    unknown = manager_cli(dirs, "models", "promote", "20991231T000000Z")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    (models / "sets" / names[0] / "CBA.AX__logistic_regression.joblib").write_bytes(b"changed")
    refused = manager_cli(dirs, "models", "promote", names[0])
    assert refused.returncode == 1 and "does not match its SHA-256" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and current_name(models) == names[1]
    assert " NO " in manager_cli(dirs, "models", "list").stdout
    assert manager_cli(dirs, "models").returncode == 2  # no action: a usage error


def test_prune_keeps_the_newest_and_the_current_set(short_tmp):
    dirs = make_suite_env(short_tmp / "suite", None)
    models = dirs.models_dir
    names = [
        write_set(new_set_dir(models, T0 + timedelta(days=d)), generated_at=T0 + timedelta(days=d)).name
        for d in range(4)
    ]
    promote(models, names[0], T0, "trained")  # the oldest serves
    pruned = manager_cli(dirs, "models", "prune", "--keep", "2")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.strip() == f"removed 2 set(s): {names[1]}, {names[2]}"
    assert sorted(p.name for p in (models / "sets").iterdir()) == [names[0], names[3]]
    assert current_name(models) == names[0]
    bad = manager_cli(dirs, "models", "prune", "--keep", "0")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--keep" in bad.stderr
