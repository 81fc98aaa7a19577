"""A parameter sweep on Dask distributed: one replay per (setting, period), each in its own suite.

    service_manager.py sweep SPEC.toml [--scheduler tcp://host:8786] [--workers N] [--out DIR]

The spec (services/domain/sweep_spec.py) is checked first, all of it, before anything runs: an
unknown knob, a value out of its bounds, a period without data or an empty grid exit 2 naming the
entry. Then every run is a Dask task: by default on a LocalCluster of N worker processes (one
thread each; N = the machine's cores), or on the cluster of --scheduler, whose workers have the
same repository and venv and the data directory at the same path.

A task (`replay_task`, on a worker) runs the replay as a child process (`python -m
services.management.sweep run-one JOB.json`), which calls the replay's public entry
(services.management.replay.ReplayDriver) with the setting's knobs in the environment of its
private suite. The child is the unit of clean-up:
- it dies with the worker thread that started it (PR_SET_PDEATHSIG: SIGTERM), so a worker that is
  lost mid-run (SIGKILL) leaves no suite behind, and the scheduler runs the task again elsewhere;
- SIGTERM is turned into KeyboardInterrupt, on which the replay driver stops its suite; whatever
  is still running with the suite's socket directory is then killed (`stop_leftovers`);
- Ctrl-C of the sweep sets a Dask Event that every task polls: a running task stops its child (as
  above) and returns "cancelled", one not yet started returns at once.

What a run decides is hashed (setting, period, the data files' content, the code under services/):
`<out>/runs/<key>/` keeps its replay report (report.json, report.txt, equity.csv, trades.csv,
equity.png) and result.json, and a re-run skips every key whose result.json says ok, so an
interrupted sweep resumes. A failed run is recorded with its reason (and its suite's logs) and
tried again next time. At the end: results.csv, results.md, a heatmap per pair of swept knobs,
and the settings ranked by their out-of-sample Sharpe with the Deflated Sharpe Ratio of the best.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from datetime import time as clock_time
from pathlib import Path
from typing import IO, Any

from services.domain import sweep_spec
from services.domain.sweep_spec import Period, SpecError, SweepSpec

REPO = Path(__file__).resolve().parents[2]
KNOB_CLASSES = ("PredictionKnobs", "PaperTradingKnobs")  # of services.base.knobs.SUITE_KNOBS
RUN_ID_VARIABLE = "SWEEP_RUN_ID"  # marks a run's processes (its child and suite) for clean-up
POLL_S = 0.5
STOP_GRACE_S = 180.0
LOG_TAIL_BYTES = 200_000
PR_SET_PDEATHSIG = 1


class SweepError(Exception):
    """The sweep cannot start; `code` is the exit status (2: the spec or the command line)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


# ---- the knobs a sweep may set -------------------------------------------------------------------


def knob_classes() -> list[type]:
    """prediction's and paper-trading's knob dataclasses (found by name, as `all_knobs` does)."""
    import importlib

    from services.base.knobs import SUITE_KNOBS

    found = []
    for path in SUITE_KNOBS:
        module, _, name = path.partition(":")
        if name in KNOB_CLASSES:
            found.append(getattr(importlib.import_module(module), name))
    return found


def sweepable_knobs() -> dict[str, type]:
    """Knob variable -> the dataclass that reads it (families and replay-managed ones left out)."""
    from services.base.knobs import describe
    from services.management.replay import DROPPED, DROPPED_PREFIXES

    known = {}
    for cls in knob_classes():
        for row in describe(cls):
            if "<" not in row.env and row.env not in DROPPED and not row.env.startswith(DROPPED_PREFIXES):
                known[row.env] = cls
    known.pop("TRADING_PREDICTION_DEGRADE", None)  # the replay keeps it off: decisions never degrade
    return known


def check_setting(setting: Mapping[str, str]) -> None:
    """The knob readers' verdict on one setting (raises ConfigError, a ValueError, naming the knob)."""
    from services.base.knobs import read_knobs

    for cls in knob_classes():
        read_knobs(cls, setting)


# ---- the spec, checked ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    number: int  # 1-based, in the spec's order: settings outer, periods inner
    setting_number: int
    setting: dict[str, str]
    label: str  # the swept knobs' values
    period: Period
    key: str


@dataclass(frozen=True)
class Plan:
    spec: SweepSpec
    data_dir: Path
    models_dir: Path | None
    runs: list[Run]
    code: str


