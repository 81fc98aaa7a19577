"""The supervisor's knobs (TRADING_MANAGER_*) and the dashboard's (TRADING_DASHBOARD_*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from services.base.knobs import knob
from services.domain.supervision import RestartPolicy

LAUNCH_MODES = ("zygote", "exec")
KSM_MODES = ("auto", "on", "off")


def _launch_mode(raw: str) -> str:
    mode = raw.strip().lower()
    if mode not in LAUNCH_MODES:
        raise ValueError(f"must be one of {', '.join(LAUNCH_MODES)}")
    return mode


def _ksm_mode(raw: str) -> str:
    mode = raw.strip().lower()
    if mode not in KSM_MODES:
        raise ValueError(f"must be one of {', '.join(KSM_MODES)}")
    return mode


@dataclass(frozen=True, slots=True)
class SupervisorKnobs:
    service: ClassVar[str] = "manager"

    backoff_base_s: float = knob(
        0.5, low=0.0, doc="restart delay after the second consecutive failure; doubles each time"
    )
    backoff_max_s: float = knob(30.0, low=0.0, doc="cap of the restart delay")
    stable_s: float = knob(60.0, low=0.0, doc="a run this long resets the backoff")
    max_failures: int = knob(5, low=1, doc="this many failed starts or crashes within the window: fatal")
    failure_window_s: float = knob(300.0, low=1.0, doc="the window of max_failures")
    health_interval_s: float = knob(5.0, low=0.05, doc="each running service's health is asked this often")
    health_timeout_s: float = knob(3.0, low=0.05, doc="a health call that takes longer failed")
    hang_checks: int = knob(3, low=1, doc="this many failed health calls in a row: killed and restarted")
    start_timeout_s: float = knob(60.0, low=1.0, doc="time to become healthy after spawn")
    stop_grace_s: float = knob(10.0, low=0.1, doc="shutdown RPC, then SIGTERM after this, then SIGKILL")
    log_max_bytes: int = knob(
        10 << 20, low=4096, doc="each <service>.stdout.log and redis.log is rotated past this size"
    )
    log_backups: int = knob(3, low=1, high=100, doc="rotated copies kept of each (.1 the newest)")
    log_check_s: float = knob(5.0, low=0.05, high=3600.0, doc="the log sizes are checked this often")
    entry: Mapping[str, str] = knob(
        {}, family="SERVICE", doc="run another file for a service (debugging, tests)"
    )
    launch: str = knob(
        "zygote",
        parse=_launch_mode,
        doc="zygote: fork services from a preloaded parent; exec: one fresh interpreter each",
    )
    ksm: str = knob(
        "auto",
        parse=_ksm_mode,
        doc="zygote mode: mark the zygote's memory mergeable by the kernel's same-page merging "
        "(KSM); auto: when /sys/kernel/mm/ksm/run is 1",
    )
    # Named before the TRADING_<SERVICE>_ rule; kept so existing set-ups keep working.
    redis_maxmemory: str = knob("64mb", env="TRADING_REDIS_MAXMEMORY", doc="the managed Redis's memory cap")

    def restart_policy(self) -> RestartPolicy:
        return RestartPolicy(
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
            stable_s=self.stable_s,
            max_failures=self.max_failures,
            window_s=self.failure_window_s,
        )

    def entry_override(self, service: str) -> str | None:
        """TRADING_MANAGER_ENTRY_<SERVICE> (upper case, hyphens to underscores), if set."""
        return self.entry.get(service.upper().replace("-", "_"))


@dataclass(frozen=True, slots=True)
class DashboardKnobs:
    service: ClassVar[str] = "dashboard"

    refresh_s: float = knob(1.5, low=0.2, high=60.0, doc="the live view redraws this often")
    rpc_timeout_s: float = knob(1.0, low=0.05, high=30.0, doc="each call that gathers the view")
    log_lines: int = knob(200, low=10, high=10_000, doc="lines in the log view")
