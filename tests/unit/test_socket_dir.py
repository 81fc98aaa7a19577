"""The socket directory's checks (services/base/socket_dir.py) and the lock files opened in it.

The pure check takes an lstat result, so its table needs no second user; the cases on disk use
uid 65534 (nobody) through os.chown, which needs root (as CI runs): they are skipped otherwise.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.base.base_service import ServiceAlreadyRunning, hold_instance_lock
from services.base.config import ConfigError, Settings
from services.base.socket_dir import (
    FALLBACK_SOCKET_DIR,
    UnsafeSocketDir,
    default_socket_dir,
    open_private_file,
    prepare_socket_dir,
    socket_dir_problem,
)

OTHER_UID = 65534  # nobody
ME = os.geteuid()
needs_root = pytest.mark.skipif(ME != 0, reason="giving a file to another uid needs root (CI runs as root)")


@pytest.fixture
def runtime_dir(short_tmp) -> Path:
    """Stands in for $XDG_RUNTIME_DIR: a directory of ours, 0700."""
    path = short_tmp / "run"
    path.mkdir(mode=0o700)
    return path


def test_default_socket_dir(runtime_dir):
    xdg = str(runtime_dir)
    assert default_socket_dir({}) == FALLBACK_SOCKET_DIR
    assert default_socket_dir({"XDG_RUNTIME_DIR": xdg}) == runtime_dir / "trading"
    assert default_socket_dir({"XDG_RUNTIME_DIR": xdg, "TRADING_SOCKET_DIR": "/srv/s"}) == Path("/srv/s")
    assert default_socket_dir({"TRADING_SOCKET_DIR": "  ", "XDG_RUNTIME_DIR": xdg}) == runtime_dir / "trading"
    # The XDG spec wants it absolute, existing and ours; anything else falls back.
    assert default_socket_dir({"XDG_RUNTIME_DIR": "run/user"}) == FALLBACK_SOCKET_DIR
    assert default_socket_dir({"XDG_RUNTIME_DIR": str(runtime_dir / "missing")}) == FALLBACK_SOCKET_DIR


@needs_root
def test_an_xdg_runtime_dir_of_another_user_is_not_used(runtime_dir):
    """`sudo -E` keeps the user's XDG_RUNTIME_DIR: root must not make its sockets in there."""
    os.chown(runtime_dir, OTHER_UID, OTHER_UID)
    assert default_socket_dir({"XDG_RUNTIME_DIR": str(runtime_dir)}) == FALLBACK_SOCKET_DIR


def test_settings_and_the_managed_redis_follow_the_xdg_default(runtime_dir):
    settings = Settings.from_env({"TRADING_LOG_DIR": "/tmp/x", "XDG_RUNTIME_DIR": str(runtime_dir)})
    assert settings.socket_dir == runtime_dir / "trading"
    assert settings.redis_url == f"unix://{runtime_dir}/trading/redis.sock"


def test_a_relative_socket_dir_is_a_configuration_error():
    with pytest.raises(ConfigError, match=r"TRADING_SOCKET_DIR: 'sock' must be an absolute path"):
        Settings.from_env({"TRADING_LOG_DIR": "/tmp/x", "TRADING_SOCKET_DIR": "sock"})


def lstat_of(kind: int, mode: int, uid: int) -> os.stat_result:
    return os.stat_result((kind | mode, 1, 1, 1, uid, 0, 0, 0, 0, 0))


P = Path("/tmp/trading_sockets")


@pytest.mark.parametrize(
    ("st", "problem"),
    [
        (lstat_of(stat.S_IFDIR, 0o700, ME), None),
        (lstat_of(stat.S_IFDIR, 0o755, ME), f"open to group or others, owned by uid {ME} (mode 0755)"),
        (lstat_of(stat.S_IFDIR, 0o710, ME), "open to group or others"),
        (lstat_of(stat.S_IFDIR, 0o500, ME), None),  # ours, our own bits masked: set to 0700
        (
            lstat_of(stat.S_IFDIR, 0o700, OTHER_UID),
            f"is owned by uid {OTHER_UID} (mode 0700), not by uid {ME}",
        ),
        (lstat_of(stat.S_IFDIR, 0o777, OTHER_UID), f"is owned by uid {OTHER_UID} (mode 0777)"),
        (lstat_of(stat.S_IFDIR, 0o777, ME), "writable by group or others"),
        (lstat_of(stat.S_IFDIR, 0o770, ME), "writable by group or others"),
        (lstat_of(stat.S_IFDIR, 0o1777, ME), "(mode 1777)"),  # /tmp itself, for root
        (lstat_of(stat.S_IFLNK, 0o777, ME), "is a symbolic link"),  # even to a good directory
        (lstat_of(stat.S_IFREG, 0o600, ME), "is a regular file"),
    ],
)
def test_socket_dir_problem_table(st, problem):
    found = socket_dir_problem(P, st, ME)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
        assert found.startswith(f"socket directory {P} ") and "TRADING_SOCKET_DIR" in found
        assert "\n" not in found


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_missing_directory_is_created_0700_with_its_parents(short_tmp):
    target = short_tmp / "a" / "b" / "sock"
    old = os.umask(0o022)
    try:
        assert prepare_socket_dir(target) is True
    finally:
        os.umask(old)
    assert mode_of(target) == 0o700 and os.lstat(target).st_uid == ME


def test_without_create_a_missing_directory_stays_missing(short_tmp):
    assert prepare_socket_dir(short_tmp / "nothing", create=False) is False
    assert not (short_tmp / "nothing").exists()


