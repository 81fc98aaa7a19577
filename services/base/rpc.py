"""JSON-RPC 2.0 over Unix stream sockets: errors, the pure codec, the server and the client.

Framing is one JSON text per line in both directions. The frame limit is enforced by the stream
reader's own limit, so an oversized line is refused before it is buffered whole. Several requests
may be in flight on one connection; responses carry the request's id and may come in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import itertools
import logging
import os
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("rpc")

# --------------------------------------------------------------------------------------------
# Errors: typed on both sides of the wire; the code is what callers branch on.


class RpcError(Exception):
    """An error that travels as a JSON-RPC error object."""

    code = -32000
    kind = "error"

    def __init__(self, message: str, *, detail: str | None = None, data: dict | None = None):
        super().__init__(message)
        self.message = message
        self.data = {"type": self.kind, "detail": detail if detail is not None else message}
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
    )
}


def error_from_wire(error: Any) -> RpcError:
    """Rebuild the typed exception a remote service raised."""
    if not isinstance(error, dict):
        return ServiceError(f"malformed error object: {error!r}")
    code = error.get("code")
    message = str(error.get("message", "remote error"))
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    cls = ERROR_TYPES.get(code, ServiceError) if isinstance(code, int) else ServiceError
    exc = RpcError.__new__(cls)
    Exception.__init__(exc, message)
    exc.message = message
    exc.data = {"type": cls.kind, "detail": message, **data}
    if cls is InvalidParams:
        exc.param = exc.data.get("param", "")
    if cls is ServiceError and isinstance(code, int) and code != ServiceError.code:
        exc.code = code  # keep an unknown server-defined code as sent
    return exc


# --------------------------------------------------------------------------------------------
# Marking methods: decorators set attributes and return the function unchanged (nameko style),
# so a service's methods stay plain callables in tests.


def rpc(func: Callable) -> Callable:
    """Expose an async method over JSON-RPC; params are validated from its signature."""
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"@rpc method {func.__qualname__} must be async")
    func.__rpc__ = True
    return func


# --------------------------------------------------------------------------------------------
# Param validation from signatures and annotations.

_MISSING = object()


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, dict):
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        base = "object" if origin is dict else "array"
        return f"{base}[{args}]" if args else base
    return {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        dict: "object",
        list: "array",
    }.get(tp, getattr(tp, "__name__", str(tp)))


# Plain JSON types checked by exact type first: the common case costs one dict lookup per param.
_EXACT_JSON = {str: str, int: int, bool: bool, dict: dict, list: list}


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float). Raises ValueError."""
    if type(tp) is type and _EXACT_JSON.get(tp) is type(value):
        return value
    if tp is Any or tp is inspect.Parameter.empty or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(tp)
        if value is None and type(None) in arms:
            return None
        real = [arm for arm in arms if arm is not type(None)]
        if len(real) == 1:
            return coerce(value, real[0], where)  # keep the precise message of the only arm
        for arm in real:
            try:
                return coerce(value, arm, where)
            except ValueError:
                continue
        raise ValueError(f"expected {_type_name(tp)}, got {_json_type(value)}")
    if origin is typing.Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise ValueError(f"expected one of {_type_name(tp)}, got {_short(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise ValueError(f"expected null, got {_json_type(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("expected a finite number")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in tp)
            raise ValueError(f"expected one of {allowed}, got {_short(value)}") from None
    elif origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, list):
            args = typing.get_args(tp)
            if args and args[0] is not Ellipsis:
                return [_item(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
            return value
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            args = typing.get_args(tp)
            if len(args) == 2:
                return {k: _item(v, args[1], f"{where}.{k}") for k, v in value.items()}
            return value
    else:
        return value  # an annotation we do not check (documented as such)
    raise ValueError(f"expected {_type_name(tp)}, got {_json_type(value)}")


def _item(value: Any, tp: Any, where: str) -> Any:
    """Coerce a container's element; the error names the element's position."""
    try:
        return coerce(value, tp, where)
    except ValueError as exc:
        if str(exc).startswith(where):
            raise
        raise ValueError(f"{where}: {exc}") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(slots=True)
class ParamSpec:
    name: str
    annotation: Any
    default: Any  # _MISSING when required


@dataclass(slots=True)
class MethodSpec:
    name: str
    func: Callable[..., Awaitable[Any]]
    params: list[ParamSpec]
    by_name: dict[str, ParamSpec]
    doc: str

    @classmethod
    def from_function(cls, name: str, func: Callable[..., Awaitable[Any]]) -> MethodSpec:
        hints = typing.get_type_hints(func)
        params: list[ParamSpec] = []
        for p in inspect.signature(func).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"@rpc {name}: *args/**kwargs are not allowed (params must be declared)")
            default = _MISSING if p.default is p.empty else p.default
            params.append(ParamSpec(p.name, hints.get(p.name, Any), default))
        doc = (inspect.getdoc(func) or "").strip().splitlines()
        return cls(name, func, params, {p.name: p for p in params}, doc[0] if doc else "")

    def bind(self, params: Any) -> dict[str, Any]:
        """Validate wire params (array or object) into keyword arguments. Raises InvalidParams."""
        if params is None:
            params = {}
        if isinstance(params, list):
            if len(params) > len(self.params):
                raise InvalidParams(
                    "params", f"takes at most {len(self.params)} positional parameters, got {len(params)}"
                )
            named = {self.params[i].name: v for i, v in enumerate(params)}
        else:
            for key in params:
                if key not in self.by_name:
                    raise InvalidParams(str(key), "unknown parameter")
            named = params
        kwargs: dict[str, Any] = {}
        for spec in self.params:
            value = named.get(spec.name, _MISSING)
            if value is _MISSING:
                if spec.default is _MISSING:
                    raise InvalidParams(spec.name, "missing required parameter")
                continue
            try:
                kwargs[spec.name] = coerce(value, spec.annotation, spec.name)
            except ValueError as exc:
                raise InvalidParams(spec.name, str(exc)) from None
        return kwargs

    def describe(self) -> dict:
        return {
            "name": self.name,
            "params": [
                {
                    "name": p.name,
                    "type": _type_name(p.annotation) if p.annotation is not Any else "any",
                    "required": p.default is _MISSING,
                    **({} if p.default is _MISSING else {"default": _jsonable(p.default)}),
                }
                for p in self.params
            ],
            "doc": self.doc,
        }


def _jsonable(value: Any) -> Any:
    try:
        orjson.dumps(value, default=_json_default)
        return value
    except TypeError:
        return repr(value)


# --------------------------------------------------------------------------------------------
# Codec.


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return float(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes. NaN and infinities become null (JSON has no such numbers)."""
    return orjson.dumps(obj, default=_json_default, option=orjson.OPT_NON_STR_KEYS)


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


# --------------------------------------------------------------------------------------------
# Server.

Dispatcher = Callable[[str, Any], Awaitable[Any]]


class RpcServer:
    """Serves one Unix socket. `dispatch(method, params)` runs a call and raises RpcError."""

    def __init__(self, path: Path, dispatch: Dispatcher, max_frame_bytes: int = 1 << 20):
        self.path = path
        self.dispatch = dispatch
        self.max_frame_bytes = max_frame_bytes
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._inflight: set[asyncio.Task] = set()
        self._conn_tasks: set[asyncio.Task] = set()
        self.accepting = False

    async def start(self) -> None:
        old_umask = os.umask(0o177)  # the socket is created 0600: only this user may call
        try:
            self._server = await asyncio.start_unix_server(
                self._serve_connection, path=str(self.path), limit=self.max_frame_bytes
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        self.accepting = True

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def stop_accepting(self) -> None:
        self.accepting = False
        if self._server is not None:
            self._server.close()

    async def drain(self, grace_s: float) -> bool:
        """Wait for in-flight requests; True when they all finished within the grace period."""
        if not self._inflight:
            return True
        _, pending = await asyncio.wait(set(self._inflight), timeout=grace_s)
        return not pending

    async def close(self) -> None:
        for task in list(self._inflight):
            task.cancel()
        for writer in list(self._connections):
            writer.close()  # each connection's reader sees EOF and its loop ends by itself
        if self._conn_tasks:
            _, pending = await asyncio.wait(set(self._conn_tasks), timeout=1.0)
            # Cancel only stragglers: asyncio 3.11 logs "Exception in callback" for every
            # cancelled connection task (its done-callback calls task.exception()).
            for task in pending:
                task.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_task = asyncio.current_task()
        if conn_task is not None:
            self._conn_tasks.add(conn_task)
        self._connections.add(writer)
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        await self._handle_frame(exc.partial, writer)
                    break
                except asyncio.LimitOverrunError:
                    # Refused before buffering it whole: answer once, then hang up on this peer.
                    too_big = InvalidRequest(f"frame exceeds {self.max_frame_bytes} bytes")
                    await self._write(writer, dumps(error_response(too_big)))
                    break
                if not line.strip():
                    continue
                self._start_request(self._handle_frame(line, writer))
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            self._connections.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
            if conn_task is not None:
                self._conn_tasks.discard(conn_task)

    def _start_request(self, coro) -> None:
        # Each request is its own task, so a slow one never holds up the others on the connection.
        # (Running the first step inline would save a loop turn, but libraries that pin state to
        # the current task, such as anyio cancel scopes and asyncio.timeout, would then break.)
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _write(self, writer: asyncio.StreamWriter, payload: bytes) -> None:
        if writer.is_closing():
            return
        # One write() call per reply keeps replies whole without a lock; concurrent drain() calls
        # are safe (asyncio keeps a queue of drain waiters since 3.10).
        writer.write(payload + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _handle_frame(self, frame: bytes, writer: asyncio.StreamWriter) -> None:
        reply = await self.handle_frame(frame)
        if reply is not None:
            await self._write(writer, reply)

    async def handle_frame(self, frame: bytes) -> bytes | None:
        """One frame in, the encoded reply out (None when nothing is to be sent)."""
        try:
            message = loads(frame)
        except (orjson.JSONDecodeError, ValueError, RecursionError):
            return dumps(error_response(ParseError("parse error: not valid JSON")))
        if isinstance(message, list):
            if not message:
                return dumps(error_response(InvalidRequest("invalid request: empty batch")))
            replies = await asyncio.gather(*(self._handle_one(item) for item in message))
            answered = [r for r in replies if r is not None]
            return dumps(answered) if answered else None
        reply = await self._handle_one(message)
        return None if reply is None else dumps(reply)

    async def _handle_one(self, obj: Any) -> dict | None:
        try:
            method, params, request_id, notification = check_request(obj)
        except InvalidRequest as exc:
            return error_response(exc, request_id_of(obj))
        try:
            result = await self.dispatch(method, params)
        except RpcError as exc:
            return None if notification else error_response(exc, request_id)
        return None if notification else result_response(result, request_id)


# --------------------------------------------------------------------------------------------
# Client: one multiplexed connection per target socket.


class ConnectionLost(ConnectionError):
    """The connection dropped after the request was sent: it may or may not have run."""


class RpcClient:
    def __init__(self, path: Path, max_frame_bytes: int = 1 << 20):
        self.path = path
        self.max_frame_bytes = max_frame_bytes
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._reader_task: asyncio.Task | None = None
        self._connect_lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        # at_eof: the peer closed (e.g. the service restarted) even if our reader has not run yet.
        return (
            self._writer is not None
            and not self._writer.is_closing()
            and self._reader is not None
            and not self._reader.at_eof()
        )

    async def connect(self) -> None:
        """Open the connection if needed. Raises OSError when nothing listens."""
        if self.connected:
            return
        async with self._connect_lock:
            if self.connected:
                return
            if self._reader_task is not None:
                self._reader_task.cancel()
                self._fail_pending()
            reader, writer = await asyncio.open_unix_connection(
                str(self.path), limit=max(self.max_frame_bytes, 1 << 16) * 4
            )
            self._reader, self._writer = reader, writer
            self._reader_task = asyncio.create_task(self._read_loop(reader))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readuntil(b"\n")
                try:
                    message = loads(line)
                except orjson.JSONDecodeError:
                    log.warning("unparseable reply from %s", self.path.name)
                    continue
                for reply in message if isinstance(message, list) else (message,):
                    future = self._pending.pop(reply.get("id"), None) if isinstance(reply, dict) else None
                    if future is not None and not future.done():
                        future.set_result(reply)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._fail_pending()

    def _fail_pending(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(f"connection to {self.path.name} lost"))

    async def call(self, method: str, params: Any = None) -> Any:
        """Send one request and wait for its reply. Raises OSError when it could not be sent
        (nothing listening), ConnectionLost when it was sent but the connection dropped before
        the reply (it may or may not have run), or the remote RpcError."""
        frame = {"jsonrpc": "2.0", "method": method, "id": 0}
        if params is not None:
            frame["params"] = params
        for last_try in (False, True):
            await self.connect()
            request_id = frame["id"] = next(self._ids)
            future = asyncio.get_running_loop().create_future()
            self._pending[request_id] = future
            try:
                writer = self._writer
                if writer is None:
                    raise ConnectionResetError("connection closed")
                writer.write(dumps(frame) + b"\n")
                await writer.drain()
            except (ConnectionError, OSError) as exc:
                # The write itself failed: the peer was already gone (e.g. it restarted while this
                # cached connection sat idle), so nothing was delivered. Reconnect once and resend.
                self._pending.pop(request_id, None)
                self._fail_pending()
                if last_try:
                    raise ConnectionRefusedError(f"cannot send to {self.path.name}: {exc}") from None
                continue
            break
        try:
            reply = await future
        finally:
            self._pending.pop(request_id, None)
        if "error" in reply:
            raise error_from_wire(reply["error"])
        return reply.get("result")

    async def notify(self, method: str, params: Any = None) -> None:
        await self.connect()
        frame = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            frame["params"] = params
        assert self._writer is not None
        self._writer.write(dumps(frame) + b"\n")
        await self._writer.drain()

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
            self._reader_task = None
        self._fail_pending()
