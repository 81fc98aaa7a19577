"""setup_microservices.py steps, the systemd unit, and the supervisor's sd_notify in --foreground."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time

import orjson
import psutil
import pytest

from services.base.model_sets import serving_dir
from tests.support import REPO, make_suite_env, manager_cli, manager_command, rpc_call_sync, wait_until

SETUP = str(REPO / "setup_microservices.py")


def run_setup(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SETUP, *args],
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_no_step_is_a_one_line_usage_error():
    result = run_setup()
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    bad = run_setup("--frobnicate")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_create_dirs_and_init_db_are_idempotent(short_tmp):
    root = short_tmp
    dirs = make_suite_env(root, None)
    env = {
        **dirs.env,
        "TRADING_SOCKET_DIR": str(root / "fresh" / "sock"),
        "TRADING_DATA_DIR": str(root / "d"),
    }
    for _ in range(2):
        result = run_setup("--create-dirs", "--init-db", env=env)
        assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(root / "fresh" / "sock").st_mode) == 0o700
    for name in ("sentiment.db", "ml_model.db", "predictions.db", "scheduler.db", "paper_trading.db"):
        with sqlite3.connect(root / "d" / name) as db:
            tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
        assert tables > 0, name
        assert sqlite3.connect(root / "d" / name).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert (root / "d" / "market").is_dir() and (root / "d" / "backups").is_dir()


def test_install_deps_is_quick_when_done():
    """The second run finds the requirements stamp matching and reinstalls nothing."""
    assert run_setup("--install-deps", timeout=900).returncode == 0
    started = time.monotonic()
    result = run_setup("--install-deps")
    assert result.returncode == 0, result.stderr
    assert "requirements already installed" in result.stdout
    assert time.monotonic() - started < 20


def test_systemd_unit(short_tmp):
    unit = run_setup("--print-systemd").stdout
    for line in (
        "Type=notify",
        "Restart=on-failure",
        f"ExecStart={REPO}/start_microservices.sh --foreground",
        "StartLimitBurst=5",
        "WatchdogSec=",
        f"User={__import__('getpass').getuser()}",
    ):
        assert line in unit
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    path = short_tmp / "trading-suite.service"
    path.write_text(unit)
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr


def test_user_unit_and_sudo_user(monkeypatch):
    import setup_microservices

    user_unit = setup_microservices.systemd_unit(system=False)
    assert "User=" not in user_unit and "network-online" not in user_unit
    assert "WantedBy=default.target" in user_unit
    monkeypatch.setenv("SUDO_USER", "trader")
    system_unit = setup_microservices.systemd_unit(system=True)
    assert "User=trader" in system_unit and "WantedBy=multi-user.target" in system_unit


def test_the_installer_turns_ksm_on_now_and_at_each_boot(tmp_path):
    """enable_ksm (what `--install-systemd` does as root) on a stand-in for /sys/kernel/mm/ksm and
    /etc/tmpfiles.d: ksmd's switch written 1, and the tmpfiles entry that writes it at boot."""
    import setup_microservices

    ksm, tmpfiles = tmp_path / "ksm", tmp_path / "tmpfiles.d" / "trading-suite-ksm.conf"
    assert "no KSM" in setup_microservices.enable_ksm(ksm, tmpfiles)
    assert not tmpfiles.exists()  # a kernel without it: nothing written
    ksm.mkdir()
    (ksm / "run").write_text("0\n")
    assert "on now" in setup_microservices.enable_ksm(ksm, tmpfiles)
    assert (ksm / "run").read_text() == "1\n"
    assert tmpfiles.read_text().splitlines()[-1] == "w /sys/kernel/mm/ksm/run - - - - 1"
    assert "already on" in setup_microservices.enable_ksm(ksm, tmpfiles)
    (ksm / "run").write_text("2\n")  # an administrator's "unmerge all": left as it is
    assert "left at run=2" in setup_microservices.enable_ksm(ksm, tmpfiles)
    assert (ksm / "run").read_text() == "2\n"


def test_install_systemd_takes_no_ksm():
    usage = run_setup("--help").stdout
    assert "--no-ksm" in usage and "KSM" in usage


