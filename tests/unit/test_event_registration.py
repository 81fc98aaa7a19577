"""Only registered event types (services/registry.py) are published or handled (no Redis needed:
every refusal happens before anything is sent, subscribed or bound)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.base.base_service import BaseService, Event, UnknownEventType, on_event
from services.base.clock import SuiteClock
from services.base.config import Settings
from services.base.events import DURABLE_TYPES, EVENT_TYPES, EventBus
from services.registry import DURABLE_EVENTS, EVENTS, EventType, events_with


def make_bus(**kwargs) -> EventBus:
    clock = SuiteClock(datetime(2025, 3, 3, 23, 0, tzinfo=UTC), speed=1.0)
    return EventBus("unix:///nowhere.sock", "prediction", clock, **kwargs)


async def handler(event: Event) -> None:
    return None


def test_the_bus_types_are_the_registry():
    assert frozenset(EVENTS) == EVENT_TYPES
    assert DURABLE_EVENTS == DURABLE_TYPES


async def test_publishing_an_unregistered_type_raises_and_sends_nothing():
    bus = make_bus()
    with pytest.raises(
        UnknownEventType, match=r"unknown event type 'prediction_made'.*services/registry\.py"
    ):
        await bus.publish("prediction_made", {"n": 1})
    assert bus.counters["published"] == 0 and bus.outbox_size == 0


async def test_a_registered_type_is_durable_as_the_registry_says():
    bus = make_bus()  # not started: a durable event waits in the outbox, a plain one is dropped
    await bus.publish("trade_executed", {"n": 1})
    await bus.publish("sentiment_updated", {"n": 2})
    assert bus.outbox_size == 1 and bus.counters["dropped"] == 1


def test_subscribing_to_an_unregistered_type_raises():
    bus = make_bus()
    with pytest.raises(UnknownEventType):
        bus.subscribe("market_data_changed", handler)
    with pytest.raises(ValueError, match="not a durable event type"):
        bus.subscribe("market_data_updated", handler, durable=True)  # it is never in a stream
    bus.subscribe("market_data_updated", handler)
    bus.subscribe("prediction_generated", handler, durable=True)


def test_a_bus_can_carry_extra_types_for_a_process_outside_the_suite():
    bus = make_bus(event_types=events_with(EventType("demo_plain", publishers=("demo",))))
    bus.subscribe("demo_plain", handler)
    with pytest.raises(UnknownEventType):
        bus.subscribe("demo_other", handler)


def test_a_handler_of_an_unregistered_type_fails_when_the_class_is_defined():
    with pytest.raises(UnknownEventType, match="market_data_upated"):

        class Typo(BaseService):
            name = "typo"

            @on_event("market_data_upated")
            async def on_market_data(self, event: Event) -> None: ...

    with pytest.raises(ValueError, match="not a durable event type"):

        class NotDurable(BaseService):
            name = "not-durable"

            @on_event("risk_limit_hit", durable=True)
            async def on_risk(self, event: Event) -> None: ...


def test_a_class_with_its_own_types_may_handle_them():
    class Demo(BaseService):
        name = "demo"
        event_types = events_with(EventType("demo_durable", publishers=("demo",), durable=True))

        @on_event("demo_durable", durable=True)
        async def on_demo(self, event: Event) -> None: ...

    assert Demo._handler_markers() == {"on_demo": ("demo_durable", True)}


def settings_in(tmp_path) -> Settings:
    return Settings.from_env(
        {
            "TRADING_SOCKET_DIR": str(tmp_path / "s"),
            "TRADING_LOG_DIR": str(tmp_path / "l"),
            "TRADING_DATA_DIR": str(tmp_path / "d"),
            "TRADING_REDIS_URL": "unix:///nowhere.sock",
        }
    )


async def test_service_publish_refuses_an_unregistered_type_even_before_the_bus_runs(tmp_path):
    service = BaseService("tests", settings_in(tmp_path))
    with pytest.raises(UnknownEventType):
        await service.publish("trade_done", {})
    with pytest.raises(RuntimeError, match="bus is not running"):
        await service.publish("trade_executed", {})  # registered: only the missing bus is wrong


async def test_start_refuses_an_unregistered_handler_before_binding_its_socket(tmp_path):
    class Listener(BaseService):
        name = "listener"

        @on_event("market_data_updated")
        async def on_market_data(self, event: Event) -> None: ...

    service = Listener(settings=settings_in(tmp_path))
    service.event_types = {k: v for k, v in EVENTS.items() if k != "market_data_updated"}  # narrowed
    with pytest.raises(UnknownEventType):
        await service.start()
    assert not service.socket_path("listener").exists()
    assert service.bus is None
