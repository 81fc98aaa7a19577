"""Size rotation of the logs the supervisor owns: `<service>.stdout.log` (with `manager` and
`zygote` among the names) and `redis.log`.

A child writes its stdout/stderr through a descriptor opened O_APPEND by the supervisor, which
cannot make it reopen: such a file is copied to `.1` and truncated in place ("copytruncate"; the
next write lands at offset 0; a line written between the copy and the truncation is lost).
Redis opens its log file anew for each line, so `redis.log` is simply renamed. Either way `.1` is
the newest of `backups` copies, so one log takes at most (backups + 1) x max_bytes, plus what is
written between two checks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path


def backup_name(path: Path, number: int) -> Path:
    return path.with_name(f"{path.name}.{number}")


def shift_backups(path: Path, backups: int) -> None:
    """Drop `.N` (N = backups) and move each `.k` to `.k+1`, making room for a new `.1`."""
    with contextlib.suppress(FileNotFoundError):
        backup_name(path, backups).unlink()
    for number in range(backups - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.rename(backup_name(path, number), backup_name(path, number + 1))


def copy_truncate(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate `path` when it has reached `max_bytes`: copy to `.1`, then truncate. True if rotated."""
    try:
        source = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    with open(source, "r+b") as src:
        if os.fstat(src.fileno()).st_size < max_bytes:
            return False
        shift_backups(path, backups)
        target = os.open(
            backup_name(path, 1),
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        with open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        src.truncate(0)
    return True


def rename_rotate(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate a file its writer reopens by name: rename to `.1`. True if rotated."""
    try:
        size = os.lstat(path).st_size
    except FileNotFoundError:
        return False
    if size < max_bytes:
        return False
    shift_backups(path, backups)
    os.rename(path, backup_name(path, 1))
    return True


def rotate_suite_logs(
    log_dir: Path, names: Iterable[str], redis_log: Path | None, max_bytes: int, backups: int
) -> tuple[list[Path], dict[Path, str]]:
    """One check of every `<name>.stdout.log` (and `redis_log`): the files rotated, and those that
    could not be (a symlink, a permission) with why; one failure does not stop the others."""
    rotated: list[Path] = []
    failed: dict[Path, str] = {}
    jobs = [(log_dir / f"{name}.stdout.log", copy_truncate) for name in names]
    if redis_log is not None:
        jobs.append((redis_log, rename_rotate))
    for path, rotate in jobs:
        try:
            if rotate(path, max_bytes, backups):
                rotated.append(path)
        except OSError as exc:
            failed[path] = exc.strerror or str(exc)
    return rotated, failed
