"""The gateway's HTTP API as one table: the router, the query and body validation and
`/openapi.json` are all derived from `ROUTES`, so the document cannot drift from what is served.
GET routes read; the POST routes change state and are served only with TRADING_GATEWAY_WRITE on.

Pure data and pure functions: no I/O (the service in gateway_service.py does the calls).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.domain.alert_incidents import KINDS as ALERT_KINDS
from services.domain.supervision import start_order


class BadQuery(ValueError):
    """A query, path or body parameter the API refuses: answered 400 naming `param`."""

    def __init__(self, param: str, detail: str):
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail


class WrongMethod(LookupError):
    """The path is served, but not with this method: 405 with `allowed` in the Allow header."""

    def __init__(self, allowed: Sequence[str]):
        super().__init__(", ".join(allowed))
        self.allowed = tuple(allowed)


@dataclass(frozen=True, slots=True)
class Param:
    """One query, path or body parameter: an int within bounds, a boolean (body only), or a string
    (one of `choices`)."""

    name: str
    kind: type = str
    default: Any = None
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""
    #: "symbol" strings must be one of the suite's symbols (known only at run time).
    symbol: bool = False
    max_length: int = 64
    #: A body field that must be given (query and path parameters are optional and required).
    required: bool = False

    def schema(self, symbols: Sequence[str]) -> dict:
        if self.kind is bool:
            out: dict[str, Any] = {"type": "boolean"}
        elif self.kind is int:
            out = {"type": "integer", "minimum": self.low, "maximum": self.high}
        elif self.symbol:
            out = {"type": "string", "enum": list(symbols)}
        elif self.choices:
            out = {"type": "string", "enum": list(self.choices)}
        else:
            out = {"type": "string", "minLength": 1, "maxLength": self.max_length}
        if self.default is not None:
            out["default"] = self.default
        if self.doc:
            out["description"] = self.doc
        return out

    def parse_json(self, value: Any, symbols: Sequence[str]) -> Any:
        """A body field as JSON gave it: the same checks as `parse`, on the JSON type itself."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise BadQuery(self.name, f"must be true or false, got {_json_type(value)}")
            return value
        if self.kind is int:
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # JSON Schema's integer: 2.0 is one (the RPC wants an int)
            if not isinstance(value, int) or isinstance(value, bool):
                raise BadQuery(self.name, f"must be an integer, got {_json_type(value)}")
            return self.parse(str(value), symbols)
        if not isinstance(value, str):
            raise BadQuery(self.name, f"must be a string, got {_json_type(value)}")
        return self.parse(value, symbols)

    def parse(self, raw: str, symbols: Sequence[str]) -> Any:
        if self.kind is int:
            try:
                value = int(raw)
            except ValueError:
                raise BadQuery(self.name, f"must be an integer, got {raw[:40]!r}") from None
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise BadQuery(self.name, f"must be in {self.low}..{self.high}, got {value}")
            return value
        if self.symbol and raw not in symbols:
            raise BadQuery(self.name, f"unknown symbol {raw[:40]!r} (known: {', '.join(symbols)})")
        if self.choices and raw not in self.choices:
            raise BadQuery(self.name, f"must be one of {', '.join(self.choices)}, got {raw[:40]!r}")
        if not 1 <= len(raw) <= self.max_length:
            raise BadQuery(self.name, f"must be 1..{self.max_length} characters")
        return raw


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint. `path` params are in braces; `services` are the ones it asks. A POST route
    changes state (served only with TRADING_GATEWAY_WRITE on) and takes a JSON object `body`."""

    name: str
    path: str
    summary: str
    services: tuple[str, ...]
    data: Mapping[str, Any]
    query: tuple[Param, ...] = ()
    path_params: tuple[Param, ...] = ()
    #: 404 is a documented answer (the one thing asked for does not exist).
    may_be_missing: bool = False
    tags: tuple[str, ...] = field(default=("desk",))
    method: str = "GET"
    body: tuple[Param, ...] = ()
    #: What a 200 carries: the JSON envelope, or a file's bytes of this type.
    media: str = "application/json"

    @property
    def writes(self) -> bool:
        return self.method == "POST"

    @property
    def pattern(self) -> re.Pattern:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$")


OBJECT: Mapping[str, Any] = {"type": "object"}
LIMIT_PREDICTIONS = Param("limit", int, 20, 1, 500, doc="how many, newest first")
SYMBOL_FILTER = Param("symbol", symbol=True, doc="only this symbol")
#: Every supervised service but the gateway (it cannot answer a request that stops it).
RESTARTABLE = tuple(name for name in start_order() if name != "gateway")

ROUTES: tuple[Route, ...] = (
    Route("status", "/api/status", "The supervisor's view: each service's state, pid, uptime, restarts, health",
          ("manager",), OBJECT, tags=("suite",)),
    Route("health", "/api/health", "Every service's own health reply; a service that does not answer is in `down`",
          ("*",), {"type": "object", "additionalProperties": OBJECT}, tags=("suite",)),
    Route("market_status", "/api/market/status", "ASX phase, trading day, holiday, next open and close",
          ("scheduler",), OBJECT, tags=("market",)),
    Route("quotes", "/api/quotes", "The latest quote of every symbol (a symbol without one is in `errors`)",
          ("market-data",), {"type": "object", "additionalProperties": OBJECT}, tags=("market",)),
    Route("market_data", "/api/market/{symbol}", "Price, daily bars, technicals, context and quality of one symbol",
          ("market-data",), OBJECT, path_params=(Param("symbol", symbol=True),), may_be_missing=True,
          tags=("market",)),
    Route("predictions", "/api/predictions", "The latest stored predictions, newest first",
          ("prediction",), OBJECT, query=(LIMIT_PREDICTIONS, SYMBOL_FILTER), tags=("predictions",)),
    Route("prediction", "/api/predictions/{prediction_id}", "One prediction with all its inputs",
          ("prediction",), OBJECT, path_params=(Param("prediction_id", max_length=128),), may_be_missing=True,
          tags=("predictions",)),
    Route("portfolio", "/api/portfolio", "Cash, equity, exposure, P&L and whether trading is halted",
          ("paper-trading",), OBJECT),
    Route("positions", "/api/positions", "Open positions with cost, mark, unrealised P&L and exit levels",
          ("paper-trading",), OBJECT),
    Route("trades", "/api/trades", "The latest trades, newest first, each with its prediction_id",
          ("paper-trading",), OBJECT,
          query=(Param("limit", int, 50, 1, 500, doc="how many, newest first"), SYMBOL_FILTER)),
    Route("performance", "/api/performance", "Return, win rate, profit factor, Sharpe, drawdown over a period",
          ("paper-trading",), OBJECT,
          query=(Param("period", default="all", choices=("day", "week", "month", "all")),)),
    Route("tasks", "/api/tasks", "Scheduled tasks with their next run and last outcome",
          ("scheduler",), {"type": "array", "items": OBJECT}, tags=("suite",)),
    Route("alerts", "/api/alerts", "The alerts process's latest incidents and their deliveries",
          ("alerts",), OBJECT,
          query=(Param("limit", int, 20, 1, 500, doc="how many, newest first"), Param("kind", choices=tuple(ALERT_KINDS), doc="one kind only")),
          tags=("suite",)),
    Route("replays", "/api/replays", "Replay reports on disk (<data dir>/replays), newest first",
          (), {"type": "array", "items": OBJECT}, tags=("replays",)),
    Route("replay", "/api/replays/{name}", "One replay's report.json",
          (), OBJECT, path_params=(Param("name", max_length=64),), may_be_missing=True, tags=("replays",)),
    Route("replay_image", "/api/replays/{name}/{file}", "One PNG of a replay (e.g. equity.png) from its folder",
          (), {"type": "string", "format": "binary"},
          path_params=(Param("name", max_length=64), Param("file", max_length=128)), may_be_missing=True,
          tags=("replays",), media="image/png"),
    Route("equity", "/api/equity", "Each day's closing equity, oldest first; today's is the equity now",
          ("paper-trading",), OBJECT, query=(Param("days", int, 90, 1, 3660, doc="calendar days back from today"),)),
    # ---- calls that change state (TRADING_GATEWAY_WRITE) ----
    Route("place_trade", "/api/trades", "A manual paper trade at the latest quote, through the risk gate",
          ("paper-trading",), OBJECT, method="POST", tags=("write",),
          body=(Param("symbol", symbol=True, required=True),
                Param("action", choices=("BUY", "SELL"), required=True),
                Param("quantity", int, None, 1, 10_000_000, doc="whole shares", required=True))),
    Route("restart_service", "/api/services/{service}/restart", "Restart one service (the supervisor's restart_service)",
          ("manager",), OBJECT, method="POST", tags=("write",),
          path_params=(Param("service", choices=RESTARTABLE),)),
    Route("run_task", "/api/tasks/{task_id}/run", "Run a scheduled task now (returns at once with its run_id)",
          ("scheduler",), OBJECT, method="POST", tags=("write",), may_be_missing=True,
          path_params=(Param("task_id", max_length=128),),
          body=(Param("ignore_dependencies", bool, False, doc="run even if a task it depends on has not succeeded today"),)),
)  # fmt: skip

BY_NAME: Mapping[str, Route] = {route.name: route for route in ROUTES}


def match(path: str, method: str = "GET") -> tuple[Route, dict[str, str]] | None:
    """The route serving `method` (HEAD as GET) on `path` and its raw path params; None when no
    route has that path (404); WrongMethod when only other methods are served there (405)."""
    method = "GET" if method == "HEAD" else method
    allowed: list[str] = []
    for route in ROUTES:
        if found := route.pattern.match(path):
            if route.method == method:
                return route, found.groupdict()
            allowed += ["GET", "HEAD"] if route.method == "GET" else [route.method]
    if allowed:
        raise WrongMethod(sorted(set(allowed), key=allowed.index))
    return None


def parse_params(route: Route, raw_path: Mapping[str, str], raw_query: Mapping[str, str], symbols) -> dict:
    """Path and query params checked against the route (BadQuery naming the first bad one);
    an unknown query parameter is refused too, as the RPC layer refuses an unknown param."""
    known = {p.name for p in route.query}
    if unknown := sorted(set(raw_query) - known):
        raise BadQuery(
            unknown[0], "unknown parameter" + (f" (known: {', '.join(sorted(known))})" if known else "")
        )
    values = {p.name: p.parse(raw_path[p.name], symbols) for p in route.path_params}
    for p in route.query:
        values[p.name] = p.parse(raw_query[p.name], symbols) if p.name in raw_query else p.default
    return values


def parse_body(route: Route, body: Any, symbols) -> dict:
    """A POST route's JSON object body checked field by field (BadQuery naming the first bad one:
    `body` itself when it is not an object, an unknown field, a missing one or a wrong value)."""
    if not isinstance(body, dict):
        raise BadQuery("body", f"must be a JSON object, got {_json_type(body)}")
    known = {p.name for p in route.body}
    if unknown := sorted(set(body) - known):
        raise BadQuery(
            str(unknown[0])[:64], "unknown field" + (f" (known: {', '.join(sorted(known))})" if known else "")
        )
    values = {}
    for p in route.body:
        if p.name in body:
            values[p.name] = p.parse_json(body[p.name], symbols)
        elif p.required:
            raise BadQuery(p.name, "is required")
        else:
            values[p.name] = p.default
    return values


JSON_TYPES: Mapping[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,)}


def shape_problem(data: Any, schema: Mapping[str, Any]) -> str | None:
    """Why `data` (not None) is not of the route's declared top-level type, or None when it is."""
    expected = JSON_TYPES.get(schema.get("type", ""))
    if data is None or expected is None or isinstance(data, expected):
        return None
    return f"expected {schema['type']}, got {_json_type(data)}"


