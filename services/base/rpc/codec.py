"""The pure JSON-RPC 2.0 codec: JSON bytes in and out, request checks, response objects."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from services.base.rpc.errors import InvalidRequest, RpcError


def json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return float(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes. NaN and infinities become null (JSON has no such numbers)."""
    return orjson.dumps(obj, default=json_default, option=orjson.OPT_NON_STR_KEYS)


def loads(data: bytes | str) -> Any:
    """Strict JSON: rejects NaN/Infinity, invalid UTF-8, and nesting deeper than orjson allows."""
    return orjson.loads(data)


def error_response(exc: RpcError, request_id: Any = None) -> dict:
    return {"jsonrpc": "2.0", "error": exc.to_wire(), "id": request_id}


def result_response(result: Any, request_id: Any) -> dict:
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


def _valid_id(value: Any) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def check_request(obj: Any) -> tuple[str, Any, Any, bool]:
    """(method, params, id, is_notification) of a request object, or InvalidRequest."""
    if not isinstance(obj, dict):
        raise InvalidRequest("invalid request: not an object")
    if obj.get("jsonrpc") != "2.0":
        raise InvalidRequest('invalid request: "jsonrpc" must be "2.0"')
    method = obj.get("method")
    if not isinstance(method, str):
        raise InvalidRequest('invalid request: "method" must be a string')
    params = obj.get("params")
    if "params" in obj and not isinstance(params, (list, dict)):
        raise InvalidRequest('invalid request: "params" must be an array or an object')
    if "id" in obj and not _valid_id(obj["id"]):
        raise InvalidRequest('invalid request: "id" must be a string, an integer or null')
    return method, params, obj.get("id"), "id" not in obj


def request_id_of(obj: Any) -> Any:
    """The id to answer an invalid request with: its own when readable, else null (spec)."""
    if isinstance(obj, dict) and "id" in obj and _valid_id(obj["id"]):
        return obj["id"]
    return None