def test_a_bad_service_knob_is_one_line_and_exit_2(short_tmp):
    """A service's own setting, read in on_start, fails like the contract's: one line, exit 2."""
    root = short_tmp
    dirs = make_suite_env(root, None, TRADING_MARKET_DATA_CACHE_S="abc")
    result = subprocess.run(
        [sys.executable, str(REPO / "services/market-data/market_data_service.py")],
        env=dirs.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "market-data: configuration error: TRADING_MARKET_DATA_CACHE_S: 'abc' is not a number"
    ]
    assert not (dirs.socket_dir / "market-data.sock").exists()


FOREGROUND_CANARY = "canary-of-the-foreground-test-0123456789"


def test_foreground_supervisor_notifies_systemd(processes):
    """`start --foreground` sends READY=1 once its services are up and STOPPING=1 on SIGTERM. In
    zygote mode it stays the process systemd started (its pid) and forks its zygote from its own
    preload, after re-executing itself without its secrets: neither its environment block nor the
    zygote's holds one, and the service that needs it has it."""
    dirs = processes.suite(processes.suite_dirs("fg-"))
    notify_path = dirs.root / "notify.sock"
    env = {
        **dirs.env,
        "NOTIFY_SOCKET": str(notify_path),
        "WATCHDOG_USEC": "400000",
        "MARKETAUX_API_TOKEN": FOREGROUND_CANARY,
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(notify_path))
        receiver.settimeout(0.2)
        proc = processes.popen(
            manager_command("start", "--foreground", "sentiment"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        messages: list[str] = []

        def received() -> list[str]:
            with contextlib.suppress(TimeoutError):  # the receive itself waits up to 0.2 s
                messages.append(receiver.recv(256).decode())
            return messages

        def saying(text: str):
            return lambda got: any(text in m for m in got)

        wait_until(received, 120, 0, what="READY=1", until=saying("READY=1"))
        assert (dirs.socket_dir / "sentiment.sock").exists()
        supervisor = rpc_call_sync(dirs.socket("manager"), "status")["supervisor"]
        assert supervisor["pid"] == proc.pid and supervisor["launch"] == "zygote"
        zygote = psutil.Process(supervisor["zygote"][0])
        assert zygote.ppid() == proc.pid
        log = (dirs.log_dir / "manager.log").read_text()
        assert "forked by the supervisor from their shared preload" in log
        for pid in (proc.pid, zygote.pid):
            assert FOREGROUND_CANARY not in orjson.dumps(psutil.Process(pid).environ()).decode()
        sentiment = rpc_call_sync(dirs.socket("sentiment"), "health")
        assert "not configured" not in orjson.dumps(sentiment).decode()  # it got the token
        wait_until(received, 30, 0, what="watchdog pings", until=saying("WATCHDOG=1"))
        proc.send_signal(signal.SIGTERM)
        wait_until(received, 60, 0, what="STOPPING=1", until=saying("STOPPING=1"))
        assert proc.wait(60) == 0
    assert not any(p.suffix == ".sock" for p in dirs.socket_dir.iterdir())


def test_start_script_sets_up_then_starts_and_prints_status(processes):
    """./start_microservices.sh on empty directories: set-up (dirs, databases, default models),
    then the whole suite up, then the status and where to look next."""
    dirs = processes.suite(processes.suite_dirs("ss-"))
    # One symbol keeps the default-model training short; the path is the same as for four.
    dirs.env = {**dirs.env, "TRADING_MODELS_DIR": str(dirs.root / "models"), "TRADING_SYMBOLS": "CBA.AX"}
    del dirs.env["TRADING_MARKET_DATA_SOURCE"]  # the embedded default: auto
    result = subprocess.run(
        [str(REPO / "start_microservices.sh")], env=dirs.env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Next:" in result.stdout and "dashboard" in result.stdout
    for name in ("market-data", "sentiment", "ml-model", "prediction", "scheduler", "paper-trading"):
        assert name in result.stdout
    # default models were trained (on Yahoo's history when it answers, else synthetic), as a model set
    assert (dirs.root / "models" / "current").is_file()
    assert (serving_dir(dirs.root / "models") / "manifest.json").exists()
    health = orjson.loads(manager_cli(dirs, "health", "--json", timeout_s=60).stdout)
    # Whatever auto chose here (no internet: csv or synthetic), it says so, never pretending.
    assert health["market-data"]["source"] in ("yfinance", "csv", "synthetic")
    assert health["market-data"]["source_reason"].startswith("auto:")
    assert (dirs.data_dir / "paper_trading.db").exists()
    stop = manager_cli(dirs, "stop", timeout_s=120)
    assert stop.returncode == 0, stop.stderr
