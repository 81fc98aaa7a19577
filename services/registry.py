"""The suite's one table of services and one table of event types.

Everything that lists services or events derives from here: the supervisor's start order
(services.domain.supervision), the scheduler's known targets, set-up's databases
(services.management.databases), the dashboard, the replay, the event bus (which refuses an
unregistered event type) and the tests, including the one that checks README.md against these
tables. Adding a service or an event starts with one row here.

Pure data and tiny pure helpers: no I/O, and no imports from the rest of the suite, so that
services.base can import it. Stores are named as "module:Class" strings, not imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import TypeVar

#: The supervisor's own name: a BaseService on manager.sock, not one of the services it runs.
SUPERVISOR = "manager"
#: The CLI's dashboard: not a service, it reads its alert events straight from Redis.
DASHBOARD = "dashboard"


@dataclass(frozen=True, slots=True)
class Database:
    """A SQLite database a service owns, in TRADING_DATA_DIR."""

    file: str
    #: "module:Class" of the store that opens it and creates its schema: Class(path, ...).
    store: str

    @property
    def module(self) -> str:
        return self.store.partition(":")[0]

    @property
    def class_name(self) -> str:
        return self.store.partition(":")[2]


@dataclass(frozen=True, slots=True)
class Service:
    """One supervised process, as the contract's process table describes it."""

    name: str
    #: The file that runs it, relative to the repository root.
    entry: str
    #: Services that must answer health before this one starts (Redis is implicit).
    depends_on: tuple[str, ...] = ()
    databases: tuple[Database, ...] = ()
    #: The secret variables (services.base.config SECRET_KEYS) it is given: no other reaches it
    #: (services.base.child_env). Every service gets TRADING_REDIS_URL, password and all.
    secrets: tuple[str, ...] = ()

    @property
    def folder(self) -> str:
        return str(PurePosixPath(self.entry).parent)

    @property
    def publishes(self) -> tuple[str, ...]:
        return published_by(self.name)

    @property
    def consumes(self) -> tuple[str, ...]:
        return consumed_by(self.name)


@dataclass(frozen=True, slots=True)
class EventType:
    """One event type on `trading:events:<name>`."""

    name: str
    publishers: tuple[str, ...]
    consumers: tuple[str, ...] = ()
    #: Also kept in the stream `trading:stream:<name>`: consumers that were down receive it later.
    durable: bool = False


Row = TypeVar("Row", Service, EventType)


def _by_name(*rows: Row) -> Mapping[str, Row]:
    names = [row.name for row in rows]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"registry: {', '.join(twice)} appears twice")
    return MappingProxyType({row.name: row for row in rows})


#: IG's credentials: paper-trading's mirror and market-data's IG quote source log in with them.
IG_SECRETS = ("IG_API_KEY", "IG_USERNAME", "IG_PASSWORD", "IG_ACCOUNT_ID")

SERVICES: Mapping[str, Service] = _by_name(
    Service("market-data", "services/market-data/market_data_service.py", secrets=IG_SECRETS),
    Service(
        "sentiment",
        "services/sentiment/sentiment_service.py",
        secrets=("MARKETAUX_API_TOKEN",),
        databases=(Database("sentiment.db", "services.sentiment.sentiment_store:SentimentReadingStore"),),
    ),
    Service(
        "ml-model",
        "services/ml-model/ml_model_service.py",
        databases=(Database("ml_model.db", "services.ml_model.ml_prediction_log:PredictionLog"),),
    ),
    Service(
        "prediction",
        "services/prediction/prediction_service.py",
        depends_on=("market-data", "sentiment", "ml-model"),
        databases=(Database("predictions.db", "services.prediction.prediction_store:PredictionStore"),),
    ),
    Service(
        "scheduler",
        "services/scheduler/scheduler_service.py",
        depends_on=("prediction",),
        databases=(Database("scheduler.db", "services.scheduler.task_store:TaskStore"),),
    ),
    Service(
        "paper-trading",
        "services/paper-trading/paper_trading_service.py",
        depends_on=("prediction", "market-data"),
        databases=(Database("paper_trading.db", "services.paper_trading.trade_store:TradeStore"),),
        secrets=IG_SECRETS,
    ),
    # Depends on Redis alone, so it is up first and hears the others start, fail and restart.
    Service(
        "alerts",
        "services/alerts/alerts_service.py",
        databases=(Database("alerts.db", "services.alerts.alert_store:AlertStore"),),
        secrets=(
            "TRADING_ALERTS_WEBHOOK_SECRET",
            "TRADING_ALERTS_SLACK_WEBHOOK_URL",
            "TRADING_ALERTS_NTFY_TOKEN",
            "TRADING_ALERTS_TELEGRAM_BOT_TOKEN",
            "TRADING_ALERTS_SMTP_PASSWORD",
        ),
    ),
    # The HTTP gateway: reads the others over RPC and names whichever is down, so it needs none.
    Service("gateway", "services/gateway/gateway_service.py", secrets=("TRADING_GATEWAY_TOKEN",)),
)

