"""`service_manager.py backup` and `restore` on a real suite started through the manager.

Records go into the services' own databases over RPC (a prediction in predictions.db, a task in
scheduler.db), the models folder gets a file; a backup is taken while the suite runs; more is
recorded; `restore latest` must bring back exactly the backed-up state, with the owning services
stopped and started again through the supervisor and everything else left running untouched.
The refusals (an unknown date, a damaged backup) must come before anything is stopped.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
from pathlib import Path

import pytest

from services.base.backups import resolve_backup
from services.domain.supervision import UP
from services.registry import databases
from tests.support import Processes, SuiteDirs, manager_cli, rpc_call_sync, wait_until
from tests.system.test_manager import FAST_TIMERS, by_name

pytestmark = pytest.mark.slow

OWNERS = sorted({service for service, _ in databases()})  # every service with a database
TASK = {
    "calls": [{"service": "market-data", "method": "get_market_data", "params": {"symbol": "CBA.AX"}}],
    "schedule": {"type": "daily", "at": "10:00"},
}


@pytest.fixture(scope="module")
def live_suite():
    with Processes() as processes:
        # No default tasks: the scheduler's own daily backup (run at start as a catch-up) would
        # race the test's backups for today's folder.
        dirs = processes.suite_dirs(
            "tb-", **FAST_TIMERS, TRADING_MANAGER_MAX_FAILURES="100", TRADING_SCHEDULER_DEFAULTS="false"
        )
        (dirs.models_dir / "notes.txt").write_text("models v1")  # ml-model reads only its manifest
        yield processes.start_suite(dirs)


def processes_now(dirs: SuiteDirs) -> dict[str, tuple[int, int]]:
    """Service -> (pid, restarts) as the supervisor reports them."""
    return {name: (row["pid"], row["restarts"]) for name, row in by_name(dirs).items()}


def predict(dirs: SuiteDirs) -> str:
    reply = rpc_call_sync(
        dirs.socket("prediction"),
        "generate_single_prediction",
        {"symbol": "CBA.AX", "force_refresh": True},
        timeout_s=30,
    )
    return reply["prediction_id"]


def prediction_known(dirs: SuiteDirs, prediction_id: str) -> bool:
    try:
        rpc_call_sync(dirs.socket("prediction"), "get_prediction", {"prediction_id": prediction_id})
    except RuntimeError as exc:
        assert "-32006" in str(exc), exc  # not found; anything else is a failure
        return False
    return True


def task_names(dirs: SuiteDirs) -> set[str]:
    return {t["name"] for t in rpc_call_sync(dirs.socket("scheduler"), "list_tasks")}


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_restore_latest_brings_back_the_backed_up_state_and_restarts_only_the_owners(live_suite) -> None:
    before_backup = predict(live_suite)
    rpc_call_sync(
        live_suite.socket("scheduler"), "schedule_task", {"config": {**TASK, "name": "before_backup"}}
    )

    backup = manager_cli(live_suite, "backup")
    assert backup.returncode == 0, backup.stderr
    for _, db in databases():
        assert any(
            line.startswith(db.file) and "integrity ok" in line for line in backup.stdout.splitlines()
        ), (
            db.file,
            backup.stdout,
        )
    assert "models/" in backup.stdout

    after_backup = predict(live_suite)
    rpc_call_sync(
        live_suite.socket("scheduler"), "schedule_task", {"config": {**TASK, "name": "after_backup"}}
    )
    (live_suite.models_dir / "notes.txt").write_text("models v2")
    (live_suite.models_dir / "later.txt").write_text("not in the backup")
    assert prediction_known(live_suite, after_backup) and "after_backup" in task_names(live_suite)
    running = processes_now(live_suite)

    restore = manager_cli(live_suite, "restore", "latest")
    assert restore.returncode == 0, restore.stdout + restore.stderr

    # The backed-up records are there, the later ones gone, the models folder as it was.
    assert prediction_known(live_suite, before_backup)
    assert not prediction_known(live_suite, after_backup)
    assert "before_backup" in task_names(live_suite) and "after_backup" not in task_names(live_suite)
    assert (live_suite.models_dir / "notes.txt").read_text() == "models v1"
    assert not (live_suite.models_dir / "later.txt").exists()

    # The owners are new, up processes; the rest (market-data) never stopped.
    after = processes_now(live_suite)
    rows = by_name(live_suite)
    for name in OWNERS:
        assert after[name][0] != running[name][0], f"{name} was not restarted"
        assert rows[name]["state"] == "running" and rows[name]["health"] in UP, rows[name]
        assert rpc_call_sync(live_suite.socket(name), "health")["status"] in UP
    for name in set(after) - set(OWNERS):
        assert after[name] == running[name], f"{name} was restarted: {running[name]} -> {after[name]}"

    # What the restore replaced is kept, and said: the later prediction and model file are in it.
    safety = next(p for p in (live_suite.data_dir / "backups").iterdir() if p.name.startswith("replaced-"))
    assert f"service_manager.py restore {safety.name}" in restore.stdout
    with sqlite3.connect(f"file:{safety / 'predictions.db'}?mode=ro", uri=True) as db:
        found = db.execute(
            "SELECT count(*) FROM predictions WHERE prediction_id=?", (after_backup,)
        ).fetchone()
    assert found == (1,)
    assert (safety / "models" / "later.txt").read_text() == "not in the backup"


def test_restore_of_one_service_restarts_only_that_service(live_suite) -> None:
    assert manager_cli(live_suite, "backup").returncode == 0
    running = processes_now(live_suite)
    result = manager_cli(live_suite, "restore", "latest", "paper-trading")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restored paper_trading.db" in result.stdout and "models/" not in result.stdout
    after = processes_now(live_suite)
    assert after["paper-trading"][0] != running["paper-trading"][0]
    assert {n: v for n, v in after.items() if n != "paper-trading"} == {
        n: v for n, v in running.items() if n != "paper-trading"
    }
    assert by_name(live_suite)["paper-trading"]["health"] in UP


def test_restore_of_an_unknown_date_is_refused_in_one_line(live_suite) -> None:
    running = processes_now(live_suite)
    result = manager_cli(live_suite, "restore", "1999-01-01")
    assert result.returncode == 1
    line = one_line_error(result)
    assert "no backup 1999-01-01" in line and "available:" in line
    assert processes_now(live_suite) == running

    usage = manager_cli(live_suite, "restore", "yesterday")
    assert usage.returncode == 2 and "DATE must be" in one_line_error(usage)


def test_a_damaged_backup_is_refused_before_anything_stops(live_suite) -> None:
    assert manager_cli(live_suite, "backup").returncode == 0
    root = live_suite.data_dir / "backups"
    damaged = root / "2000-01-03"
    shutil.copytree(resolve_backup(root, "latest"), damaged)
    (damaged / "paper_trading.db").write_bytes(b"this is no database " * 512)
    replaced_before = sorted(p.name for p in root.iterdir() if p.name.startswith("replaced-"))
    running = wait_until(
        lambda: processes_now(live_suite),
        30,
        what="every service running",
        until=lambda now: all(pid for pid, _ in now.values()),
    )

    result = manager_cli(live_suite, "restore", "2000-01-03")

    assert result.returncode == 1
    line = one_line_error(result)
    assert "paper_trading.db fails integrity_check" in line and "nothing was stopped" in line
    assert processes_now(live_suite) == running  # no service stopped or restarted
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("replaced-")) == replaced_before
    assert all(row["state"] == "running" for row in by_name(live_suite).values())


def test_restore_refuses_while_an_owner_runs_without_a_supervisor(processes: Processes) -> None:
    dirs = processes.suite_dirs("tb-")  # no supervisor, no services
    write_ledger(dirs.data_dir / "paper_trading.db", "backed up")
    assert manager_cli(dirs, "backup").returncode == 0
    write_ledger(dirs.data_dir / "paper_trading.db", "later")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:  # "paper-trading" answers
        listener.bind(str(dirs.socket("paper-trading")))
        listener.listen()
        refused = manager_cli(dirs, "restore", "latest")
    assert refused.returncode == 1
    assert "paper-trading running without a supervisor" in one_line_error(refused)
    assert ledger_rows(dirs.data_dir / "paper_trading.db") == ["backed up", "later"]
    assert not [p for p in (dirs.data_dir / "backups").iterdir() if p.name.startswith("replaced-")]

    dirs.socket("paper-trading").unlink()  # gone: nothing runs, the files alone are restored
    restored = manager_cli(dirs, "restore", "latest")
    assert restored.returncode == 0, restored.stderr
    assert "the supervisor is not running: nothing was stopped or started" in restored.stdout
    assert ledger_rows(dirs.data_dir / "paper_trading.db") == ["backed up"]


def write_ledger(path: Path, value: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS t (v TEXT)")
        db.execute("INSERT INTO t(v) VALUES (?)", (value,))
    db.close()


def ledger_rows(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT v FROM t ORDER BY rowid")]
    finally:
        db.close()