def test_a_directory_of_ours_others_can_read_is_refused_with_chmod_as_the_fix(short_tmp):
    target = short_tmp / "sock"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    with pytest.raises(UnsafeSocketDir, match=r"open to group or others.*mode 0755.*chmod 700"):
        prepare_socket_dir(target)
    assert mode_of(target) == 0o755  # left as it is


def test_a_directory_of_ours_with_our_own_bits_masked_is_made_0700(short_tmp):
    target = short_tmp / "sock"
    target.mkdir(mode=0o700)
    os.chmod(target, 0o500)
    prepare_socket_dir(target)
    assert mode_of(target) == 0o700


def test_a_0777_directory_is_refused_and_left_as_it_is(short_tmp):
    target = short_tmp / "sock"
    target.mkdir()
    os.chmod(target, 0o777)
    with pytest.raises(UnsafeSocketDir, match=r"writable by group or others.*mode 0777"):
        prepare_socket_dir(target)
    assert mode_of(target) == 0o777


def test_a_symlink_to_a_good_directory_is_refused(short_tmp):
    real = short_tmp / "real"
    real.mkdir(mode=0o700)
    (short_tmp / "sock").symlink_to(real)
    with pytest.raises(UnsafeSocketDir, match="is a symbolic link"):
        prepare_socket_dir(short_tmp / "sock")


@needs_root
def test_another_users_directory_is_refused_naming_owner_and_mode(short_tmp):
    target = short_tmp / "sock"
    target.mkdir(mode=0o700)
    os.chown(target, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeSocketDir) as caught:
        prepare_socket_dir(target)
    assert str(caught.value) == (
        f"socket directory {target} is owned by uid {OTHER_UID} (mode 0700), not by uid 0: remove it"
        " or set TRADING_SOCKET_DIR to a directory of your own with mode 0700"
    )
    assert mode_of(target) == 0o700 and os.lstat(target).st_uid == OTHER_UID  # untouched


@needs_root
def test_a_sticky_shared_directory_is_refused_but_our_subdirectory_of_it_is_used(short_tmp):
    shared = short_tmp / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp
    with pytest.raises(UnsafeSocketDir, match=r"writable by group or others.*mode 1777"):
        prepare_socket_dir(shared)
    ours = shared / "trading"
    prepare_socket_dir(ours)
    assert mode_of(ours) == 0o700 and os.lstat(ours).st_uid == ME
    # The attack the check is for: another user made the name first, in the shared directory.
    theirs = shared / "planted"
    theirs.mkdir(mode=0o777)
    os.chmod(theirs, 0o777)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeSocketDir, match=f"owned by uid {OTHER_UID}"):
        prepare_socket_dir(theirs)


# ---- lock files ------------------------------------------------------------------------------------


@pytest.fixture
def private_dir(short_tmp) -> Path:
    path = short_tmp / "sock"
    path.mkdir(mode=0o700)
    return path


def test_the_lock_holds_our_pid_and_refuses_a_second_holder(private_dir):
    fd = hold_instance_lock(private_dir / "x.lock")
    try:
        assert (private_dir / "x.lock").read_text() == f"{os.getpid()}\n"
        assert mode_of(private_dir / "x.lock") == 0o600
        with pytest.raises(ServiceAlreadyRunning, match=str(os.getpid())):
            hold_instance_lock(private_dir / "x.lock")
    finally:
        os.close(fd)


@needs_root
def test_a_symlinked_lock_is_refused_and_its_target_never_written(private_dir, short_tmp):
    """manager.lock -> a root-owned file: the pid must not overwrite it (the review's attack)."""
    victim = short_tmp / "precious"
    victim.write_text("root's data\n")
    os.chmod(victim, 0o644)
    (private_dir / "manager.lock").symlink_to(victim)
    with pytest.raises(UnsafeSocketDir, match=r"manager\.lock is a symbolic link: refused"):
        hold_instance_lock(private_dir / "manager.lock")
    assert victim.read_text() == "root's data\n" and os.lstat(victim).st_uid == 0


def test_a_symlinked_lock_to_a_missing_file_creates_nothing(private_dir, short_tmp):
    (private_dir / "market-data.lock").symlink_to(short_tmp / "created-through-the-link")
    with pytest.raises(UnsafeSocketDir, match="symbolic link"):
        hold_instance_lock(private_dir / "market-data.lock")
    assert not (short_tmp / "created-through-the-link").exists()


@needs_root
def test_a_lock_file_of_another_user_is_refused(private_dir):
    lock = private_dir / "manager.lock"
    lock.write_text("")
    os.chown(lock, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeSocketDir, match=f"owned by uid {OTHER_UID}"):
        open_private_file(lock)


def test_a_fifo_in_place_of_a_lock_is_refused(private_dir):
    fifo = private_dir / "manager.lock"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(UnsafeSocketDir, match="a special file"):
        open_private_file(fifo, os.O_RDWR)  # O_RDWR: opening a FIFO does not block


def test_the_systemd_unit_and_the_default_agree(runtime_dir):
    """A user unit's RuntimeDirectory= is $XDG_RUNTIME_DIR/trading: the CLI in that user's session
    finds the suite there without setting anything."""
    import setup_microservices

    for system in (True, False):
        unit = setup_microservices.systemd_unit(system=system)
        assert "RuntimeDirectory=trading\nRuntimeDirectoryMode=0700\n" in unit
        assert "Environment=TRADING_SOCKET_DIR=%t/trading\n" in unit
    xdg = {"XDG_RUNTIME_DIR": str(runtime_dir)}
    assert default_socket_dir(xdg) == runtime_dir / setup_microservices.RUNTIME_DIR
    # Set-up (standard library only) loads the very same rules by path.
    assert setup_microservices.socket_dir_rules().default_socket_dir(xdg) == runtime_dir / "trading"
