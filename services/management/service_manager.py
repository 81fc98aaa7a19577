#!/usr/bin/env python3
"""service_manager.py: start, stop and watch the trading suite.

    python services/management/service_manager.py COMMAND [options]

Each command is one small function below; its docstring is its help. Errors are one line on
stderr with a non-zero exit: 2 for usage errors, 1 for failures, 3 for "not running" (status).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import orjson

from services.base import SYDNEY, BaseService, ConfigError, RpcError, get_clock, get_settings, socket_is_live
from services.domain.supervision import UP, start_order, stop_order
from services.management.dashboard_view import human_bytes, human_seconds
from services.registry import SUPERVISOR

MANAGER = SUPERVISOR


class CliError(Exception):
    """A failure to report in one line; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# ---- small helpers ---------------------------------------------------------------------------


def rpc(service: str, method: str, /, timeout: float = 10.0, **params):
    """One call from the CLI (a fresh client each time: the CLI is short-lived)."""

    async def go():
        client = BaseService("cli")
        try:
            return await client.call_service(service, method, timeout=timeout, retries=0, **params)
        finally:
            await client.close_clients()

    return asyncio.run(go())


def manager_socket() -> Path:
    return get_settings().socket_dir / f"{MANAGER}.sock"


def supervisor_running() -> bool:
    return socket_is_live(manager_socket())


def require_supervisor() -> None:
    if not supervisor_running():
        raise CliError("the supervisor is not running; start it with: service_manager.py start", 3)


def color(text: str, state: str | None) -> str:
    if not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
        return text
    code = {
        "running": "32", "healthy": "32", "starting": "33", "degraded": "33", "backoff": "33",
        "stopping": "33", "fatal": "31", "unhealthy": "31", "down": "31", "stopped": "90",
    }.get(state or "", "0")  # fmt: skip
    return f"\033[{code}m{text}\033[0m"


def table(headers: list[str], rows: list[list[str]], states: list[str | None] | None = None) -> str:
    """A plain aligned table; a row's state colours its second column when on a terminal."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for index, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        if states and states[index] and len(cells) > 1:
            cells[1] = color(cells[1], states[index])
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def status_table(status: dict) -> str:
    sup = status["supervisor"]
    redis = sup["redis"]
    overall = status.get("overall", "down")
    light = {"healthy": "🟢", "degraded": "🟡"}.get(overall, "🔴")
    head = (
        f"{light} suite {color(overall, overall)}   supervisor pid {sup['pid']} up {human_seconds(sup['uptime'])}"
        f"   redis {'managed' if redis['managed'] else 'external'} {redis['state']}"
        f"{' pid ' + str(redis['pid']) if redis.get('pid') else ''}"
    )
    rows, states = [], []
    for s in status["services"]:
        rows.append(
            [
                s["name"],
                s["state"],
                str(s["pid"] or "-"),
                human_seconds(s["uptime"]),
                str(s["restarts"]),
                s["health"] or "-",
                human_bytes(s.get("memory_usage")),
                s.get("reason") or "",
            ]
        )
        states.append(s["state"])
    body = table(["SERVICE", "STATE", "PID", "UPTIME", "RESTARTS", "HEALTH", "MEMORY", "NOTE"], rows, states)
    return f"{head}\n{body}"


def wait_for(services: list[str], timeout_s: float) -> dict:
    """Poll the supervisor until `services` are up, one is fatal, or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = rpc(MANAGER, "status")
        by_name = {s["name"]: s for s in status["services"]}
        wanted = [by_name[n] for n in services]
        if all(s["state"] == "running" and s["health"] in UP for s in wanted):
            return status
        if any(s["state"] == "fatal" for s in wanted) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def spawn_daemon() -> None:
    """Start the supervisor in the background and wait until it answers."""
    settings = get_settings()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.log_dir / "manager.stdout.log", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "daemon"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + 20
    while not supervisor_running():
        if proc.poll() is not None and not supervisor_running():
            # Lost the race to another `start`: that supervisor will answer in a moment.
            if time.monotonic() > deadline:
                raise CliError(
                    f"the supervisor exited ({proc.returncode}); see {settings.log_dir}/manager.stdout.log"
                )
        if time.monotonic() > deadline:
            raise CliError(f"the supervisor did not come up; see {settings.log_dir}/manager.log")
        time.sleep(0.05)


