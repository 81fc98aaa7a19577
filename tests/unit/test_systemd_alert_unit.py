"""systemd's OnFailure= path: the suite's unit names the alert unit, which runs `alerts notify`."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import setup_microservices
from services.management.manager_cli import build_parser


def test_the_suite_unit_starts_the_alert_unit_when_it_fails():
    unit = setup_microservices.systemd_unit(system=False)
    assert f"OnFailure={setup_microservices.ALERT_UNIT}" in unit
    assert f"EnvironmentFile=-{setup_microservices.ENV_FILE}" in unit


def test_the_alert_unit_runs_a_cli_command_that_exists():
    alert = setup_microservices.systemd_alert_unit(system=True)
    assert "Type=oneshot" in alert and f"EnvironmentFile=-{setup_microservices.ENV_FILE}" in alert
    line = next(x for x in alert.splitlines() if x.startswith("ExecStart="))
    assert " alerts notify " in line
    args = build_parser().parse_args(
        [
            "alerts",
            "notify",
            "suite failed",
            "--detail",
            "d",
            "--kind",
            "supervisor_down",
            "--severity",
            "critical",
        ]
    )
    assert args.func.__name__ == "cmd_alerts_notify"


def test_both_units_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    main = tmp_path / "trading-suite.service"
    alert = tmp_path / setup_microservices.ALERT_UNIT
    main.write_text(setup_microservices.systemd_unit(system=False))
    alert.write_text(setup_microservices.systemd_alert_unit(system=False))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(main), str(alert)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr
