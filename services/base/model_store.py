"""The models directory: its manifest, and the hash check every model file passes before use.

SECURITY: model files are pickles (joblib). Unpickling runs arbitrary code chosen by whoever
wrote the file, so a model file is as dangerous as a script. Therefore:

- only files named in `manifest.json` are used (a bare file name inside the models directory;
  anything with a path separator or `..` is refused), never "whatever is in the folder";
- `verified_model_bytes` reads a file's bytes once and checks their SHA-256 against the
  manifest; the unpickler (model_converter.load_verified_model) unpickles those same bytes from
  memory, so the file cannot be swapped between the check and the load;
- a mismatch is refused with ModelIntegrityError before a single byte is unpickled.

The long-running ml-model service never unpickles at all: it checks the hash here and hands the
file to a short-lived converter process (model_converter), which checks it again before
unpickling. This module imports neither joblib nor numpy, so the service stays light.

The hash protects against accidental corruption and against tampering with the model file
alone; whoever can rewrite the manifest too can run code as this service, so the directory
must be writable only by the account that trains the models: ml-model refuses to start
otherwise (services.base.model_sets.check_trusted).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.base.model_sets import sha256_file, write_file

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
TRAINING_COMMAND = "python services/ml-model/train_models.py --data-dir DIR --out models/"


class ModelStoreError(Exception):
    """Base class: something about the models directory stops a model from being served."""


class ModelsNotTrained(ModelStoreError):
    """No manifest (or an unreadable one): the operator must run the training command."""


class ModelNotFound(ModelStoreError):
    """The manifest has no model of that name for that symbol."""


class ModelIntegrityError(ModelStoreError):
    """The file is missing, outside the models directory, or its hash differs from the manifest."""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model as the manifest describes it (the raw dict is kept for reporting)."""

    symbol: str
    model_name: str
    file: str
    sha256: str
    feature_names: tuple[str, ...]
    feature_version: str
    source: str
    trained_at: str
    metrics: dict[str, float | None]
    raw: dict[str, Any]

    @property
    def version(self) -> str:
        """Short content hash: two different model files never share a version."""
        return self.sha256[:12]

    @property
    def key(self) -> tuple[str, str]:
        return (self.model_name, self.symbol)


@dataclass(frozen=True, slots=True)
class Manifest:
    """The parsed manifest: entries in file order plus the top-level facts."""

    models_dir: Path
    entries: tuple[ModelEntry, ...]
    raw: dict[str, Any]

    def find(self, model_name: str, symbol: str) -> ModelEntry:
        for entry in self.entries:
            if entry.key == (model_name, symbol):
                return entry
        known = sorted({e.model_name for e in self.entries if e.symbol == symbol})
        if not known:
            symbols = sorted({e.symbol for e in self.entries})
            raise ModelNotFound(f"no models for symbol {symbol!r}; trained symbols: {symbols}")
        raise ModelNotFound(f"no model {model_name!r} for {symbol}; available: {known}")

    def for_symbol(self, symbol: str) -> list[ModelEntry]:
        return [entry for entry in self.entries if entry.symbol == symbol]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_manifest(models_dir: Path) -> Manifest:
    """Parse `<models_dir>/manifest.json`. Raises ModelsNotTrained naming the training command."""
    path = models_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelsNotTrained(
            f"no {MANIFEST_NAME} in {models_dir}; train models first: {TRAINING_COMMAND}"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelsNotTrained(f"cannot read {path}: {exc}; retrain: {TRAINING_COMMAND}") from None
    if not isinstance(raw, dict) or raw.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise ModelsNotTrained(
            f"{path} is not a schema-{MANIFEST_SCHEMA_VERSION} manifest; retrain: {TRAINING_COMMAND}"
        )
    try:
        entries = tuple(_entry_from_dict(item) for item in raw["models"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelsNotTrained(
            f"{path} has a malformed model entry ({exc!r}); retrain: {TRAINING_COMMAND}"
        ) from None
    return Manifest(models_dir=models_dir, entries=entries, raw=raw)


def verified_model_bytes(models_dir: Path, file_name: str, sha256: str) -> bytes:
    """The file's bytes, only if they hash to `sha256` (the manifest's); else ModelIntegrityError."""
    path = safe_model_path(models_dir, file_name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelIntegrityError(f"model file {file_name} is unreadable: {exc}") from None
    _check_hash(file_name, sha256_bytes(data), sha256)
    return data


def verify_model_file(models_dir: Path, file_name: str, sha256: str) -> None:
    """Check the file's SHA-256 in chunks, keeping no copy: for a process that will not unpickle it."""
    path = safe_model_path(models_dir, file_name)
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ModelIntegrityError(f"model file {file_name} is unreadable: {exc}") from None
    _check_hash(file_name, actual, sha256)


def _check_hash(file_name: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise ModelIntegrityError(
            f"refusing to load {file_name}: SHA-256 {actual[:16]}… does not match the manifest's "
            f"{expected[:16]}… (file changed or tampered with); retrain: {TRAINING_COMMAND}"
        )


def write_manifest(models_dir: Path, top_level: dict[str, Any], models: Iterable[dict[str, Any]]) -> Path:
    """Write the manifest atomically (temp file + rename), so the service never reads half of one."""
    document = {"schema_version": MANIFEST_SCHEMA_VERSION, **top_level, "models": list(models)}
    path = models_dir / MANIFEST_NAME
    temp = path.with_suffix(".json.tmp")
    write_file(temp, (json.dumps(document, indent=2, sort_keys=False) + "\n").encode("utf-8"))
    os.replace(temp, path)
    return path


def safe_model_path(models_dir: Path, file_name: str) -> Path:
    # A manifest entry like "../../etc/x" or "/tmp/evil" must not point outside the directory.
    if not file_name or file_name != Path(file_name).name or file_name in (".", ".."):
        raise ModelIntegrityError(
            f"model file name {file_name!r} must be a plain name inside the models directory"
        )
    return models_dir / file_name


def _entry_from_dict(item: dict[str, Any]) -> ModelEntry:
    sha = str(item["sha256"])
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"sha256 of {item.get('file')!r} is not 64 lowercase hex digits")
    return ModelEntry(
        symbol=str(item["symbol"]),
        model_name=str(item["model_name"]),
        file=str(item["file"]),
        sha256=sha,
        feature_names=tuple(str(name) for name in item["feature_names"]),
        feature_version=str(item["feature_version"]),
        source=str(item["source"]),
        trained_at=str(item["trained_at"]),
        metrics=dict(item["metrics"]),
        raw=item,
    )
