"""Backups of the suite's state: every SQLite database in the data dir, and the models folder.

Shared by the scheduler (its daily 02:00 task, the `backup_databases` RPC) and the manager CLI
(`service_manager.py backup` and `restore`). Plain file and SQLite work, no service, no RPC.

Layout, under `<TRADING_DATA_DIR>/backups/`::

    2025-06-10/             one complete, checked set per Sydney date (the newest `keep` kept)
        paper_trading.db    ... every *.db of the data dir, sub-folders kept
        models/             a copy of TRADING_MODELS_DIR (manifest.json and whatever else is there)
        backup.json         what the set holds: each database's size and integrity, each model
                            file's SHA-256 (a restore checks the copies against it)
    2025-06-10.incomplete/  the copies that passed when others failed (deleted by the next good one)
    replaced-20250610T013000Z/   the files a restore replaced, a set like the others (undo)

A dated folder never holds an unchecked or half-written set: a backup is written into a hidden
temporary folder (`.partial-*`) and renamed into place only when every copy passed. Backups and
restores take one lock (`backups/.lock`), so two never interleave and a restore's set cannot be
pruned under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import ClassVar

from services.base.knobs import knob
from services.registry import databases as registry_databases

BACKUPS_DIR = "backups"
MODELS_DIR = "models"
SET_FILE = "backup.json"
MODELS_OWNER = "ml-model"
MANIFEST = "manifest.json"
POINTER = "current"  # the models folder's pointer to the set in service (services.base.model_sets)
INCOMPLETE_SUFFIX = ".incomplete"
LATEST = "latest"
LOCK_FILE = ".lock"
LOCK_TIMEOUT_S = 60.0
_TEMP_PREFIX = ".partial-"
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_REPLACED = re.compile(r"^replaced-\d{8}T\d{6}Z(?:-\d+)?$")
_SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's companions of a database file


@dataclass(frozen=True, slots=True)
class BackupKnobs:
    """The scheduler's backup knob. It lives here because `service_manager.py backup` prunes by it
    too: a CLI backup with its own default would delete backups the scheduler is told to keep."""

    service: ClassVar[str] = "scheduler"

    backup_keep: int = knob(
        7, low=1, high=365, doc="dated backups kept (the daily backup and `service_manager.py backup`)"
    )


class BackupFailed(RuntimeError):
    """A backup could not be made (a copy failed its integrity check, the disk, the lock):
    inspect what the message names."""


class NoSuchBackup(LookupError):
    """No backup folder by that name: the message lists the ones there are."""


class BackupDamaged(RuntimeError):
    """The backup failed its check (integrity_check, a model file's hash): choose another."""


class NothingToRestore(LookupError):
    """The backup holds nothing of what was asked for."""


def backups_root(data_dir: Path) -> Path:
    return data_dir / BACKUPS_DIR


# ---------------------------------------------------------------- making a backup


def backup_databases(
    data_dir: Path,
    day: date,
    keep: int = 7,
    *,
    models_dir: Path | None = None,
    created_at: str | None = None,
) -> dict:
    """Online-copy every *.db under `data_dir`, and the models folder, into
    `data_dir/backups/<day>/`, check each database copy with PRAGMA integrity_check, then keep
    only the newest `keep` dated folders.

    Uses SQLite's backup API, which copies a consistent snapshot while other processes keep
    writing (a file copy of a WAL database can tear). Sub-folders are kept so two services'
    `trades.db` files never collide. A second backup on the same day replaces the first. One bad
    database does not stop the others being copied, but the set is then incomplete: it goes to
    `<day>.incomplete/`, never to the dated folder, BackupFailed names every failure, and nothing
    is pruned (older good backups are worth more than ever then).
    """
    root = backups_root(data_dir)
    try:
        with backup_lock(root):
            _clear_leftovers(root)
            work = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{day.isoformat()}-", dir=root))
            try:
                result = _write_set(
                    work, data_dir, models_dir, {"day": day.isoformat(), "created_at": created_at}
                )
                if result["failures"]:
                    kept = _install(work, root / f"{day.isoformat()}{INCOMPLETE_SUFFIX}")
                    raise BackupFailed(
                        f"{'; '.join(result['failures'])} (the copies that passed are in {kept})"
                    )
                target = _install(work, root / day.isoformat())
            finally:
                shutil.rmtree(work, ignore_errors=True)  # gone already unless something failed
            pruned = prune_backups(root, keep)
    except OSError as exc:  # the disk, permissions: an expected failure of a backup, said in one line
        raise BackupFailed(f"backup into {root} failed: {exc}") from None
    for copy in result["databases"]:
        copy["backup"] = str(target / copy["source"])
    models = result["models"]  # the hashes stay in backup.json: a task's run record is kept short
    return {
        "backup_dir": str(target),
        "databases": result["databases"],
        "models": None if models is None else {"files": len(models["files"]), "bytes": models["bytes"]},
        "pruned": [str(p) for p in pruned],
    }


def _write_set(work: Path, data_dir: Path, models_dir: Path | None, facts: dict) -> dict:
    """Copy the databases and the models into the (temporary) folder `work`; write backup.json."""
    root = backups_root(data_dir)
    copies, failures = [], []
    for source in _databases(data_dir, root, models_dir):
        try:
            copies.append(_backup_one(source, data_dir, work))
        except BackupFailed as exc:
            failures.append(str(exc))
    if not copies and not failures:
        raise BackupFailed(f"no databases in {data_dir}: nothing to back up (set-up: --init-db)")
    models = None
    if models_dir is not None and models_dir.is_dir():
        models = _copy_tree(models_dir, work / MODELS_DIR, skip=root)
    info = {"format": 1, **facts, "databases": copies, "models": models}
    if failures:
        info["failures"] = failures
    (work / SET_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return {"databases": copies, "models": models, "failures": failures}


def _databases(data_dir: Path, backups: Path, models_dir: Path | None) -> list[Path]:
    found = []
    for path in data_dir.rglob("*.db"):
        if not path.is_file() or backups in path.parents:
            continue
        if models_dir is not None and path.resolve().is_relative_to(models_dir.resolve()):
            continue  # the models folder is copied whole, as models/
        found.append(path)
    return sorted(found)


def _backup_one(source: Path, data_dir: Path, target_dir: Path) -> dict:
    name = source.relative_to(data_dir)
    destination = target_dir / name
    destination.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(destination)
    try:
        src.backup(dst)
        # One self-contained file: reading the copy later (checks, restores) then creates no
        # -wal/-shm beside it. A restored database is back in WAL mode as soon as its store opens it.
        dst.execute("PRAGMA journal_mode=DELETE")
        verdict = [row[0] for row in dst.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:  # so damaged that SQLite cannot even check it
        verdict = [str(exc)]
    finally:
        dst.close()
        src.close()
    if verdict != ["ok"]:
        destination.unlink(missing_ok=True)
        raise BackupFailed(f"backup of {name} failed integrity_check: {verdict[:3]}")
    return {"source": str(name), "bytes": destination.stat().st_size, "integrity": "ok"}


def _copy_tree(source: Path, destination: Path, skip: Path) -> dict:
    """Copy a folder, symlinks as symlinks, leaving out `skip` (the backups, should the models
    folder hold them); the copies' SHA-256 by relative path, and their total size."""
    skipped = skip.resolve()

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if (Path(folder) / n).resolve() == skipped}

    shutil.copytree(source, destination, symlinks=True, ignore=ignore)
    copied = {rel: path for rel, path in _tree(destination).items() if not path.is_symlink()}
    return {
        "files": {rel: _sha256(path) for rel, path in copied.items()},
        "bytes": sum(path.stat().st_size for path in copied.values()),
    }


def _tree(folder: Path) -> dict[str, Path]:
    """Every file and symlink under `folder` by relative path (symlinked folders not followed)."""
    found = {}
    for top, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if (Path(top) / d).is_symlink()]:
            path = Path(top) / name
            found[path.relative_to(folder).as_posix()] = path
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _install(work: Path, target: Path) -> Path:
    """Rename the finished folder `work` to `target`, replacing an older one of that name."""
    old = None
    if target.exists():
        old = target.with_name(f"{_TEMP_PREFIX}old-{target.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
    os.rename(work, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _clear_leftovers(root: Path) -> None:
    """Temporary folders of a backup that was killed (we hold the lock: nobody else is writing)."""
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith(_TEMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)


def prune_backups(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` dated backup folders, and the incomplete sets a complete
    backup has superseded; returns what was deleted."""
    if not root.is_dir():
        return []
    dated = sorted(p for p in root.iterdir() if p.is_dir() and _DATED.match(p.name))
    doomed = dated[:-keep] if keep > 0 else dated
    newest = dated[-1].name if dated else None
    doomed += sorted(
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.endswith(INCOMPLETE_SUFFIX)
        and newest is not None
        and p.name.removesuffix(INCOMPLETE_SUFFIX) <= newest
    )
    for folder in doomed:
        shutil.rmtree(folder)
    return doomed


@contextlib.contextmanager
def backup_lock(root: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold `backups/.lock`: one backup or restore at a time, across processes."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BackupFailed(
                        f"another backup or restore has held {root / LOCK_FILE} for {timeout_s:g}s"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- choosing and checking a set


def is_backup_name(name: str) -> bool:
    """`latest`, a dated folder (YYYY-MM-DD) or a restore's safety copy (replaced-...)."""
    return name == LATEST or bool(_DATED.match(name) or _REPLACED.match(name))


def backup_names(root: Path) -> list[str]:
    """The complete dated backups, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _DATED.match(p.name))


def replaced_names(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _REPLACED.match(p.name))


def resolve_backup(root: Path, name: str) -> Path:
    """The folder of backup `name` (`latest`: the newest dated one); NoSuchBackup lists the others."""
    dated = backup_names(root)
    if name == LATEST:
        if not dated:
            raise NoSuchBackup(f"no backups in {root} yet (make one: service_manager.py backup)")
        return root / dated[-1]
    folder = root / name
    if not is_backup_name(name) or not folder.is_dir():
        available = ", ".join(dated) or "none"
        undo = replaced_names(root)
        extra = f"; restores' safety copies: {', '.join(undo)}" if undo else ""
        raise NoSuchBackup(f"no backup {name} in {root}; available: {available}{extra}")
    return folder


@dataclass(frozen=True, slots=True)
class BackupSet:
    """What one backup folder holds."""

    folder: Path
    databases: tuple[str, ...]  # relative paths of its *.db files
    models: bool  # has a models/ folder
    info: dict | None  # backup.json (None in a backup made before it existed)

    @property
    def name(self) -> str:
        return self.folder.name


def read_backup(folder: Path) -> BackupSet:
    info: object = None
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((folder / SET_FILE).read_text())
    dbs = sorted(
        rel
        for rel, path in _tree(folder).items()
        if rel.endswith(".db") and not rel.startswith(f"{MODELS_DIR}/") and not path.is_symlink()
    )
    return BackupSet(
        folder, tuple(dbs), (folder / MODELS_DIR).is_dir(), info if isinstance(info, dict) else None
    )


@dataclass(frozen=True, slots=True)
class RestorePlan:
    """Which files of a backup a restore puts back, and whose services must be down meanwhile."""

    databases: tuple[str, ...]
    models: bool
    owners: tuple[str, ...]  # the services owning them, in the registry's order
    skipped: tuple[str, ...]  # databases in the backup that no service owns: not restored


def plan_restore(backup: BackupSet, services: Iterable[str] | None = None) -> RestorePlan:
    """The registry's databases found in the backup (with `services`, only theirs), and the
    models when the backup has them and ml-model is chosen. Raises NothingToRestore."""
    owner_of = {db.file: service for service, db in registry_databases()}
    chosen = set(services) if services is not None else None
    wanted = [rel for rel in backup.databases if rel in owner_of]
    if chosen is not None:
        wanted = [rel for rel in wanted if owner_of[rel] in chosen]
    models = backup.models and (chosen is None or MODELS_OWNER in chosen)
    owners = {owner_of[rel] for rel in wanted} | ({MODELS_OWNER} if models else set())
    if chosen is not None and (missing := sorted(chosen - owners)):
        raise NothingToRestore(f"backup {backup.name} holds nothing of {', '.join(missing)}")
    if not wanted and not models:
        raise NothingToRestore(
            f"backup {backup.name} holds no database of the suite's services and no models"
        )
    order = [service for service, _ in registry_databases()] + [MODELS_OWNER]
    return RestorePlan(
        databases=tuple(wanted),
        models=models,
        owners=tuple(sorted(owners, key=order.index)),
        skipped=tuple(rel for rel in backup.databases if rel not in owner_of),
    )


def check_backup(backup: BackupSet, plan: RestorePlan) -> list[dict]:
    """PRAGMA integrity_check on every database the plan restores, and the model files against
    the SHA-256 that backup.json recorded; BackupDamaged names every problem."""
    checked, problems = [], []
    for rel in plan.databases:
        verdict = integrity(backup.folder / rel)
        if verdict == ["ok"]:
            checked.append(
                {"database": rel, "bytes": (backup.folder / rel).stat().st_size, "integrity": "ok"}
            )
        else:
            problems.append(f"{rel} fails integrity_check: {verdict[:3]}")
    listed = (backup.info or {}).get("databases")
    if isinstance(listed, list):
        missing = [
            d.get("source") for d in listed if isinstance(d, dict) and d.get("source") not in backup.databases
        ]
        problems += [f"{rel} is listed in {SET_FILE} but missing" for rel in missing]
    if plan.models:
        problems += _model_problems(backup)
    if problems:
        raise BackupDamaged(f"backup {backup.name} is damaged: {'; '.join(problems)}")
    return checked


def integrity(path: Path) -> list[str]:
    """PRAGMA integrity_check's rows for a database file nobody writes (["ok"] when sound)."""
    try:
        # immutable: read the file as it is, without locks or creating -wal/-shm beside it.
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        return [str(exc)]
    try:
        return [row[0] for row in db.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        db.close()


def _model_problems(backup: BackupSet) -> list[str]:
    recorded = ((backup.info or {}).get("models") or {}).get("files")
    if not isinstance(recorded, dict):
        return []  # a set without hashes (made by hand, or before backup.json): nothing to compare
    present = _tree(backup.folder / MODELS_DIR)
    problems = []
    for rel, digest in sorted(recorded.items()):
        path = present.get(rel)
        if path is None:
            problems.append(f"{MODELS_DIR}/{rel} is missing")
        elif _sha256(path) != digest:
            problems.append(f"{MODELS_DIR}/{rel} does not match its SHA-256 in {SET_FILE}")
    return problems


# ---------------------------------------------------------------- restoring


def safety_folder_name(now: datetime, root: Path) -> str:
    """`replaced-<UTC time>`, made unique in `root` (two restores within a second)."""
    base = f"replaced-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    name, n = base, 1
    while (root / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def keep_current(
    plan: RestorePlan, data_dir: Path, models_dir: Path, now: datetime, created_at: str | None = None
) -> Path | None:
    """Copy the files a restore is about to replace into `backups/replaced-<time>/`, a set like
    the dated ones (so `restore replaced-...` undoes the restore). None when there is nothing.
    Written into a temporary folder and renamed, like a backup. Call it with the services that
    own the files stopped."""
    root = backups_root(data_dir)
    current = [rel for rel in plan.databases if (data_dir / rel).is_file()]
    models = plan.models and models_dir.is_dir()
    if not current and not models:
        return None
    work = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}replaced-", dir=root))
    try:
        copies = [_snapshot(data_dir / rel, work / rel, rel) for rel in current]
        tree = _copy_tree(models_dir, work / MODELS_DIR, skip=root) if models else None
        info = {"format": 1, "created_at": created_at, "replaced_by_restore": True, "databases": copies}
        (work / SET_FILE).write_text(json.dumps({**info, "models": tree}, indent=2) + "\n")
        return _install(work, root / safety_folder_name(now, root))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _snapshot(source: Path, destination: Path, rel: str) -> dict:
    """A consistent one-file copy of a database (its WAL folded in); a damaged one that SQLite
    cannot copy is kept as its files are (with -wal/-shm), so nothing is lost either way."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(destination)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
            src.close()
        how = "sqlite backup"
    except sqlite3.DatabaseError:
        destination.unlink(missing_ok=True)
        for suffix in ("", *_SIDE_FILES):
            side = Path(f"{source}{suffix}")
            if side.exists():
                shutil.copy2(side, Path(f"{destination}{suffix}"))
        how = "raw files"
    return {"source": rel, "bytes": destination.stat().st_size, "copy": how}


def restore_files(backup: BackupSet, plan: RestorePlan, data_dir: Path, models_dir: Path) -> dict:
    """Put the plan's files from `backup` in place. Each database: its -wal/-shm/-journal removed
    first (a stale WAL would be replayed onto the restored file), the copy written under a
    temporary name beside the target, then os.replace. The models folder: each file the same way,
    manifest.json last, then whatever the backup does not hold is removed. Call it with the
    owning services stopped and the current files kept (keep_current)."""
    restored = []
    for rel in plan.databases:
        target = data_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in _SIDE_FILES:
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        _put(backup.folder / rel, target)
        restored.append({"database": rel, "bytes": target.stat().st_size})
    models = _restore_models(backup.folder / MODELS_DIR, models_dir) if plan.models else None
    return {"databases": restored, "models": models}


def _put(source: Path, target: Path) -> None:
    """Copy `source` over `target` atomically: a reader sees the old file or the new, never half."""
    tmp = target.with_name(f".{target.name}.restoring")
    tmp.unlink(missing_ok=True)
    if source.is_symlink():
        os.symlink(os.readlink(source), tmp)
    else:
        shutil.copy2(source, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, target)


def _restore_models(source: Path, models_dir: Path) -> dict:
    models_dir.mkdir(parents=True, exist_ok=True)
    wanted = _tree(source)
    # The manifest and the `current` pointer last: ml-model never reads a manifest that names
    # files not yet in place, nor a pointer to a set not yet whole.
    for rel in sorted(wanted, key=lambda r: (r in (MANIFEST, POINTER), r)):
        target = models_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        _put(wanted[rel], target)
    removed = []
    for rel, path in sorted(_tree(models_dir).items(), reverse=True):
        if rel not in wanted:
            path.unlink()
            removed.append(rel)
    for top, dirs, _files in sorted(os.walk(models_dir), reverse=True):  # now-empty folders
        for name in dirs:
            folder = Path(top) / name
            if not folder.is_symlink() and not any(folder.iterdir()):
                if not (source / folder.relative_to(models_dir)).is_dir():
                    folder.rmdir()
    total = sum(p.stat().st_size for p in wanted.values() if not p.is_symlink())
    return {"files": len(wanted), "bytes": total, "removed": removed}
