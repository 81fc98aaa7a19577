"""service_manager.py: start, stop and watch the trading suite.

    python services/management/service_manager.py COMMAND [options]

Each command is one small function below; its docstring is its help. Errors are one line on
stderr with a non-zero exit: 2 for usage errors, 1 for failures, 3 for "not running" (status).
"""

# The code of the command line (services/management/service_manager.py runs it): here, a module,
# so that Python keeps its compiled code in __pycache__. A script given by its path is compiled
# from source at each run (17 ms for this file, twice on the cold start's path: `start` and the
# daemon it launches).

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import orjson

from services.base import (
    SYDNEY,
    BaseService,
    ConfigError,
    MethodNotFound,
    RpcError,
    UnsafeSocketDir,
    get_clock,
    get_settings,
    socket_is_live,
)
from services.base.knobs import read_knobs
from services.base.socket_dir import prepare_socket_dir
from services.domain.supervision import UP, start_order, stop_order
from services.management import daemon_launch
from services.management.manager_knobs import SupervisorKnobs
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


#: C0 controls but newline and tab, DEL and C1: a log line or a remote reply printed on a terminal
#: must not move the cursor, recolour, retitle or ring it.
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    r"""Control characters shown as \xNN (ESC as \x1b, CR as \x0d); newline and tab kept."""
    return CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def color(text: str, state: str | None) -> str:
    if not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
        return text
    code = {
        "running": "32", "healthy": "32", "starting": "33", "degraded": "33", "backoff": "33",
        "stopping": "33", "fatal": "31", "unhealthy": "31", "down": "31", "stopped": "90",
    }.get(state or "", "0")  # fmt: skip
    return f"\033[{code}m{text}\033[0m"


