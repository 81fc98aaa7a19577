"""JSON-RPC 2.0 over Unix stream sockets, one module per concern:

    errors   the typed errors (each carries its JSON-RPC code) and their rebuilding from the wire
    params   `@rpc` and MethodSpec: validating wire params against a method's signature
    codec    JSON bytes in and out, request checks, response objects (pure)
    server   RpcServer: one Unix socket, one JSON text per line, many requests in flight
    limits   RpcKnobs (TRADING_RPC_*): the server's bounds, who may connect
    client   RpcClient: one multiplexed connection per target socket

Every public name is re-exported here, so `from services.base.rpc import X` is the one way in;
each is imported from its module on first use (services/base/lazy.py): `rpc` and the errors
without the server's and the client's asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.base.lazy import lazy_exports

if TYPE_CHECKING:
    from services.base.rpc.client import ConnectionLost, RpcClient
    from services.base.rpc.codec import (
        check_request,
        dumps,
        error_response,
        loads,
        request_id_of,
        result_response,
    )
    from services.base.rpc.errors import (
        ERROR_TYPES,
        DependencyUnavailable,
        InternalError,
        InvalidParams,
        InvalidRequest,
        MarketClosed,
        MethodNotFound,
        NotConfigured,
        NotFound,
        ParseError,
        RiskRejected,
        RpcError,
        RpcTimeout,
        ServiceError,
        StorageUnavailable,
        error_from_wire,
    )
    from services.base.rpc.limits import RpcKnobs
    from services.base.rpc.params import (
        MethodSpec,
        ParamSpec,
        coerce,
        rpc,
    )
    from services.base.rpc.server import Dispatcher, RpcServer

#: Each public name's module (the imports above, for the type checker, say the same).
HOMES = {
    "client": ("ConnectionLost", "RpcClient"),
    "codec": ("check_request", "dumps", "error_response", "loads", "request_id_of", "result_response"),
    "errors": (
        "ERROR_TYPES",
        "DependencyUnavailable",
        "InternalError",
        "InvalidParams",
        "InvalidRequest",
        "MarketClosed",
        "MethodNotFound",
        "NotConfigured",
        "NotFound",
        "ParseError",
        "RiskRejected",
        "RpcError",
        "RpcTimeout",
        "ServiceError",
        "StorageUnavailable",
        "error_from_wire",
    ),
    "limits": ("RpcKnobs",),
    "params": ("MethodSpec", "ParamSpec", "coerce", "rpc"),
    "server": ("Dispatcher", "RpcServer"),
}

__all__ = [
    "ERROR_TYPES",
    "ConnectionLost",
    "DependencyUnavailable",
    "Dispatcher",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "MarketClosed",
    "MethodNotFound",
    "MethodSpec",
    "NotConfigured",
    "NotFound",
    "ParamSpec",
    "ParseError",
    "RiskRejected",
    "RpcClient",
    "RpcError",
    "RpcKnobs",
    "RpcServer",
    "RpcTimeout",
    "ServiceError",
    "StorageUnavailable",
    "check_request",
    "coerce",
    "dumps",
    "error_from_wire",
    "error_response",
    "loads",
    "request_id_of",
    "result_response",
    "rpc",
]

__getattr__, __dir__ = lazy_exports(__name__, HOMES)