EVENTS: Mapping[str, EventType] = _by_name(
    EventType(
        "market_data_updated",
        publishers=("market-data",),
        consumers=("prediction", "paper-trading", "ml-model"),
    ),
    EventType("sentiment_updated", publishers=("sentiment",)),
    EventType("prediction_generated", publishers=("prediction",), consumers=("paper-trading",), durable=True),
    EventType("buy_rate_alert", publishers=("prediction",), consumers=(DASHBOARD, "alerts")),
    # No consumer in the suite: kept in their streams for whoever reads the ledger's history.
    EventType("trade_executed", publishers=("paper-trading",), durable=True),
    EventType("position_closed", publishers=("paper-trading",), durable=True),
    EventType("risk_limit_hit", publishers=("paper-trading",), consumers=(DASHBOARD, "alerts")),
    # Alerts of the IG mirror: halted on a divergence it cannot correct, resumed once clean.
    EventType("ig_mirror_halted", publishers=("paper-trading",), consumers=(DASHBOARD, "alerts")),
    EventType("ig_mirror_resumed", publishers=("paper-trading",), consumers=(DASHBOARD, "alerts")),
    # An alert: no usable quote for longer than the bound in the session, new buys halted ("stale"),
    # or market data arriving again ("fresh").
    EventType("market_data_stale", publishers=("paper-trading",), consumers=(DASHBOARD, "alerts")),
    # Alerts: a ledger write failed for the storage and trading halted; writes work again.
    EventType("storage_halted", publishers=("paper-trading",), consumers=(DASHBOARD, "alerts")),
    EventType("storage_resumed", publishers=("paper-trading",), consumers=(DASHBOARD, "alerts")),
    EventType("task_completed", publishers=("scheduler",)),
    EventType("task_failed", publishers=("scheduler",), consumers=(DASHBOARD, "alerts")),
    EventType("service_status_changed", publishers=(SUPERVISOR,), consumers=(DASHBOARD, "alerts")),
    # An alert: saved durable events are not reaching Redis (state "growing"), or have again
    # ("cleared"); services.base.outbox.
    EventType("outbox_backlog", publishers=("prediction", "paper-trading"), consumers=(DASHBOARD, "alerts")),
    # An alert: a durable event its consumer could not settle was moved to trading:dead:<type>.
    EventType("event_dead_lettered", publishers=tuple(SERVICES), consumers=(DASHBOARD, "alerts")),
)

#: Published by the event bus itself (services/base/events.py) on behalf of whichever service
#: runs it, so every service is a publisher without naming the event in its own files.
BUS_EVENTS: frozenset[str] = frozenset({"event_dead_lettered"})

#: Everyone who may publish or consume: the services, the supervisor and the dashboard.
PARTIES: frozenset[str] = frozenset(SERVICES) | {SUPERVISOR, DASHBOARD}

#: service -> the services it depends on, in the table's order (the supervision rules take this).
DEPENDENCIES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {name: s.depends_on for name, s in SERVICES.items()}
)
#: service -> its entry file, relative to the repository root.
ENTRY_FILES: Mapping[str, str] = MappingProxyType({name: s.entry for name, s in SERVICES.items()})
DURABLE_EVENTS: frozenset[str] = frozenset(name for name, e in EVENTS.items() if e.durable)


def published_by(party: str) -> tuple[str, ...]:
    """The event types `party` publishes, in the events table's order."""
    return tuple(name for name, e in EVENTS.items() if party in e.publishers)


def consumed_by(party: str) -> tuple[str, ...]:
    """The event types `party` consumes, in the events table's order."""
    return tuple(name for name, e in EVENTS.items() if party in e.consumers)


def databases() -> list[tuple[str, Database]]:
    """(owning service, database) for every database of the suite, in the table's order."""
    return [(name, db) for name, s in SERVICES.items() for db in s.databases]


def events_with(*extra: EventType) -> Mapping[str, EventType]:
    """The registry's events plus `extra` ones, for a process outside the suite (a test's demo
    service sets its BaseService.event_types to this); a registered name cannot be redefined."""
    if clash := sorted(e.name for e in extra if e.name in EVENTS):
        raise ValueError(f"registry: {', '.join(clash)} already registered")
    return _by_name(*EVENTS.values(), *extra)


def problems(
    services: Mapping[str, Service] = SERVICES, events: Mapping[str, EventType] = EVENTS
) -> list[str]:
    """What is inconsistent in the tables: unknown names, duplicate files, malformed stores."""
    parties = frozenset(services) | {SUPERVISOR, DASHBOARD}
    found = [
        f"{s.name} depends on unknown service {d!r}"
        for s in services.values()
        for d in s.depends_on
        if d not in services
    ]
    found += [
        f"{e.name}: unknown {role} {p!r}"
        for e in events.values()
        for role, names in (("publisher", e.publishers), ("consumer", e.consumers))
        for p in names
        if p not in parties
    ]
    found += [f"{e.name} has no publisher" for e in events.values() if not e.publishers]
    files = [db.file for s in services.values() for db in s.databases]
    found += [f"database {f} is owned twice" for f in sorted({f for f in files if files.count(f) > 1})]
    entries = [s.entry for s in services.values()]
    found += [f"entry {f} is used twice" for f in sorted({f for f in entries if entries.count(f) > 1})]
    found += [
        f"{s.name}: store {db.store!r} is not 'module:Class'"
        for s in services.values()
        for db in s.databases
        if not (db.module and db.class_name and db.class_name.isidentifier())
    ]
    return found


if _problems := problems():  # a mistyped row fails at import, naming itself
    raise ValueError("registry: " + "; ".join(_problems))