def table(headers: list[str], rows: list[list[str]], states: list[str | None] | None = None) -> str:
    """A plain aligned table; a row's state colours its second column when on a terminal. Cells
    come from replies and logs: their control characters are escaped."""
    rows = [[escape_controls(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for index, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=True)]
        if states and states[index] and len(cells) > 1:
            cells[1] = color(cells[1], states[index])
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def status_table(status: dict) -> str:
    # Imported here: not in the daemon, and `start` would pay ~12 ms for it before it spawns one.
    from services.management.dashboard_view import human_bytes, human_seconds

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
    """The supervisor's status once `services` are up, one is fatal, or the deadline passes: the
    supervisor answers at the change (`wait_services`); one that lacks the method is polled."""
    try:
        return rpc(MANAGER, "wait_services", services=services, timeout_s=timeout_s, timeout=timeout_s + 30)
    except MethodNotFound:  # a supervisor started before this CLI
        pass
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


def spawn_daemon(autostart: list[str] | None = None) -> None:
    """Start the supervisor in the background (unless service_manager.py did already, before this
    module's imports: daemon_launch.start_early) and wait until it answers; it starts `autostart`
    (all when empty) as soon as it serves."""
    settings = get_settings()
    proc = daemon_launch.take_launched() or daemon_launch.launch_daemon(autostart)
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
        time.sleep(0.01)


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
    if daemon_launch.launched() or not supervisor_running():
        spawn_daemon(autostart=names)  # it starts them as soon as it serves
    else:
        rpc(MANAGER, "start_services", services=names or None)
    # The table's helpers, imported while the services start rather than after.
    import services.management.dashboard_view  # noqa: F401

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
    daemon_launch.exec_foreground(names)  # in zygote mode it does not return: see there
    supervisor = Supervisor(autostart=names, notify=True)
    try:
        supervisor.run()
    except LockHeld as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_daemon(args) -> int:
    """(internal) Run the supervisor; `start` launches this in the background, `start --foreground`
    becomes it (daemon_launch.exec_foreground)."""
    from services.management.daemon_boot import take_early
    from services.management.supervisor import LockHeld, Supervisor

    autostart = None if args.autostart is None else [n for n in args.autostart.split(",") if n]
    if not args.foreground:  # `start --foreground` (daemon_launch.exec_foreground): as run_foreground
        os.environ["TRADING_SUPERVISED"] = "1"  # stderr goes to manager.stdout.log: warnings only
    try:
        Supervisor(autostart=autostart, zygote=take_early(), notify=args.foreground).run()
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
        # Until it exits: its socket file alone (left by a supervisor that died on the way out)
        # is not a supervisor, and what it left running is stopped below.
        while _pid_alive(pid) or socket_is_live(manager_socket()):
            if time.monotonic() > deadline:
                raise CliError("the supervisor did not stop within 300s")
            time.sleep(0.05)
        left = stop_leftovers(stop_order(), include_redis=True)
        with contextlib.suppress(FileNotFoundError):
            manager_socket().unlink()
        extra = f"; the supervisor left these running, stopped now: {', '.join(left)}" if left else ""
        print(f"stopped: supervisor, services and redis{extra}")
        return 0
    leftovers = stop_leftovers(names or stop_order(), include_redis=not names)
    print(f"supervisor not running; stopped leftovers: {', '.join(leftovers) or 'none'}")
    return 0


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by its parent) has stopped."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def stop_leftovers(names: list[str], include_redis: bool) -> list[str]:
    """Services (and a managed Redis) still running without a supervisor: stop them by pid. The
    pid a socket's `health` names is signalled only when it is a suite process of this user
    (services.management.ownership); anything else is reported on stderr and left alone."""
    from services.management.ownership import why_not_ours

    stopped = []
    settings = get_settings()
    overrides = tuple(read_knobs(SupervisorKnobs, settings.environ).entry.values())

    def not_ours(pid: object) -> str | None:
        return why_not_ours(pid, settings.socket_dir, overrides)

    def is_ours(pid: int) -> bool:
        return not_ours(pid) is None

    for name in names:
        path = settings.socket_dir / f"{name}.sock"
        if not socket_is_live(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        try:
            health = rpc(name, "health", timeout=3)
        except RpcError:
            continue
        pid = health.get("pid") if isinstance(health, dict) else None
        if (why := not_ours(pid)) is not None:
            print(f"not stopped: {name}: {escape_controls(why)}", file=sys.stderr)
            continue
        try:
            rpc(name, "shutdown", timeout=3)
        except RpcError:
            continue
        assert isinstance(pid, int)
        _wait_gone(pid, 15, functools.partial(is_ours, pid))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        stopped.append(name)
    if include_redis and settings.redis_managed and socket_is_live(settings.socket_dir / "redis.sock"):
        _shutdown_redis(settings.socket_dir / "redis.sock")
        stopped.append("redis")
    return stopped


def _wait_gone(pid: int, timeout_s: float, still_ours: Callable[[], bool]) -> None:
    """Wait for `pid` to exit, then SIGTERM, then SIGKILL; each signal only while `still_ours()`
    (asked again right before it: the pid may have exited and been reused meanwhile)."""
    for signum in (None, signal.SIGTERM, signal.SIGKILL):
        if signum is not None and _pid_alive(pid):
            if not still_ours():
                return
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
        from services.management.dashboard_view import human_bytes, human_seconds

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
    """One log line as `logs` prints it: a JSON entry as time, level, service, message, extras and
    traceback; anything else as it is. Control characters are escaped (`escape_controls`) and a
    message's own line breaks indented, so no message can pass for another entry or reach the
    terminal as an escape sequence."""
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return escape_controls(raw.rstrip("\n"))
    if not isinstance(entry, dict):
        return escape_controls(raw.rstrip("\n"))
    known = {"ts", "level", "service", "logger", "msg", "exc", "error"}
    extras = " ".join(f"{k}={v}" for k, v in entry.items() if k not in known)
    text = f"{entry.get('ts', '')} {entry.get('level', ''):<7} {entry.get('service', ''):<13} {entry.get('msg', '')}"
    if extras:
        text += f"  [{extras}]"
    text = text.replace("\n", "\n    ")
    for key in ("exc", "error"):
        if entry.get(key):
            text += "\n    " + str(entry[key]).replace("\n", "\n    ")
    return escape_controls(text)


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
    if args.lines < 1:
        raise CliError(f"-n must be at least 1, not {args.lines}", 2)
    files = log_files(args.service)
    if not files and not args.follow:
        raise CliError(f"no logs yet in {get_settings().log_dir}")
    lines = []
    for path in files:
        recent = tail_lines(path, args.lines)
        older = path.with_name(f"{path.name}.1")  # just rotated: the rest is in the newest copy
        if len(recent) < args.lines and older.exists():
            recent = tail_lines(older, args.lines - len(recent)) + recent
        lines.extend(recent)
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
    touched. --engine inproc replays daily bars in this process instead, with the services' own
    domain functions and no suite (services/management/fast_replay.py): the same trades, ~10x
    faster."""
    from datetime import date

    from services.management.fast_replay import InprocReplay
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
    engine = InprocReplay if args.engine == "inproc" else ReplayDriver
    try:
        result = engine(options, progress=lambda m: print(m, file=sys.stderr, flush=True)).run()
    except ReplayError as exc:
        raise CliError(str(exc)) from None
    print(result.text)
    print(f"\nwritten to {result.out}: equity.png, equity.csv, trades.csv, report.json, report.txt")
    return 0


def cmd_sweep(args) -> int:
    """Run a parameter sweep: one replay per setting and period of SPEC.toml, on Dask distributed.

    Each run is a replay in its own private suite, run as a task on a local cluster (one worker
    process per core, or --workers N) or on an existing one (--scheduler tcp://host:8786, whose
    workers have this repository, its venv and the data directory at the same path). Results are
    cached under --out by a hash of the setting, period, data files and code, so a re-run skips
    what is done. Writes results.csv, results.md, heatmaps of pairs of swept knobs, ranking.json
    and each run's replay report under runs/. Exit 2: a bad spec (nothing ran); 1: a run failed."""
    from services.management.sweep import SweepError, run_sweep, sweepable_knobs

    if args.knobs:
        for name in sorted(sweepable_knobs()):
            print(name)
        return 0
    if args.spec is None:
        raise CliError("sweep needs SPEC.toml (or --knobs)", 2)
    if args.workers is not None and not 1 <= args.workers <= 1024:
        raise CliError("--workers must be 1..1024", 2)
    if args.workers is not None and args.scheduler:
        raise CliError("--workers sizes the local cluster; with --scheduler the cluster has its own", 2)
    out = args.out or get_settings().data_dir / "sweeps" / args.spec.stem
    try:
        return run_sweep(args.spec, out=out, scheduler=args.scheduler, workers=args.workers)
    except SweepError as exc:
        raise CliError(str(exc), exc.code) from None


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


# ---- call and metrics ----------------------------------------------------------------------------


def call_params(words: list[str]) -> dict | list | None:
    """The params of `call`: one JSON object or array, or key=value words (each value JSON when it
    parses as JSON, e.g. limit=5 or symbols='["CBA.AX"]', else the plain string); CliError (2)."""
    if not words:
        return None
    if len(words) == 1 and words[0].lstrip().startswith(("{", "[")):
        try:
            params = orjson.loads(words[0])
        except orjson.JSONDecodeError as exc:
            raise CliError(f"params are not valid JSON: {exc}", 2) from None
        if not isinstance(params, (dict, list)):
            raise CliError("params must be a JSON object or array", 2)
        return params
    named: dict = {}
    for word in words:
        key, sep, text = word.partition("=")
        if not sep or not key.isidentifier():
            raise CliError(f"params must be one JSON object or key=value words, not {word!r}", 2)
        if key in named:
            raise CliError(f"param {key} is given twice", 2)
        try:
            named[key] = orjson.loads(text)
        except orjson.JSONDecodeError:
            named[key] = text
    return named


def known_target(service: str) -> str:
    if service != MANAGER:
        check_names([service])
    return service


def cmd_call(args) -> int:
    """Call METHOD on SERVICE with JSON-PARAMS or key=value params and print the result as JSON
    (exit 0); a remote error prints its code, message and data (exit 1)."""
    service = known_target(args.service)
    params = call_params(args.params)
    if not 0 < args.timeout <= 3600:
        raise CliError(f"--timeout must be in (0, 3600], not {args.timeout:g}", 2)

    from services.base.rpc.client import ConnectionLost, RpcClient

    settings = get_settings()

    async def go():  # the RPC client itself: params may be positional (a JSON array)
        client = RpcClient(settings.socket_dir / f"{service}.sock", settings.rpc_max_frame_bytes)
        try:
            async with asyncio.timeout(args.timeout):
                return await client.call(args.method, params)
        finally:
            await client.close()

    try:
        result = asyncio.run(go())
    except TimeoutError:
        raise CliError(f"{service}.{args.method} did not answer within {args.timeout:g}s") from None
    except ConnectionLost as exc:
        raise CliError(f"{service} dropped the connection during {args.method}: {exc}") from None
    except OSError as exc:
        raise CliError(f"{service} is not running ({exc.strerror or exc})") from None
    except RpcError as exc:
        print(orjson.dumps(exc.to_wire(), option=orjson.OPT_INDENT_2).decode())
        return 1
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    return 0


def metrics_rows(service: str, reply: dict) -> list[list[str]]:
    """A service's `metrics` reply as table rows: one per method, then its events."""

    def ms(value) -> str:
        return "-" if value is None else f"{value:.1f}"

    rows = [
        [service, method, str(m["count"]), str(m["errors"]), ms(m["p50_ms"]), ms(m["p90_ms"]), ms(m["p99_ms"]),
         ms(m["max_ms"])]
        for method, m in reply["methods"].items()
    ]  # fmt: skip
    events = reply.get("events") or {}
    rows.append(
        [service, "(all)", str(reply["requests"]), str(reply["errors"]), "", "", "",
         f"events out {events.get('published', 0)} in {events.get('received', 0)}"
         f" outbox {events.get('outbox', 0)} dead {events.get('dead_lettered', 0)}"]
    )  # fmt: skip
    return rows


def cmd_metrics(args) -> int:
    """Each service's requests, errors and latency percentiles (ms) per method, and its events in
    and out, from its `metrics`; --json prints the replies. Exit 1 when a service does not answer."""
    names = [known_target(args.service)] if args.service else [*start_order(), MANAGER]
    replies: dict[str, dict] = {}
    for name in names:
        try:
            replies[name] = rpc(name, "metrics", timeout=3)
        except RpcError as exc:
            replies[name] = {"service": name, "status": "down", "error": exc.message}
    if args.json:
        print(orjson.dumps(replies, option=orjson.OPT_INDENT_2).decode())
    else:
        rows = []
        for name, reply in replies.items():
            if "error" in reply:
                rows.append([name, "-", "-", "-", "-", "-", "-", f"down: {reply['error']}"])
            else:
                rows.extend(metrics_rows(name, reply))
        print(
            table(["SERVICE", "METHOD", "REQUESTS", "ERRORS", "P50_MS", "P90_MS", "P99_MS", "MAX_MS"], rows)
        )
    return 1 if any("error" in r for r in replies.values()) else 0


# ---- data: history from Yahoo -----------------------------------------------------------------


def data_symbols(args) -> list[str]:
    """The universe and the index (or --symbols), normalised; a bad symbol is a usage error."""
    from services.domain.price_history import normalise_symbol

    settings = get_settings()
    try:
        return list(
            dict.fromkeys(
                normalise_symbol(s) for s in (args.symbols or [*settings.symbols, settings.market_index])
            )
        )
    except ValueError as exc:
        raise CliError(str(exc), 2) from None


def data_report_rows(reports) -> list[list[str]]:
    rows = []
    for r in reports:
        cleaning = r.cleaning or {}
        quality = r.quality or {}
        score = f"{quality['score']:.2f}" if "score" in quality else "-"
        problems = (
            f"holes {len(cleaning.get('missing_sessions', []))}, zero-volume filler "
            f"{len(cleaning.get('filler_rows', []))}, duplicates {len(cleaning.get('duplicate_dates', []))}, "
            f"null {len(cleaning.get('null_rows', []))}"
            if cleaning
            else ""
        )
        note = "; ".join(x for x in (r.detail, problems, *quality.get("reasons", [])) if x)
        rows.append([r.symbol, r.status, r.first or "-", r.last or "-", str(r.rows), score, note])
    return rows


def cmd_data_fetch(args) -> int:
    """Download daily history for the universe and the index from Yahoo (one batched yfinance
    request, retried with backoff) into <TRADING_MARKET_DATA_DIR>/<SYMBOL>.csv in Yahoo's export
    columns. A file already there gets only the new sessions (--full downloads --years again and
    replaces it); every file is written atomically. Prints the quality report the csv source
    computes. Exit 1 when Yahoo cannot be reached (no file touched) or a symbol was refused."""
    from services.clients.yahoo_history import Retry, YahooUnavailable, fetch_daily, fetch_intraday
    from services.domain.intraday import INTERVALS
    from services.domain.price_history import MarketDataError

    symbols = data_symbols(args)
    intervals = [i for i in (args.intervals or "").split(",") if i]
    if bad := [i for i in intervals if i not in INTERVALS]:
        raise CliError(f"--intervals: unknown interval {bad[0]!r} (known: {', '.join(INTERVALS)})", 2)
    if not 0 < args.years <= 30:
        raise CliError("--years must be in (0, 30]", 2)
    directory = args.data_dir or get_settings().market_data_dir
    if not (1 <= args.attempts <= 10 and 0 <= args.backoff <= 60):
        raise CliError("--attempts must be 1..10 and --backoff 0..60", 2)
    retry = Retry(attempts=args.attempts, backoff_s=args.backoff, note=lambda line: print(line, flush=True))
    now = get_clock().now()
    started = time.monotonic()
    try:
        reports = fetch_daily(directory, symbols, now, years=args.years, full=args.full, retry=retry)
        print(f"daily history in {directory} ({time.monotonic() - started:.1f}s)")
        print(
            table(["SYMBOL", "STATUS", "FIRST", "LAST", "ROWS", "QUALITY", "NOTE"], data_report_rows(reports))
        )
        for interval in intervals:
            try:
                intraday = fetch_intraday(directory, symbols, interval, now, retry)
            except YahooUnavailable as exc:
                raise CliError(
                    f"data fetch: {exc}; the daily files above are written, no {interval} file changed"
                ) from None
            rows = [
                [r.symbol, r.status, r.first or "-", r.last or "-", str(r.rows), r.detail] for r in intraday
            ]
            print(f"\n{interval} bars")
            print(table(["SYMBOL", "STATUS", "FIRST", "LAST", "ROWS", "NOTE"], rows))
            reports += intraday
    except YahooUnavailable as exc:
        raise CliError(f"data fetch: {exc}; no file was changed") from None
    except MarketDataError as exc:  # a file there is not a Yahoo export: nothing merged into it
        raise CliError(f"data fetch: {exc}; no file was changed (move it aside, or --full)") from None
    except OSError as exc:
        raise CliError(f"data fetch: writing failed: {exc}") from None
    refused = [r.symbol for r in reports if r.status == "refused"]
    if refused:
        print(f"refused (files untouched): {', '.join(dict.fromkeys(refused))}", file=sys.stderr)
        return 1
    return 0


def cmd_data_status(args) -> int:
    """Each history file in the market data folder: first and last date, rows and quality score
    (as market-data's csv source computes it), intraday files too. Exit 1 when a file is missing
    or unreadable."""
    from services.clients.yahoo_history import FileReport, describe_daily
    from services.domain.price_history import MarketDataError, csv_file_name

    directory = args.data_dir or get_settings().market_data_dir
    now = get_clock().now()
    symbols = data_symbols(args)
    reports = []
    for symbol in symbols:
        try:
            reports.append(describe_daily(symbol, directory / csv_file_name(symbol), now))
        except MarketDataError as exc:  # not a Yahoo export: said in its row, the others still listed
            reports.append(
                FileReport(symbol, directory / csv_file_name(symbol), "unreadable", detail=str(exc))
            )
    print(f"daily history in {directory}")
    print(table(["SYMBOL", "STATUS", "FIRST", "LAST", "ROWS", "QUALITY", "NOTE"], data_report_rows(reports)))
    intraday = sorted(p.name for p in directory.glob("*_*.csv")) if directory.is_dir() else []
    if intraday:
        print(f"intraday files: {', '.join(intraday)}")
    return 1 if any(r.status in ("missing", "unreadable") for r in reports) else 0


# ---- models: versioned model sets ---------------------------------------------------------------


def cmd_models_list(args) -> int:
    """The model sets under <TRADING_MODELS_DIR>/sets, oldest first: when each was trained, on
    what, its state (current, promoted before, candidate, rejected and why) and whether its files
    still match their SHA-256."""
    from services.base.model_sets import current_name, describe, set_names

    models_dir = get_settings().models_dir
    sets = [describe(models_dir, name) for name in set_names(models_dir)]
    if args.json:
        print(
            orjson.dumps(
                {"current": current_name(models_dir), "sets": sets}, option=orjson.OPT_INDENT_2
            ).decode()
        )
        return 0
    if not sets:
        flat = (models_dir / "manifest.json").is_file()
        print(
            f"no model sets in {models_dir}"
            + (" (a flat models folder serves: train once to make a set)" if flat else "")
        )
        return 0
    rows = [
        [
            ("* " if s["current"] else "  ") + s["set"],
            "current" if s["current"] else ("was current" if s["state"] == "promoted" else s["state"]),
            str(s["generated_at"] or "-")[:19],
            ("synthetic" if s["synthetic"] else str(s["source"] or "-")),
            str(s["label_end"] or "-"),
            str(s["models"]),
            "ok" if s["verified"] else "NO",
            s["problem"] or s["reason"] or "",
        ]
        for s in sets
    ]
    print(table(["SET", "STATE", "TRAINED", "SOURCE", "DATA TO", "MODELS", "HASHES", "NOTE"], rows))
    return 0


def _tell_ml_model(what: str) -> None:
    """Ask a running ml-model to switch now (it would within seconds anyway) and say the outcome."""
    if not socket_is_live(get_settings().socket_dir / "ml-model.sock"):
        print(f"{what}; ml-model is not running: it serves this set when it starts")
        return
    try:
        result = rpc("ml-model", "reload_models", timeout=180)
    except RpcError as exc:
        print(f"{what}; ml-model did not answer reload_models ({exc.message}): it switches by itself")
        return
    if result.get("switched") or result.get("reason") == "already serving it":
        print(f"{what}; ml-model serves it now")
    else:
        raise CliError(
            f"{what}, but ml-model refused it ({result.get('reason')}); it still serves {result.get('model_set')}"
        )


def cmd_models_promote(args) -> int:
    """Point models/current at model set SET once its manifest and every file's SHA-256 verify
    (a set that does not verify is never promoted); a running ml-model switches to it without a
    restart. Exit 2 for an unknown set."""
    from services.base.model_sets import ModelSetError, UnknownSet, promote

    try:
        record = promote(get_settings().models_dir, args.set, get_clock().now(), "promoted by hand")
    except UnknownSet as exc:
        raise CliError(str(exc), 2) from None
    except ModelSetError as exc:
        raise CliError(f"not promoted: {exc}") from None
    _tell_ml_model(f"promoted {record['set']} (was {record['previous'] or 'none'})")
    return 0


def cmd_models_rollback(args) -> int:
    """Point models/current back at the set that served before the current one (it must still be
    there and verify); a running ml-model switches without a restart."""
    from services.base.model_sets import ModelSetError, rollback

    try:
        record = rollback(get_settings().models_dir, get_clock().now())
    except ModelSetError as exc:
        raise CliError(f"not rolled back: {exc}") from None
    _tell_ml_model(f"rolled back to {record['set']} (from {record['previous']})")
    return 0


def cmd_models_prune(args) -> int:
    """Delete the oldest model sets beyond the newest --keep (default 10, as training keeps);
    the current set is never deleted."""
    from services.base.model_sets import prune

    if args.keep < 1:
        raise CliError(f"--keep must be at least 1 (got {args.keep})", 2)
    removed = prune(get_settings().models_dir, args.keep)
    print(f"removed {len(removed)} set(s)" + (f": {', '.join(removed)}" if removed else ""))
    return 0


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
    p = add("call", cmd_call)
    p.add_argument("service", metavar="SERVICE")
    p.add_argument("method", metavar="METHOD")
    p.add_argument("params", nargs="*", metavar="PARAMS", help="one JSON object or array, or key=value ...")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the reply (default 30)")
    p = add("metrics", cmd_metrics)
    p.add_argument("service", nargs="?", metavar="SERVICE")
    p.add_argument("--json", action="store_true")
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
    p.add_argument(
        "--engine",
        choices=("service", "inproc"),
        default="service",
        help="service: a private suite of the real services (default); inproc: daily bars in this"
        " process, the same domain functions, no suite (checked to give the same trades)",
    )
    p = add("sweep", cmd_sweep)
    p.add_argument("spec", nargs="?", type=Path, metavar="SPEC.toml", help="periods and settings")
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, tcp://host:8786")
    p.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: the cores)")
    p.add_argument(
        "--out", type=Path, help="results and cache (default: <TRADING_DATA_DIR>/sweeps/<spec name>)"
    )
    p.add_argument("--knobs", action="store_true", help="list the knobs a sweep may set, and exit")
    data = sub.add_parser("data", help="history files from Yahoo: fetch, status")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=Parser, metavar="ACTION")
    for name, func in (("fetch", cmd_data_fetch), ("status", cmd_data_status)):
        doc = (func.__doc__ or "").strip()
        p = data_sub.add_parser(name, help=" ".join(doc.split()).split(". ")[0], description=doc)
        p.set_defaults(func=func)
        p.add_argument(
            "--symbols", nargs="+", metavar="SYMBOL", help="default: TRADING_SYMBOLS and the index"
        )
        p.add_argument("--data-dir", type=Path, help="default: TRADING_MARKET_DATA_DIR")
        if name == "fetch":
            p.add_argument("--years", type=float, default=10.0, help="years of history (default 10)")
            p.add_argument(
                "--full", action="store_true", help="download everything again and replace the files"
            )
            p.add_argument("--intervals", metavar="5m,15m", help="also the intraday bars Yahoo keeps")
            p.add_argument("--attempts", type=int, default=3, help=argparse.SUPPRESS)
            p.add_argument("--backoff", type=float, default=1.0, help=argparse.SUPPRESS)
    models = sub.add_parser("models", help="versioned model sets: list, promote SET, rollback, prune")
    models_sub = models.add_subparsers(
        dest="models_command", required=True, parser_class=Parser, metavar="ACTION"
    )
    for name, func in (
        ("list", cmd_models_list),
        ("promote", cmd_models_promote),
        ("rollback", cmd_models_rollback),
        ("prune", cmd_models_prune),
    ):
        doc = (func.__doc__ or "").strip()
        p = models_sub.add_parser(name, help=" ".join(doc.split()).split(". ")[0], description=doc)
        p.set_defaults(func=func)
    models_sub.choices["list"].add_argument("--json", action="store_true")
    models_sub.choices["prune"].add_argument(
        "--keep", type=int, default=10, metavar="N", help="how many of the newest sets to keep (default 10)"
    )
    models_sub.choices["promote"].add_argument(
        "set", metavar="SET", help="a set's name, as `models list` shows"
    )
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
    p = add("daemon", cmd_daemon)
    # Read before the imports (daemon_boot.start_early); accepted here so that argparse allows them.
    p.add_argument("--zygote-log", help=argparse.SUPPRESS)
    p.add_argument("--zygote-drop", help=argparse.SUPPRESS)
    p.add_argument("--secrets-fd", help=argparse.SUPPRESS)
    p.add_argument("--title-room", help=argparse.SUPPRESS)
    p.add_argument("--foreground", action="store_true", help=argparse.SUPPRESS)  # start --foreground
    # `start` names what to start (comma-separated; empty: all): the supervisor starts them as
    # soon as it serves, rather than when `start` has seen it up and asked.
    p.add_argument("--autostart", help=argparse.SUPPRESS)
    # argparse prints a suppressed subcommand as "==SUPPRESS==": drop it from the listing.
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "daemon"]
    return parser


#: Commands that open nothing in the socket directory: they run even when it is refused (the
#: systemd OnFailure= alert must go out, and `logs` shows why the suite did not start).
NO_SOCKETS = frozenset(
    {"cmd_alerts_notify", "cmd_data_fetch", "cmd_data_status", "cmd_logs", "cmd_models_list", "cmd_replay"}
)


def check_socket_dir(func: Callable) -> None:
    """Before a command opens anything in the socket directory: it must be a directory of this
    user that no one else can write (`start` creates it 0700); one line and exit 1 otherwise."""
    if func.__name__ in NO_SOCKETS:
        return
    try:
        prepare_socket_dir(get_settings().socket_dir, create=func in (cmd_start, cmd_daemon))
    except UnsafeSocketDir as exc:
        raise CliError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        get_settings()
        check_socket_dir(args.func)
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


def run() -> None:
    """service_manager.py's main: the exit status, after the daemon's early start (daemon_boot)."""
    code = main()
    if sys.argv[1:2] == ["start"] and "--foreground" not in sys.argv:
        # On the cold start's path: once its answer is out, `start` skips its interpreter's
        # teardown (~15 ms of ~400 modules; it holds no file, thread or child of its own by then).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
