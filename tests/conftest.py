"""Shared fixtures: a private redis-server, a suite's directories and environment, the processes a
test starts, a client, and models trained once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support import (
    SHARED_ASX,
    Processes,
    RedisServer,
    SuiteDirs,
    Training,
    make_suite_env,
    models_ready,
    short_tempdir,
    trained_models,
)

# No per-example time limit: Hypothesis's default (200 ms) is a timing assertion, and on two busy
# cores an example of the cron property test took 309 ms once (a "flaky" failure in a full run).
# A slow example is reported by --durations, not failed.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

# OpenMP worker threads (scikit-learn's gradient boosting, here and in every child process) spin
# while they wait for each other: on two cores busy with other work, one thread is several times
# faster than two. Set before anything imports scikit-learn.
os.environ.setdefault("OMP_NUM_THREADS", "1")

BIG4 = ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")
# Enough for every test that needs models but not realism: one year of synthetic bars still gives
# each model more than 100 walk-forward test days.
SYNTHETIC_TRAINING = Training(years=1.0, symbols=BIG4)
# Training is paid once, by the first test that asks for models it cannot find on disk.
TRAINING_BUDGET_S = 600


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
    for key in list(os.environ):
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
def processes() -> Iterator[Processes]:
    """Start real processes through this (`processes.start("market-data", suite)`, `.popen(...)`,
    `.start_suite(dirs)`): all of them are stopped at teardown, whatever the test did."""
    with Processes() as started:
        yield started


@pytest.fixture
async def client(suite) -> AsyncIterator:
    """An un-started BaseService("tests") that calls this suite's services; closed at teardown."""
    from services.base.base_service import BaseService

    caller = BaseService("tests")
    yield caller
    await caller.close_clients()


@pytest.fixture(scope="session")
def synthetic_models() -> Path:
    """The Big 4's models on one year of synthetic bars: read-only, use `install_models`."""
    return trained_models(SYNTHETIC_TRAINING)


@pytest.fixture(scope="session")
def replay_models() -> Path:
    """The Big 4's models on two years of the market CSVs before the replay tests' first day."""
    from tests.system._replay_helpers import MODELS_BEFORE, models_trained_before

    return models_trained_before(MODELS_BEFORE)


def _training_missing(fixture: str) -> bool:
    if fixture == "synthetic_models":
        return not models_ready(SYNTHETIC_TRAINING.cached())
    from tests.system._replay_helpers import MODELS_BEFORE, replay_training

    return not models_ready(replay_training(MODELS_BEFORE).cached())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that use models not on disk yet also get the time to train them: every such test,
    since with test workers (pytest-xdist) any of them may be the one that trains or waits."""
    for fixture in ("synthetic_models", "replay_models"):
        users = [item for item in items if fixture in getattr(item, "fixturenames", ())]
        if not users or not _training_missing(fixture):
            continue
        for item in users:
            marker = item.get_closest_marker("timeout")
            if marker is not None:
                timeout_s = float(marker.args[0] if marker.args else marker.kwargs.get("timeout", 0))
            else:
                timeout_s = float(config.getini("timeout") or 0)
            if timeout_s > 0:  # 0: no timeout at all, nothing to extend
                item.add_marker(pytest.mark.timeout(timeout_s + TRAINING_BUDGET_S))


@pytest.fixture
def shared_asx() -> Path:
    """The real ASX CSVs beside the repository, or a skip when they are not there."""
    if not (SHARED_ASX / "CBA.AX.csv").exists():
        pytest.skip("real ASX data (../shared/data/asx) is not present on this machine")
    return SHARED_ASX
