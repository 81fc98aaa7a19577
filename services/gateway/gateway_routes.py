"""The gateway's read-only HTTP API as one table: the router, the query validation and
`/openapi.json` are all derived from `ROUTES`, so the document cannot drift from what is served.

Pure data and pure functions: no I/O (the service in gateway_service.py does the calls).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.domain.alert_incidents import KINDS as ALERT_KINDS


class BadQuery(ValueError):
    """A query or path parameter the API refuses: answered 400 naming `param`."""

    def __init__(self, param: str, detail: str):
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Param:
    """One query (or path) parameter: an int within bounds, or a string (one of `choices`)."""

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

    def schema(self, symbols: Sequence[str]) -> dict:
        if self.kind is int:
            out: dict[str, Any] = {"type": "integer", "minimum": self.low, "maximum": self.high}
        elif self.symbol:
            out = {"type": "string", "enum": list(symbols)}
        elif self.choices:
            out = {"type": "string", "enum": list(self.choices)}
        else:
            out = {"type": "string", "minLength": 1, "maxLength": self.max_length}
        if self.default is not None:
            out["default"] = self.default
        return out

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
    """One GET endpoint. `path` params are in braces; `services` are the ones it asks."""

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

    @property
    def pattern(self) -> re.Pattern:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$")


OBJECT: Mapping[str, Any] = {"type": "object"}
LIMIT_PREDICTIONS = Param("limit", int, 20, 1, 500, doc="how many, newest first")
SYMBOL_FILTER = Param("symbol", symbol=True, doc="only this symbol")

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
)  # fmt: skip

BY_NAME: Mapping[str, Route] = {route.name: route for route in ROUTES}


def match(path: str) -> tuple[Route, dict[str, str]] | None:
    """The route serving `path` and its raw path params, or None (404)."""
    for route in ROUTES:
        if found := route.pattern.match(path):
            return route, found.groupdict()
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


# ---- OpenAPI ---------------------------------------------------------------------------------------

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "param": {"type": "string"}, "detail": {"type": "string"}},
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
        responses = {
            "200": _json(envelope(route.data), "the reply; a service that is down is named in `down`"),
            "400": _json(ERROR, "a parameter is refused (named in `param`)"),
            "401": unauthorized,
        }
        if route.may_be_missing:
            responses["404"] = _json(ERROR, "not found")
        paths[route.path] = {
            "get": {
                "operationId": route.name,
                "summary": route.summary,
                "tags": list(route.tags),
                "parameters": parameters,
                "responses": responses,
            }
        }
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
            "description": "Read-only JSON API over the desk's services.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


HEALTHZ = {
    "type": "object",
    "required": ["status", "services"],
    "properties": {
        "status": {"type": "string", "enum": ["healthy", "degraded", "down"]},
        "services": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
