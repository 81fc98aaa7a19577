"""The chaos soak in short: a replay of 80 trading days, then the same days again while
services are SIGKILLed or SIGSTOPped every 5-30 s and Redis is SIGKILLed every 30 s; the trades
must be the undisturbed replay's to the cent, in order, and the books' invariants must hold.

The full run is `tests/soak/chaos.py --minutes 30` (figures in the README). Runs on the real ASX
CSVs of ../shared/data/asx when present, else on synthetic ones (tests/system/_replay_helpers.py).
"""

from __future__ import annotations

import pytest

from tests.soak.chaos import soak

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_replay_under_chaos_trades_as_an_undisturbed_one(replay_models):
    lines: list[str] = []
    # soak raises Diverged (other trades, another equity curve, a degraded prediction) or
    # AuditFailed (tests/soak/ledger_audit.py) at the first difference.
    result = soak(minutes=2, seed=11, redis_every_s=30, log=lines.append)
    print("\n".join(lines), "\n", result)
    assert result["rounds"] >= 1 and result["trades"] > 0
    # With seed 11 the faults come 16 s, 35 s (Redis, the first after 30 s) and 63 s after the
    # disturbed suite is up; how many land before the 80 days are done depends on the machine's
    # speed (one, seen with two CPU-bound processes beside the suite), never none.
    assert sum(result["faults"].values()) >= 1, result["faults"]