def _json_type(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)  # fmt: skip


# ---- OpenAPI ---------------------------------------------------------------------------------------

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "param": {"type": "string"},
        "detail": {"type": "string"},
        "service": {"type": "string"},
        "code": {"type": "integer", "description": "the JSON-RPC error code the service answered"},
        "data": {"description": "the JSON-RPC error's data (e.g. the risk rule, its limit and the excess)"},
    },
}
ENVELOPE_PARTS = {
    "down": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "service -> why it did not answer; its part of `data` is missing",
    },
    "errors": {
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "data": {}},
        },
        "description": "item or service -> the JSON-RPC error it answered",
    },
}


def envelope(data: Mapping[str, Any]) -> dict:
    """Every API reply: `data` (null when the service asked is down), `down`, `errors`."""
    nullable = {**data, "type": [data["type"], "null"]}
    return {
        "type": "object",
        "required": ["data", "down", "errors"],
        "properties": {"data": nullable, **ENVELOPE_PARTS},
    }


def _json(schema: Mapping[str, Any], description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(symbols: Sequence[str], version: str) -> dict:
    """The OpenAPI 3.1 document of everything the gateway serves, from ROUTES."""
    unauthorized = _json(ERROR, "no or wrong bearer token")
    paths: dict[str, Any] = {}
    for route in ROUTES:
        parameters = [
            {"name": p.name, "in": "path", "required": True, "schema": p.schema(symbols)}
            for p in route.path_params
        ] + [
            {
                "name": p.name,
                "in": "query",
                "required": False,
                "schema": p.schema(symbols),
                "description": p.doc,
            }
            for p in route.query
        ]
        if route.media != "application/json":
            ok = {"description": "the file", "content": {route.media: {"schema": route.data}}}
        else:
            ok = _json(envelope(route.data), "the reply; a service that is down is named in `down`")
        responses = {
            "200": ok,
            "400": _json(ERROR, "a parameter is refused (named in `param`)"),
            "401": unauthorized,
            **BOUNDED,
        }
        if route.may_be_missing:
            responses["404"] = _json(ERROR, "not found")
        operation = {
            "operationId": route.name,
            "summary": route.summary + (" (only with TRADING_GATEWAY_WRITE=true)" if route.writes else ""),
            "tags": list(route.tags),
            "parameters": parameters,
            "responses": responses,
        }
        if route.writes:
            responses.update(WRITE_RESPONSES)
            operation["requestBody"] = {
                "required": any(p.required for p in route.body),
                "content": {"application/json": {"schema": body_schema(route, symbols)}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "summary": "The suite's overall state, without a token; 503 when the suite is down",
            "security": [],
            "tags": ["suite"],
            "responses": {
                "200": _json(HEALTHZ, "the suite is up (healthy or degraded)"),
                "503": _json(HEALTHZ, "the suite is down"),
            },
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Per-service and per-desk figures in the Prometheus text format",
            "tags": ["suite"],
            "responses": {
                "200": {
                    "description": "Prometheus text format 0.0.4",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": unauthorized,
                **BOUNDED,
            },
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "tags": ["suite"],
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), "401": unauthorized},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ASX trading desk gateway",
            "version": version,
            "description": "JSON API over the desk's services; the POST calls change state and are"
            " refused (403) unless the gateway runs with TRADING_GATEWAY_WRITE=true.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


def body_schema(route: Route, symbols: Sequence[str]) -> dict:
    return {
        "type": "object",
        "properties": {p.name: p.schema(symbols) for p in route.body},
        "required": [p.name for p in route.body if p.required],
        "additionalProperties": False,
    }


#: Any request: past the client's rate (with Retry-After), or past TRADING_GATEWAY_REQUEST_TIMEOUT_S.
BOUNDED = {
    "429": _json(ERROR, "too many requests from this client address (see Retry-After)"),
    "503": _json(ERROR, "the request took longer than TRADING_GATEWAY_REQUEST_TIMEOUT_S (`timeout`)"),
}

WRITE_RESPONSES = {
    "403": _json(ERROR, "state-changing calls are disabled (TRADING_GATEWAY_WRITE is false)"),
    "409": _json(
        ERROR,
        "refused by the service: a risk rule (-32003, the rule in `data`), the market closed (-32004),"
        " or the state does not allow it (e.g. the task is already running)",
    ),
    "503": _json(
        ERROR, "the service asked is down, or cannot act now (-32001, -32007), or the request timed out"
    ),
    "504": _json(ERROR, "the service did not answer in time: the outcome is unknown, look before retrying"),
}


HEALTHZ = {
    "type": "object",
    "required": ["status", "services"],
    "properties": {
        "status": {"type": "string", "enum": ["healthy", "degraded", "down"]},
        "services": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
