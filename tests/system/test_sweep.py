"""`service_manager.py sweep`: a tiny sweep (2 settings x 2 weeks of daily bars) on a local Dask
cluster, its cache, a failing run, a worker SIGKILLed mid-run and Ctrl-C.

Each run is a real replay in its own private suite (supervisor, Redis, every service), with the
replay tests' models (trained before the period, reused) and market CSVs. Every process a sweep
starts inherits SWEEP_TEST_TAG, so the test finds any that is left behind.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.support import Drain, manager_cli, manager_command, wait_until
from tests.system._replay_helpers import market_csv_dir
from tests.system._sweep_hosts import TwoHosts, netns_unavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BUY = "TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD"
STOP = "TRADING_PAPER_TRADING_STOP_LOSS_PCT"
FAST_MANAGER = {"TRADING_MANAGER_HEALTH_INTERVAL_S": "0.5", "TRADING_MANAGER_BACKOFF_BASE_S": "0.2"}
FIGURES = ("total_return", "excess_return", "sharpe", "max_drawdown", "trades", "win_rate", "commissions")


def spec_text(
    models: Path, data_dir: Path | None = None, first: str = "2019-06-03", last: str = "2019-06-14"
) -> str:
    """Two settings that differ in two knobs (so one heatmap), over two weeks."""
    return f"""
data_dir = "{data_dir or market_csv_dir()}"
models_dir = "{models}"

[[periods]]
from = {first}
to = {last}

[fixed]
TRADING_PREDICTION_SIGNAL_SELL_THRESHOLD = 0.15
TRADING_PREDICTION_SIGNAL_BEAR_BUY_EXTRA = 0
TRADING_PAPER_TRADING_TAKE_PROFIT_PCT = 1.5

[[settings]]
{BUY} = 0.01
{STOP} = 1.5

