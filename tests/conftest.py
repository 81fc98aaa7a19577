"""Shared fixtures: a private redis-server, a suite's directories and environment, a client."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import SHARED_ASX, RedisServer, SuiteDirs, make_suite_env, short_tempdir

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def short_tmp():
    """A temporary directory with a short path (Unix sockets are limited to 107 bytes)."""
    path = short_tempdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def redis_server(short_tmp):
    """A private redis-server on a Unix socket in a temporary directory; stopped afterwards."""
    server = RedisServer(short_tmp / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def suite(short_tmp, redis_server, monkeypatch) -> SuiteDirs:
    """Directories and environment for one suite, pointed at the private Redis.

    The environment is also applied to this process (settings and clock re-read), so a
    `BaseService("tests")` built in the test talks to the same sockets.
    """
    from services.base import clock, config

    dirs = make_suite_env(short_tmp / "suite", redis_server.url)
    for key in list(__import__("os").environ):
        if key.startswith(("TRADING_", "MARKETAUX_", "IG_")):
            monkeypatch.delenv(key)
    for key, value in dirs.env.items():
        if key.startswith("TRADING_"):
            monkeypatch.setenv(key, value)
    config.reset_settings()
    clock.set_clock(None)
    yield dirs
    config.reset_settings()
    clock.set_clock(None)


@pytest.fixture
def shared_asx() -> Path:
    """The real ASX CSVs beside the repository, or a skip when they are not there."""
    if not (SHARED_ASX / "CBA.AX.csv").exists():
        pytest.skip("real ASX data (../shared/data/asx) is not present on this machine")
    return SHARED_ASX
