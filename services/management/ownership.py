"""Is this pid one of ours? Asked before the suite signals or adopts a pid it learnt from a socket.

A pid comes from whatever answers on `<service>.sock` (`health`'s `pid`) or on `redis.sock`
(`INFO`'s `process_id`), so it is only a claim: `stop` and the supervisor signal it only when the
process runs as this user and its command line is the suite's: a service's entry file (or its
TRADING_MANAGER_ENTRY_<SERVICE> override), the manager CLI, the zygote the services may be forked
from (`python -m services.management.zygote`, whose children carry a process title naming the
service and the zygote), or a redis-server listening on this suite's `redis.sock`. Everything
else (a `sleep` handed over by a fake socket, another user's process) is never signalled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from services.registry import SERVICES

#: The launcher that forks services from a preloaded interpreter (its module and its file).
ZYGOTE_MODULE = "services.management.zygote"
MANAGER_ENTRY = "services/management/service_manager.py"


def suite_entries(overrides: Iterable[str] = ()) -> tuple[str, ...]:
    """Every file whose command line marks a suite process: the registry's entry files, the
    manager CLI, the zygote's file, and the entry overrides in force."""
    zygote_file = ZYGOTE_MODULE.replace(".", "/") + ".py"
    return (*(s.entry for s in SERVICES.values()), MANAGER_ENTRY, zygote_file, *overrides)


def cmdline_is_suite(cmdline: list[str], entries: Iterable[str], redis_socket: str) -> bool:
    """True when the command line runs one of `entries` (by path, absolute or relative), names the
    zygote module, or is a redis-server on `redis_socket`. A process title set over argv is one
    string with spaces: it is split into words like any command line."""
    words = [word for arg in cmdline for word in arg.split()]
    for word in words:
        if ZYGOTE_MODULE in word:
            return True
        for entry in entries:
            relative = str(PurePosixPath(entry))
            if word == relative or word.endswith("/" + relative.lstrip("/")):
                return True
    if words and PurePosixPath(words[0]).name.startswith("redis-server"):
        return any(word.endswith(redis_socket) for word in words[1:])
    return False


def why_not_ours(pid: object, socket_dir: Path, overrides: Iterable[str] = ()) -> str | None:
    """None when `pid` is a suite process of this user; otherwise why it must not be signalled."""
    import psutil

    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or pid == os.getpid():
        return f"{pid!r} is not a process id the suite may signal"
    euid = os.geteuid()
    try:
        process = psutil.Process(pid)
        uids = process.uids()
        cmdline = process.cmdline()
    except psutil.NoSuchProcess:
        return f"pid {pid} is gone"
    except psutil.Error as exc:
        return f"pid {pid} cannot be inspected ({type(exc).__name__})"
    if uids.real != euid or uids.effective != euid:
        return f"pid {pid} runs as uid {uids.real}, not as uid {euid}"
    redis_socket = str(socket_dir / "redis.sock")
    if not cmdline_is_suite(cmdline, suite_entries(overrides), redis_socket):
        shown = " ".join(cmdline)[:120] or "?"
        return f"pid {pid} ({shown}) is not a process of the suite"
    return None
