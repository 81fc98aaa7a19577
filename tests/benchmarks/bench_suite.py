"""Suite figures: cold start, restart after SIGKILL, and memory of the running suite, in both
launch modes (separate interpreters, then forked from the zygote) in one run, with their ratios.

    .venv/bin/python tests/benchmarks/bench_suite.py [--kills 20] [--service NAME,...|all] [--starts 5]
                                                     [--modes exec,zygote]

- cold start: `service_manager.py start` on empty temporary directories until every service is up
  (the median of --starts starts, each on fresh directories, with the fastest and slowest);
- restart: SIGKILL a service (--service: one, several, or `all` in turn), time until the supervisor
  has it healthy again (p50/p99 for each). The
  supervisor restarts the first crash after a stable run at once; later ones back off, so the
  benchmark waits out a short stable period (TRADING_MANAGER_STABLE_S=1) between kills and measures
  the restart itself, not the backoff;
- memory: PSS (proportional set size: shared pages divided among their users) and USS (pages
  of that process alone) from /proc/<pid>/smaps_rollup of the supervisor, the zygote, every
  service and the managed redis-server, after one full prediction cycle for the Big 4.
Goals (issue 22, zygote mode): cold start <= 0.5 s, restart p50 <= 50 ms and p99 <= 150 ms,
total <= 120 MB PSS.

`--foreground`: every suite is started as the systemd unit starts it, `start --foreground` (the
supervisor in the process launched, stopped with SIGTERM), instead of `start` (a daemon).

    .venv/bin/python -m tests.benchmarks.bench_suite --ksm [--kills 5]   # as root

- KSM: the zygote mode twice in one run, first with the kernel's same-page merging running
  (/sys/kernel/mm/ksm/run = 1, so TRADING_MANAGER_KSM=auto marks the zygote's memory mergeable),
  then without (run = 0). After the prediction cycle the memory is read once ksmd has made two
  more full scans (pages_to_scan raised for that, --ksm-pages-to-scan); the run without KSM waits
  as long before reading. Printed: ksmd's counters, each process's merged pages, ksmd's CPU time
  over the run and, back at the kernel's default pace, over --ksm-idle-s of the idle suite. The
  KSM settings are put back as they were at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.base.rpc import RpcError
from services.domain.supervision import UP, start_order
from tests.support import (
    SuiteDirs,
    make_suite_env,
    manager_cli,
    manager_command,
    rpc_call_sync,
    short_tempdir,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
KSM = Path("/sys/kernel/mm/ksm")
KSM_SETTINGS = ("run", "pages_to_scan")


def ksm_read(name: str) -> int:
    return int((KSM / name).read_text().split()[0])


def ksm_write(name: str, value: int) -> None:
    (KSM / name).write_text(f"{value}\n")


def ksmd_cpu_s() -> float:
    """ksmd's CPU time so far (user + system), from /proc/<ksmd>/stat."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "ksmd":
                fields = (comm.parent / "stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return 0.0


@dataclass
class KsmFigures:
    """What ksmd did for one run."""

    converge_s: float = 0.0  # from the end of the cycle to two more full scans
    cpu_s: float = 0.0  # ksmd's CPU time from the start of the suite until the memory was read
    wall_s: float = 0.0
    idle_cpu_s: float = 0.0  # at the kernel's default pace, over idle_s of the idle suite
    idle_s: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)  # pages_sharing, pages_shared...
    merging: dict[str, int] = field(default_factory=dict)  # name -> ksm_merging_pages


