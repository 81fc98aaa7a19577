"""Settings validation and the suite clock."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.base.clock import SuiteClock
from services.base.config import ConfigError, Settings


def test_defaults_follow_the_contract():
    s = Settings.from_env({"TRADING_LOG_DIR": "/tmp/x"})
    assert s.socket_dir == Path("/tmp/trading_sockets")
    assert s.symbols == ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")
    assert s.market_index == "^AXJO"
    assert s.market_data_source == "auto"
    assert s.redis_managed and s.redis_url == "unix:///tmp/trading_sockets/redis.sock"
    assert s.market_data_dir == s.data_dir / "market"
    assert s.clock_start is None and s.clock_speed == 1.0
    assert s.rpc_max_frame_bytes == 1 << 20
    assert s.marketaux_base_url == "https://api.marketaux.com"
    assert s.ig_base_url == "https://demo-api.ig.com/gateway/deal"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRADING_MARKET_DATA_SOURCE": "bloomberg"}, "TRADING_MARKET_DATA_SOURCE"),
        ({"TRADING_CLOCK_START": "2025-03-03T09:00:00"}, "needs a UTC offset"),  # naive instant
        ({"TRADING_CLOCK_START": "yesterday"}, "not an ISO-8601 instant"),
        ({"TRADING_CLOCK_SPEED": "fast"}, "not a number"),
        ({"TRADING_CLOCK_SPEED": "0"}, "outside"),
        ({"TRADING_REDIS_URL": "localhost:6379"}, "must start with"),
        ({"TRADING_SYMBOLS": " , "}, "empty"),
        ({"TRADING_RPC_MAX_FRAME_BYTES": "12"}, "outside"),
        ({"IG_ACC_TYPE": "PAPER"}, "DEMO or LIVE"),
    ],
)
def test_bad_values_fail_with_the_variable_named(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"TRADING_LOG_DIR": "/tmp/x", **env})


def test_symbols_are_normalised_and_redis_url_kept():
    s = Settings.from_env({"TRADING_SYMBOLS": "cba.ax, bhp.ax", "TRADING_REDIS_URL": "redis://h:6379/0"})
    assert s.symbols == ("CBA.AX", "BHP.AX")
    assert not s.redis_managed and s.redis_url == "redis://h:6379/0"


def test_secrets_file_must_be_private(tmp_path):
    secrets = tmp_path / "secrets.env"
    secrets.write_text("# creds\nMARKETAUX_API_TOKEN=abc123\nIG_PASSWORD='p w'\n")
    os.chmod(secrets, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Settings.from_env({"TRADING_SECRETS_FILE": str(secrets)})
    os.chmod(secrets, 0o600)
    s = Settings.from_env({"TRADING_SECRETS_FILE": str(secrets), "IG_PASSWORD": "env wins"})
    assert s.secret("MARKETAUX_API_TOKEN") == "abc123"
    assert s.secret("IG_PASSWORD") == "env wins"
    assert s.secret("IG_API_KEY") is None
    assert "abc123" not in repr(s)


def test_service_knobs_are_validated():
    s = Settings.from_env({"TRADING_X_CACHE_S": "300", "TRADING_X_FLAG": "yes", "TRADING_X_BAD": "-1"})
    assert s.env_float("TRADING_X_CACHE_S", 60.0, low=0) == 300.0
    assert s.env_float("TRADING_X_MISSING", 60.0) == 60.0
    assert s.env_bool("TRADING_X_FLAG", False) is True
    with pytest.raises(ConfigError, match="TRADING_X_BAD"):
        s.env_int("TRADING_X_BAD", 1, low=0)


def test_wall_clock_without_start():
    clock = SuiteClock()
    assert not clock.simulated
    assert abs(clock.time() - time.time()) < 0.1
    assert clock.now().tzinfo is not None


def test_simulated_clock_runs_at_speed_from_a_shared_epoch():
    start = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    epoch = time.time() - 10  # this suite's clock was started 10 real seconds ago by the supervisor
    clock = SuiteClock(start, speed=60.0, epoch=epoch)
    elapsed = (clock.now() - start).total_seconds()
    assert 600 <= elapsed < 620  # 10 real seconds at 60x
    assert clock.real_seconds(120) == 2.0
    child = SuiteClock(**_from_env(clock.env()))
    assert abs(child.time() - clock.time()) < 1.0  # children agree on "now"


def _from_env(env: dict) -> dict:
    return {
        "start": datetime.fromisoformat(env["TRADING_CLOCK_START"]),
        "speed": float(env["TRADING_CLOCK_SPEED"]),
        "epoch": float(env["TRADING_CLOCK_EPOCH"]),
    }


def test_control_file_jumps_every_reader(tmp_path):
    from services.base.clock import write_clock_file

    path = tmp_path / "clock.json"
    day_one = datetime(2019, 3, 4, 23, 15, tzinfo=UTC)  # 10:15 Sydney
    write_clock_file(path, day_one, speed=1.0)
    a, b = SuiteClock(control_file=path), SuiteClock(control_file=path)
    assert abs((a.now() - day_one).total_seconds()) < 1
    day_two = datetime(2019, 3, 5, 23, 15, tzinfo=UTC)
    write_clock_file(path, day_two, speed=10.0)
    for clock in (a, b):
        assert abs((clock.now() - day_two).total_seconds()) < 5
        assert clock.speed == 10.0
    assert a.env() == {"TRADING_CLOCK_FILE": str(path)}


async def test_sleep_until_notices_a_jump(tmp_path):
    import asyncio

    from services.base.clock import write_clock_file

    path = tmp_path / "clock.json"
    start = datetime(2019, 3, 4, 23, 0, tzinfo=UTC)
    write_clock_file(path, start, speed=1.0)
    clock = SuiteClock(control_file=path)
    target = datetime(2019, 3, 5, 0, 0, tzinfo=UTC)  # an hour away at speed 1

    async def jump():
        await asyncio.sleep(0.1)
        write_clock_file(path, target, speed=1.0)

    started = time.monotonic()
    await asyncio.gather(clock.sleep_until(target), jump())
    assert time.monotonic() - started < 2
