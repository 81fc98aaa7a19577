"""ml-model service: per-bank scikit-learn models behind JSON-RPC, with live performance tracking.

Models come only from the manifest of the model set `<models dir>/current` names
(`<models dir>/sets/<UTC timestamp>/manifest.json`, services.base.model_sets; or, in the layout
before sets, `<models dir>/manifest.json`) written by `python services/ml-model/train_models.py`.
With no manifest the service still starts, reports `degraded`, and answers model methods with
-32002 naming the training command. A new current set is loaded and verified while the old one
serves, then swapped in (watched every TRADING_ML_MODEL_WATCH_S, or at once on reload_models);
retrain_models trains a candidate in a child and promotes it only by the promotion rule
(model_promotion); health warns about a set's age (model_freshness) and drift (model_drift).

This process never imports scikit-learn, scipy, pandas, numpy or joblib (together ~130 MB of
PSS; health lists any that are loaded under `heavy_modules_loaded`). At start, and whenever a
model is first needed, it checks each model file's SHA-256 against the manifest (model_store:
pickles run code) and then uses the file's inference form (model_inference: plain arrays,
evaluated in pure Python, equal to scikit-learn's output): the cached
`<models dir>/.inference/<sha256>.json` when its bytes hash to the SHA-256 the manifest records
for it (`inference_sha256`; a sidecar for older sets) and its recorded source SHA-256 matches,
else one made by a short-lived child, `python services/ml-model/model_converter.py FILE SHA256
...`, which checks the hash again, unpickles and converts; the service then caches what it returns.
It refuses to start (exit 78, one line) when the models folder, `sets/`, a set's folder or a
manifest is not owned by its user or is writable by group or others (model_sets.check_trusted),
and refuses to switch to such a set later.

Every served vote (each model's and the ensemble's) is stored in `<data dir>/ml_model.db`.
Its outcome is the direction of the next trading day's adj close after the bar the features
describe (`as_of`); outcomes are filled from market-data's `get_price_history` when that
service has the next bar (on `market_data_updated` and before `get_model_performance`), or
given directly with `record_outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
import uuid
from asyncio.subprocess import PIPE
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from services.base import (
    EXIT_NEEDS_OPERATOR,
    BaseService,
    Event,
    InvalidParams,
    NotConfigured,
    NotFound,
    RpcError,
    ServiceError,
    on_event,
    rpc,
    run_service,
)
from services.base.child_env import MODEL_CONVERTER, TRAIN_MODELS, child_environment
from services.base.cpu_lane import run_cpu
from services.base.knobs import read_knobs
from services.base.model_inference import (
    InferenceFormError,
    InferenceModel,
    from_form,
    read_cached,
    write_cached,
)
from services.base.model_sets import (
    ModelSetError,
    SetNotVerified,
    UntrustedModels,
    check_trusted,
    current_name,
    promote,
    prune,
    read_manifest,
    read_status,
    serving_dir,
    set_names,
    write_status,
)
from services.base.model_store import (
    TRAINING_COMMAND,
    Manifest,
    ModelEntry,
    ModelIntegrityError,
    ModelNotFound,
    ModelsNotTrained,
    load_manifest,
    verify_model_file,
)
from services.base.storage import StorageKnobs
from services.domain import asx_calendar
from services.domain.bars import bar_from_dict, latest_session
from services.domain.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    FeatureValidationError,
    validate_features,
)
from services.domain.model_voting import (
    confidence_of,
    direction_of,
    ensemble_reply_numbers,
    ensemble_vote,
)
from services.ml_model.ml_model_knobs import MlModelKnobs
from services.ml_model.ml_prediction_log import ENSEMBLE, PredictionLog, Vote, outcome_after
from services.ml_model.model_drift import Drift, drift
from services.ml_model.model_freshness import SetAge, set_age
from services.ml_model.model_promotion import Decision, decide

MARKET_DATA = "market-data"
#: The longest the warm-up waits for the supervisor's first health check (_warm).
WARM_AFTER_HEALTH_S = 2.0
CONVERTER = Path(__file__).resolve().with_name("model_converter.py")
TRAINER = Path(__file__).resolve().with_name("train_models.py")
# Big modules that must stay out of this process (the converter child imports them instead).
HEAVY_MODULES = ("sklearn", "scipy", "pandas", "numpy", "joblib")
# A bar date before the ASX calendar's table is a typo (0001-01-01), not a session: its predictions
# and outcomes would only pollute the live accuracy figures.
EARLIEST_AS_OF = date(2000, 1, 1)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    entry: ModelEntry
    model: InferenceModel
    load_ms: float
    form_origin: str  # "cache" or "converter"


@dataclass(eq=False)
class ServedSet:
    """One model set as this process holds it: its manifest and the models loaded from it.

    Requests take the set in service once, at their start, and use it to the end, so a switch
    to another set never mixes two sets' models in one answer."""

    name: str | None  # the set's name under models/sets/, None for a flat models folder
    folder: Path
    stamp: tuple[str, int, int]  # (folder, manifest mtime_ns, size): what the watcher compares
    manifest: Manifest
    loaded: dict[tuple[str, str], LoadedModel] = field(default_factory=dict)
    refused: dict[tuple[str, str], str] = field(default_factory=dict)


