"""The socket directory: checked before anything is opened in it, and the files in it opened safely.

Whoever can write the socket directory can plant a fake `<service>.sock` that answers the CLI (and
hands `stop` a pid to kill), or a `manager.lock` symlink that makes the supervisor overwrite a file
of their choosing. So before the supervisor, a service or the CLI opens anything there, the
directory must be a real directory (lstat: not a symlink) owned by the effective user, and no one
else may read, enter or write it (mode & 077 == 0). A missing one is created 0700. One of ours
that only our own bits keep from 0700 (e.g. 0500, from a umask) is set to 0700. Anything else is
refused with one line naming the path, owner, mode and fix (`UnsafeSocketDir`): one of ours made
by a plain `mkdir` (0755) too, with `chmod 700 DIR` as the fix.

The lock files in it are opened with O_NOFOLLOW and must be regular files of ours; Unix sockets are
bound by path after removing what was there (bind() never follows a symlink). Its parents are not
checked: under a parent another user may write (a sticky one such as /tmp aside, where only the
owner may rename), the directory could be swapped after the check.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path

#: When neither TRADING_SOCKET_DIR nor XDG_RUNTIME_DIR is set.
FALLBACK_SOCKET_DIR = Path("/tmp/trading_sockets")
#: Under $XDG_RUNTIME_DIR (a per-user 0700 tmpfs made by systemd-logind), and the systemd unit's
#: RuntimeDirectory= name, so the unit and the default agree.
RUNTIME_SUBDIR = "trading"
FIX = "remove it or set TRADING_SOCKET_DIR to a directory of your own with mode 0700"


class UnsafeSocketDir(RuntimeError):
    """The socket directory (or a lock file in it) could let another user in: remove it, or set
    TRADING_SOCKET_DIR to a directory of your own with mode 0700."""


def default_socket_dir(environ: Mapping[str, str]) -> Path:
    """TRADING_SOCKET_DIR; else `$XDG_RUNTIME_DIR/trading` when that is set and, as the XDG spec
    requires, an absolute path to a directory of this user (not one `sudo -E` or `su` carried over
    from another user's session); else /tmp/trading_sockets."""
    explicit = environ.get("TRADING_SOCKET_DIR", "").strip()
    if explicit:
        return Path(explicit)
    runtime = environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime.startswith("/") and _is_own_directory(Path(runtime)):
        return Path(runtime) / RUNTIME_SUBDIR
    return FALLBACK_SOCKET_DIR


def _is_own_directory(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def socket_dir_problem(path: Path, st: os.stat_result, euid: int) -> str | None:
    """Why `path`, whose lstat is `st`, must not be the socket directory of user `euid`; None when
    it may (mode & 0o077 == 0; our own bits masked, e.g. 0500, are then set to 0700). Pure: the
    tests feed it tables."""
    mode = stat.S_IMODE(st.st_mode)
    shown = f"uid {st.st_uid} (mode {mode:04o})"
    if not stat.S_ISDIR(st.st_mode):
        return f"socket directory {path} is {_kind(st.st_mode)} owned by {shown}: {FIX}"
    if st.st_uid != euid:
        return f"socket directory {path} is owned by {shown}, not by uid {euid}: {FIX}"
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"socket directory {path} is writable by group or others, owned by {shown}: set"
            " TRADING_SOCKET_DIR to a directory of your own with mode 0700, or remove it (others may"
            " have put files in it)"
        )
    if mode & 0o077:
        return (
            f"socket directory {path} is open to group or others, owned by {shown}: run"
            f" `chmod 700 {path}` (it is yours and nobody else could write to it), or set"
            " TRADING_SOCKET_DIR to a directory of your own with mode 0700"
        )
    return None


def prepare_socket_dir(directory: Path, create: bool = True) -> bool:
    """Check the socket directory (creating it 0700, parents as needed, when `create`); True when
    it exists afterwards. UnsafeSocketDir with one line when it must not be used."""
    euid = os.geteuid()
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        if not create:
            return False
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(directory, 0o700)  # fails if someone made it meanwhile: then checked below
        except FileExistsError:
            pass
        st = os.lstat(directory)
    problem = socket_dir_problem(directory, st, euid)
    if problem is not None:
        raise UnsafeSocketDir(problem)
    if stat.S_IMODE(st.st_mode) != 0o700:  # a umask that hid our own bits (e.g. 0500)
        _set_private(directory, st)
    return True


def _set_private(directory: Path, seen: os.stat_result) -> None:
    """chmod 0700 through a descriptor of the very directory that was checked (never a symlink)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
            raise UnsafeSocketDir(f"socket directory {directory} changed while it was checked: {FIX}")
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def open_private_file(path: Path, flags: int = os.O_RDWR | os.O_CREAT, mode: int = 0o600) -> int:
    """Open (or create) a lock or pid file in the socket directory without following a symlink;
    it must be a regular file owned by this user. UnsafeSocketDir otherwise."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeSocketDir(
                f"{path} is a symbolic link: refused (never followed); remove it, and check who can"
                " write its directory"
            ) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafeSocketDir(
            f"{path} is {'a regular file' if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)} owned by"
            f" uid {st.st_uid}, not by uid {os.geteuid()}: refused; remove it"
        )
    return fd


def socket_is_live(path: Path) -> bool:
    """True when a process accepts connections on the Unix socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError:
            return False
        return True