def check_names(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in start_order()]
    if unknown:
        raise CliError(f"unknown service: {', '.join(unknown)} (known: {', '.join(start_order())})", 2)
    return names


# ---- commands ----------------------------------------------------------------------------------


def cmd_start(args) -> int:
    """Start the supervisor if needed, then the services in dependency order; return when all are
    healthy (exit 0) or not (exit 1). --foreground keeps the supervisor in this process."""
    names = check_names(args.services)
    if args.foreground:
        return run_foreground(names)
    if not supervisor_running():
        spawn_daemon()
    rpc(MANAGER, "start_services", services=names or None)
    wanted = names or start_order()
    from services.domain.supervision import with_dependencies

    wanted = [n for n in start_order() if n in with_dependencies(wanted)]
    status = wait_for(wanted, args.timeout)
    print(status_table(status))
    by_name = {s["name"]: s for s in status["services"]}
    bad = [n for n in wanted if not (by_name[n]["state"] == "running" and by_name[n]["health"] in UP)]
    if bad:
        print(f"not healthy: {', '.join(bad)}; see: service_manager.py logs {bad[0]}", file=sys.stderr)
        return 1
    return 0


def run_foreground(names: list[str]) -> int:
    from services.management.supervisor import LockHeld, Supervisor

    if supervisor_running():
        raise CliError("a supervisor is already running; stop it first with: service_manager.py stop")
    supervisor = Supervisor(autostart=names, notify=True)
    try:
        supervisor.run()
    except LockHeld as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_daemon(args) -> int:
    """(internal) Run the supervisor; `start` launches this in the background."""
    from services.management.supervisor import LockHeld, Supervisor

    os.environ["TRADING_SUPERVISED"] = "1"  # stderr goes to manager.stdout.log: warnings only
    try:
        Supervisor(autostart=None).run()
    except LockHeld as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_stop(args) -> int:
    """Stop services in reverse dependency order; with no names, the supervisor and Redis too."""
    names = check_names(args.services)
    if supervisor_running():
        if names:
            result = rpc(MANAGER, "stop_services", services=names, timeout=300)
            print(f"stopped: {', '.join(result['stopped'])}")
            return 0
        pid = rpc(MANAGER, "health")["pid"]
        rpc(MANAGER, "shutdown")
        deadline = time.monotonic() + 300
        while manager_socket().exists() or _pid_alive(pid):
            if time.monotonic() > deadline:
                raise CliError("the supervisor did not stop within 300s")
            time.sleep(0.05)
        print("stopped: supervisor, services and redis")
        return 0
    leftovers = stop_leftovers(names or stop_order(), include_redis=not names)
    print(f"supervisor not running; stopped leftovers: {', '.join(leftovers) or 'none'}")
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_leftovers(names: list[str], include_redis: bool) -> list[str]:
    """Services (and a managed Redis) still running without a supervisor: stop them by pid."""
    stopped = []
    settings = get_settings()
    for name in names:
        path = settings.socket_dir / f"{name}.sock"
        if not socket_is_live(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        try:
            pid = rpc(name, "health", timeout=3)["pid"]
            rpc(name, "shutdown", timeout=3)
        except RpcError:
            continue
        _wait_gone(pid, 15)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        stopped.append(name)
    if include_redis and settings.redis_managed and socket_is_live(settings.socket_dir / "redis.sock"):
        _shutdown_redis(settings.socket_dir / "redis.sock")
        stopped.append("redis")
    return stopped


def _wait_gone(pid: int, timeout_s: float) -> None:
    for signum in (None, signal.SIGTERM, signal.SIGKILL):
        if signum is not None and _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + timeout_s
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _pid_alive(pid):
            return


def _shutdown_redis(path: Path) -> None:
    import socket as socketlib

    with contextlib.suppress(OSError), socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b"SHUTDOWN\r\n")
        s.recv(64)
    deadline = time.monotonic() + 10
    while socket_is_live(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def cmd_status(args) -> int:
    """State (running, starting, backoff, fatal, stopped), pid, uptime, restarts and health of
    each service. Exit 0 when everything runs, 3 when not."""
    if not supervisor_running():
        if args.json:
            print(orjson.dumps({"supervisor": None, "services": []}).decode())
        else:
            print("supervisor: not running")
        return 3
    status = rpc(MANAGER, "status")
    print(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() if args.json else status_table(status))
    return 0 if all(s["state"] == "running" for s in status["services"]) else 3


def cmd_health(args) -> int:
    """Call every service's `health`. Exit 0 when all are healthy, 1 when not."""
    results = {}
    for name in start_order():
        try:
            results[name] = rpc(name, "health", timeout=3)
        except RpcError as exc:
            results[name] = {"service": name, "status": "down", "error": exc.message}
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    else:
        rows, states = [], []
        for name, h in results.items():
            extra = h.get("error") or "; ".join(h.get("warnings", []))
            rows.append(
                [
                    name,
                    h["status"],
                    h.get("redis", "-"),
                    human_seconds(h.get("uptime")),
                    human_bytes(h.get("memory_usage")),
                    f"{h['cpu_usage']:.1f}%" if isinstance(h.get("cpu_usage"), (int, float)) else "-",
                    str(h.get("pid", "-")),
                    extra,
                ]
            )
            states.append(h["status"])
        print(table(["SERVICE", "STATUS", "REDIS", "UPTIME", "MEMORY", "CPU", "PID", "NOTE"], rows, states))
    return 0 if all(h["status"] == "healthy" for h in results.values()) else 1


def cmd_restart(args) -> int:
    """Restart one service (clearing a fatal state), or all of them; exit 0 once healthy."""
    check_names([args.service] if args.service else [])
    require_supervisor()
    result = rpc(MANAGER, "restart_service", service=args.service, timeout=300)
    status = wait_for(result["restarting"], args.timeout)
    print(status_table(status))
    by_name = {s["name"]: s for s in status["services"]}
    ok = all(by_name[n]["state"] == "running" and by_name[n]["health"] in UP for n in result["restarting"])
    return 0 if ok else 1


def format_log_line(raw: str) -> str:
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.rstrip("\n")
    if not isinstance(entry, dict):
        return raw.rstrip("\n")
    known = {"ts", "level", "service", "logger", "msg", "exc", "error"}
    extras = " ".join(f"{k}={v}" for k, v in entry.items() if k not in known)
    text = f"{entry.get('ts', '')} {entry.get('level', ''):<7} {entry.get('service', ''):<13} {entry.get('msg', '')}"
    if extras:
        text += f"  [{extras}]"
    for key in ("exc", "error"):
        if entry.get(key):
            text += "\n    " + str(entry[key]).replace("\n", "\n    ")
    return text


def log_files(service: str | None) -> list[Path]:
    log_dir = get_settings().log_dir
    names = [service] if service else [*start_order(), MANAGER]
    return [log_dir / f"{n}.log" for n in names if (log_dir / f"{n}.log").exists()]


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines without reading a large file whole."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size, block, data = f.tell(), 65536, b""
        while size > 0 and data.count(b"\n") <= count:
            step = min(block, size)
            size -= step
            f.seek(size)
            data = f.read(step) + data
    return data.decode(errors="replace").splitlines()[-count:]


def cmd_logs(args) -> int:
    """The last N log lines of one service (or all, merged by time), readable; -f follows."""
    if args.service and args.service != MANAGER:
        check_names([args.service])
    files = log_files(args.service)
    if not files and not args.follow:
        raise CliError(f"no logs yet in {get_settings().log_dir}")
    lines = []
    for path in files:
        lines.extend(tail_lines(path, args.lines))
    lines.sort(key=lambda line: line[7:31] if line.startswith('{"ts":"') else "")
    for line in lines[-args.lines :]:
        print(format_log_line(line))
    if args.follow:
        follow(lambda: log_files(args.service))
    return 0


def follow(files: Callable[[], list[Path]]) -> None:
    """Print new lines as they are written; survives rotation (a new file under the same name)."""
    positions: dict[Path, tuple[int, int]] = {}
    for path in files():
        stat = path.stat()
        positions[path] = (stat.st_ino, stat.st_size)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            for path in files():
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                inode, offset = positions.get(path, (stat.st_ino, 0))
                if inode != stat.st_ino or stat.st_size < offset:
                    offset = 0  # rotated or truncated
                if stat.st_size > offset:
                    with open(path, "rb") as f:
                        f.seek(offset)
                        chunk = f.read()
                    complete = chunk[: chunk.rfind(b"\n") + 1]
                    for line in complete.decode(errors="replace").splitlines():
                        print(format_log_line(line), flush=True)
                    offset += len(complete)
                positions[path] = (stat.st_ino, offset)
            time.sleep(0.25)


def cmd_dashboard(args) -> int:
    """Live terminal dashboard; --once prints one plain-text frame and exits."""
    try:
        from services.management.dashboard import run_dashboard
    except ImportError as exc:
        raise CliError(
            f"the dashboard cannot start: {exc} (run: python3 setup_microservices.py --install-deps)"
        ) from None
    return run_dashboard(once=args.once)


def cmd_replay(args) -> int:
    """Replay past days on historical CSV data through a private suite and print the report.

    The report: equity curve, return against buy-and-hold of the universe and the index, Sharpe,
    maximum drawdown, win rate, trades, commissions, buy rate, model accuracy. equity.png,
    equity.csv, trades.csv, report.json and report.txt go into --out. The live suite is never
    touched."""
    from datetime import date

    from services.management.replay import ReplayDriver, ReplayError, ReplayOptions, default_out

    try:
        first, last = date.fromisoformat(args.from_date), date.fromisoformat(args.to_date)
    except ValueError as exc:
        raise CliError(f"--from/--to must be YYYY-MM-DD dates: {exc}", 2) from None
    if first > last:
        raise CliError(f"--from {first} is after --to {last}", 2)
    if not 0 < args.speed <= 300:
        raise CliError("--speed must be in (0, 300]", 2)
    settings = get_settings()
    data_dir = args.data_dir or settings.data_dir / "market"
    options = ReplayOptions(
        first=first,
        last=last,
        data_dir=data_dir,
        out=args.out or default_out(settings.data_dir, first, last),
        speed=args.speed,
        models_dir=settings.models_dir,
        train_years=args.train_years,
        keep_dir=args.keep,
    )
    try:
        result = ReplayDriver(options, progress=lambda m: print(m, file=sys.stderr, flush=True)).run()
    except ReplayError as exc:
        raise CliError(str(exc)) from None
    print(result.text)
    print(f"\nwritten to {result.out}: equity.png, equity.csv, trades.csv, report.json, report.txt")
    return 0


def size_text(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def files_text(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def cmd_backup(args) -> int:
    """Back up every database and the models folder now, into <data dir>/backups/<Sydney date>/.
    Each database is copied with SQLite's online backup (consistent while services write) and
    checked with PRAGMA integrity_check; then only the newest --keep dated backups are kept
    (default TRADING_SCHEDULER_BACKUP_KEEP, as the scheduler's daily backup). Works whether the
    suite runs or not."""
    from services.base.backups import BackupFailed, BackupKnobs, backup_databases
    from services.base.knobs import read_knobs

    settings = get_settings()
    keep = read_knobs(BackupKnobs, settings.environ).backup_keep if args.keep is None else args.keep
    if not 1 <= keep <= 365:
        raise CliError(f"--keep must be 1..365, not {keep}", 2)
    now = get_clock().now()
    day = now.astimezone(SYDNEY).date()
    try:
        result = backup_databases(
            settings.data_dir, day, keep, models_dir=settings.models_dir, created_at=now.isoformat()
        )
    except BackupFailed as exc:
        raise CliError(f"backup failed: {exc}") from None
    print(f"backup {day} written to {result['backup_dir']}")
    rows = [[d["source"], size_text(d["bytes"]), f"integrity {d['integrity']}"] for d in result["databases"]]
    if result["models"] is not None:
        models = result["models"]
        rows.append(
            ["models/", size_text(models["bytes"]), f"{files_text(models['files'])}, SHA-256 recorded"]
        )
    print(table(["FILE", "SIZE", "CHECK"], rows))
    if result["pruned"]:
        print(f"pruned (keeping the newest {keep}): {', '.join(Path(p).name for p in result['pruned'])}")
    return 0


def cmd_restore(args) -> int:
    """Restore the databases and models of backup DATE (YYYY-MM-DD, latest, or replaced-<time>
    to undo a restore). Before anything stops, every database to restore must pass PRAGMA
    integrity_check and every model file its recorded SHA-256. Then the services owning them stop
    (through the supervisor; one running without it makes the command refuse), the current files
    are kept in backups/replaced-<time>/, the backup's files are put in place, and the services
    stopped start again; it returns once they are up. SERVICE... restores only their databases
    (ml-model: and the models)."""
    from services.base.backups import BackupFailed, backup_lock, backups_root, is_backup_name

    names = check_names(args.services)
    if not is_backup_name(args.date):
        raise CliError(f"DATE must be YYYY-MM-DD, latest or replaced-..., not {args.date!r}", 2)
    settings = get_settings()
    root = backups_root(settings.data_dir)
    managed = supervisor_running()
    try:
        with backup_lock(root):  # no backup prunes or rewrites the set meanwhile
            backup, plan = chosen_backup(root, args.date, names)
            what = [*plan.databases, *(["models/"] if plan.models else [])]
            print(f"restoring backup {backup.name} ({backup.folder}): {', '.join(what)}", flush=True)
            stopped, to_start = stop_owners(list(plan.owners), managed)
            safety, result = restore_backup_files(backup, plan, stopped, to_start)
    except BackupFailed as exc:  # the lock: another backup or restore is running
        raise CliError(str(exc)) from None
    for copy in result["databases"]:
        print(f"restored {copy['database']} ({size_text(copy['bytes'])}, integrity ok)")
    if result["models"] is not None:
        models = result["models"]
        removed = f"; removed {len(models['removed'])} not in the backup" if models["removed"] else ""
        print(f"restored models/ ({files_text(models['files'])}, {size_text(models['bytes'])}{removed})")
    if plan.skipped:
        print(f"not restored (no service owns them): {', '.join(plan.skipped)}")
    if safety is not None:
        print(f"the files replaced are kept in {safety}; to undo: service_manager.py restore {safety.name}")
    if not managed:
        print("the supervisor is not running: nothing was stopped or started")
        return 0
    if not to_start:
        print("nothing to start again: the services stopped were stopped before the restore")
        return 0
    print(f"starting again: {', '.join(to_start)}", flush=True)
    return 0 if start_again(to_start, args.timeout) else 1


def chosen_backup(root: Path, name: str, services: list[str]):
    """The backup and what to restore of it, checked; CliError (exit 1) before anything stops."""
    from services.base.backups import (
        BackupDamaged,
        NoSuchBackup,
        NothingToRestore,
        check_backup,
        plan_restore,
        read_backup,
        resolve_backup,
    )

    try:
        backup = read_backup(resolve_backup(root, name))
        plan = plan_restore(backup, services or None)
        check_backup(backup, plan)
    except (NoSuchBackup, NothingToRestore, BackupDamaged) as exc:
        raise CliError(f"{exc}; nothing was stopped or restored") from None
    return backup, plan


def stop_owners(owners: list[str], managed: bool) -> tuple[list[str], list[str]]:
    """Stop the services that own the files (and what depends on them) through the supervisor:
    (stopped, those to start again: the ones that were not stopped before)."""
    sockets = get_settings().socket_dir
    if not managed:
        if live := [n for n in owners if socket_is_live(sockets / f"{n}.sock")]:
            raise CliError(
                f"{', '.join(live)} running without a supervisor, which cannot stop and start it for the"
                f" restore: stop it first (service_manager.py stop {' '.join(live)}); nothing was restored"
            )
        return [], []
    before = {s["name"]: s["state"] for s in rpc(MANAGER, "status")["services"]}
    stopped = rpc(MANAGER, "stop_services", services=owners, timeout=300)["stopped"]
    to_start = [n for n in start_order() if n in stopped and before.get(n) != "stopped"]
    print(f"stopped: {', '.join(stopped)}", flush=True)
    if live := [n for n in owners if socket_is_live(sockets / f"{n}.sock")]:  # started by hand?
        start_again(to_start, 120)
        raise CliError(f"{', '.join(live)} still answer on their sockets; nothing was restored")
    return stopped, to_start


def restore_backup_files(backup, plan, stopped: list[str], to_start: list[str]):
    """Keep the current files aside, then put the backup's in place: (safety folder, result)."""
    import sqlite3

    from services.base.backups import keep_current, restore_files

    settings, now = get_settings(), get_clock().now()
    try:
        safety = keep_current(plan, settings.data_dir, settings.models_dir, now, now.isoformat())
    except (OSError, sqlite3.Error) as exc:
        if to_start:
            start_again(to_start, 120)  # nothing was replaced: the services carry on as they were
        raise CliError(f"nothing restored: keeping the current files aside failed: {exc}") from None
    try:
        return safety, restore_files(backup, plan, settings.data_dir, settings.models_dir)
    except OSError as exc:
        undo = f"; the replaced files are in {safety}" if safety is not None else ""
        left = f"; left stopped: {', '.join(stopped)}" if stopped else ""
        raise CliError(f"restore of {backup.name} failed part way: {exc}{undo}{left}") from None


def start_again(names: list[str], timeout_s: float) -> bool:
    """Start `names` through the supervisor and wait until they are up; False (said) if not."""
    rpc(MANAGER, "start_services", services=names)
    status = wait_for(names, timeout_s)
    by_name = {s["name"]: s for s in status["services"]}
    bad = [n for n in names if not (by_name[n]["state"] == "running" and by_name[n]["health"] in UP)]
    if bad:
        print(f"not up again: {', '.join(bad)}; see: service_manager.py logs {bad[0]}", file=sys.stderr)
        return False
    health = [f"{n} ({by_name[n]['health']})" for n in names]
    print(f"up again: {', '.join(health)}")
    return True


# ---- alerts ------------------------------------------------------------------------------------------

ALERTS = "alerts"


def alerts_running() -> bool:
    return socket_is_live(get_settings().socket_dir / f"{ALERTS}.sock")


def alerts_rpc(method: str, /, **params):
    """A call to the alerts process; its invalid-params error is a usage error (exit 2)."""
    if not alerts_running():
        raise CliError("the alerts process is not running; start it with: service_manager.py start alerts")
    try:
        return rpc(ALERTS, method, timeout=120, **params)
    except RpcError as exc:
        raise CliError(exc.message, 2 if exc.code == -32602 else 1) from None


def cmd_alerts_test(args) -> int:
    """Send a test message to CHANNEL (or every configured channel); exit 0 only if each accepted it.
    Through the alerts process (recorded in alerts.db) when it runs, else straight from here."""
    from services.clients.alert_channels import CHANNEL_NAMES, Message
    from services.management.alert_fallback import send_direct

    if args.channel is not None and args.channel not in CHANNEL_NAMES:
        raise CliError(f"unknown channel: {args.channel} (known: {', '.join(CHANNEL_NAMES)})", 2)
    if alerts_running():
        result = alerts_rpc("test_channel", channel=args.channel)
        channels = result["channels"]
    else:
        now = get_clock().now().isoformat()
        message = Message(
            "Test alert from the ASX trading desk", f"Sent by service_manager.py at {now}", "info", "test", "test",
            args.channel or "", now,
        )  # fmt: skip
        reports = asyncio.run(send_direct(get_settings(), message, args.channel))
        if not reports:
            raise CliError("no alert channel is configured (see README: Alert channels)")
        channels = {
            name: {"ok": r.ok, "attempts": r.attempts, "error": r.error} for name, r in reports.items()
        }
        print("the alerts process is not running: sent from here (not recorded)")
    for name, outcome in channels.items():
        verdict = "accepted" if outcome["ok"] else f"FAILED: {outcome.get('error')}"
        print(f"{name}: {verdict}")
    return 0 if channels and all(o["ok"] for o in channels.values()) else 1


def cmd_alerts_list(args) -> int:
    """Recent alerts, newest first: when, severity, kind, what, state, count and each delivery."""
    if not 1 <= args.lines <= 500:
        raise CliError(f"-n must be 1..500, not {args.lines}", 2)
    result = alerts_rpc("list_alerts", limit=args.lines)
    rows = []
    for alert in result["alerts"]:
        at = datetime.fromisoformat(alert["last_at"]).astimezone(SYDNEY).strftime("%m-%d %H:%M")
        deliveries = ", ".join(delivery_text(d) for d in alert["deliveries"]) or "-"
        count = f"x{alert['count']}" if alert["count"] > 1 else ""
        rows.append(
            [
                at,
                alert["severity"],
                alert["kind"],
                f"{alert['title']} {count}".strip(),
                alert["state"],
                deliveries,
            ]
        )
    if not rows:
        print("no alerts recorded")
        return 0
    print(table(["WHEN", "SEVERITY", "KIND", "ALERT", "STATE", "DELIVERIES"], rows))
    return 0


def delivery_text(delivery: dict) -> str:
    """`webhook sent`, `email held (quiet_hours)`, `slack rejected: HTTP 404 ...`"""
    text = f"{delivery['channel']} {delivery['state']}"
    if delivery["state"] in ("held",) and delivery.get("hold_reason"):
        text += f" ({delivery['hold_reason']})"
    elif delivery["state"] in ("retrying", "failed", "rejected") and delivery.get("error"):
        text += f": {delivery['error']}"
    return text


def cmd_alerts_silence(args) -> int:
    """Record but do not send alerts of KIND for --for (90s, 30m, 2h, 1d; 0s lifts it)."""
    result = alerts_rpc("silence", kind=args.kind, duration=args.duration)
    until = datetime.fromisoformat(result["until"]).astimezone(SYDNEY).strftime("%Y-%m-%d %H:%M %Z")
    print(
        f"{result['kind']} silenced until {until}"
        if result["silenced"]
        else f"{result['kind']}: silence lifted"
    )
    return 0


def cmd_alerts_notify(args) -> int:
    """Send TEXT to every configured channel straight from here, without the alerts process (what
    systemd's OnFailure= unit runs when the suite failed); exit 0 if any channel accepted it."""
    from services.clients.alert_channels import SEVERITIES, Message
    from services.domain.alert_incidents import KINDS

    if args.severity not in SEVERITIES:
        raise CliError(f"--severity must be one of {', '.join(SEVERITIES)}", 2)
    if args.kind not in KINDS:
        raise CliError(f"--kind must be one of {', '.join(KINDS)}", 2)
    from services.management.alert_fallback import send_direct

    now = get_clock().now().isoformat()
    message = Message(args.text, args.detail, args.severity, args.kind, "open", args.subject, now)
    reports = asyncio.run(send_direct(get_settings(), message))
    if not reports:
        raise CliError("no alert channel is configured (see README: Alert channels)")
    for name, report in reports.items():
        print(f"{name}: {'accepted' if report.ok else 'FAILED: ' + str(report.error)}")
    return 0 if any(r.ok for r in reports.values()) else 1


# ---- argument parsing --------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse prints usage too)
        print(f"service_manager.py: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> Parser:
    parser = Parser(
        prog="service_manager.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    def add(name: str, func) -> Parser:
        doc = (func.__doc__ or "").strip()
        first_sentence = " ".join(doc.split()).split(". ")[0].rstrip(".")
        p = sub.add_parser(name, help=first_sentence, description=doc)
        p.set_defaults(func=func)
        return p

    p = add("start", cmd_start)
    p.add_argument("services", nargs="*", metavar="SERVICE")
    p.add_argument("--foreground", action="store_true", help="run the supervisor in this process (systemd)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for health (default 120)")
    p = add("stop", cmd_stop)
    p.add_argument("services", nargs="*", metavar="SERVICE")
    p = add("status", cmd_status)
    p.add_argument("--json", action="store_true")
    p = add("health", cmd_health)
    p.add_argument("--json", action="store_true")
    p = add("dashboard", cmd_dashboard)
    p.add_argument("--once", action="store_true", help="print one plain-text frame and exit")
    p = add("restart", cmd_restart)
    p.add_argument("service", nargs="?", metavar="SERVICE")
    p.add_argument("--timeout", type=float, default=120.0)
    p = add("logs", cmd_logs)
    p.add_argument("service", nargs="?", metavar="SERVICE")
    p.add_argument("-n", "--lines", type=int, default=50)
    p.add_argument("-f", "--follow", action="store_true")
    p = add("backup", cmd_backup)
    p.add_argument("--keep", type=int, metavar="N", help="dated backups kept (default: the scheduler's, 7)")
    p = add("restore", cmd_restore)
    p.add_argument("date", metavar="DATE", help="YYYY-MM-DD, latest, or replaced-... (undo)")
    p.add_argument("services", nargs="*", metavar="SERVICE", help="only their databases (default: all)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for health (default 120)")
    p = add("replay", cmd_replay)
    p.add_argument("--from", dest="from_date", required=True, metavar="DATE", help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="to_date", required=True, metavar="DATE", help="last day, YYYY-MM-DD")
    p.add_argument("--speed", type=float, default=1.0, help="suite clock speed within a step (default 1)")
    p.add_argument("--data-dir", type=Path, help="CSV files (default: <TRADING_DATA_DIR>/market)")
    p.add_argument("--out", type=Path, help="output folder (default: <TRADING_DATA_DIR>/replays/FROM_TO)")
    p.add_argument("--train-years", type=float, default=5.0, help="years of history to train on (default 5)")
    p.add_argument("--keep", action="store_true", help="keep the replay suite's temporary directory")
    alerts = sub.add_parser("alerts", help="alerts: test a channel, list recent alerts, silence a kind")
    alerts_sub = alerts.add_subparsers(
        dest="alerts_command", required=True, parser_class=Parser, metavar="ACTION"
    )

    def add_alerts(name: str, func) -> Parser:
        doc = (func.__doc__ or "").strip()
        p = alerts_sub.add_parser(
            name, help=" ".join(doc.split()).split(". ")[0].rstrip("."), description=doc
        )
        p.set_defaults(func=func)
        return p

    p = add_alerts("test", cmd_alerts_test)
    p.add_argument("channel", nargs="?", metavar="CHANNEL", help="webhook, slack, ntfy, telegram or email")
    p = add_alerts("list", cmd_alerts_list)
    p.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="how many (default 20)")
    p = add_alerts("silence", cmd_alerts_silence)
    p.add_argument("kind", metavar="KIND")
    p.add_argument(
        "--for", dest="duration", default="2h", metavar="DURATION", help="90s, 30m, 2h, 1d (default 2h)"
    )
    p = add_alerts("notify", cmd_alerts_notify)
    p.add_argument("text", metavar="TEXT", help="the alert's title")
    p.add_argument("--detail", default="", help="the alert's text below the title")
    p.add_argument("--severity", default="critical")
    p.add_argument("--kind", default="supervisor_down")
    p.add_argument("--subject", default="trading-suite")
    add("daemon", cmd_daemon)
    # argparse prints a suppressed subcommand as "==SUPPRESS==": drop it from the listing.
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "daemon"]
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        get_settings()
        return args.func(args)
    except ConfigError as exc:
        print(f"service_manager.py: configuration error: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"service_manager.py: {exc}", file=sys.stderr)
        return exc.code
    except RpcError as exc:
        print(f"service_manager.py: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
