"""The Redis fault soak in short: 3 SIGKILLs and a 15 s SIGSTOP of Redis under durable traffic.

Asserts the facts: every service reported degraded at every fault and came back to its status with
Redis connected, and the audit found nothing lost (every saved prediction has one outcome, every
trade's events are in the streams, the outboxes are empty, the ledger balances). The times are
printed; the issue's bounds (degraded within 2 health intervals, healthy within 5 s) are checked
by the full run, `tests/soak/redis_faults.py` (figures in the README).
"""

from __future__ import annotations

import pytest

from tests.soak.redis_faults import soak

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_redis_killed_and_stopped_under_traffic_loses_nothing(synthetic_models):
    lines: list[str] = []
    # A fault lasts until every service noticed, within a deadline generous for a busy machine.
    result = soak(kills=3, stop_s=15, seed=7, log=lines.append, notice_s=60)
    print("\n".join(lines), "\n", result["figures"], "\n", result["books"])
    assert [f.kind for f in result["faults"]].count("kill") == 3
    for fault in result["faults"]:
        assert set(fault.degraded_s) == set(result["services"]), (fault.kind, fault.degraded_s)
        assert set(fault.recovered_s) == set(result["services"]), (fault.kind, fault.recovered_s)
    assert result["asked"] > 0 and "books balance" in result["books"]
    assert "none lost" in result["events"]
