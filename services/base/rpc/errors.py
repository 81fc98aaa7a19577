"""JSON-RPC errors, typed on both sides of the wire: the code is what callers branch on."""

from __future__ import annotations

from typing import Any


class RpcError(Exception):
    """An error that travels as a JSON-RPC error object."""

    code = -32000
    kind = "error"

    def __init__(self, message: str, *, detail: str | None = None, data: dict | None = None):
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = {"type": self.kind, "detail": detail if detail is not None else message}
        if data:
            self.data.update(data)

    @property
    def detail(self) -> str:
        return self.data.get("detail", self.message)

    def to_wire(self) -> dict:
        return {"code": self.code, "message": self.message, "data": self.data}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r})"


class ParseError(RpcError):
    code, kind = -32700, "parse_error"


class InvalidRequest(RpcError):
    code, kind = -32600, "invalid_request"


class MethodNotFound(RpcError):
    code, kind = -32601, "method_not_found"


class InvalidParams(RpcError):
    """Bad params: `param` names the parameter, `problem` says what is wrong with it."""

    code, kind = -32602, "invalid_params"

    def __init__(self, param: str, problem: str, **_: Any):
        super().__init__(f"invalid params: {param}: {problem}", detail=problem, data={"param": param})
        self.param = param


class InternalError(RpcError):
    code, kind = -32603, "internal_error"


class ServiceError(RpcError):
    code, kind = -32000, "service_error"


class DependencyUnavailable(RpcError):
    """A service this one needs did not answer: start it or wait for the supervisor to."""

    code, kind = -32001, "dependency_unavailable"


class NotConfigured(RpcError):
    """A credential or setting is missing: configure it (see the README)."""

    code, kind = -32002, "not_configured"


class RiskRejected(RpcError):
    code, kind = -32003, "risk_rejected"


class MarketClosed(RpcError):
    code, kind = -32004, "market_closed"


class RpcTimeout(RpcError):
    code, kind = -32005, "timeout"


class NotFound(RpcError):
    code, kind = -32006, "not_found"


class StorageUnavailable(RpcError):
    """A write to the service's own database failed for the storage (disk full, I/O error,
    read-only): the service refuses what would write until its probe write succeeds again."""

    code, kind = -32007, "storage_unavailable"


ERROR_TYPES: dict[int, type[RpcError]] = {
    cls.code: cls
    for cls in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        ServiceError,
        DependencyUnavailable,
        NotConfigured,
        RiskRejected,
        MarketClosed,
        RpcTimeout,
        NotFound,
        StorageUnavailable,
    )
}


def error_from_wire(error: Any) -> RpcError:
    """Rebuild the typed exception a remote service raised."""
    if not isinstance(error, dict):
        return ServiceError(f"malformed error object: {error!r}")
    code = error.get("code")
    message = str(error.get("message", "remote error"))
    raw_data = error.get("data")
    data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
    cls = ERROR_TYPES.get(code, ServiceError) if isinstance(code, int) else ServiceError
    exc = RpcError.__new__(cls)
    Exception.__init__(exc, message)
    exc.message = message
    exc.data = {"type": cls.kind, "detail": message, **data}
    if isinstance(exc, InvalidParams):
        exc.param = exc.data.get("param", "")
    if cls is ServiceError and isinstance(code, int) and code != ServiceError.code:
        exc.code = code  # keep an unknown server-defined code as sent
    return exc
