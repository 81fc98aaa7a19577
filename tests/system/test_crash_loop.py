"""The crashpoint soak in short: each named crashpoint hit twice, the books audited after each.

The full run is `tests/soak/crash_loop.py --rounds 100` (figures in the README).
"""

from __future__ import annotations

import pytest

from tests.soak.crash_loop import OUTAGE, POINTS, soak

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_every_crashpoint_twice_loses_and_doubles_nothing():
    lines: list[str] = []
    result = soak(2 * len(POINTS), list(POINTS), log=lines.append)
    assert result["rounds"] == 6 and len(lines) == 6
    assert all("books balance" in line for line in lines)


def test_market_data_away_during_a_trading_step_is_waited_for():
    """The issue's 60 s outage, shortened (the full one: crash_loop.py --points market_data.outage)."""
    lines: list[str] = []
    soak(2, [OUTAGE], log=lines.append, outage_s=8)
    assert len(lines) == 2 and all("after market-data returned" in line for line in lines)