[[settings]]
{BUY} = 0.05
{STOP} = 3.0
"""


def sweep_env(tag: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
    return {**env, **FAST_MANAGER, "TRADING_DATA_DIR": str(tag / "data"), "SWEEP_TEST_TAG": str(tag), **extra}


def tagged(tag: Path) -> list[psutil.Process]:
    """Every live process the sweep of `tag` started (workers, replay children, their suites)."""
    found = []
    for proc in psutil.process_iter(["environ"]):
        try:
            if (proc.info["environ"] or {}).get("SWEEP_TEST_TAG") == str(tag):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def replay_processes(tag: Path) -> list[psutil.Process]:
    """The replay children and their suites (those with SWEEP_RUN_ID), not the Dask workers."""
    found = []
    for proc in tagged(tag):
        try:
            if "SWEEP_RUN_ID" in proc.environ():
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def assert_nothing_left(tag: Path) -> None:
    wait_until(lambda: tagged(tag), 120, 0.5, what="every process of the sweep gone", until=lambda p: not p)


def read_rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def figures(out: Path) -> list[tuple]:
    return [(r["setting"], r["period"], r["status"], *(r[k] for k in FIGURES)) for r in read_rows(out)]


@pytest.fixture(scope="module")
def spec(tmp_path_factory, replay_models) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.toml"
    path.write_text(spec_text(replay_models))
    return path


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, spec):
    tag = tmp_path_factory.mktemp("local")
    out = tag / "out"
    result = subprocess.run(
        manager_command("sweep", str(spec), "--workers", "2", "--out", str(out)),
        env=sweep_env(tag), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert_nothing_left(tag)
    return out, result


def test_sweep_writes_the_table_heatmap_ranking_and_each_report(local_sweep):
    out, result = local_sweep
    rows = read_rows(out)
    assert [(r["setting"], r["status"]) for r in rows] == [
        ("BUY_THRESHOLD=0.01 STOP_LOSS_PCT=1.5", "ok"),
        ("BUY_THRESHOLD=0.05 STOP_LOSS_PCT=3.0", "ok"),
    ]
    for row in rows:
        folder = out / "runs" / row["key"]
        assert {"report.json", "report.txt", "equity.csv", "trades.csv", "equity.png", "result.json"} <= {
            p.name for p in folder.iterdir()
        }
        assert row["trades"] != "" and row["model_accuracy"] != "" and row["always_up_accuracy"] != ""
    assert "| setting | period | status |" in (out / "results.md").read_text()
    assert (out / "heatmap_buy_threshold_stop_loss_pct.png").read_bytes()[:4] == b"\x89PNG"
    assert "Deflated Sharpe Ratio of the best" in result.stderr and "best of 2 settings" in result.stderr
    # Plain progress lines (not a terminal) with the counts and an ETA.
    assert "done 2  failed 0  running 0" in result.stderr and "ETA" in result.stderr


def test_a_rerun_skips_what_is_done(local_sweep, spec, tmp_path):
    out, _ = local_sweep
    before = figures(out)
    result = subprocess.run(
        manager_command("sweep", str(spec), "--out", str(out)),
        env=sweep_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 runs (2 settings x 1 periods), 2 already done" in result.stderr
    assert figures(out) == before


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda t: t.replace("STOP_LOSS_PCT = 1.5", "STOP_LOS_PCT = 1.5"), "TRADING_PAPER_TRADING_STOP_LOS_PCT"),
        (lambda t: t.replace(f"{BUY} = 0.05", f"{BUY} = 1.5"), "setting 2"),
        (lambda t: t.replace("2019-06-03", "2030-06-03").replace("2019-06-14", "2030-06-14"), "period 2030-06-03"),
        (lambda t: t.split("[[settings]]")[0] + "[grid]\n", "grid: empty"),
    ],
    ids=["unknown-knob", "out-of-bounds", "period-without-data", "empty-grid"],
)  # fmt: skip
def test_bad_specs_exit_2_naming_the_entry_before_anything_runs(tmp_path, replay_models, edit, named):
    path = tmp_path / "bad.toml"
    path.write_text(edit(spec_text(replay_models)))
    result = manager_cli(
        sweep_env(tmp_path), "sweep", str(path), "--out", str(tmp_path / "out"), timeout_s=120
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and named in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(spec, tmp_path):
    # sentiment cannot start in any run's suite: the supervisor gives up on it (a crash loop).
    env = sweep_env(tmp_path, TRADING_MANAGER_ENTRY_SENTIMENT="tests/system/_exit_at_start.py")
    result = subprocess.run(
        manager_command("sweep", str(spec), "--workers", "2", "--out", str(tmp_path / "out")),
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    rows = read_rows(tmp_path / "out")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("did not start" in r["reason"] for r in rows), rows
    assert "0 of 2 runs ok, 2 failed" in result.stderr
    assert_nothing_left(tmp_path)


def test_a_worker_killed_mid_run_reruns_its_task_with_the_same_results(local_sweep, spec, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        manager_command("sweep", str(spec), "--workers", "2", "--out", str(out)),
        env=sweep_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    drained = Drain(proc)  # read while the test waits: the workers' logs go to this pipe too
    try:
        children = wait_until(
            lambda: [p for p in replay_processes(tmp_path) if "run-one" in " ".join(p.cmdline())],
            300, 0.2, what="a replay running", until=bool, ignoring=(psutil.NoSuchProcess,),
        )  # fmt: skip
        worker = children[0].parent()
        worker.kill()
        proc.wait(600)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = drained.text()[1]
    assert proc.returncode == 0, stderr[-3000:]
    assert figures(out) == figures(local_sweep[0])
    assert_nothing_left(tmp_path)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_running_replays_and_their_suites(spec, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        manager_command("sweep", str(spec), "--workers", "2", "--out", str(out)),
        env=sweep_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # and Ctrl-C's default action, as in a terminal: a test run started in the background
        # (`cmd &`) hands its children SIGINT ignored, and Python then keeps it ignored.
        preexec_fn=_sigint_default,
    )  # fmt: skip
    drained = Drain(proc)
    try:
        # A suite is up: a service process (not only the replay child) carries the run's id.
        wait_until(
            lambda: [p for p in replay_processes(tmp_path) if "_service.py" in " ".join(p.cmdline())],
            300, 0.2, what="a replay suite running", until=bool, ignoring=(psutil.NoSuchProcess,),
        )  # fmt: skip
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        proc.wait(400)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = drained.text()[1]
    assert proc.returncode == 130, stderr[-3000:]
    assert_nothing_left(tmp_path)


# ---- two "hosts": network namespaces joined by a veth pair -----------------------------------------


@pytest.mark.skipif(bool(reason := netns_unavailable()), reason=reason or "")
def test_a_sweep_across_two_namespaced_hosts_gives_the_local_results(local_sweep, spec, tmp_path, processes):
    hosts = TwoHosts()
    try:
        hosts.open()
        env = sweep_env(tmp_path, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        for command in hosts.cluster_commands():
            processes.popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        scheduler = hosts.scheduler
        wait_until(hosts.worker_count, 120, 0.5, what="both workers", until=lambda n: n == 2)
        out = tmp_path / "out"
        result = subprocess.run(
            hosts.run_in(1, manager_command("sweep", str(spec), "--scheduler", scheduler, "--out", str(out))),
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert figures(out) == figures(local_sweep[0])
        workers = {
            json.loads((out / "runs" / r["key"] / "result.json").read_text())["worker"]
            for r in read_rows(out)
        }
        assert all(w.split("://")[1].split(":")[0] in hosts.addresses for w in workers), workers
    finally:
        processes.close()
        hosts.close()
    assert_nothing_left(tmp_path)
