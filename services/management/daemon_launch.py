"""Launching the supervisor daemon, from light modules only.

`service_manager.py start` launches the daemon as the first thing it does (start_early), before the
command line's own imports (asyncio, the RPC client, the status table: about 80 ms): the daemon's
preload then runs on one core while `start` imports on the other. This module needs the settings,
the knobs and the children's environment (services.base's light modules, services/base/lazy.py),
never asyncio. `start` with anything but service names and `--timeout N` (a typo, `--help`,
`--foreground`), a configuration error, or a supervisor already answering: nothing is launched
early, and the command line does it all as before (and reports what is wrong).

In zygote mode the daemon's secrets go on a pipe rather than in its environment (daemon_boot.py: it
forks its first zygote before it reads them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import orjson

from services.base.config import get_settings
from services.base.knobs import read_knobs
from services.base.socket_dir import prepare_socket_dir, socket_is_live
from services.management.daemon_boot import SECRETS_MAX_BYTES, TITLE_ROOM, early_arguments
from services.management.manager_knobs import SupervisorKnobs
from services.registry import SERVICES, SUPERVISOR

#: The command line's script (the daemon runs as `python <ENTRY> daemon`: ownership.MANAGER_ENTRY).
ENTRY = Path(__file__).resolve().with_name("service_manager.py")

#: The daemon start_early launched, until the command line takes it (take_launched).
_launched: list[subprocess.Popen] = []


def early_zygote_arguments(environ: Mapping[str, str], log_dir: Path) -> list[str]:
    """The daemon's `--zygote-log/--zygote-drop` (daemon_boot.py): it starts its zygote before its
    imports, with `environ` less the names dropped (the zygote's holds no secret: names only on the
    command line, never values). Nothing in `exec` mode."""
    from services.base.child_env import ZYGOTE, child_environment

    if read_knobs(SupervisorKnobs, environ).launch != "zygote":
        return []
    env = child_environment(ZYGOTE, environ)
    if any(environ.get(name) != value for name, value in env.items()):
        return []  # not only a removal: let the launcher start it (never the case today)
    drop = sorted(set(environ) - set(env))
    return ["--zygote-log", str(log_dir / "zygote.stdout.log"), f"--zygote-drop={','.join(drop)}"]


def daemon_command(
    autostart: list[str] | None, extra: tuple[str, ...] = ()
) -> tuple[list[str], dict[str, str] | None, bytes, tuple[int, int] | None]:
    """The daemon's argv (`extra` after `daemon`), its environment (None: this one), the secrets
    for its pipe and that pipe (None: no pipe; the secrets stay in its environment)."""
    settings = get_settings()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    early = early_zygote_arguments(os.environ, settings.log_dir)
    env: dict[str, str] | None = None
    secrets = b""
    parsed = early_arguments(early)
    if parsed is not None:
        drop = parsed[1]
        try:
            secrets = orjson.dumps({name: os.environ[name] for name in sorted(drop) if name in os.environ})
        except orjson.JSONEncodeError:  # not UTF-8 (surrogate escapes): in its environment, as before
            secrets = b""
        if secrets and len(secrets) <= SECRETS_MAX_BYTES:
            env = {k: v for k, v in os.environ.items() if k not in drop}
    pipe = os.pipe() if env is not None else None
    if pipe is not None:
        # The zygote's process title, and its children's, are written over the daemon's argv.
        early += [f"--secrets-fd={pipe[0]}", f"--title-room={TITLE_ROOM}"]
    if autostart is not None:
        early.append(f"--autostart={','.join(autostart)}")
    return [sys.executable, str(ENTRY), "daemon", *extra, *early], env, secrets, pipe


def write_secrets(pipe: tuple[int, int], secrets: bytes) -> None:
    """The secrets into the daemon's pipe, and the write end closed (they fit: never waits)."""
    try:
        view = memoryview(secrets)
        while view:
            view = view[os.write(pipe[1], view) :]
    except BrokenPipeError:
        pass  # the daemon is already gone: the command line's wait says so
    finally:
        os.close(pipe[1])


def launch_daemon(autostart: list[str] | None = None) -> subprocess.Popen:
    """Launch the supervisor daemon in the background (it starts `autostart`, all when empty, as
    soon as it serves); its process, without waiting for it."""
    argv, env, secrets, pipe = daemon_command(autostart)
    settings = get_settings()
    try:
        with open(settings.log_dir / "manager.stdout.log", "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env=env,
                pass_fds=(pipe[0],) if pipe is not None else (),
            )
    finally:
        if pipe is not None:
            os.close(pipe[0])  # the daemon's end: it has its own copy (or failed to start)
    if pipe is not None:
        write_secrets(pipe, secrets)
    return proc


def exec_foreground(autostart: list[str]) -> None:
    """`start --foreground` in zygote mode: become, in this very process (the pid systemd watches,
    the terminal's foreground job), the daemon in the foreground, with an environment without the
    secrets and their values on a pipe: it preloads and forks the first zygote from its own memory,
    which never held them, and shares its interpreter with every service (daemon_boot.
    preload_in_foreground; the supervisor 16 MB PSS instead of 23). Returns only when that does not
    apply (`exec` mode, secrets that cannot go on the pipe): the caller runs the supervisor as before."""
    argv, env, secrets, pipe = daemon_command(autostart, ("--foreground",))
    if pipe is None or env is None:  # both or neither: only with the zygote's arguments
        return
    os.set_inheritable(pipe[0], True)
    write_secrets(pipe, secrets)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def plain_start(argv: list[str]) -> list[str] | None:
    """The services of a `start` command line (after `start`) that has only service names and
    `--timeout N`; None for anything else (the command line's parser decides those)."""
    names: list[str] = []
    words = iter(argv)
    for word in words:
        if word in SERVICES:
            names.append(word)
            continue
        name, eq, value = word.partition("=")
        if name != "--timeout":
            return None
        try:
            float(value if eq else next(words))
        except (StopIteration, ValueError):
            return None
    return names


def start_early(argv: list[str]) -> None:
    """In `service_manager.py start`, before the command line's imports: launch the daemon when the
    command is a plain start (plain_start) and no supervisor answers. Never raises: whatever goes
    wrong here, the command line meets again and reports."""
    names = plain_start(argv)
    if names is None:
        return
    try:
        settings = get_settings()
        prepare_socket_dir(settings.socket_dir, create=True)
        if socket_is_live(settings.socket_dir / f"{SUPERVISOR}.sock"):
            return
        _launched.append(launch_daemon(autostart=names))
    except Exception:
        return


def launched() -> bool:
    return bool(_launched)


def take_launched() -> subprocess.Popen | None:
    """The daemon start_early launched, once; None when it launched none."""
    return _launched.pop() if _launched else None
