"""Versioned model sets: every training run is a set of its own, and one pointer says which serves.

    <TRADING_MODELS_DIR>/
        sets/20261130T061502Z/   manifest.json, the model files, .inference/, report.txt,
                                 status.json (candidate / promoted / rejected, and why)
        sets/20261207T060011Z/   ...
        current                  one line: the name of the set in service
        promotions.jsonl         every switch of `current` (time, set, previous, reason)

A set is written whole before anything points at it, and nothing rewrites a set afterwards
(status.json aside). `current` is switched atomically (a temporary file renamed over it), so a
reader sees the old set or the new one, never a mix; ml-model notices the change and swaps only
once the new set has verified. A set is promoted only when its manifest parses and every model
file's SHA-256 matches it. `rollback` goes back to the set that served before the current one.
Pruning keeps the newest `keep` sets (default 10) and never removes the current one.

A models folder with `manifest.json` at its top and no `current` (the layout before sets, and
what tests install) is served as it is; the next training run moves it into a set of its own
(`adopt_flat`), so it can be rolled back to.

Used by the training script, ml-model (which serves the current set) and the manager CLI
(`models list|promote|rollback`), without any of them importing another's modules. No
scikit-learn here: a set is checked by hashes, never unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SETS_DIR = "sets"
POINTER = "current"
HISTORY = "promotions.jsonl"
STATUS = "status.json"
MANIFEST = "manifest.json"
REPORT = "report.txt"
DEFAULT_KEEP = 10
MANIFEST_SCHEMA_VERSION = 1
_NAME_RE = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")


class ModelSetError(Exception):
    """A model set cannot be used as asked."""


class UnknownSet(ModelSetError):
    """No set of that name (a usage error at the CLI: exit 2)."""


class SetNotVerified(ModelSetError):
    """The set's manifest or a file's hash does not verify: it is never promoted."""


def set_name_for(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def sets_root(models_dir: Path) -> Path:
    return models_dir / SETS_DIR


def set_path(models_dir: Path, name: str) -> Path:
    """The folder of set `name`; UnknownSet for a name that is not a set's (or not there)."""
    if not _NAME_RE.match(name):
        raise UnknownSet(f"{name!r} is not a model set name (like 20261130T061502Z)")
    path = sets_root(models_dir) / name
    if not path.is_dir():
        known = ", ".join(set_names(models_dir)[-5:]) or "none"
        raise UnknownSet(f"no model set {name} in {sets_root(models_dir)} (newest: {known})")
    return path


def set_names(models_dir: Path) -> list[str]:
    """Every set's name, oldest first (names are UTC timestamps, so they sort by time)."""
    root = sets_root(models_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))