def ksm_merging_pages(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/ksm_stat").read_text().splitlines():
            if line.startswith("ksm_merging_pages"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, USS) of a process in KiB, from /proc/<pid>/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Private_Clean", "Private_Dirty"):
            fields[key] = int(rest.split()[0])
    return fields.get("Pss", 0), fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Run:
    mode: str
    cold_s: float = 0.0  # the median of the starts
    colds: list[float] = field(default_factory=list)
    restarts: dict[str, list[float]] = field(default_factory=dict)  # victim -> seconds
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (PSS, USS) KiB
    predicted: int = 0
    ksm: KsmFigures | None = None

    @property
    def pss_mb(self) -> float:
        return sum(pss for pss, _ in self.memory.values()) / 1024


def start_suite(dirs: SuiteDirs, mode: str, foreground: bool) -> tuple[float, subprocess.Popen | None]:
    """Start the whole suite, `start` or `start --foreground` (its process, else None): seconds
    until every service is up."""
    started = time.perf_counter()
    if not foreground:
        result = manager_cli(dirs.env, "start", timeout_s=300)
        if result.returncode != 0:
            raise RuntimeError(f"{mode}: start failed: {result.stdout} {result.stderr}")
        return time.perf_counter() - started, None
    proc = subprocess.Popen(
        manager_command("start", "--foreground"),
        env=dirs.env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def all_up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{mode}: start --foreground exited {proc.returncode}")
        try:
            status = rpc_call_sync(dirs.socket("manager"), "status", timeout_s=10)
        except (OSError, RpcError):
            return False
        return all(s["state"] == "running" and s["health"] in UP for s in status["services"])

    wait_until(all_up, 300, 0.005)
    return time.perf_counter() - started, proc


def stop_suite(dirs: SuiteDirs, proc: subprocess.Popen | None) -> None:
    if proc is not None:  # as systemd stops the unit: SIGTERM to its process
        proc.send_signal(signal.SIGTERM)
        proc.wait(300)
    manager_cli(dirs.env, "stop", timeout_s=300)  # with --foreground: nothing left, says so


def cold_start(mode: str, foreground: bool = False) -> float:
    """One start of a suite in `mode` on fresh directories to all healthy, then stopped."""
    dirs = make_suite_env(
        short_tempdir("bs-"),
        None,
        TRADING_MANAGER_LAUNCH=mode,
        TRADING_MODELS_DIR=os.environ.get("TRADING_MODELS_DIR", str(REPO / "models")),
    )
    proc = None
    try:
        took, proc = start_suite(dirs, mode, foreground)
        return took
    finally:
        stop_suite(dirs, proc)
        shutil.rmtree(dirs.root, ignore_errors=True)


def measure(
    mode: str,
    kills: int,
    victims: list[str],
    ksm: dict | None = None,
    settle_s: float = 0.0,
    starts: int = 1,
    foreground: bool = False,
) -> Run:
    """One suite in `mode` on fresh directories: cold start, `kills` restarts, memory after a cycle.
    `mode` "zygote+ksm": the zygote mode with ksmd running (`ksm`: pages_to_scan, idle_s), the
    memory read after two more full scans. `settle_s`: wait this long after the cycle first."""
    ksm_cpu, ksm_started = ksmd_cpu_s(), time.perf_counter()
    if ksm is not None:
        ksm_write("pages_to_scan", ksm["pages_to_scan"])
        ksm_write("run", 1)  # before the start: TRADING_MANAGER_KSM=auto reads it
    dirs = make_suite_env(
        short_tempdir("bs-"),
        None,
        TRADING_MANAGER_LAUNCH=mode.removesuffix("+ksm"),
        TRADING_MANAGER_KSM="auto",
        TRADING_MANAGER_STABLE_S="1",
        TRADING_MANAGER_MAX_FAILURES="1000",
        TRADING_MODELS_DIR=os.environ.get("TRADING_MODELS_DIR", str(REPO / "models")),
    )
    run = Run(mode + ("+fg" if foreground else ""))
    proc = None
    try:
        if ksm is None:  # the earlier starts; with KSM only the one below (ksmd's pace is raised)
            run.colds = [cold_start(mode.removesuffix("+ksm"), foreground) for _ in range(starts - 1)]
        took, proc = start_suite(dirs, mode, foreground)
        run.colds.append(took)
        run.cold_s = percentile(run.colds, 0.5)

        def service(name: str) -> dict:
            status = rpc_call_sync(dirs.socket("manager"), "status")
            return next(s for s in status["services"] if s["name"] == name)

        for victim in victims:
            for _ in range(kills):
                time.sleep(1.1)  # a stable run: the next crash restarts at once (see the docstring)
                pid = service(victim)["pid"]
                killed = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                wait_until(
                    lambda pid=pid, victim=victim: (
                        (s := service(victim))["pid"] not in (None, pid) and s["state"] == "running"
                    ),
                    30,
                    0.005,
                )
                run.restarts.setdefault(victim, []).append(time.perf_counter() - killed)

        cycle = rpc_call_sync(
            dirs.socket("prediction"), "generate_predictions", {"symbols": None}, timeout_s=120
        )
        run.predicted = len(cycle.get("predictions", {}))
        if ksm is not None:
            run.ksm = KsmFigures()
            zygote = rpc_call_sync(dirs.socket("manager"), "status")["supervisor"]["zygote"][0]
            if "ksm_mergeable: yes" not in Path(f"/proc/{zygote}/ksm_stat").read_text():
                raise RuntimeError("the zygote did not mark its memory mergeable: see zygote.stdout.log")
            cycled, scans = time.perf_counter(), ksm_read("full_scans")
            wait_until(lambda: ksm_read("full_scans") >= scans + 2, 300, 0.05)
            run.ksm.converge_s = time.perf_counter() - cycled
        elif settle_s:
            time.sleep(settle_s)  # as long as the run with KSM waited for ksmd
        status = rpc_call_sync(dirs.socket("manager"), "status")
        supervisor = status["supervisor"]
        pids = {"supervisor": supervisor["pid"], "redis": supervisor["redis"]["pid"]}
        pids.update(
            {f"zygote {i}" if i else "zygote": pid for i, pid in enumerate(supervisor.get("zygote", []))}
        )
        pids.update({s["name"]: s["pid"] for s in status["services"]})
        run.memory = {name: memory_kib(pid) for name, pid in pids.items() if pid}
        if run.ksm is not None and ksm is not None:
            run.ksm.cpu_s, run.ksm.wall_s = ksmd_cpu_s() - ksm_cpu, time.perf_counter() - ksm_started
            run.ksm.merging = {name: ksm_merging_pages(pid) for name, pid in pids.items() if pid}
            run.ksm.counters = {
                name: ksm_read(name)
                for name in ("pages_shared", "pages_sharing", "pages_unshared", "general_profit")
            }
            ksm_write("pages_to_scan", ksm["default_pages_to_scan"])  # the kernel's own pace
            idle_cpu = ksmd_cpu_s()
            time.sleep(ksm["idle_s"])  # measuring ksmd's steady cost: a fixed span, on purpose
            run.ksm.idle_cpu_s, run.ksm.idle_s = ksmd_cpu_s() - idle_cpu, ksm["idle_s"]
    finally:
        if ksm is not None:
            ksm_write("run", 0)  # the next run's zygote must not mark (main() restores it all)
        stop_suite(dirs, proc)
        shutil.rmtree(dirs.root, ignore_errors=True)
    return run


def report(run: Run) -> None:
    print(f"== {run.mode}")
    spread = (
        f" (median of {len(run.colds)}: {min(run.colds):.2f}-{max(run.colds):.2f} s)"
        if len(run.colds) > 1
        else ""
    )
    print(f"cold start to all healthy: {run.cold_s:.2f} s{spread} (goal <= 0.5 s)")
    for victim, restarts in run.restarts.items():
        p50, p99 = percentile(restarts, 0.5), percentile(restarts, 0.99)
        print(
            f"SIGKILL {victim} -> healthy over {len(restarts)} kills: p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms (goal p50 <= 50 ms, p99 <= 150 ms)"
        )
    print(f"memory after one prediction cycle ({run.predicted} predictions), per process:")
    print(f"  {'':14} {'PSS':>8} {'USS':>8}")
    for name, (pss, uss) in sorted(run.memory.items(), key=lambda kv: -kv[1][0]):
        print(f"  {name:14} {pss / 1024:6.1f}MB {uss / 1024:6.1f}MB")
    uss_total = sum(uss for _, uss in run.memory.values()) / 1024
    print(f"  {'total':14} {run.pss_mb:6.1f}MB {uss_total:6.1f}MB (goal PSS <= 120 MB)")
    if run.ksm is not None:
        k, page_mb = run.ksm, os.sysconf("SC_PAGE_SIZE") / (1 << 20)
        c = k.counters
        print(
            f"ksm: pages_shared {c['pages_shared']}, pages_sharing {c['pages_sharing']} "
            f"(saved {c['pages_sharing'] * page_mb:.1f} MB), pages_unshared {c['pages_unshared']}, "
            f"general_profit {c['general_profit'] / (1 << 20):.1f} MB; two full scans took {k.converge_s:.1f} s"
        )
        merged = ", ".join(
            f"{n} {p * page_mb:.1f}" for n, p in sorted(k.merging.items(), key=lambda kv: -kv[1]) if p
        )
        print(f"ksm: merged MB per process (ksm_merging_pages): {merged}")
        print(
            f"ksmd CPU: {k.cpu_s:.2f} s over the run's {k.wall_s:.1f} s ({k.cpu_s / k.wall_s * 100:.1f} %); "
            f"at the default pace, idle suite: {k.idle_cpu_s:.2f} s over {k.idle_s:.0f} s "
            f"({k.idle_cpu_s / k.idle_s * 100 if k.idle_s else 0:.2f} % of a core)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument(
        "--service", default="sentiment", help="the services to kill, comma-separated, or all"
    )
    parser.add_argument("--starts", type=int, default=1, help="cold starts per mode (the median is reported)")
    parser.add_argument("--modes", default="exec,zygote", help="launch modes to measure, in order")
    parser.add_argument("--ksm", action="store_true", help="zygote with and without KSM (root)")
    parser.add_argument("--ksm-pages-to-scan", type=int, default=2000, help="ksmd's pace while measuring")
    parser.add_argument("--ksm-idle-s", type=float, default=30.0, help="ksmd's cost, idle suite")
    parser.add_argument(
        "--foreground",
        action="store_true",
        help="start each suite as the systemd unit does (start --foreground)",
    )
    args = parser.parse_args()
    victims = list(start_order()) if args.service == "all" else args.service.split(",")
    fg = args.foreground
    if not args.ksm:
        runs = [
            measure(mode, args.kills, victims, starts=args.starts, foreground=fg)
            for mode in args.modes.split(",")
        ]
    else:
        saved = {name: ksm_read(name) for name in KSM_SETTINGS}
        try:
            knobs = {
                "pages_to_scan": args.ksm_pages_to_scan,
                "default_pages_to_scan": saved["pages_to_scan"],
                "idle_s": args.ksm_idle_s,
            }
            with_ksm = measure("zygote+ksm", args.kills, victims, ksm=knobs, foreground=fg)
            assert with_ksm.ksm is not None
            without = measure("zygote", args.kills, victims, settle_s=with_ksm.ksm.converge_s, foreground=fg)
            runs = [without, with_ksm]
        finally:
            for name, value in saved.items():
                ksm_write(name, value)
    for run in runs:
        report(run)
    if len(runs) == 2:
        a, b = runs
        ratio = lambda x, y: f"{x / y:.2f}" if y else "-"  # noqa: E731
        print(f"== {b.mode} / {a.mode}")
        print(f"cold start {ratio(b.cold_s, a.cold_s)}")
        for victim in victims:
            for q in (0.5, 0.99):
                was, now = percentile(a.restarts[victim], q), percentile(b.restarts[victim], q)
                print(f"restart {victim} p{q * 100:.0f} {ratio(now, was)}")
        print(f"memory PSS {ratio(b.pss_mb, a.pss_mb)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
