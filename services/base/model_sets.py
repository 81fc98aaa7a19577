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

Trust: model files are pickles (unpickling runs code), and a manifest says which hashes are
good, so whoever can write the models folder, `sets/`, a set's folder or a manifest can run code
as ml-model. `check_trusted` refuses (UntrustedModels, one line naming the path, its owner and
mode, and the fix) any of them that is not owned by this process's user or is writable by group
or others; ml-model runs it before it starts and before it serves a set. Everything written here
is created 0755/0644 at most (the umask may narrow it, never widen it: `write_file`, `make_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import re
import shutil
import stat
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
INFERENCE_DIR = ".inference"  # cached inference forms (ml-model's model_inference)
DIR_MODE = 0o755  # folders and files under models/: readable, writable by the owner only
FILE_MODE = 0o644
_NAME_RE = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")


class ModelSetError(Exception):
    """A model set cannot be used as asked."""


class UnknownSet(ModelSetError):
    """No set of that name (a usage error at the CLI: exit 2)."""


class SetNotVerified(ModelSetError):
    """The set's manifest or a file's hash does not verify: it is never promoted."""


class UntrustedModels(ModelSetError):
    """Someone other than the service's user may write the models: an operator must fix the
    ownership or modes (ml-model exits 78 rather than serve them)."""


def _owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def trust_problem(path: Path, uid: int) -> str | None:
    """Why `path` (followed if a link: what counts is what is read) cannot be trusted, or None."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None  # nothing there to trust yet
    except OSError as exc:
        return f"{path} cannot be checked ({exc.strerror})"
    mode = stat.S_IMODE(info.st_mode)
    kind = "folder" if stat.S_ISDIR(info.st_mode) else "file"
    if info.st_uid != uid:
        why = f"is owned by {_owner_name(info.st_uid)}, not by {_owner_name(uid)} who runs the service"
    elif mode & 0o022:
        why = f"is writable by {'group and others' if mode & 0o022 == 0o022 else 'group' if mode & 0o020 else 'others'}"
    else:
        return None
    return f"the models {kind} {path} {why} (mode {mode:04o})"


def trusted_paths(models_dir: Path) -> list[Path]:
    """What check_trusted checks: the folder, `current`, `sets/`, every set's folder, manifest
    and inference-form folder, and a flat layout's manifest and forms folder."""
    paths = [models_dir, models_dir / POINTER, models_dir / MANIFEST, models_dir / INFERENCE_DIR]
    root = sets_root(models_dir)
    paths.append(root)
    for name in set_names(models_dir):
        paths += [root / name, root / name / MANIFEST, root / name / INFERENCE_DIR]
    return paths


def check_trusted(models_dir: Path, uid: int | None = None) -> None:
    """UntrustedModels (one line: path, owner, mode, fix) unless every path of trusted_paths that
    exists is owned by `uid` (default: this process's effective user) and not group/other writable.
    A models folder that does not exist yet passes: there is nothing in it to serve."""
    uid = os.geteuid() if uid is None else uid
    for path in trusted_paths(models_dir):
        problem = trust_problem(path, uid)
        if problem is not None:
            user = _owner_name(uid).split(" ")[0]
            raise UntrustedModels(
                f"refusing to serve models: {problem}; model files are pickles, so whoever can write "
                f"there can run code as this service. Fix: chown -R {user} {models_dir} && "
                f"chmod -R go-w {models_dir}"
            )


def make_dir(path: Path) -> None:
    """A folder (and missing parents) created 0755 at most; an existing one loses group/other write
    only if this user owns it (else check_trusted names it)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid == os.geteuid() and info.st_mode & 0o022:
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o022)


def write_file(path: Path, data: bytes) -> None:
    """Create or overwrite `path` with `data`, 0644 at most (also when it existed with more)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & ~0o022)
        handle.write(data)
        handle.flush()
        os.fsync(fd)


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
    make_dir(root)
    base = set_name_for(moment)
    for attempt in range(1000):
        path = root / (base if attempt == 0 else f"{base}-{attempt}")
        try:
            path.mkdir(mode=DIR_MODE)
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
    write_file(temp, text.encode("utf-8"))
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
    fd = os.open(models_dir / HISTORY, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
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
    if (models_dir / INFERENCE_DIR).is_dir():
        os.replace(models_dir / INFERENCE_DIR, folder / INFERENCE_DIR)
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