def new_set_dir(models_dir: Path, moment: datetime) -> Path:
    """A new, empty set folder named after `moment` (a suffix when that second is taken)."""
    root = sets_root(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = set_name_for(moment)
    for attempt in range(1000):
        path = root / (base if attempt == 0 else f"{base}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ModelSetError(f"cannot create a set folder for {base} in {root}")


def current_name(models_dir: Path) -> str | None:
    """The set `current` names, or None (no pointer: the flat layout, or nothing trained)."""
    try:
        name = (models_dir / POINTER).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return name or None


def serving_dir(models_dir: Path) -> Path:
    """The folder whose manifest.json serves: the current set's, else the models folder itself."""
    name = current_name(models_dir)
    return models_dir if name is None else sets_root(models_dir) / name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The parsed manifest.json of a set (or flat folder); SetNotVerified when unusable."""
    try:
        raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SetNotVerified(f"{folder.name}: no readable {MANIFEST} ({exc})") from None
    if not isinstance(raw, dict) or raw.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise SetNotVerified(f"{folder.name}: {MANIFEST} is not a schema-{MANIFEST_SCHEMA_VERSION} manifest")
    if not isinstance(raw.get("models"), list) or not raw["models"]:
        raise SetNotVerified(f"{folder.name}: {MANIFEST} lists no models")
    return raw


def verify_set(folder: Path) -> dict[str, Any]:
    """The manifest, once it parses and every model file in it hashes to its SHA-256; else
    SetNotVerified naming the first problem."""
    raw = read_manifest(folder)
    for entry in raw["models"]:
        try:
            name, expected = str(entry["file"]), str(entry["sha256"])
        except (KeyError, TypeError):
            raise SetNotVerified(f"{folder.name}: a model entry lacks file or sha256") from None
        if not name or name != Path(name).name or name in (".", ".."):
            raise SetNotVerified(f"{folder.name}: model file name {name!r} is not a plain name")
        try:
            actual = sha256_file(folder / name)
        except OSError as exc:
            raise SetNotVerified(f"{folder.name}: {name} is unreadable ({exc})") from None
        if actual != expected:
            raise SetNotVerified(f"{folder.name}: {name} does not match its SHA-256 in the manifest")
    return raw


def read_status(folder: Path) -> dict[str, Any]:
    try:
        status = json.loads((folder / STATUS).read_text(encoding="utf-8"))
        return status if isinstance(status, dict) else {}
    except (OSError, ValueError):
        return {}


def write_status(folder: Path, state: str, at: str, **facts: Any) -> dict[str, Any]:
    """Record a set's state (candidate, promoted, rejected) and why, atomically."""
    status = {**read_status(folder), "state": state, "at": at, **facts}
    _write_atomically(folder / STATUS, json.dumps(status, indent=2) + "\n")
    return status


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def history(models_dir: Path) -> list[dict[str, Any]]:
    """Every switch of `current`, oldest first."""
    try:
        lines = (models_dir / HISTORY).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return [item for item in found if isinstance(item, dict)]


def promote(models_dir: Path, name: str, at: datetime, reason: str) -> dict[str, Any]:
    """Point `current` at set `name` once it verifies. UnknownSet, SetNotVerified otherwise."""
    folder = set_path(models_dir, name)
    verify_set(folder)
    previous = current_name(models_dir)
    _write_atomically(models_dir / POINTER, name + "\n")
    record = {"at": at.isoformat(), "set": name, "previous": previous, "reason": reason}
    with open(models_dir / HISTORY, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    write_status(folder, "promoted", at.isoformat(), reason=reason)
    return record


def rollback(models_dir: Path, at: datetime) -> dict[str, Any]:
    """Promote again the set that served before the current one (the newest such set that is
    still there and verifies)."""
    current = current_name(models_dir)
    if current is None:
        raise ModelSetError(f"no current model set in {models_dir}: nothing to roll back")
    tried = []
    for record in reversed(history(models_dir)):
        previous = record.get("previous")
        if record.get("set") != current or not previous or previous == current or previous in tried:
            continue
        tried.append(previous)
        try:
            return promote(models_dir, previous, at, f"rollback from {current}")
        except ModelSetError:
            continue
    raise ModelSetError(
        f"no earlier set to roll back to from {current}"
        + (f" (tried {', '.join(tried)}: gone or not verifying)" if tried else "")
    )


def prune(models_dir: Path, keep: int = DEFAULT_KEEP) -> list[str]:
    """Delete the oldest sets beyond `keep`, never the current one; the names removed."""
    current = current_name(models_dir)
    names = set_names(models_dir)
    removable = [n for n in names if n != current]
    excess = len(names) - max(1, keep)
    removed = removable[: max(0, excess)]
    for name in removed:
        shutil.rmtree(sets_root(models_dir) / name, ignore_errors=True)
    return removed


def adopt_flat(models_dir: Path, at: datetime) -> str | None:
    """Move a flat models folder (manifest.json at its top, no `current`) into a set of its own
    and point `current` at it; the set's name is its manifest's generation time. None when there
    is nothing to adopt."""
    if current_name(models_dir) is not None or not (models_dir / MANIFEST).is_file():
        return None
    try:
        raw = read_manifest(models_dir)
        made = datetime.fromisoformat(str(raw.get("generated_at")))
    except (SetNotVerified, ValueError):
        return None  # not a usable manifest: leave the folder alone, the new set serves
    folder = new_set_dir(models_dir, made)
    for entry in raw["models"]:
        source = models_dir / str(entry.get("file", ""))
        if source.is_file() and source.parent == models_dir:
            os.replace(source, folder / source.name)
    if (models_dir / ".inference").is_dir():
        os.replace(models_dir / ".inference", folder / ".inference")
    os.replace(models_dir / MANIFEST, folder / MANIFEST)
    try:
        promote(models_dir, folder.name, at, "adopted the models trained before model sets")
    except SetNotVerified:
        write_status(
            folder, "rejected", at.isoformat(), reason="adopted from the flat layout, does not verify"
        )
        return None
    return folder.name


def describe(models_dir: Path, name: str) -> dict[str, Any]:
    """One set for `models list`: when, on what, its state, and whether it verifies now."""
    folder = sets_root(models_dir) / name
    status = read_status(folder)
    try:
        raw = verify_set(folder)
        verified, problem = True, None
    except SetNotVerified as exc:
        raw, verified, problem = {}, False, str(exc)
        with contextlib.suppress(SetNotVerified):
            raw = read_manifest(folder)
    models = raw.get("models") or []
    return {
        "set": name,
        "current": name == current_name(models_dir),
        "state": status.get("state", "unknown"),
        "reason": status.get("reason"),
        "generated_at": raw.get("generated_at"),
        "source": raw.get("source"),
        "synthetic": bool(raw.get("synthetic")),
        "symbols": raw.get("symbols") or sorted({m.get("symbol") for m in models if isinstance(m, dict)}),
        "models": len(models),
        "label_end": max(
            (str(m.get("data", {}).get("label_end")) for m in models if isinstance(m, dict)), default=None
        ),
        "verified": verified,
        "problem": problem,
    }