def load_spec(path: Path) -> SweepSpec:
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SweepError(f"{path}: cannot read the spec ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML ({exc})") from None
    try:
        return sweep_spec.parse_spec(doc, sweepable_knobs(), check_setting)
    except SpecError as exc:
        raise SweepError(f"{path}: {exc}") from None


def plan_sweep(spec_path: Path, environ: Mapping[str, str]) -> Plan:
    """The spec parsed and every check done that needs no worker: exit 2 on any problem."""
    from services.base import Settings

    spec = load_spec(spec_path)
    settings = Settings.from_env(dict(environ))
    data_dir = _resolve(spec_path, spec.data_dir) if spec.data_dir else settings.data_dir / "market"
    models_dir = _resolve(spec_path, spec.models_dir) if spec.models_dir else settings.models_dir
    check_periods_have_data(spec.periods, data_dir, (*settings.symbols, settings.market_index))
    hashes = {p.name: _sha256(p) for p in sorted(data_dir.glob("*.csv"))}
    code = code_version()
    runs: list[Run] = []
    for s_number, setting in enumerate(spec.settings, start=1):
        label = sweep_spec.describe_setting(setting, spec.swept)
        for period in spec.periods:
            key = sweep_spec.cache_key(setting, period, hashes, code)
            runs.append(Run(len(runs) + 1, s_number, setting, label, period, key))
    return Plan(spec, data_dir, models_dir if models_dir.exists() else None, runs, code)


