"""The daemon's early zygote (services/management/daemon_boot.py): what `start` passes on the
daemon's command line, and the environment the zygote gets from it."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from services.base.child_env import ZYGOTE, child_environment
from services.base.config import SECRET_KEYS
from services.management.daemon_boot import (
    early_arguments,
    read_secrets,
    secrets_fd_argument,
    supervisor_modules,
    zygote_environment,
)
from services.management.daemon_launch import early_zygote_arguments

LOG_DIR = Path("/tmp/logs-of-a-test")


def an_environment(**extra: str) -> dict[str, str]:
    env = {"PATH": "/usr/bin", "HOME": "/home/x", "TRADING_SOCKET_DIR": "/run/t", **extra}
    for i, key in enumerate(SECRET_KEYS):
        env[key] = f"secret-value-{i}"
    env["TRADING_SECRETS_FILE"] = "/etc/trading/secrets"
    return env


def test_start_passes_the_secret_names_never_their_values():
    env = an_environment()
    argv = early_zygote_arguments(env, LOG_DIR)
    shown = " ".join(argv)
    assert not any(value in shown for key, value in env.items() if key in SECRET_KEYS)
    log, drop = early_arguments(argv) or (None, set())
    assert log == LOG_DIR / "zygote.stdout.log"
    assert drop == {*SECRET_KEYS, "TRADING_SECRETS_FILE"}


def test_the_early_zygote_gets_the_launchers_environment():
    """What the daemon computes from the names is what the launcher gives a zygote it starts."""
    env = an_environment(
        TRADING_REDIS_URL="unix://:a-long-redis-password@/run/t/redis.sock", TRADING_MANAGER_LAUNCH="zygote"
    )
    parsed = early_arguments(early_zygote_arguments(env, LOG_DIR))
    assert parsed is not None
    early = zygote_environment(env, parsed[1])
    assert early == {**child_environment(ZYGOTE, env), "TRADING_SUPERVISED": "1"}
    assert "TRADING_REDIS_URL" not in early  # it carries a password and the zygote uses no Redis
    assert not set(SECRET_KEYS) & set(early)


def test_exec_mode_starts_no_early_zygote():
    assert early_zygote_arguments(an_environment(TRADING_MANAGER_LAUNCH="exec"), LOG_DIR) == []


def test_a_daemon_started_without_the_arguments_starts_none():
    assert early_arguments([]) is None
    assert early_arguments(["--zygote-log", "/x/zygote.stdout.log"]) is None  # no names: never guess
    assert early_arguments(["--zygote-drop=A"]) is None
    assert early_arguments(["--zygote-log=/x/z.log", "--zygote-drop="]) == (Path("/x/z.log"), set())
    assert early_arguments(["--zygote-log", "/x/z.log", "--zygote-drop", "A,B"]) == (
        Path("/x/z.log"),
        {"A", "B"},
    )


def test_the_secrets_pipe_is_named_on_the_command_line_and_read_to_its_end():
    assert secrets_fd_argument(["--zygote-log", "/x", "--secrets-fd=7"]) == 7
    assert secrets_fd_argument(["--secrets-fd", "9", "--zygote-drop="]) == 9
    assert secrets_fd_argument(["--zygote-log", "/x"]) is None
    assert secrets_fd_argument(["--secrets-fd=seven"]) is None
    env = an_environment()
    wanted = {k: v for k, v in env.items() if k in SECRET_KEYS}
    read, write = os.pipe()
    os.write(write, orjson.dumps(wanted))
    os.close(write)
    assert read_secrets(read) == wanted
    with pytest.raises(OSError):
        os.fstat(read)  # closed once read


def test_a_broken_or_empty_pipe_gives_no_secrets():
    for payload in (b"", b"not json", b"[1, 2]"):
        read, write = os.pipe()
        os.write(write, payload)
        os.close(write)
        assert read_secrets(read) == {}


def test_the_supervisor_preloads_its_own_modules_with_the_services():
    names = supervisor_modules()
    assert "services.management.supervisor" in names
    assert "services.management.launcher" in names
    assert "orjson" in names  # service_manager.py's own top-level imports


def test_a_forked_zygote_still_exiting_is_reaped_later_from_the_event_loop():
    """Polled once while it still runs (as when its socket closes just before it exits), it is
    polled again from the loop until reaped: no zombie stays behind."""
    import asyncio
    import time

    from services.management.daemon_boot import ForkedZygote

    pid = os.fork()
    if pid == 0:
        time.sleep(0.3)
        os._exit(3)

    async def main() -> int | None:
        zygote = ForkedZygote(pid)
        assert zygote.poll() is None
        deadline = time.monotonic() + 10
        while zygote.returncode is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return zygote.returncode

    assert asyncio.run(main()) == 3
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped
