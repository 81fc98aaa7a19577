"""Supervision rules: dependency order, backoff and crash-loop detection with a fake clock."""

from __future__ import annotations

import pytest

from services.domain.supervision import (
    DependencyCycle,
    FailureHistory,
    RestartPolicy,
    dependents_of,
    overall_status,
    start_levels,
    start_order,
    stop_order,
    with_dependencies,
)
from services.registry import DEPENDENCIES


def test_contract_dependency_levels():
    # The contract's six, plus the alerts process (issue 18), which needs Redis alone: it starts
    # first and hears every other service start, fail and restart.
    assert start_levels() == [
        ["alerts", "market-data", "ml-model", "sentiment"],
        ["prediction"],
        ["paper-trading", "scheduler"],
    ]
    order = start_order()
    for service, deps in DEPENDENCIES.items():
        assert all(order.index(d) < order.index(service) for d in deps)
    assert stop_order() == list(reversed(order))


def test_cycles_and_unknown_dependencies_are_refused():
    with pytest.raises(DependencyCycle):
        start_levels({"a": ["b"], "b": ["a"]})
    with pytest.raises(ValueError, match="unknown"):
        start_levels({"a": ["zzz"]})


def test_dependency_closure_both_ways():
    assert with_dependencies(["scheduler"]) == {
        "scheduler",
        "prediction",
        "market-data",
        "sentiment",
        "ml-model",
    }
    assert with_dependencies(["sentiment"]) == {"sentiment"}
    assert dependents_of(["market-data"]) == {"prediction", "scheduler", "paper-trading"}
    assert dependents_of(["scheduler"]) == set()


@pytest.mark.parametrize(
    ("consecutive", "delay"),
    [
        (0, 0.0),
        (1, 0.0),  # first failure after a stable run: restart at once
        (2, 0.5),
        (3, 1.0),
        (4, 2.0),
        (8, 30.0),  # 0.5 * 2**6 = 32 -> capped
        (50, 30.0),
    ],
)
def test_backoff_table(consecutive, delay):
    assert RestartPolicy().backoff_s(consecutive) == delay


def test_stable_run_resets_backoff():
    history = FailureHistory(RestartPolicy(stable_s=60, max_failures=100))
    for t in range(4):
        history.record_failure(now=t, ran_for_s=1.0)
    assert history.consecutive == 4 and history.next_delay_s() == 2.0
    history.record_failure(now=200, ran_for_s=120.0)  # ran two minutes: the earlier ones are forgiven
    assert history.consecutive == 1 and history.next_delay_s() == 0.0


def test_crash_loop_within_window_only():
    policy = RestartPolicy(max_failures=3, window_s=60)
    history = FailureHistory(policy)
    history.record_failure(0, None)
    history.record_failure(10, None)
    assert not history.is_crash_loop(10)
    history.record_failure(20, 0.5)  # a start-up failure and crashes after start both count
    assert history.is_crash_loop(20)
    spread = FailureHistory(policy)
    for t in (0, 40, 80, 120):  # never three within a minute
        spread.record_failure(t, 5.0)
        assert not spread.is_crash_loop(t)


@pytest.mark.parametrize(
    ("states", "healths", "expected"),
    [
        ({"a": "running", "b": "running"}, {"a": "healthy", "b": "healthy"}, "healthy"),
        ({"a": "running", "b": "running"}, {"a": "healthy", "b": "degraded"}, "degraded"),
        ({"a": "running", "b": "starting"}, {"a": "healthy", "b": None}, "degraded"),
        ({"a": "running", "b": "fatal"}, {"a": "healthy", "b": None}, "down"),
        ({}, {}, "down"),
    ],
)
def test_overall_status(states, healths, expected):
    assert overall_status(states, healths) == expected
