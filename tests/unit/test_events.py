"""The event envelope and the durable retry schedule (no Redis needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from services.base.clock import SuiteClock
from services.base.events import (
    DURABLE_TYPES,
    Event,
    EventBus,
    dependency_unavailable,
    on_event,
    retry_delay_s,
)
from services.base.rpc import (
    DependencyUnavailable,
    RiskRejected,
    RpcTimeout,
    ServiceError,
    StorageUnavailable,
)


def test_durable_retry_delays_double_to_a_cap():
    assert [retry_delay_s(n) for n in range(1, 9)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    assert sum(retry_delay_s(n) for n in range(1, 8)) > 15  # a restarting dependency has time


def test_envelope_has_the_contract_fields_and_increasing_seq():
    clock = SuiteClock(datetime(2025, 3, 3, 23, 0, tzinfo=UTC), speed=1.0)
    bus = EventBus("unix:///nowhere.sock", "prediction", clock)
    first, second = bus.make_event("prediction_generated", {"n": 1}), bus.make_event("buy_rate_alert", {})
    wire = orjson.loads(first.to_json())
    assert set(wire) == {"id", "type", "source", "timestamp", "seq", "data"}
    assert wire["source"] == "prediction" and wire["timestamp"].startswith("2025-03-03T23:00")
    assert (first.seq, second.seq) == (1, 2) and first.id != second.id
    assert Event.from_json(first.to_json()) == first


def test_money_moving_events_are_durable_and_handlers_are_marked_not_wrapped():
    assert {"prediction_generated", "trade_executed", "position_closed"} <= DURABLE_TYPES

    async def handler(self, event):
        return None

    assert on_event("trade_executed", durable=True)(handler) is handler
    assert handler.__event__ == ("trade_executed", True)


@pytest.mark.parametrize(
    ("error", "waits"),
    [
        (DependencyUnavailable("market-data is unavailable"), True),
        (RpcTimeout("market-data.get_quote did not answer within 10s"), True),
        # The service's own disk full: the entry waits for it as for a service, spending no delivery.
        (StorageUnavailable("storage unavailable: disk full"), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        # The event's own fault, or a bug: these count as deliveries, then the dead-letter stream.
        (ServiceError("bad"), False),
        (RiskRejected("rejected by rule max_position"), False),
        (ValueError("unknown signal"), False),
    ],
)
def test_which_handler_failures_wait_in_place(error, waits):
    assert dependency_unavailable(error) is waits
