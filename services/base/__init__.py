"""The framework every service process shares: import its public names from here.

    from services.base import BaseService, Event, InvalidParams, on_event, rpc, run_service

The modules behind these names: `base_service` (the life of a process), `rpc/` (JSON-RPC 2.0:
errors, params, codec, server, client), `events` (envelope and Redis bus), `config` (settings),
`clock` (the suite clock), `logs`, `socket_dir` (checked before anything is opened in it),
`storage` (SQLite pragmas read back, storage failures told from bugs). Their other names (RpcClient, EventBus, CHANNEL_PREFIX, set_pragmas, ...) are
framework internals, imported from their module. Inside services/base, modules import from
each other's modules, never from this package, so importing it has no cycles.

Note: here `rpc` is the decorator. It shadows the package `services.base.rpc` as an attribute of
this package; `from services.base.rpc import X` still imports from the package.

Importing this loads the standard library, orjson and these modules only: Redis and psutil are
imported where they are first used, and nothing here pulls in pandas, numpy or scikit-learn.
"""

from __future__ import annotations

from services.base.base_service import (
    EXIT_NEEDS_OPERATOR,
    BaseService,
    LedgerDamaged,
    ServiceAlreadyRunning,
    run_service,
    socket_is_live,
)
from services.base.clock import SYDNEY, SuiteClock, get_clock
from services.base.config import ConfigError, Settings, get_settings
from services.base.events import Event, UnknownEventType, on_event
from services.base.rpc import (
    DependencyUnavailable,
    InternalError,
    InvalidParams,
    MarketClosed,
    MethodNotFound,
    NotConfigured,
    NotFound,
    RiskRejected,
    RpcError,
    RpcTimeout,
    ServiceError,
    StorageUnavailable,
    rpc,
)
from services.base.socket_dir import UnsafeSocketDir
from services.base.storage import LedgerMisconfigured

__all__ = [
    "EXIT_NEEDS_OPERATOR",
    "SYDNEY",
    "BaseService",
    "ConfigError",
    "DependencyUnavailable",
    "Event",
    "InternalError",
    "InvalidParams",
    "LedgerDamaged",
    "LedgerMisconfigured",
    "MarketClosed",
    "MethodNotFound",
    "NotConfigured",
    "NotFound",
    "RiskRejected",
    "RpcError",
    "RpcTimeout",
    "ServiceAlreadyRunning",
    "ServiceError",
    "Settings",
    "StorageUnavailable",
    "SuiteClock",
    "UnknownEventType",
    "UnsafeSocketDir",
    "get_clock",
    "get_settings",
    "on_event",
    "rpc",
    "run_service",
    "socket_is_live",
]
