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

Importing this package loads nothing but services.base.lazy: each name is imported from its module
on first use (services/base/lazy.py), so that `service_manager.py start` reads its settings without
asyncio. The modules behind the names load the standard library, orjson and each other only: Redis
and psutil are imported where they are first used, and nothing here pulls in pandas, numpy or
scikit-learn.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from services.base.lazy import lazy_exports

if TYPE_CHECKING:
    from services.base.base_service import (
        EXIT_NEEDS_OPERATOR,
        BaseService,
        LedgerDamaged,
        ServiceAlreadyRunning,
        run_service,
    )
    from services.base.clock import SYDNEY, SuiteClock, get_clock
    from services.base.config import (
        ConfigError,
        Settings,
        get_settings,
    )
    from services.base.events import (
        Event,
        UnknownEventType,
        on_event,
    )
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
    from services.base.socket_dir import UnsafeSocketDir, socket_is_live
    from services.base.storage import LedgerMisconfigured

#: Each public name's module (the imports above, for the type checker, say the same).
HOMES = {
    "base_service": (
        "EXIT_NEEDS_OPERATOR",
        "BaseService",
        "LedgerDamaged",
        "ServiceAlreadyRunning",
        "run_service",
    ),
    "clock": ("SYDNEY", "SuiteClock", "get_clock"),
    "config": ("ConfigError", "Settings", "get_settings"),
    "events": ("Event", "UnknownEventType", "on_event"),
    "rpc": (
        "DependencyUnavailable",
        "InternalError",
        "InvalidParams",
        "MarketClosed",
        "MethodNotFound",
        "NotConfigured",
        "NotFound",
        "RiskRejected",
        "RpcError",
        "RpcTimeout",
        "ServiceError",
        "StorageUnavailable",
        "rpc",
    ),
    "socket_dir": ("UnsafeSocketDir", "socket_is_live"),
    "storage": ("LedgerMisconfigured",),
}

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

__getattr__, __dir__ = lazy_exports(__name__, HOMES)


class _Package(types.ModuleType):
    """`services.base.rpc` is the decorator, not the subpackage of that name: importing the
    subpackage makes the import system set this attribute to it (ignored here)."""

    @property
    def rpc(self) -> object:
        from services.base.rpc.params import rpc

        return rpc

    @rpc.setter
    def rpc(self, value: object) -> None:
        pass


sys.modules[__name__].__class__ = _Package
