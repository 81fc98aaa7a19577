"""Supervision rules as pure functions: dependency order, restart backoff, crash-loop detection.

The supervisor (services/management/supervisor.py) does the I/O; every decision it takes about
when to start, restart or give up on a service is made here, with time passed in. The graph
functions default to the registry's dependencies (services.registry) and take any other mapping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.registry import DEPENDENCIES  # re-exported: the registry's service -> dependencies

#: Health statuses of a service that answers: a dependency that is degraded still serves, so it
#: counts as up for starting what depends on it, for `start` and for the dashboard.
UP = ("healthy", "degraded")


class DependencyCycle(ValueError):
    pass


def start_levels(deps: Mapping[str, Iterable[str]] = DEPENDENCIES) -> list[list[str]]:
    """Services grouped into levels: each level depends only on earlier ones (Kahn's algorithm).

    Services in one level can start in parallel; stopping walks the levels in reverse.
    """
    remaining = {name: set(d) for name, d in deps.items()}
    unknown = {d for ds in remaining.values() for d in ds} - set(remaining)
    if unknown:
        raise ValueError(f"unknown dependencies: {', '.join(sorted(unknown))}")
    levels: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        ready = sorted(name for name, ds in remaining.items() if ds <= done)
        if not ready:
            raise DependencyCycle(f"dependency cycle among: {', '.join(sorted(remaining))}")
        levels.append(ready)
        done.update(ready)
        for name in ready:
            del remaining[name]
    return levels


def start_order(deps: Mapping[str, Iterable[str]] = DEPENDENCIES) -> list[str]:
    return [name for level in start_levels(deps) for name in level]


def stop_order(deps: Mapping[str, Iterable[str]] = DEPENDENCIES) -> list[str]:
    return list(reversed(start_order(deps)))


def with_dependencies(names: Iterable[str], deps: Mapping[str, Iterable[str]] = DEPENDENCIES) -> set[str]:
    """`names` plus everything they need, transitively."""
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(deps.get(name, ()))
    return wanted


def dependents_of(names: Iterable[str], deps: Mapping[str, Iterable[str]] = DEPENDENCIES) -> set[str]:
    """Everything that needs one of `names`, transitively (stopped first when `names` stop)."""
    out: set[str] = set()
    frontier = set(names)
    while frontier:
        nxt = {s for s, ds in deps.items() if set(ds) & frontier} - out
        out |= nxt
        frontier = nxt
    return out


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When to restart and when to give up. Times in seconds."""

    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    stable_s: float = 60.0  # a run this long resets the backoff
    max_failures: int = 5  # this many failures within the window -> fatal
    window_s: float = 300.0

    def backoff_s(self, consecutive_failures: int) -> float:
        """Delay before the next start: the first failure after a stable run restarts at once,
        then base, 2*base, 4*base ... up to the cap."""
        if consecutive_failures <= 1:
            return 0.0
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** (consecutive_failures - 2))


@dataclass(slots=True)
class FailureHistory:
    """Failures of one service: consecutive count for the backoff, timestamps for the window."""

    policy: RestartPolicy
    consecutive: int = 0
    times: deque[float] = field(default_factory=deque)

    def record_failure(self, now: float, ran_for_s: float | None) -> None:
        """A start that failed (`ran_for_s` None) or a run that ended after `ran_for_s` seconds."""
        if ran_for_s is not None and ran_for_s >= self.policy.stable_s:
            self.consecutive = 0
        self.consecutive += 1
        self.times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.times and now - self.times[0] > self.policy.window_s:
            self.times.popleft()

    def is_crash_loop(self, now: float) -> bool:
        self._trim(now)
        return len(self.times) >= self.policy.max_failures

    def next_delay_s(self) -> float:
        return self.policy.backoff_s(self.consecutive)

    def reset(self) -> None:
        self.consecutive = 0
        self.times.clear()


def overall_status(states: Mapping[str, str], healths: Mapping[str, str | None]) -> str:
    """'healthy', 'degraded' or 'down' for the whole suite (the dashboard's light)."""
    if not states:
        return "down"
    if any(s in ("fatal", "stopped", "backoff") for s in states.values()):
        return "down"
    if all(states[n] == "running" and healths.get(n) == "healthy" for n in states):
        return "healthy"
    return "degraded"