class MlModelService(BaseService):
    name = "ml-model"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.models_dir: Path = self.settings.models_dir
        self.knobs = read_knobs(MlModelKnobs, self.settings.environ)
        self.synchronous = read_knobs(StorageKnobs, self.settings.environ).synchronous
        self.prediction_log: PredictionLog | None = None
        self._active: ServedSet | None = None
        self._not_trained: str | None = None  # why there is no set in service
        self._switch_lock = asyncio.Lock()
        self._switch_failure: dict | None = None  # the last set that did not verify, and why
        self._failed_stamp: tuple[str, int, int] | None = None  # not retried until it changes
        self.switches: list[dict] = []  # each switch: from, to, ms (newest last, a few kept)
        self._load_lock = asyncio.Lock()
        self._warm_task: asyncio.Task | None = None
        #: Set by the first `health` call: the warm-up waits for it (WARM_AFTER_HEALTH_S at most).
        self._health_asked = asyncio.Event()
        self._watch_task: asyncio.Task | None = None
        self._retrain_lock = asyncio.Lock()
        self.retrain_decisions: list[dict] = []  # this process's retrain decisions, newest last
        self._last_resolution: dict[str, float] = {}
        self._resolution_note = "no outcome lookup yet"
        self.counters = {"predictions_served": 0, "ensembles_served": 0, "outcomes_resolved": 0}

    def run(self) -> None:
        """As every service's, but first refuse (exit 78, one line for the supervisor to show) a
        models folder that someone other than this user may write: its pickles would run their code."""
        try:
            check_trusted(self.models_dir)
        except UntrustedModels as exc:
            print(f"{self.name}: {exc}", file=sys.stderr)
            sys.exit(EXIT_NEEDS_OPERATOR)
        super().run()

    async def on_start(self) -> None:
        self.prediction_log = PredictionLog(self.settings.data_dir / "ml_model.db", self.synchronous)
        self._watch_task = asyncio.create_task(self._watch_models())
        served = self._read_set()
        if served is None:
            self.log.warning("starting without models: %s", self._not_trained)
            return
        self._active = served
        self.log.info(
            "manifest loaded",
            extra={
                "models": len(served.manifest.entries),
                "source": served.manifest.raw.get("source"),
                "model_set": served.name,
            },
        )
        # Check and load every model now, so a bad file shows in the log and health at once;
        # in the background, because a missing form means a converter run of a few seconds.
        self._warm_task = asyncio.create_task(self._warm(served))

    async def on_stop(self) -> None:
        for task in (self._warm_task, self._watch_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.prediction_log is not None:
            self.prediction_log.close()

    async def health_details(self) -> dict:
        self._health_asked.set()
        details: dict[str, Any] = {
            "models_loaded": 0 if self._active is None else len(self._active.loaded),
            "heavy_modules_loaded": [name for name in HEAVY_MODULES if name in sys.modules],
            "feature_version": FEATURE_VERSION,
            "predictions_served": self.counters["predictions_served"],
            "pending_outcomes": sum(len(days) for days in self.prediction_log.pending().values()),
        }
        served = self._active
        if served is None:
            why = self._not_trained or "no models"
            return {**details, "models_available": 0, "status": "degraded", "warnings": [why]}
        manifest = served.manifest
        details.update(
            models_available=len(manifest.entries),
            model_source=manifest.raw.get("source"),
            model_set=served.name,
            model_set_switches=len(self.switches),
        )
        warnings = []
        if manifest.raw.get("synthetic"):
            warnings.append(str(manifest.raw.get("warning", "models were trained on synthetic data")))
        age = self._set_age(served)
        details["model_set_age_days"] = age.days
        if age.stale:
            details["status"] = "degraded"
            warnings.append(age.warning())
        drifts = self._drifts(served)
        details["live_vs_validation"] = {d.symbol: d.as_dict() for d in drifts}
        warnings += [d.warning() for d in drifts if d.drifting]
        if self._switch_failure is not None:
            failure = self._switch_failure
            warnings.append(
                f"model set {failure['set']} not switched to: {failure['reason']}; still serving {served.name or 'the flat models folder'}"
            )
        if served.refused:
            details["status"] = "degraded"  # those models are out of every ensemble
            warnings += [
                f"{symbol} {name} refused: {reason}" for (name, symbol), reason in served.refused.items()
            ]
        if warnings:
            details["warnings"] = warnings
        return details

    # ---- the manifest and model files -----------------------------------------------------------

    def _serving(self) -> ServedSet:
        """The set in service; NotConfigured (-32002, with the training command) when none."""
        if self._active is None:
            # Models trained since the start serve at once (nothing was serving to keep).
            self._active = self._read_set()
        if self._active is None:
            why = self._not_trained or f"no models; train them: {TRAINING_COMMAND}"
            raise NotConfigured(why, data={"command": TRAINING_COMMAND})
        return self._active

    def _set_age(self, served: ServedSet) -> SetAge:
        return set_age(
            served.name, served.manifest.raw.get("generated_at"), self.clock.now(), self.knobs.max_age_days
        )

    def _drifts(self, served: ServedSet) -> list[Drift]:
        """Per symbol of the set: the ensemble's live accuracy over the last drift_days resolved
        days against the models' validation accuracy (model_drift)."""
        found = []
        for symbol in dict.fromkeys(e.symbol for e in served.manifest.entries):
            votes = self.prediction_log.recent_resolved(symbol, ENSEMBLE, served.name, self.knobs.drift_days)
            validation = [e.metrics.get("accuracy") for e in served.manifest.for_symbol(symbol)]
            found.append(drift(symbol, [v.direction == v.outcome for v in votes], validation))
        return found

    def _current_manifest(self) -> Manifest:
        return self._serving().manifest

    def _pointer_stamp(self) -> tuple[str, int, int] | None:
        """What identifies the set `current` names now: its folder and its manifest's mtime/size."""
        folder = serving_dir(self.models_dir)
        try:
            stat = (folder / "manifest.json").stat()
        except OSError:
            return None
        return (str(folder), stat.st_mtime_ns, stat.st_size)

    def _read_set(self) -> ServedSet | None:
        """The set `current` names (or the flat folder), parsed but not loaded; None, with the
        reason kept in `_not_trained`, when there is no usable manifest."""
        folder = serving_dir(self.models_dir)
        stamp = self._pointer_stamp()
        try:
            check_trusted(self.models_dir)  # again: a set trained or re-owned since the start
            manifest = load_manifest(folder)
        except UntrustedModels as exc:
            self._not_trained = str(exc)
            self.log.error("%s", exc)
            return None
        except ModelsNotTrained as exc:
            self._not_trained = str(exc)
            return None
        name = current_name(self.models_dir)
        return ServedSet(name, folder, stamp or (str(folder), 0, 0), manifest)

    async def _watch_models(self) -> None:
        """Switch to a new current set when the pointer (or a flat manifest) changes."""
        while True:
            await asyncio.sleep(self.knobs.watch_s)
            stamp = self._pointer_stamp()
            active = None if self._active is None else self._active.stamp
            if stamp is not None and stamp != active and stamp != self._failed_stamp:
                try:
                    await self._switch("the models pointer changed")
                except Exception:  # a background task: nobody else would see this
                    self.log.exception("switching model sets failed")

    async def _switch(self, why: str) -> dict:
        """Load and verify the set `current` names; only when every model in it loads does it
        replace the set in service (which serves meanwhile). The outcome, as reload_models says."""
        async with self._switch_lock:
            started = time.perf_counter()
            previous = self._active
            candidate = self._read_set()
            if candidate is None:
                return self._switch_refused(None, self._not_trained or "no manifest", previous)
            if previous is not None and candidate.stamp == previous.stamp:
                return {"switched": False, "model_set": previous.name, "reason": "already serving it"}
            entries, problems = [], []
            for entry in candidate.manifest.entries:
                try:
                    entries.append(self._checked_entry(entry))
                except RpcError as exc:
                    problems.append(f"{entry.symbol} {entry.model_name}: {exc.message}")
            results = await self._load(entries, candidate)
            problems += [
                f"{key[1]} {key[0]}: {getattr(r, 'message', r)}"
                for key, r in results.items()
                if isinstance(r, RpcError)
            ]
            if problems:
                return self._switch_refused(candidate, "; ".join(problems[:3]), previous)
            self._active, self._switch_failure, self._failed_stamp = candidate, None, None
            ms = round((time.perf_counter() - started) * 1000, 1)
            record = {
                "switched": True,
                "model_set": candidate.name,
                "previous": None if previous is None else previous.name,
                "models": len(entries),
                "ms": ms,
                "why": why,
                "at": self.clock.now().isoformat(),
            }
            self.switches = [*self.switches[-9:], record]
            self.log.info("model set switched", extra=record)
            return record

    def _switch_refused(self, candidate: ServedSet | None, reason: str, previous: ServedSet | None) -> dict:
        name = None if candidate is None else candidate.name
        self._switch_failure = {"set": name, "reason": reason, "at": self.clock.now().isoformat()}
        # Not tried again until it changes (an unreadable manifest too: no error every watch tick).
        self._failed_stamp = self._pointer_stamp() if candidate is None else candidate.stamp
        self.log.error("model set not switched to", extra={"model_set": name, "reason": reason})
        return {
            "switched": False,
            "model_set": None if previous is None else previous.name,
            "refused_set": name,
            "reason": reason,
        }

    @rpc
    async def reload_models(self) -> dict:
        """Switch to the set models/current names now (as the watcher would), once it verifies;
        until then, and if it does not, the set in service keeps serving."""
        return await self._switch("reload_models")

    def _entry(self, served: ServedSet, model_name: str, symbol: str) -> ModelEntry:
        try:
            entry = served.manifest.find(model_name, symbol)
        except ModelNotFound as exc:
            raise NotFound(str(exc), data={"model_name": model_name, "symbol": symbol}) from None
        return self._checked_entry(entry)

    @staticmethod
    def _checked_entry(entry: ModelEntry) -> ModelEntry:
        if entry.feature_names != FEATURE_NAMES or entry.feature_version != FEATURE_VERSION:
            # Same names in another order would silently feed the wrong columns: refuse, retrain.
            raise NotConfigured(
                f"{entry.model_name} for {entry.symbol} was trained on feature version {entry.feature_version} "
                f"({len(entry.feature_names)} features); this service builds {FEATURE_VERSION}: retrain with "
                f"{TRAINING_COMMAND}",
                data={"command": TRAINING_COMMAND},
            )
        return entry

    async def _model(self, model_name: str, symbol: str) -> tuple[ServedSet, LoadedModel]:
        served = self._serving()
        entry = self._entry(served, model_name, symbol)
        result = (await self._load([entry], served))[entry.key]
        if isinstance(result, RpcError):
            raise result
        return served, result

    async def _warm(self, served: ServedSet) -> None:
        # Under the supervisor, its first health check comes first: the warm-up's thread would hold
        # the GIL each time the loop gave it up for a system call (a socket, SQLite, /proc), and the
        # answer took ~10 ms longer, the restart's last step. A prediction asked meanwhile loads what
        # it needs itself (_load).
        if self.settings.environ.get("TRADING_SUPERVISED") == "1":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._health_asked.wait(), WARM_AFTER_HEALTH_S)
        started, entries = time.perf_counter(), []
        for entry in served.manifest.entries:
            try:
                entries.append(self._checked_entry(entry))
            except RpcError as exc:
                self.log.warning("model not servable", extra={"file": entry.file, "reason": exc.message})
        try:
            results = await self._load(entries, served)
        except Exception:  # a background task: nobody else would see this
            self.log.exception("loading models at start failed")
            return
        loaded = [r for r in results.values() if isinstance(r, LoadedModel)]
        self.log.info(
            "models loaded",
            extra={
                "loaded": len(loaded),
                "refused": len(results) - len(loaded),
                "converted": sum(m.form_origin == "converter" for m in loaded),
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )

    async def _load(
        self, entries: list[ModelEntry], served: ServedSet
    ) -> dict[tuple[str, str], LoadedModel | RpcError]:
        """Each entry's model, hash-checked, or the typed error that keeps it out (never raised)."""
        async with self._load_lock:
            results: dict[tuple[str, str], LoadedModel | RpcError] = {}
            missing: list[ModelEntry] = []
            started = time.perf_counter()
            for entry in entries:
                loaded = served.loaded.get(entry.key)
                if loaded is not None and loaded.entry.sha256 == entry.sha256:
                    results[entry.key] = loaded
                    continue
                try:
                    cached = await run_cpu(self._verified_cached_form, entry, served.folder)
                except ModelIntegrityError as exc:
                    results[entry.key] = self._refuse(entry, "integrity_check_failed", str(exc), served)
                    continue
                if cached is None:
                    missing.append(entry)
                else:
                    results[entry.key] = self._install(entry, cached, started, "cache", served)
            if missing:
                results.update(await self._load_converted(missing, started, served))
            return results

    def _verified_cached_form(self, entry: ModelEntry, folder: Path) -> InferenceModel | None:
        """Check the model file's hash (always: a tampered file is refused even when its form is
        cached), then the cached form if one is usable. Blocking: run it in a thread."""
        verify_model_file(folder, entry.file, entry.sha256)
        recorded = entry.raw.get("inference_sha256")
        try:
            return read_cached(
                folder, entry.sha256, len(FEATURE_NAMES), recorded if isinstance(recorded, str) else None
            )
        except InferenceFormError as exc:
            self.log.warning(
                "refusing the cached inference form of %s (converting the model file again): %s",
                entry.file,
                exc,
                extra={"file": entry.file, "reason": str(exc)},
            )
            return None

    async def _load_converted(self, entries: list[ModelEntry], started: float, served: ServedSet) -> dict:
        try:
            lines = await self._run_converter(entries, served.folder)
        except ServiceError as exc:
            return {e.key: self._refuse(e, "conversion_failed", exc.message, served) for e in entries}
        results: dict[tuple[str, str], LoadedModel | RpcError] = {}
        for entry, line in zip(entries, lines, strict=False):
            results[entry.key] = await self._from_converter_line(entry, line, started, served)
        for entry in entries[len(lines) :]:
            results[entry.key] = self._refuse(
                entry, "conversion_failed", "the model converter gave no result", served
            )
        return results

    async def _from_converter_line(
        self, entry: ModelEntry, line: bytes, started: float, served: ServedSet
    ) -> LoadedModel | RpcError:
        # One model's line at a time: parsing them all at once would leave a larger heap behind.
        try:
            output = json.loads(line)
            if output["sha256"] != entry.sha256:
                raise ValueError(f"result for {output['sha256'][:16]}…, expected {entry.sha256[:16]}…")
            if "form" not in output:
                return self._refuse(entry, str(output["reason"]), str(output["error"]), served)
            model = from_form(output["form"], entry.sha256, len(FEATURE_NAMES))
        except (ValueError, KeyError, TypeError) as exc:  # InferenceFormError is a ValueError
            return self._refuse(entry, "conversion_failed", f"unusable converter result: {exc}", served)
        try:
            await asyncio.to_thread(write_cached, served.folder, output["form"])
        except OSError as exc:  # a read-only models folder: serve anyway, convert again next start
            self.log.warning("cannot cache inference form", extra={"file": entry.file, "reason": str(exc)})
        return self._install(entry, model, started, "converter", served)

    async def _run_converter(self, entries: list[ModelEntry], folder: Path) -> list[bytes]:
        """Run model_converter.py on the (already hash-checked) files: one JSON line per file."""
        args = [str(part) for e in entries for part in (folder / e.file, e.sha256)]
        # Unpickling and copying arrays gains nothing from BLAS/OpenMP thread pools.
        env = {
            **child_environment(MODEL_CONVERTER, os.environ),
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(CONVERTER), *args, stdout=PIPE, stderr=PIPE, env=env
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.knobs.convert_timeout_s)
        except TimeoutError:
            raise ServiceError(f"the model converter took over {self.knobs.convert_timeout_s}s") from None
        finally:
            if process.returncode is None:  # timed out or cancelled: leave no child behind
                process.kill()
                await process.wait()
        if process.returncode != 0:
            tail = err.decode(errors="replace").strip()[-500:]
            raise ServiceError(f"the model converter exited with {process.returncode}: {tail}")
        return out.splitlines()

    def _install(
        self, entry: ModelEntry, model: InferenceModel, started: float, origin: str, served: ServedSet
    ) -> LoadedModel:
        loaded = LoadedModel(entry, model, round((time.perf_counter() - started) * 1000, 2), origin)
        served.loaded[entry.key] = loaded
        served.refused.pop(entry.key, None)
        return loaded

    def _refuse(self, entry: ModelEntry, reason: str, message: str, served: ServedSet) -> ServiceError:
        self.log.error(
            "refused model file",
            extra={"file": entry.file, "reason": reason, "detail": message, "model_set": served.name},
        )
        served.refused[entry.key] = reason
        return ServiceError(message, data={"reason": reason, "file": entry.file})

    # ---- retraining ---------------------------------------------------------------------------

    @rpc
    async def retrain_models(self) -> dict:
        """Train a candidate set on the latest history (the last completed session), then promote
        it only if the promotion rule holds for every symbol, else keep it as rejected with the
        reason. Returns the decision (also in get_model_performance)."""
        if self._retrain_lock.locked():
            raise ServiceError("a retraining run is already in progress")
        async with self._retrain_lock:
            started = time.perf_counter()
            before = set(set_names(self.models_dir))
            output = await self._run_training()
            new = sorted(set(set_names(self.models_dir)) - before)
            if not new:
                raise ServiceError(f"the training run wrote no model set: {output[-300:]}")
            candidate = new[-1]
            folder = self.models_dir / "sets" / candidate
            current = None if self._active is None else self._active.manifest.raw
            try:
                decision = decide(read_manifest(folder), current, self.settings.symbols)
            except SetNotVerified as exc:
                decision = Decision(False, str(exc))
            record = {
                "candidate": candidate,
                "previous": None if self._active is None else self._active.name,
                "decided_at": self.clock.now().isoformat(),
                "training_s": round(time.perf_counter() - started, 1),
                **decision.as_dict(),
            }
            now = self.clock.now()
            if decision.promote:
                try:
                    promote(self.models_dir, candidate, now, f"retrain: {decision.reason}")
                    switch = await self._switch("retrain")
                    record["switched"] = bool(switch.get("switched"))
                    if not switch.get("switched"):
                        record["switch_reason"] = switch.get("reason")
                except ModelSetError as exc:
                    record.update(promote=False, reason=f"not promoted: {exc}")
            write_status(
                folder,
                "promoted" if record["promote"] else "rejected",
                now.isoformat(),
                reason=record["reason"],
                decision=record,
            )
            record["pruned"] = prune(self.models_dir, self.knobs.retrain_keep)
            self.retrain_decisions = [*self.retrain_decisions[-9:], record]
            self.log.info(
                "retrain decided",
                extra={"candidate": candidate, "promote": record["promote"], "reason": record["reason"]},
            )
            return record

    async def _run_training(self) -> str:
        """train_models.py as a child (scikit-learn stays out of this process): its output."""
        args = [
            sys.executable,
            str(TRAINER),
            "--out",
            str(self.models_dir),
            "--candidate",
            "--keep",
            str(self.knobs.retrain_keep),
        ]
        if self.knobs.retrain_source == "synthetic":
            args.append("--synthetic")
        else:
            args += ["--source", self.knobs.retrain_source, "--data-dir", str(self.settings.market_data_dir)]
        env = {
            **child_environment(TRAIN_MODELS, os.environ),
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            **self.clock.env(),
        }
        process = await asyncio.create_subprocess_exec(*args, stdout=PIPE, stderr=PIPE, env=env)
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.knobs.retrain_timeout_s)
        except TimeoutError:
            raise ServiceError(f"retraining took over {self.knobs.retrain_timeout_s:g}s") from None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()
            raise ServiceError(
                f"retraining failed (exit {process.returncode}): {tail[-1] if tail else 'no message'}",
                data={"exit_code": process.returncode},
            )
        return out.decode(errors="replace")

    # ---- params -------------------------------------------------------------------------------

    @staticmethod
    def _features(features: dict) -> list[float]:
        try:
            values = validate_features(features)
        except FeatureValidationError as exc:
            error = InvalidParams("features", str(exc))
            error.data.update(
                problems=exc.problems, expected=list(FEATURE_NAMES), feature_version=FEATURE_VERSION
            )
            raise error from None
        return values

    @staticmethod
    def _symbol(symbol: str) -> str:
        name = symbol.strip().upper()
        if not name or len(name) > 20:
            raise InvalidParams("symbol", f"not a valid symbol: {symbol!r}")
        return name

    def _as_of(self, as_of: str | None) -> date:
        """The bar date the features describe; by default the latest session visible now."""
        visible = latest_session(self.clock.now(), asx_calendar.is_trading_day)
        if as_of is None:
            return visible
        try:
            day = date.fromisoformat(as_of)
        except ValueError:
            raise InvalidParams("as_of", f"expected a date YYYY-MM-DD, got {as_of!r}") from None
        if day > visible:
            raise InvalidParams("as_of", f"{day} is after the latest visible session {visible}")
        if day < EARLIEST_AS_OF:
            raise InvalidParams("as_of", f"{day} is before {EARLIEST_AS_OF}, the start of the ASX calendar")
        return day

    # ---- predictions --------------------------------------------------------------------------

    @rpc
    async def load_model(self, model_name: str, symbol: str) -> dict:
        """Load (hash-checked) and cache one model; returns its version and manifest facts."""
        served, loaded = await self._model(model_name, self._symbol(symbol))
        return {
            **self._describe(loaded.entry),
            "model_set": served.name,
            "loaded": True,
            "load_ms": loaded.load_ms,
            "probability_source": loaded.model.probability_source,
            "estimator": loaded.model.estimator,
            "inference_form": loaded.form_origin,
        }

    @rpc
    async def predict(self, model_name: str, features: dict, symbol: str, as_of: str | None = None) -> dict:
        """One model's direction, P(up), confidence |2p-1| and version for validated features."""
        row, name, day = self._features(features), self._symbol(symbol), self._as_of(as_of)
        served, loaded = await self._model(model_name, name)
        probability = loaded.model.probability_up(row)
        vote = Vote(model_name, loaded.entry.version, probability, direction_of(probability))
        request_id = self._record(name, day, [vote], served.name)
        self.counters["predictions_served"] += 1
        return {
            "prediction_id": request_id,
            "symbol": name,
            "model_name": model_name,
            "version": vote.version,
            "direction": vote.direction,
            "probability": round(probability, 6),
            "confidence": round(confidence_of(probability), 6),
            "probability_source": loaded.model.probability_source,
            "feature_version": FEATURE_VERSION,
            "as_of": day.isoformat(),
            "synthetic": bool(loaded.entry.raw.get("synthetic")),
            "model_set": served.name,
        }

    @rpc
    async def get_ensemble_prediction(self, features: dict, symbol: str, as_of: str | None = None) -> dict:
        """All of a bank's models, weighted by walk-forward skill (ROC AUC - 0.5); each member's vote."""
        row, name, day = self._features(features), self._symbol(symbol), self._as_of(as_of)
        served = self._serving()
        entries = served.manifest.for_symbol(name)
        if not entries:
            raise NotFound(f"no models for {name}; train them with {TRAINING_COMMAND}", data={"symbol": name})
        members, excluded = await self._members(entries, served)
        if not members:
            raise ServiceError(f"no usable model for {name}", data={"excluded": excluded})
        # Pure Python, well under a millisecond for every model together: no thread hop.
        probabilities = [m.model.probability_up(row) for m in members]
        age = self._set_age(served)
        # Past twice the maximum age the votes carry no weight: 0.5, no direction worth acting on.
        probability, weights, method = ensemble_vote(
            probabilities, [m.entry.metrics.get("roc_auc") for m in members], expired=age.expired
        )
        votes = [
            Vote(m.entry.model_name, m.entry.version, p, direction_of(p))
            for m, p in zip(members, probabilities, strict=True)
        ]
        version = _ensemble_version(m.entry.version for m in members)
        request_id = self._record(
            name, day, [*votes, Vote(ENSEMBLE, version, probability, direction_of(probability))], served.name
        )
        self.counters["ensembles_served"] += 1
        direction, stated, confidence = ensemble_reply_numbers(probability)
        return {
            "prediction_id": request_id,
            "symbol": name,
            "direction": direction,
            "probability": stated,
            "confidence": confidence,
            "version": version,
            "members": [
                {
                    "model_name": v.model_name,
                    "version": v.version,
                    "probability": round(v.probability, 6),
                    "weight": round(w, 6),
                    "vote": v.direction,
                    "validation_roc_auc": m.entry.metrics.get("roc_auc"),
                }
                for v, w, m in zip(votes, weights, members, strict=True)
            ],
            "excluded": excluded,
            "weighting": method,
            "feature_version": FEATURE_VERSION,
            "as_of": day.isoformat(),
            "synthetic": any(bool(m.entry.raw.get("synthetic")) for m in members),
            "model_set": served.name,
            "model_set_age_days": age.days,
            "expired": age.as_dict() if age.expired else None,
        }

    async def _members(
        self, entries: list[ModelEntry], served: ServedSet
    ) -> tuple[list[LoadedModel], list[dict]]:
        """The loadable models among `entries`, and why each other one is left out."""
        servable, reasons = [], {}
        for entry in entries:
            try:
                servable.append(self._checked_entry(entry))
            except RpcError as exc:  # one bad model must not silence the others
                reasons[entry.key] = exc.message
        loaded = await self._load(servable, served)
        members = []
        for entry in entries:
            result = loaded.get(entry.key)
            if isinstance(result, LoadedModel):
                members.append(result)
            else:
                reasons.setdefault(entry.key, getattr(result, "message", "not loaded"))
        excluded = [{"model_name": key[0], "reason": reason} for key, reason in reasons.items()]
        return members, excluded

    def _record(self, symbol: str, as_of: date, votes: list[Vote], model_set: str | None) -> str:
        request_id = uuid.uuid4().hex
        self.prediction_log.record(request_id, self.clock.now().isoformat(), symbol, as_of, votes, model_set)
        return request_id

    # ---- inventory and interpretation --------------------------------------------------------

    @rpc
    async def list_available_models(self) -> dict:
        """Every model in the manifest: symbol, name, version, source, validation figures, loaded."""
        served = self._serving()
        manifest = served.manifest
        models = [{**self._describe(e), "loaded": e.key in served.loaded} for e in manifest.entries]
        return {
            "model_set": served.name,
            "models": models,
            "count": len(models),
            "source": manifest.raw.get("source"),
            "synthetic": bool(manifest.raw.get("synthetic")),
            "warning": manifest.raw.get("warning"),
            "feature_version": FEATURE_VERSION,
            "feature_names": list(FEATURE_NAMES),
            "generated_at": manifest.raw.get("generated_at"),
        }

    @rpc
    async def get_feature_importance(self, model_name: str, symbol: str) -> dict:
        """Permutation importance (out of sample, from training) and the model's native importances."""
        _, loaded = await self._model(model_name, self._symbol(symbol))
        permutation = loaded.entry.raw.get("importance") or {}
        values = permutation.get("values") or {}
        native = loaded.model.native_importance
        ranked = sorted(FEATURE_NAMES, key=lambda f: values.get(f, 0.0), reverse=True)
        return {
            "symbol": loaded.entry.symbol,
            "model_name": model_name,
            "version": loaded.entry.version,
            "feature_version": FEATURE_VERSION,
            "method": permutation.get("method", "permutation"),
            "importances": [{"feature": f, "importance": values.get(f)} for f in ranked],
            "native": None
            if native is None
            else {
                "method": native["method"],
                "values": dict(zip(FEATURE_NAMES, native["values"], strict=True)),
            },
        }

    @staticmethod
    def _describe(entry: ModelEntry) -> dict:
        raw = entry.raw
        return {
            "symbol": entry.symbol,
            "model_name": entry.model_name,
            "version": entry.version,
            "file": entry.file,
            "sha256": entry.sha256,
            "source": entry.source,
            "synthetic": bool(raw.get("synthetic")),
            "trained_at": entry.trained_at,
            "feature_version": entry.feature_version,
            "data": raw.get("data"),
            "validation": {
                k: entry.metrics.get(k) for k in ("accuracy", "roc_auc", "roc_auc_se", "brier", "n_test")
            },
        }

    # ---- performance ----------------------------------------------------------------------------

    @rpc
    async def get_model_performance(self, symbol: str | None = None) -> dict:
        """Walk-forward validation figures next to live accuracy of served predictions, per model."""
        manifest = self._current_manifest()
        symbols = (
            [self._symbol(symbol)]
            if symbol is not None
            else list(dict.fromkeys(e.symbol for e in manifest.entries))
        )
        if symbol is not None and not manifest.for_symbol(symbols[0]):
            raise NotFound(f"no models for {symbols[0]}", data={"symbol": symbols[0]})
        await self._resolve_outcomes(symbols, force=True)
        served = self._serving()
        return {
            "as_of": self.clock.now().isoformat(),
            "outcome_resolution": self._resolution_note,
            "model_set": {
                **self._set_age(served).as_dict(),
                "generated_at": manifest.raw.get("generated_at"),
                "source": manifest.raw.get("source"),
            },
            "retrain_decisions": self._recent_decisions(),
            "live_vs_validation": {d.symbol: d.as_dict() for d in self._drifts(served)},
            "symbols": [self._performance(manifest, name) for name in symbols],
        }

    def _recent_decisions(self, count: int = 5) -> list[dict]:
        """The latest retrain decisions, newest first, as the sets' status files keep them (so
        they outlive this process)."""
        found = []
        for name in reversed(set_names(self.models_dir)):
            decision = read_status(self.models_dir / "sets" / name).get("decision")
            if isinstance(decision, dict):
                found.append(decision)
            if len(found) == count:
                break
        return found

    def _performance(self, manifest: Manifest, symbol: str) -> dict:
        live = self.prediction_log.live(symbol)
        entries = manifest.for_symbol(symbol)
        models = [
            {
                "model_name": e.model_name,
                "version": e.version,
                "validation": {
                    k: e.metrics.get(k)
                    for k in ("accuracy", "roc_auc", "roc_auc_se", "brier", "n_test", "mean_fold_roc_auc")
                },
                "beats_baselines_roc_auc": e.raw.get("beats_baselines_roc_auc"),
                "live": _live_view(live.get((e.model_name, e.version))),
            }
            for e in entries
        ]
        version = _ensemble_version(e.version for e in entries)
        return {
            "symbol": symbol,
            "source": entries[0].source if entries else None,
            "baselines": entries[0].raw.get("baselines") if entries else None,
            "walk_forward": entries[0].raw.get("walk_forward") if entries else None,
            "models": models,
            "ensemble": {"version": version, "live": _live_view(live.get((ENSEMBLE, version)))},
        }

    @rpc
    async def record_outcome(self, symbol: str, as_of: str, outcome: Literal["up", "down"]) -> dict:
        """Set the known next-day direction after `as_of` for a symbol's pending predictions."""
        name, day = self._symbol(symbol), self._as_of(as_of)
        if not self._current_manifest().for_symbol(name):  # no models: nothing was ever served for it
            raise NotFound(f"no models for {name}", data={"symbol": name})
        resolved = self.prediction_log.resolve(name, day, outcome, self.clock.now().isoformat())
        self.counters["outcomes_resolved"] += resolved
        return {"symbol": name, "as_of": day.isoformat(), "outcome": outcome, "resolved": resolved}

    @on_event("market_data_updated")
    async def on_market_data_updated(self, event: Event) -> None:
        """New bars may settle pending outcomes: look them up (rate-limited per symbol)."""
        symbol = event.data.get("symbol")
        # Events may arrive while on_start is still opening the log: nothing is pending then.
        if isinstance(symbol, str) and self.prediction_log is not None:
            await self._resolve_outcomes([symbol], force=False)

    async def _resolve_outcomes(self, symbols: list[str], force: bool) -> None:
        """Fill outcomes from market-data's bars for every pending as_of whose next session is out."""
        if not force:
            # Rate-limited symbols first: an event for one looked up moments ago needs no query
            # (the pending scan ran on every market_data_updated, 20 a replayed day).
            symbols = [s for s in symbols if self._resolution_due(s)]
            if not symbols:
                return
        visible = latest_session(self.clock.now(), asx_calendar.is_trading_day)
        pending = self.prediction_log.pending(symbols)
        due = {s: [d for d in pending.get(s, []) if d < visible] for s in symbols}
        due = {s: days for s, days in due.items() if days}  # rate-limited above unless forced
        if not due:
            if force:
                self._resolution_note = "no pending outcome is due yet (the next session's bar is not out)"
            return
        results = await asyncio.gather(*(self._resolve_symbol(s, days, visible) for s, days in due.items()))
        self._resolution_note = "; ".join(results)

    def _resolution_due(self, symbol: str) -> bool:
        last = self._last_resolution.get(symbol)
        return last is None or time.monotonic() - last >= self.knobs.resolve_interval_s

    async def _resolve_symbol(self, symbol: str, days: list[date], visible: date) -> str:
        self._last_resolution[symbol] = time.monotonic()
        span = min(max((visible - days[0]).days + 10, 10), 250)
        try:
            history = await self.call_service(
                MARKET_DATA,
                "get_price_history",
                timeout=self.knobs.lookup_timeout_s,
                symbol=symbol,
                days=span,
            )
        except RpcError as exc:
            return f"{symbol}: market-data unavailable ({exc.message}); {len(days)} day(s) still pending"
        bars = [bar_from_dict(b) for b in history.get("bars", [])]
        now_iso, resolved = self.clock.now().isoformat(), 0
        for day in days:
            outcome = outcome_after(day, bars)
            if outcome is not None:
                resolved += self.prediction_log.resolve(symbol, day, outcome, now_iso)
        self.counters["outcomes_resolved"] += resolved
        return f"{symbol}: {resolved} vote(s) resolved from market-data ({history.get('source')})"


def _ensemble_version(member_versions) -> str:
    """The ensemble changes whenever any member does: a hash of the members' versions."""
    joined = ",".join(sorted(member_versions))
    return "ens-" + hashlib.sha256(joined.encode()).hexdigest()[:12]


def _live_view(stats: dict | None) -> dict:
    if stats is None:
        return {"served": 0, "days": 0, "pending": 0, "resolved": 0, "accuracy": None, "brier": None}
    return stats


if __name__ == "__main__":
    run_service(MlModelService)