def _resolve(spec_path: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return (path if path.is_absolute() else spec_path.parent / path).resolve()


def check_periods_have_data(periods: tuple[Period, ...], data_dir: Path, symbols: tuple[str, ...]) -> None:
    """Every period has ASX trading days and a daily bar of each symbol and the index in it."""
    from services.domain import asx_calendar
    from services.management.replay import read_prices

    if not data_dir.is_dir():
        raise SweepError(f"data_dir: {data_dir} is not a directory")
    missing = [s for s in symbols if not (data_dir / f"{s.lstrip('^')}.csv").is_file()]
    if missing:
        raise SweepError(f"data_dir: {data_dir} lacks {', '.join(missing)} (Yahoo-format daily CSVs)")
    last = max(p.last for p in periods)
    from services.management.replay import at as sydney_at

    prices = read_prices(data_dir, symbols, sydney_at(last, clock_time(23, 59)))
    for period in periods:
        if not asx_calendar.trading_days_between(period.first, period.last):
            raise SweepError(f"period {period.label}: no ASX trading day in it")
        for symbol in symbols:
            if not any(period.first <= d <= period.last for d, _ in prices[symbol][0]):
                raise SweepError(f"period {period.label}: no data for {symbol} in {data_dir}")


def code_version() -> str:
    """A hash of services/**/*.py: any change of the code is a new version (commits or not)."""
    files = sorted((REPO / "services").rglob("*.py"))
    return sweep_spec.code_version(
        (str(p.relative_to(REPO)), p.read_bytes()) for p in files if "__pycache__" not in p.parts
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- models: packed once per period, unpacked on the worker --------------------------------------


def pack_models(models_dir: Path) -> bytes:
    """The serving model set of `models_dir`, flat, as a tar.gz (shipped to workers by Dask)."""
    from services.base.model_sets import serving_dir

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(serving_dir(models_dir), arcname=".")
    return buffer.getvalue()


def unpack_models(blob: bytes, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        tar.extractall(into, filter="data")
    return into


def shipped_models(blob: bytes) -> bytes:
    """Models packed on the client, as a task's result (recomputed if its worker is lost)."""
    return blob


class SweepStopped(Exception):
    """The sweep was interrupted while this task ran: its child was stopped."""


def train_task(job: dict, stop_event: str) -> bytes:
    """On a worker: models trained on `train_years` before the period's first day, packed. The
    training runs in a child process (`train-one`), stopped like a replay's (stop event, worker
    death); a failure raises, and every run of the period fails with its reason."""
    from distributed import Event

    stop = Event(stop_event)
    if stop.is_set():
        raise SweepStopped("the sweep was interrupted")
    work = _work_dir("sweep-train-")
    try:
        (work / "job.json").write_text(json.dumps(job))
        returncode, cancelled = _run_child(work, "train-one", job["run_id"], stop)
        if cancelled:
            raise SweepStopped("the sweep was interrupted")
        if returncode != 0 or not (work / "models.tar.gz").is_file():
            error = work / "error.txt"
            raise RuntimeError(
                error.read_text().strip() if error.is_file() else f"training exited {returncode}"
            )
        return (work / "models.tar.gz").read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def train_one(work: Path) -> int:
    """The child of `train_task`: the replay's own training (clock at the period's first day)."""
    from services.management.replay import ReplayError, ReplayOptions, suite_env, train_models

    job = json.loads((work / "job.json").read_text())
    parent = os.getppid()
    signal.signal(signal.SIGTERM, _interrupted)
    period = _period(job["period"])
    options = ReplayOptions(
        first=period.first, last=period.last, data_dir=Path(job["data_dir"]), out=work / "out",
        train_years=period.train_years,
    )  # fmt: skip
    (work / "logs").mkdir(exist_ok=True)
    try:
        train_models(suite_env(work, options, dict(os.environ)), options, work / "models")
        (work / "models.tar.gz").write_bytes(pack_models(work / "models"))
        return 0
    except (ReplayError, Exception) as exc:
        (work / "error.txt").write_text(str(exc) if isinstance(exc, ReplayError) else repr(exc))
        return 1
    except KeyboardInterrupt:  # subprocess.run killed the training script on the way out
        return 130
    finally:
        if os.getppid() != parent:  # the worker died: nobody will collect the models
            shutil.rmtree(work, ignore_errors=True)


def _interrupted(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _work_dir(prefix: str) -> Path:
    """A fresh work folder owned by this worker process; first, those of dead workers are removed
    (a worker SIGKILLed while its child was still starting leaves its folder behind)."""
    import psutil

    temp = Path(tempfile.gettempdir())
    for old in [*temp.glob("sweep-run-*"), *temp.glob("sweep-train-*")]:
        with contextlib.suppress(OSError, ValueError):
            owner = int((old / "owner").read_text())
            if not psutil.pid_exists(owner):
                shutil.rmtree(old, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    (work / "owner").write_text(str(os.getpid()))
    return work


def _run_child(work: Path, mode: str, run_id: str, stop: Any) -> tuple[int | None, bool]:
    """`python -m services.management.sweep MODE WORK`, dying with this thread; (status, stopped)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), RUN_ID_VARIABLE: run_id}
    with open(work / "stderr.txt", "wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "services.management.sweep", mode, str(work)],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
            preexec_fn=_die_with_parent, start_new_session=True,
        )  # fmt: skip
        cancelled = _wait_child(child, stop)
    return child.returncode, cancelled


# ---- one run, on a worker ------------------------------------------------------------------------


def replay_task(job: dict, models: bytes | None, stop_event: str) -> dict:
    """Run one replay in a child process; return its status, reason and report files (bytes)."""
    from distributed import Event

    started = time.monotonic()
    stop = Event(stop_event)
    if stop.is_set():
        return {"status": "cancelled", "reason": "the sweep was interrupted", "files": {}}
    work = _work_dir("sweep-run-")
    try:
        if models is not None:
            unpack_models(models, work / "models")
            job = {**job, "models_dir": str(work / "models")}
        (work / "job.json").write_text(json.dumps(job))
        returncode, cancelled = _run_child(work, "run-one", job["run_id"], stop)
        result = _collect(work, returncode, cancelled)
    finally:
        _stop_leftovers_of(work)
        shutil.rmtree(work, ignore_errors=True)
    result.update(seconds=round(time.monotonic() - started, 1), host=socket.gethostname(), worker=_worker())
    return result


def _worker() -> str | None:
    from distributed import get_worker

    try:
        return str(get_worker().address)
    except ValueError:  # not on a worker (called directly)
        return None


def _wait_child(child: subprocess.Popen, stop: Any) -> bool:
    """Wait for the child; on the sweep's stop event, SIGTERM it and wait for its clean-up."""
    while True:
        try:
            child.wait(POLL_S)
            return False
        except subprocess.TimeoutExpired:
            pass
        try:
            stopping = stop.is_set()
        except Exception:  # the scheduler is gone: the sweep is over, stop too
            stopping = True
        if stopping:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            return True


def _collect(work: Path, returncode: int | None, cancelled: bool) -> dict:
    out = work / "out"
    files = {
        str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
    } if out.is_dir() else {}  # fmt: skip
    if cancelled:
        return {"status": "cancelled", "reason": "the sweep was interrupted", "files": files}
    if returncode == 0 and "report.json" in files:
        return {"status": "ok", "reason": "", "files": files}
    error = work / "error.txt"
    if error.is_file():
        reason = error.read_text().strip()
    else:
        tail = (work / "stderr.txt").read_bytes()[-2000:].decode(errors="replace").strip().splitlines()
        reason = f"the replay exited with status {returncode}: {tail[-1] if tail else 'no output'}"
    return {"status": "failed", "reason": reason, "files": files}


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started it dies (the worker)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _stop_leftovers_of(work: Path) -> None:
    root = work / "root"
    if root.is_file():
        stop_leftovers(Path(root.read_text().strip()))


def stop_leftovers(root: Path) -> int:
    """SIGKILL every process still running with the replay suite `root` (its socket directory in
    its environment or command line: the supervisor, services, managed redis); how many."""
    from services.management.leftovers import kill_suite_processes

    return kill_suite_processes(root / "sock")


def run_one(work: Path) -> int:
    """The child: one replay through the replay's public entry; error.txt says why it failed."""
    from services.management.replay import ReplayDriver, ReplayError, ReplayOptions

    job = json.loads((work / "job.json").read_text())
    parent = os.getppid()

    signal.signal(signal.SIGTERM, _interrupted)
    period = _period(job["period"])
    options = ReplayOptions(
        first=period.first,
        last=period.last,
        data_dir=Path(job["data_dir"]),
        out=work / "out",
        models_dir=Path(job["models_dir"]) if job.get("models_dir") else None,
        train_years=period.train_years,
        extra_env=job["setting"],
    )
    progress = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    driver = None
    try:
        driver = ReplayDriver(options, progress=progress)
        (work / "root").write_text(str(driver.root))
        driver.run()
        shutil.rmtree(driver.root, ignore_errors=True)
        return 0
    except (ReplayError, Exception) as exc:
        (work / "error.txt").write_text(str(exc) if isinstance(exc, ReplayError) else repr(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if driver is not None and driver.root.exists():
            stop_leftovers(driver.root)
            _keep_logs(driver.root / "logs", work / "out" / "logs")
            shutil.rmtree(driver.root, ignore_errors=True)
        if os.getppid() != parent:  # the worker died: nobody will collect the results
            shutil.rmtree(work, ignore_errors=True)


def _keep_logs(source: Path, into: Path) -> None:
    """The tail of each log of a run that did not finish (kept with its result)."""
    if not source.is_dir():
        return
    into.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.log"):
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            (into / path.name).write_bytes(f.read())


def _period(data: dict) -> Period:
    return Period(
        date.fromisoformat(data["first"]), date.fromisoformat(data["last"]), data["train_years"], data["kind"]
    )


def _period_json(period: Period) -> dict:
    return {"first": period.first.isoformat(), "last": period.last.isoformat(),
            "train_years": period.train_years, "kind": period.kind}  # fmt: skip


# ---- progress ------------------------------------------------------------------------------------


class Progress:
    """done/failed/running counts and an ETA: one redrawn line on a terminal, else plain lines."""

    def __init__(self, total: int, stream: IO[str], clock: Callable[[], float] = time.monotonic):
        self.total, self.stream, self.clock = total, stream, clock
        self.done = self.failed = self.cached = 0
        self.started = clock()
        self.tty = stream.isatty()
        self.last_line = ""

    def line(self, running: int) -> str:
        finished = self.done + self.failed
        elapsed = self.clock() - self.started
        fresh = finished - self.cached
        left = self.total - finished
        eta = "?" if fresh <= 0 or left <= 0 else _duration(elapsed / fresh * left)
        width = 24
        filled = int(width * finished / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        return (
            f"[{bar}] {finished}/{self.total}  done {self.done}  failed {self.failed}"
            f"  running {running}  elapsed {_duration(elapsed)}  ETA {eta if left else '0s'}"
        )

    def show(self, running: int, note: str = "") -> None:
        text = self.line(running)
        if self.tty:
            if note:
                self.stream.write("\r\033[K" + note + "\n")
            self.stream.write("\r\033[K" + text)
        else:
            if note:
                self.stream.write(note + "\n")
            if text != self.last_line:
                self.stream.write(text + "\n")
        self.last_line = text
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _duration(span_s: float) -> str:
    seconds = round(span_s)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


# ---- the sweep -----------------------------------------------------------------------------------


def run_dir(out: Path, run: Run) -> Path:
    return out / "runs" / run.key


def cached_result(out: Path, run: Run) -> dict | None:
    path = run_dir(out, run) / "result.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if result.get("status") == "ok" else None


def save_result(out: Path, run: Run, result: dict) -> dict:
    """The run's files and result.json under <out>/runs/<key>/ (a failed run's replaced next time)."""
    folder = run_dir(out, run)
    if folder.exists():
        shutil.rmtree(folder)
    for name, content in result.get("files", {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    record = {
        "key": run.key,
        "status": result["status"],
        "reason": result.get("reason", ""),
        "setting": run.setting,
        "label": run.label,
        "period": _period_json(run.period),
        "seconds": result.get("seconds"),
        "host": result.get("host"),
        "worker": result.get("worker"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def run_sweep(
    spec_path: Path,
    *,
    out: Path,
    scheduler: str | None = None,
    workers: int | None = None,
    environ: Mapping[str, str] | None = None,
    stream: IO[str] = sys.stderr,
) -> int:
    """The whole sweep; 0 when every run is ok, 1 when any failed, 130 when interrupted.
    SweepError (exit 2) for a bad spec, before anything runs."""
    environ = dict(os.environ if environ is None else environ)
    plan = plan_sweep(spec_path, environ)
    out.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    todo = []
    for run in plan.runs:
        cached = cached_result(out, run)
        if cached is not None:
            records[run.key] = cached
        else:
            todo.append(run)
    progress = Progress(len(plan.runs), stream)
    progress.done = progress.cached = len(records)
    stream.write(
        f"sweep: {len(plan.runs)} runs ({len(plan.spec.settings)} settings x {len(plan.spec.periods)}"
        f" periods), {len(records)} already done in {out}\n"
    )
    interrupted = False
    if todo:
        interrupted = _run_on_dask(plan, todo, out, scheduler, workers, progress, records)
    progress.close()
    summary = write_summary(plan, out, records)
    stream.write(summary + "\n")
    if interrupted:
        stream.write(
            f"sweep interrupted: {len(records)} of {len(plan.runs)} runs recorded; run again to resume\n"
        )
        return 130
    return 1 if any(r["status"] != "ok" for r in records.values()) else 0


def _run_on_dask(
    plan: Plan, todo: list[Run], out: Path, scheduler: str | None, workers: int | None,
    progress: Progress, records: dict[str, dict],
) -> bool:  # fmt: skip
    """Submit the runs, record each as it ends; True when Ctrl-C stopped the sweep."""
    import logging

    from distributed import Client, Event, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    try:
        client = Client(cluster if cluster is not None else scheduler, timeout="30s")
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise SweepError(f"cannot reach the Dask scheduler {scheduler or '(local)'}: {exc}", 1) from None
    stop_name = f"sweep-stop-{os.getpid()}-{time.time_ns()}"
    stop = Event(stop_name, client=client)
    interrupted = False
    try:
        futures = _submit(client, plan, todo, stop_name)
        by_future = {f: run for f, run in futures.items()}
        pending = set(by_future)
        progress.show(_running(client, pending))
        ticker = _Ticker(lambda: progress.show(_running(client, pending)))
        try:
            for future in as_completed(list(by_future)):
                run = by_future[future]
                pending.discard(future)
                result = _result_of(future)
                if result["status"] == "cancelled":
                    continue
                records[run.key] = save_result(out, run, result)
                if result["status"] == "ok":
                    progress.done += 1
                    note = ""
                else:
                    progress.failed += 1
                    note = f"run {run.number} ({run.label}, {run.period.label}) failed: {result['reason']}"
                progress.show(_running(client, pending), note)
        except KeyboardInterrupt:
            interrupted = True
            progress.show(0, "interrupted: stopping the running replays and their suites ...")
            stop.set()
            _wait_stopped(client, list(pending))
            if cluster is not None:  # its workers are ours: wait for their replays' clean-up too
                _wait_runs_gone(stop_name)
        finally:
            ticker.stop()
    finally:
        with contextlib.suppress(Exception):
            client.close(timeout=30)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=30)
    return interrupted


def _submit(client: Any, plan: Plan, todo: list[Run], stop_name: str) -> dict:
    """Models for each period (packed from models_dir when trained before it, else a training
    task), then one replay task per run."""
    from services.base import Settings
    from services.management.replay import models_trained_before

    symbols = Settings.from_env(dict(os.environ)).symbols
    models: dict[Period, Any] = {}
    for period in dict.fromkeys(r.period for r in todo):
        source = plan.models_dir
        if (
            period.kind == "fixed"
            and source is not None
            and models_trained_before(source, period.first, symbols)
        ):
            # A task (not scattered data): if the worker holding it dies, it is made again.
            blob = pack_models(source)
            models[period] = client.submit(
                shipped_models, blob, key=f"models-{hashlib.sha256(blob).hexdigest()[:16]}"
            )
        else:
            job = {"run_id": f"{stop_name}:train-{period.label}", "period": _period_json(period),
                   "data_dir": str(plan.data_dir)}  # fmt: skip
            models[period] = client.submit(
                train_task,
                job,
                stop_name,
                pure=False,
                key=f"train-{period.label}-{period.train_years:g}-{plan.code}",
            )
    futures = {}
    for run in todo:
        job = {
            "run_id": f"{stop_name}:{run.key}",
            "period": _period_json(run.period),
            "data_dir": str(plan.data_dir),
            "setting": run.setting,
        }
        future = client.submit(
            replay_task, job, models[run.period], stop_name, pure=False, key=f"replay-{run.key}"
        )
        futures[future] = run
    return futures


def _result_of(future: Any) -> dict:
    try:
        return future.result()
    except Exception as exc:  # the task itself failed (e.g. its worker kept dying, training failed)
        return {"status": "failed", "reason": f"task failed: {exc!r}"[:500], "files": {}}


def _running(client: Any, pending: set) -> int:
    try:
        processing = client.processing()
    except Exception:
        return 0
    keys = {f.key for f in pending}
    return sum(1 for tasks in processing.values() for key in tasks if key in keys)


def _wait_stopped(client: Any, pending: list) -> None:
    """Every task returns soon after the stop event (a running one once its suite is down); a
    worker that died meanwhile (a terminal's Ctrl-C reaches local workers too) took its task's
    child with it, which stops its own suite."""
    deadline = time.monotonic() + STOP_GRACE_S + 30
    while time.monotonic() < deadline and not all(f.done() for f in pending):
        try:
            if not client.scheduler_info()["workers"]:
                return
        except Exception:
            return
        time.sleep(POLL_S)


def _wait_runs_gone(stop_name: str, timeout_s: float = STOP_GRACE_S) -> None:
    """On this machine: until no replay child or suite process of this sweep is left."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = False
        for proc in psutil.process_iter(["environ"]):
            try:
                if (proc.info["environ"] or {}).get(RUN_ID_VARIABLE, "").startswith(stop_name + ":"):
                    left = True
                    break
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if not left:
            return
        time.sleep(POLL_S)


class _Ticker:
    """Redraws the progress line every few seconds (the ETA and running count move on)."""

    def __init__(self, tick: Callable[[], None], every_s: float = 5.0):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(tick, every_s), daemon=True)
        self._thread.start()

    def _loop(self, tick: Callable[[], None], every_s: float) -> None:
        while not self._stop.wait(every_s):
            with contextlib.suppress(Exception):
                tick()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


# ---- results -------------------------------------------------------------------------------------


def write_summary(plan: Plan, out: Path, records: Mapping[str, dict]) -> str:
    """results.csv, results.md, heatmaps, ranking.json; returns the text printed at the end."""
    rows: list[dict] = []
    returns_by_setting: dict[str, list[list[float]]] = {}
    for run in plan.runs:
        record = records.get(run.key)
        if record is None:
            continue
        report = None
        if record["status"] == "ok":
            report = json.loads((run_dir(out, run) / "report.json").read_text())
            equity = _equity(run_dir(out, run) / "equity.csv")
            returns_by_setting.setdefault(run.label, []).append(sweep_spec.daily_returns(equity))
        row = sweep_spec.result_row(run.label, run.period, report, record.get("reason", ""))
        rows.append({**row, **{k: run.setting.get(k, "") for k in plan.spec.swept}, "key": run.key})
    columns = [*sweep_spec.COLUMNS[:1], *plan.spec.swept, *sweep_spec.COLUMNS[1:], "key"]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    ranked = sweep_spec.rank_settings(returns_by_setting)
    selection = sweep_spec.selection_summary(ranked, returns_by_setting)
    heatmaps = write_heatmaps(plan, out, rows)
    text = _summary_text(plan, rows, ranked, selection, heatmaps)
    (out / "results.md").write_text(
        f"# Sweep results\n\n{sweep_spec.markdown_table(rows)}\n\n```\n{text}\n```\n"
    )
    (out / "ranking.json").write_text(
        json.dumps(
            {"selection": selection, "ranked": [dataclasses.asdict(r) for r in ranked]}, indent=2, default=str
        )
        + "\n"
    )
    return text


def _summary_text(plan: Plan, rows: list, ranked: list, selection: dict, heatmaps: list[Path]) -> str:
    ok = sum(1 for r in rows if r["status"] == "ok")
    failed = [r for r in rows if r["status"] != "ok"]
    lines = [f"{ok} of {len(plan.runs)} runs ok, {len(failed)} failed"]
    lines += [f"  failed: {r['setting']} {r['period']}: {r['reason']}" for r in failed[:10]]
    if ranked:
        lines.append("Settings by out-of-sample Sharpe (test windows joined, annualised):")
        for place, r in enumerate(ranked[:10], start=1):
            lines.append(
                f"  {place:>2}. {r.sharpe:+.2f}  {r.setting}  ({r.runs} period(s), {r.returns} days)"
            )
        dsr = selection["deflated_sharpe"]
        if selection["trials"] == 1:
            lines.append(
                f"One setting: nothing was picked among others; its probabilistic Sharpe ratio is {dsr:.3f}"
            )
            return "\n".join(lines + [f"heatmap: {p.name}" for p in heatmaps])
        lines.append(
            f"Warning: the best of {selection['trials']} settings is picked, which inflates its Sharpe."
            f" Deflated Sharpe Ratio of the best: {dsr:.3f} (probability its true Sharpe is above the"
            f" {selection['expected_max_sharpe']:+.2f} expected of the best of {selection['trials']}"
            " unskilled settings; Bailey and Lopez de Prado 2014)"
        )
    for path in heatmaps:
        lines.append(f"heatmap: {path.name}")
    return "\n".join(lines)


def _equity(path: Path) -> list[float]:
    with open(path, newline="") as f:
        return [float(row["equity"]) for row in csv.DictReader(f)]


def write_heatmaps(plan: Plan, out: Path, rows: list[dict]) -> list[Path]:
    """One PNG per pair of swept knobs: the mean Sharpe over the other knobs and the periods."""
    swept = plan.spec.swept
    if len(swept) < 2:
        return []
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    written = []
    for i, x_knob in enumerate(swept):
        for y_knob in swept[i + 1 :]:
            xs = sorted({r[x_knob] for r in rows}, key=_number_or_text)
            ys = sorted({r[y_knob] for r in rows}, key=_number_or_text)
            if not xs or not ys:  # nothing recorded yet (an early Ctrl-C)
                continue
            cells: dict[tuple[str, str], list[float]] = {}
            for r in rows:
                if r["sharpe"] is not None:
                    cells.setdefault((r[x_knob], r[y_knob]), []).append(r["sharpe"])
            grid = [[_mean(cells.get((x, y))) for x in xs] for y in ys]
            fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 3, 0.8 * len(ys) + 2.5), dpi=100)
            image = ax.imshow(
                [[math.nan if v is None else v for v in row] for row in grid], cmap="RdYlGn", aspect="auto"
            )
            ax.set_xticks(range(len(xs)), xs)
            ax.set_yticks(range(len(ys)), ys)
            ax.set_xlabel(sweep_spec.short_name(x_knob))
            ax.set_ylabel(sweep_spec.short_name(y_knob))
            for yi, row in enumerate(grid):
                for xi, value in enumerate(row):
                    ax.text(xi, yi, "n/a" if value is None else f"{value:.2f}", ha="center", va="center")
            ax.set_title("Sharpe (mean over periods and other knobs)")
            fig.colorbar(image, ax=ax)
            fig.tight_layout()
            path = (
                out / f"heatmap_{sweep_spec.short_name(x_knob)}_{sweep_spec.short_name(y_knob)}.png".lower()
            )
            fig.savefig(path)
            plt.close(fig)
            written.append(path)
    return written


def _mean(values: list[float] | None) -> float | None:
    return sum(values) / len(values) if values else None


def _number_or_text(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("run-one", "train-one"):
        sys.exit((run_one if sys.argv[1] == "run-one" else train_one)(Path(sys.argv[2])))
    print("usage: python -m services.management.sweep run-one|train-one WORK_DIR", file=sys.stderr)
    sys.exit(2)
