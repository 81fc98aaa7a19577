"""Backups and restores of the suite's files (services/base/backups.py), on real SQLite files in a
temporary folder: what a set holds, what a check refuses, which set `latest` is, and the safety
copy a restore leaves behind. The CLI and the services around it: tests/system/test_backup_restore.py."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from services.base.backups import (
    BackupDamaged,
    BackupFailed,
    NoSuchBackup,
    NothingToRestore,
    backup_databases,
    backup_lock,
    check_backup,
    is_backup_name,
    keep_current,
    plan_restore,
    read_backup,
    resolve_backup,
    restore_files,
)

DAY = date(2025, 6, 10)
NOW = datetime(2025, 6, 10, 1, 30, tzinfo=UTC)


def write_rows(path: Path, *values: str) -> None:
    """Rows into table t of a WAL database, left in the WAL (as a running service leaves them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
    with db:  # one transaction: one fsync, not one per row
        db.execute("BEGIN")
        db.executemany("INSERT INTO t(v) VALUES (?)", [(v,) for v in values])
    db.close()


def write_and_die(path: Path, value: str) -> None:
    """A row written by a process killed before it closed the database: it is in the -wal only."""
    code = (
        "import os, sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "db.execute('PRAGMA wal_autocheckpoint=0'); db.execute('INSERT INTO t(v) VALUES (?)', (sys.argv[2],)); "
        "os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(path), value], check=True, timeout=60)


def rows(path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT v FROM t ORDER BY rowid")]
    finally:
        db.close()


def files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def damage(path: Path) -> None:
    """Overwrite the middle of a database file: its B-tree pages no longer agree."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 4096] = b"\xff" * 4096
    path.write_bytes(bytes(raw))


@pytest.fixture
def suite_files(tmp_path: Path) -> tuple[Path, Path]:
    """A data dir with two services' databases and a stray one, and a models folder."""
    data, models = tmp_path / "data", tmp_path / "models"
    write_rows(data / "paper_trading.db", *(f"trade {i}" for i in range(300)))
    write_rows(data / "predictions.db", "p1")
    write_rows(data / "extra" / "notes.db", "n1")  # no service owns it
    (models / "inference").mkdir(parents=True)
    (models / "manifest.json").write_text('{"models": ["inference/cba.bin"]}')
    (models / "inference" / "cba.bin").write_bytes(os.urandom(5000))
    (models / "current").symlink_to("inference")
    return data, models


def test_a_backup_set_holds_every_database_checked_and_the_models(suite_files) -> None:
    data, models = suite_files
    result = backup_databases(data, DAY, keep=7, models_dir=models, created_at=NOW.isoformat())
    folder = data / "backups" / "2025-06-10"
    assert result["backup_dir"] == str(folder)
    assert [d["source"] for d in result["databases"]] == [
        "extra/notes.db",
        "paper_trading.db",
        "predictions.db",
    ]
    assert all(d["integrity"] == "ok" for d in result["databases"])
    assert rows(folder / "paper_trading.db") == [f"trade {i}" for i in range(300)]  # the WAL's rows too
    assert files(folder / "models") == files(models)
    assert os.readlink(folder / "models" / "current") == "inference"  # a symlink stays one
    assert result["models"] == {"files": 2, "bytes": 5000 + len('{"models": ["inference/cba.bin"]}')}
    info = json.loads((folder / "backup.json").read_text())
    assert set(info["models"]["files"]) == {"manifest.json", "inference/cba.bin"}
    assert info["created_at"] == NOW.isoformat()
    # A copy is one file: nothing beside it, and no temporary folder left in backups/.
    assert not [p for p in folder.iterdir() if p.name.endswith(("-wal", "-shm"))]
    assert sorted(p.name for p in (data / "backups").iterdir()) == [".lock", "2025-06-10"]


def test_a_second_backup_the_same_day_replaces_the_first(suite_files) -> None:
    data, models = suite_files
    backup_databases(data, DAY, models_dir=models)
    write_rows(data / "predictions.db", "p2")
    backup_databases(data, DAY, models_dir=models)
    assert rows(data / "backups" / "2025-06-10" / "predictions.db") == ["p1", "p2"]


def test_a_failed_backup_never_becomes_a_dated_set_and_a_good_one_clears_it(suite_files) -> None:
    data, models = suite_files
    write_rows(data / "broken.db", *(f"row {i}" for i in range(2000)))
    sqlite3.connect(data / "broken.db").execute("PRAGMA wal_checkpoint(TRUNCATE)").connection.close()
    damage(data / "broken.db")
    with pytest.raises(BackupFailed, match=r"broken\.db"):
        backup_databases(data, DAY, models_dir=models)
    assert read_backup(data / "backups" / "2025-06-10.incomplete").databases  # the good copies
    with pytest.raises(NoSuchBackup):
        resolve_backup(data / "backups", "latest")
    (data / "broken.db").unlink()
    backup_databases(data, DAY, models_dir=models)
    assert sorted(p.name for p in (data / "backups").iterdir() if p.is_dir()) == ["2025-06-10"]


def test_nothing_to_back_up_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(BackupFailed, match="no databases"):
        backup_databases(tmp_path / "data", DAY)


def test_another_backup_or_restore_holding_the_lock_is_waited_for_then_refused(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    with backup_lock(root), pytest.raises(BackupFailed, match="another backup or restore"):
        with backup_lock(root, timeout_s=0.2):
            pass
    with backup_lock(root, timeout_s=0.2):  # released: free again
        pass


# ---------------------------------------------------------------- choosing a set


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("latest", True),
        ("2025-06-10", True),
        ("replaced-20250610T013000Z", True),
        ("replaced-20250610T013000Z-2", True),  # the second restore within that second
        ("2025-06-10.incomplete", False),  # never restorable: a half set
        ("2025-6-1", False),
        ("../2025-06-10", False),
        ("", False),
    ],
)
def test_backup_names(name: str, ok: bool) -> None:
    assert is_backup_name(name) is ok


def test_latest_is_the_newest_complete_dated_set(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    for name in (
        "2025-06-08",
        "2025-06-10",
        "2025-06-09",
        "2025-06-11.incomplete",
        "replaced-20250612T000000Z",
    ):
        (root / name).mkdir(parents=True)
    (root / "2025-06-12").write_text("a file, not a backup")
    assert resolve_backup(root, "latest") == root / "2025-06-10"
    assert resolve_backup(root, "2025-06-08") == root / "2025-06-08"
    with pytest.raises(NoSuchBackup) as info:
        resolve_backup(root, "2025-06-01")
    assert "available: 2025-06-08, 2025-06-09, 2025-06-10" in str(info.value)
    assert "replaced-20250612T000000Z" in str(info.value)
    with pytest.raises(NoSuchBackup, match="no backups"):
        resolve_backup(tmp_path / "none", "latest")


def test_the_plan_restores_what_the_services_own(suite_files) -> None:
    data, models = suite_files
    backup_databases(data, DAY, models_dir=models)
    backup = read_backup(data / "backups" / "2025-06-10")
    full = plan_restore(backup)
    assert full.databases == ("paper_trading.db", "predictions.db")
    assert full.skipped == ("extra/notes.db",)  # no owner: nobody could be stopped for it
    assert full.models and full.owners == ("ml-model", "prediction", "paper-trading")
    ledger = plan_restore(backup, ["paper-trading"])
    assert (ledger.databases, ledger.models, ledger.owners) == (
        ("paper_trading.db",),
        False,
        ("paper-trading",),
    )
    models_only = plan_restore(backup, ["ml-model"])  # the set has no ml_model.db: the models alone
    assert (models_only.databases, models_only.models) == ((), True)
    with pytest.raises(NothingToRestore, match="sentiment"):
        plan_restore(backup, ["paper-trading", "sentiment"])


# ---------------------------------------------------------------- checking a set


def test_a_damaged_database_in_the_backup_is_refused(suite_files) -> None:
    data, models = suite_files
    backup_databases(data, DAY, models_dir=models)
    backup = read_backup(data / "backups" / "2025-06-10")
    assert [c["database"] for c in check_backup(backup, plan_restore(backup))] == [
        "paper_trading.db",
        "predictions.db",
    ]
    damage(backup.folder / "paper_trading.db")
    with pytest.raises(BackupDamaged, match=r"paper_trading\.db fails integrity_check"):
        check_backup(backup, plan_restore(backup))
    # Only what is restored must be sound: the predictions alone still pass.
    check_backup(backup, plan_restore(backup, ["prediction"]))


def test_a_changed_or_missing_model_file_in_the_backup_is_refused(suite_files) -> None:
    data, models = suite_files
    backup_databases(data, DAY, models_dir=models)
    backup = read_backup(data / "backups" / "2025-06-10")
    (backup.folder / "models" / "inference" / "cba.bin").write_bytes(b"tampered")
    (backup.folder / "models" / "manifest.json").unlink()
    with pytest.raises(BackupDamaged) as info:
        check_backup(backup, plan_restore(backup))
    assert "models/inference/cba.bin does not match" in str(info.value)
    assert "models/manifest.json is missing" in str(info.value)
    check_backup(backup, plan_restore(backup, ["paper-trading"]))  # the models are not restored


def test_a_database_listed_but_missing_is_refused(suite_files) -> None:
    data, models = suite_files
    backup_databases(data, DAY, models_dir=models)
    (data / "backups" / "2025-06-10" / "predictions.db").unlink()
    backup = read_backup(data / "backups" / "2025-06-10")
    with pytest.raises(BackupDamaged, match=r"predictions\.db is listed in backup\.json but missing"):
        check_backup(backup, plan_restore(backup))


# ---------------------------------------------------------------- restoring, and undoing it


def test_a_restore_keeps_the_replaced_files_aside_and_that_copy_undoes_it(suite_files) -> None:
    data, models = suite_files
    backup_databases(data, DAY, models_dir=models)
    before_models = files(models)
    # Later: a trade more (left in the WAL by a killed service), a retrained model, a new file.
    write_and_die(data / "paper_trading.db", "late trade")
    (models / "inference" / "cba.bin").write_bytes(b"retrained")
    (models / "inference" / "wbc.bin").write_bytes(b"new")
    after_models = files(models)
    assert Path(f"{data / 'paper_trading.db'}-wal").exists()

    backup = read_backup(data / "backups" / "2025-06-10")
    plan = plan_restore(backup)
    safety = keep_current(plan, data, models, NOW)
    assert safety is not None and safety.name == "replaced-20250610T013000Z"
    result = restore_files(backup, plan, data, models)

    assert rows(data / "paper_trading.db") == [f"trade {i}" for i in range(300)]  # the late trade is gone
    assert not Path(f"{data / 'paper_trading.db'}-wal").exists()
    assert files(models) == before_models  # wbc.bin removed, cba.bin as it was
    assert os.readlink(models / "current") == "inference"
    assert result["models"]["removed"] == ["inference/wbc.bin"]
    assert rows(data / "extra" / "notes.db") == ["n1"]  # skipped: untouched

    # The safety copy is a set like the others: checked and restored, it brings the later state back.
    undo = read_backup(safety)
    assert undo.databases == ("paper_trading.db", "predictions.db")
    assert rows(safety / "paper_trading.db")[-1] == "late trade"
    assert check_backup(undo, plan_restore(undo))
    second = keep_current(plan_restore(undo), data, models, NOW)
    assert second is not None and second.name == "replaced-20250610T013000Z-2"  # never overwritten
    restore_files(undo, plan_restore(undo), data, models)
    assert rows(data / "paper_trading.db")[-1] == "late trade"
    assert files(models) == after_models


def test_a_restore_of_a_missing_database_creates_it_and_keeps_nothing_aside(suite_files) -> None:
    data, models = suite_files
    backup_databases(data, DAY, models_dir=models)
    (data / "predictions.db").unlink()
    backup = read_backup(data / "backups" / "2025-06-10")
    plan = plan_restore(backup, ["prediction"])
    assert keep_current(plan, data, models, NOW) is None
    restore_files(backup, plan, data, models)
    assert rows(data / "predictions.db") == ["p1"]


def make_set(models: Path, moment: datetime, payload: bytes) -> str:
    """A verifying model set (manifest with the file's SHA-256) written as training writes one."""
    from services.base.model_sets import new_set_dir, sha256_file

    folder = new_set_dir(models, moment)
    (folder / "cba.pkl").write_bytes(payload)
    manifest = {
        "schema_version": 1,
        "models": [{"file": "cba.pkl", "sha256": sha256_file(folder / "cba.pkl")}],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder.name


def test_a_restore_brings_back_the_model_sets_and_the_set_that_served(tmp_path: Path) -> None:
    from services.base.model_sets import current_name, promote, prune, serving_dir, set_names, verify_set

    data, models = tmp_path / "data", tmp_path / "models"
    write_rows(data / "predictions.db", "p1")
    first = make_set(models, datetime(2025, 6, 1, tzinfo=UTC), b"june")
    second = make_set(models, datetime(2025, 6, 8, tzinfo=UTC), b"june, retrained")
    promote(models, first, NOW, "first")
    promote(models, second, NOW, "weekly retrain")
    backup_databases(data, DAY, models_dir=models)
    before = files(models)
    # Later: a third set promoted, the first pruned away.
    third = make_set(models, datetime(2025, 6, 15, tzinfo=UTC), b"july")
    promote(models, third, NOW, "weekly retrain")
    assert prune(models, keep=2) == [first]

    backup = read_backup(data / "backups" / "2025-06-10")
    plan = plan_restore(backup, ["ml-model"])
    assert plan.models and plan.databases == ()
    check_backup(backup, plan)  # raises BackupDamaged when a model file differs from its record
    keep_current(plan, data, models, NOW)
    restore_files(backup, plan, data, models)

    assert files(models) == before  # the third set gone, the first back, the history as it was
    assert set_names(models) == [first, second] and current_name(models) == second
    verify_set(serving_dir(models))  # the set that served then serves again, and it verifies
    promote(models, first, NOW, "rollback still works")  # its predecessor is whole too
