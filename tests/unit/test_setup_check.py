"""The check (ruff, ruff format --check, mypy) is defined once in set-up and runs before pytest."""

from __future__ import annotations

import pytest

import setup_microservices as setup
from tests.support import REPO


@pytest.fixture
def calls(monkeypatch):
    """Record every command set-up runs instead of running it; `fail` names tools that fail."""
    ran: list[list[str]] = []
    fail: set[str] = set()

    def call(cmd, cwd=None):
        ran.append([str(c) for c in cmd])
        return 1 if any(tool in cmd for tool in fail) else 0

    monkeypatch.setattr(setup.subprocess, "call", call)
    return ran, fail


def tools(ran: list[list[str]]) -> list[str]:
    return [" ".join(cmd[2:4]) for cmd in ran]  # after `<venv python> -m`


def test_the_check_is_ruff_then_the_formatter_then_mypy():
    commands = setup.check_commands()
    assert [cmd[1:] for cmd in commands] == [
        ["-m", "ruff", "check", "."],
        ["-m", "ruff", "format", "--check", "."],
        ["-m", "mypy"],
    ]
    assert all(cmd[0] == str(setup.venv_python()) for cmd in commands)


def test_check_alone_runs_every_tool_and_no_tests(calls):
    ran, _ = calls
    assert setup.main(["--check"]) == 0
    assert tools(ran) == ["ruff check", "ruff format", "mypy"]


def test_the_test_step_checks_first_then_runs_pytest_with_its_arguments(calls):
    ran, _ = calls
    assert setup.main(["--test", "--", "tests/unit", "-q"]) == 0
    assert tools(ran)[:3] == ["ruff check", "ruff format", "mypy"] and ran[-1][2] == "pytest"
    assert ran[-1][-2:] == ["tests/unit", "-q"]
    assert ran[-1][3:7] == ["-n", "3", "--dist", "loadscope"]  # test workers, unless asked otherwise


def test_workers_asked_for_replace_the_default(calls):
    ran, _ = calls
    assert setup.main(["--test", "--", "-n", "0", "tests/unit"]) == 0
    assert ran[-1].count("-n") == 1 and ran[-1][-3:] == ["-n", "0", "tests/unit"]


@pytest.mark.parametrize("failing", ["mypy", "pytest"])
def test_the_test_step_fails_when_either_fails(calls, failing):
    """Both still run, so one run reports every problem; the exit status is non-zero."""
    ran, fail = calls
    fail.add(failing)
    assert setup.main(["--test"]) != 0
    assert ran[-1][2] == "pytest"


def test_a_failed_check_fails_check_alone(calls):
    ran, fail = calls
    fail.add("ruff")
    assert setup.main(["--check"]) != 0
    assert len(ran) == 3  # the formatter and mypy still ran


def test_make_check_calls_the_same_step():
    makefile = (REPO / "Makefile").read_text()
    assert "PY ?= .venv/bin/python" in makefile
    assert "$(PY) setup_microservices.py --check" in makefile
    assert "$(PY) -m pytest $(ARGS)" in makefile
