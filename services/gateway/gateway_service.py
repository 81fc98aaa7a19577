"""The HTTP gateway: one supervised process that lets a browser, a script or Prometheus see the
desk without a shell on its machine.

It is a BaseService (health, metrics, shutdown on `gateway.sock`, supervised like the others)
that also serves HTTP (http_server: asyncio and h11) on TRADING_GATEWAY_BIND: a JSON API over the services
(gateway_routes.ROUTES, which /openapi.json is generated from), /metrics in the Prometheus text
format (metrics_exposition), and /healthz. Everything but /healthz and the web view's static
shell needs the bearer token. A service that does not answer is named in the reply's `down`; the
rest of the reply is still served. The POST calls that change state are refused (403) unless
TRADING_GATEWAY_WRITE is on, and then go to the service's own RPC (its validation, its risk
gate): the gateway never writes anything itself.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import os
import ssl
import time
from datetime import datetime
from pathlib import Path
from stat import S_ISREG
from typing import Any

import orjson

from services.base import (
    BaseService,
    ConfigError,
    DependencyUnavailable,
    RpcError,
    RpcTimeout,
    rpc,
    run_service,
)
from services.base.knobs import read_knobs
from services.domain.supervision import UP, start_order
from services.gateway.gateway_knobs import GatewayKnobs
from services.gateway.gateway_routes import (
    BadQuery,
    Route,
    WrongMethod,
    match,
    openapi_document,
    parse_body,
    parse_params,
    shape_problem,
)
from services.gateway.gateway_token import gateway_token
from services.gateway.http_server import HttpError, HttpServer, Request, Response, json_answer
from services.gateway.metrics_exposition import Scrape, exposition
from services.gateway.rate_limit import RateLimiter
from services.registry import SUPERVISOR

REPLAY_REPORT_MAX_BYTES = 4 << 20
REPLAY_IMAGE_MAX_BYTES = 16 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
#: The web view: a static shell with no data in it (every figure it shows is fetched with the
#: token), so it is served without one, like /healthz.
WEB_DIR = Path(__file__).resolve().parent / "web"
WEB_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
WEB_HEADERS = {
    # blob: images are the replay PNGs, fetched with the token (an <img src> could not send it).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
INVALID_PARAMS, NOT_FOUND = -32602, -32006
#: A write's JSON-RPC error -> its HTTP status: refused as asked (409), cannot act now (503).
WRITE_ERROR_STATUS = {-32000: 409, -32003: 409, -32004: 409, -32001: 503, -32002: 503, -32007: 503}


class Reply:
    """The body of every API answer: `data`, and which services were `down` or answered `errors`."""

    __slots__ = ("data", "down", "errors")

    def __init__(self) -> None:
        self.data: Any = None
        self.down: dict[str, str] = {}
        self.errors: dict[str, dict] = {}

    def body(self) -> dict:
        return {"data": self.data, "down": self.down, "errors": self.errors}


class HttpProblem(Exception):
    """An answer other than 200: its status and JSON body."""

    def __init__(self, status: int, error: str, **extra: str):
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": error, **extra}


class GatewayService(BaseService):
    name = "gateway"

    def __init__(self) -> None:
        super().__init__()
        self.knobs = GatewayKnobs()
        self.token = b""
        self.url: str | None = None
        self._http: HttpServer | None = None
        self.requests_by_status: dict[int, int] = {}
        self.limiter = RateLimiter(1.0, 1)
        self.web = {path: ((WEB_DIR / name).read_bytes(), kind) for path, (name, kind) in WEB_FILES.items()}

    async def on_start(self) -> None:
        self.knobs = read_knobs(GatewayKnobs, self.settings.environ)
        self.token = gateway_token(self.settings).encode()
        self.limiter = RateLimiter(self.knobs.rate_limit_per_s, self.knobs.rate_burst)
        host, port = self.knobs.bind
        tls = tls_context(self.knobs.tls_cert_file, self.knobs.tls_key_file)
        # No access log: a line per request would carry nothing the metrics do not.
        server = HttpServer(
            self._bounded,
            head_timeout_s=self.knobs.idle_timeout_s,
            max_line_bytes=self.knobs.max_header_bytes,
            max_body_bytes=self.knobs.max_request_bytes,
        )
        try:
            bound, bound_port = await server.start(host, port, tls)
        except OSError as exc:
            raise ConfigError(
                f"TRADING_GATEWAY_BIND: cannot listen on {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc}"
            ) from None
        self._http = server
        bound_host = f"[{bound}]" if ":" in bound else bound
        self.url = f"{'https' if tls else 'http'}://{bound_host}:{bound_port}"
        self.log.info("gateway listening on %s", self.url)

    async def on_stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def health_details(self) -> dict:
        return {
            "url": self.url,
            "write_enabled": self.knobs.write,
            "http_requests": dict(sorted(self.requests_by_status.items())),
        }

    @rpc
    async def get_url(self) -> dict:
        """The address the gateway listens on (useful with port 0)."""
        return {"url": self.url}

    # ---- HTTP ----------------------------------------------------------------------------------

    async def _bounded(self, request: Request) -> Response:
        """Every request within TRADING_GATEWAY_REQUEST_TIMEOUT_S; any answer JSON; counted."""
        try:
            # Before the token is checked: guessing tokens is rate limited too.
            if wait_s := self.limiter.allow(request.remote or "?", time.monotonic()):
                problem = HttpProblem(429, "too many requests")
                problem.headers = {"Retry-After": str(max(1, math.ceil(wait_s)))}  # type: ignore[attr-defined]
                raise problem
            if (request.content_length or 0) > self.knobs.max_request_bytes:  # refused unread
                raise HttpProblem(413, "request body too large")
            async with asyncio.timeout(self.knobs.request_timeout_s):
                response = await self._dispatch(request)
        except HttpProblem as problem:
            response = json_answer(problem.body, problem.status, getattr(problem, "headers", None))
        except HttpError as refused:  # reading the body: a chunked one past the bound, or broken
            response = refused.answer()
        except ConnectionError:
            raise  # the client left inside its body: nobody to answer (the server closes)
        except TimeoutError:
            response = json_answer({"error": "timeout"}, 503)
        except Exception:  # a bug here: logged once with its traceback, answered JSON without internals
            self.log.exception("internal error answering %s %s", request.method, request.path)
            response = json_answer({"error": "internal error"}, 500)
        self.requests_by_status[response.status] = self.requests_by_status.get(response.status, 0) + 1
        return response

    def _authorized(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)

    async def _dispatch(self, request: Request) -> Response:
        path = request.path
        if path == "/healthz":
            self._only_get(request)
            return await self._healthz()
        if path in self.web:
            self._only_get(request)
            content, kind = self.web[path]
            return Response(content, headers={"Content-Type": kind, **WEB_HEADERS})
        if not self._authorized(request):
            problem = HttpProblem(401, "unauthorized")
            problem.headers = {"WWW-Authenticate": "Bearer"}  # type: ignore[attr-defined]
            raise problem
        if path in ("/metrics", "/openapi.json"):
            self._only_get(request)
        if path == "/metrics":
            return Response(
                (await self._metrics_text()).encode(),
                headers={"Content-Type": PROMETHEUS_TEXT, "X-Content-Type-Options": "nosniff"},
            )
        if path == "/openapi.json":
            return json_answer(openapi_document(self.settings.symbols, self.version))
        try:
            found = match(path, request.method)
        except WrongMethod as wrong:
            raise method_not_allowed(wrong.allowed) from None
        if found is None:
            raise HttpProblem(404, "not found")
        route, raw_path = found
        if route.writes and not self.knobs.write:
            raise HttpProblem(
                403,
                "state-changing calls are disabled",
                detail="the gateway runs with TRADING_GATEWAY_WRITE=false (the default)",
            )
        query = request.query
        if twice := sorted(k for k, values in query.items() if len(values) > 1):
            raise HttpProblem(400, "invalid parameter", param=twice[0], detail="given more than once")
        try:
            params = parse_params(route, raw_path, {k: v[0] for k, v in query.items()}, self.settings.symbols)
            if route.writes:
                params |= parse_body(route, await json_body(request), self.settings.symbols)
        except BadQuery as bad:
            raise HttpProblem(400, "invalid parameter", param=bad.param, detail=bad.detail) from None
        if route.media != "application/json":
            return await getattr(self, f"api_{route.name}")(**params)
        reply = Reply()
        await getattr(self, f"api_{route.name}")(reply, **params)
        if (off_shape := shape_problem(reply.data, route.data)) is not None:
            # A service answering off its documented shape (another version, a bug): its part is an
            # error, never a reply that breaks /openapi.json's promise.
            self.log.warning("%s answered %s off its shape: %s", route.services or ("disk",), path, off_shape)
            reply.errors[route.services[0] if route.services else route.name] = {
                "code": -32603,
                "message": f"unexpected reply: {off_shape}",
            }
            reply.data = None
        return json_answer(reply.body())

    @staticmethod
    def _only_get(request: Request) -> None:
        if request.method not in ("GET", "HEAD"):
            raise method_not_allowed(("GET", "HEAD"))

    # ---- asking the services ---------------------------------------------------------------------

    async def _ask(
        self, reply: Reply, service: str, method: str, key: str | None = None, **params: Any
    ) -> Any:
        """The result, or None with the service put in `down` (did not answer) or the error in
        `errors` under `key` (it answered an error)."""
        try:
            return await self.call_service(
                service, method, timeout=self.knobs.rpc_timeout_s, retries=0, **params
            )
        except (DependencyUnavailable, RpcTimeout) as exc:
            if exc.data.get("service") == service:
                reply.down[service] = exc.message
                return None
            reply.errors[key or service] = exc.to_wire()
        except RpcError as exc:
            reply.errors[key or service] = exc.to_wire()
        return None

    async def _one(self, reply: Reply, route: Route, method: str, **params: Any) -> None:
        """A reply of one service's one method: its -32602 is a 400, its -32006 a 404."""
        service = route.services[0]
        reply.data = await self._ask(reply, service, method, **params)
        error = reply.errors.get(service)
        if error and error["code"] == INVALID_PARAMS:
            data = error.get("data") or {}
            raise HttpProblem(
                400, "invalid parameter", param=str(data.get("param", "")), detail=error["message"]
            )
        if error and error["code"] == NOT_FOUND and route.may_be_missing:
            raise HttpProblem(404, "not found", detail=error["message"])

    async def _write(self, reply: Reply, route: Route, method: str, **params: Any) -> None:
        """A state-changing call: the service's own RPC once (never retried: it may have acted),
        its refusals as HTTP statuses. A timeout is 504: the outcome is unknown."""
        service = route.services[0]
        timeout_s = max(self.knobs.rpc_timeout_s, self.knobs.request_timeout_s * 0.8)
        try:
            reply.data = await self.call_service(service, method, timeout=timeout_s, retries=0, **params)
        except RpcError as exc:
            if exc.data.get("service") == service and isinstance(exc, RpcTimeout):
                raise HttpProblem(
                    504, "timeout", service=service,
                    detail=f"{service} did not answer {method} in {timeout_s:g} s: the outcome is unknown",
                ) from None  # fmt: skip
            if exc.data.get("service") == service and isinstance(exc, DependencyUnavailable):
                raise HttpProblem(503, "service unavailable", service=service, detail=exc.message) from None
            raise write_problem(service, exc.to_wire(), may_be_missing=route.may_be_missing) from None

    async def _healths(self, reply: Reply) -> dict[str, dict]:
        names = start_order()
        found = await asyncio.gather(*(self._ask(reply, name, "health") for name in names))
        return {name: h for name, h in zip(names, found, strict=True) if h is not None}

    async def _healthz(self) -> Response:
        """healthy / degraded (HTTP 200) or down (503): nothing up but the gateway itself."""
        reply = Reply()
        status = await self._ask(reply, SUPERVISOR, "status")
        if not supervisor_status_ok(status):
            status = None
        if status is not None:
            states = {
                s["name"]: s["state"] if s["state"] != "running" else s["health"] or "starting"
                for s in status["services"]
            }
            up = [
                s
                for s in status["services"]
                if s["name"] != self.name and s["state"] == "running" and s["health"] in UP
            ]
            overall = "down" if not up else ("healthy" if status["overall"] == "healthy" else "degraded")
        else:
            healths = await self._healths(reply)
            states = {name: healths[name]["status"] if name in healths else "down" for name in start_order()}
            states[SUPERVISOR] = "down"
            others_up = any(h["status"] in UP for name, h in healths.items() if name != self.name)
            overall = "degraded" if others_up else "down"
        return json_answer({"status": overall, "services": states}, 503 if overall == "down" else 200)

    # ---- the API: one method per route in gateway_routes.ROUTES ------------------------------------

    async def api_status(self, reply: Reply) -> None:
        reply.data = await self._ask(reply, SUPERVISOR, "status")

    async def api_health(self, reply: Reply) -> None:
        reply.data = await self._healths(reply)

    async def api_market_status(self, reply: Reply) -> None:
        reply.data = await self._ask(reply, "scheduler", "get_market_status")

    async def api_quotes(self, reply: Reply) -> None:
        symbols = self.settings.symbols
        quotes = await asyncio.gather(
            *(self._ask(reply, "market-data", "get_quote", key=s, symbol=s) for s in symbols)
        )
        if "market-data" not in reply.down:
            reply.data = {s: q for s, q in zip(symbols, quotes, strict=True) if q is not None}

    async def api_market_data(self, reply: Reply, symbol: str) -> None:
        await self._one(reply, _route("market_data"), "get_market_data", symbol=symbol)

    async def api_predictions(self, reply: Reply, limit: int, symbol: str | None) -> None:
        await self._one(reply, _route("predictions"), "get_recent_predictions", limit=limit, symbol=symbol)

    async def api_prediction(self, reply: Reply, prediction_id: str) -> None:
        await self._one(reply, _route("prediction"), "get_prediction", prediction_id=prediction_id)

    async def api_portfolio(self, reply: Reply) -> None:
        reply.data = await self._ask(reply, "paper-trading", "get_portfolio_status")

    async def api_positions(self, reply: Reply) -> None:
        reply.data = await self._ask(reply, "paper-trading", "get_positions")

    async def api_trades(self, reply: Reply, limit: int, symbol: str | None) -> None:
        await self._one(reply, _route("trades"), "get_trade_history", limit=limit, symbol=symbol)

    async def api_performance(self, reply: Reply, period: str) -> None:
        await self._one(reply, _route("performance"), "get_trading_performance", period=period)

    async def api_tasks(self, reply: Reply) -> None:
        reply.data = await self._ask(reply, "scheduler", "list_tasks")

    async def api_alerts(self, reply: Reply, limit: int, kind: str | None) -> None:
        await self._one(reply, _route("alerts"), "list_alerts", limit=limit, kind=kind)

    async def api_replays(self, reply: Reply) -> None:
        reply.data = await asyncio.to_thread(list_replays, self.settings.data_dir / "replays")

    async def api_replay(self, reply: Reply, name: str) -> None:
        report = await asyncio.to_thread(read_replay, self.settings.data_dir / "replays", name)
        if report is None:
            raise HttpProblem(404, "not found", detail=f"no replay report {name!r}")
        reply.data = report

    async def api_replay_image(self, name: str, file: str) -> Response:
        image = await asyncio.to_thread(read_replay_image, self.settings.data_dir / "replays", name, file)
        if image is None:
            raise HttpProblem(404, "not found", detail=f"no PNG {file!r} in replay {name!r}")
        return Response(
            image,
            headers={
                "Content-Type": "image/png",
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache",
            },
        )

    async def api_equity(self, reply: Reply, days: int) -> None:
        await self._one(reply, _route("equity"), "get_equity_history", days=days)

    # ---- calls that change state (TRADING_GATEWAY_WRITE) ------------------------------------------

    async def api_place_trade(self, reply: Reply, symbol: str, action: str, quantity: int) -> None:
        await self._write(
            reply, _route("place_trade"), "execute_trade", symbol=symbol, action=action, quantity=quantity
        )

    async def api_restart_service(self, reply: Reply, service: str) -> None:
        await self._write(reply, _route("restart_service"), "restart_service", service=service)

    async def api_run_task(self, reply: Reply, task_id: str, ignore_dependencies: bool) -> None:
        await self._write(
            reply, _route("run_task"), "execute_task", task_id=task_id, wait=False,
            ignore_dependencies=ignore_dependencies,
        )  # fmt: skip

    # ---- /metrics --------------------------------------------------------------------------------

    async def _metrics_text(self) -> str:
        started = time.perf_counter()
        reply = Reply()
        names = (*start_order(), SUPERVISOR)

        status, healths, metrics, portfolio, positions, buy_rate, performance, dead, quotes = await asyncio.gather(
            self._ask(reply, SUPERVISOR, "status"),
            asyncio.gather(*(self._ask(reply, n, "health") for n in names)),
            asyncio.gather(*(self._ask(reply, n, "metrics") for n in names)),
            self._ask(reply, "paper-trading", "get_portfolio_status"),
            self._ask(reply, "paper-trading", "get_positions"),
            self._ask(reply, "prediction", "get_buy_rate"),
            self._ask(reply, "paper-trading", "get_trading_performance", period="all"),
            self._dead_letters(),
            asyncio.gather(*(self._ask(reply, "market-data", "get_quote", key=s, symbol=s) for s in self.settings.symbols)),
        )  # fmt: skip
        health = dict(zip(names, healths, strict=True))
        now = self.clock.now()
        scrape = Scrape(
            services=names,
            status=status,
            health=health,
            metrics=dict(zip(names, metrics, strict=True)),
            cpu_seconds=cpu_seconds({n: h.get("pid") for n, h in health.items() if h}),
            dead_letters=dead,
            portfolio=portfolio,
            open_positions=len(positions["positions"]) if positions and "positions" in positions else None,
            buy_rate=buy_rate,
            trades=(performance or {}).get("number_of_trades"),
            quote_age_s=quote_ages(self.settings.symbols, quotes, now),
            scrape_s=round(time.perf_counter() - started, 6),
        )  # fmt: skip
        return exposition(scrape)

    async def _dead_letters(self) -> dict[str, int] | None:
        if self.bus is None or not self.bus.connected:
            return None
        try:
            return await asyncio.wait_for(self.bus.dead_letter_sizes(), self.knobs.rpc_timeout_s)
        except (TimeoutError, ConnectionError, OSError):
            return None
        except Exception:  # a Redis error: the figure is left out, the scrape goes on
            self.log.warning("dead-letter sizes unavailable", exc_info=True)
            return None


def supervisor_status_ok(status: Any) -> bool:
    """The supervisor's `status` has the fields /healthz reads (else it is treated as silent)."""
    if not isinstance(status, dict) or not isinstance(status.get("services"), list):
        return False
    return all(isinstance(s, dict) and {"name", "state", "health"} <= s.keys() for s in status["services"])


def method_not_allowed(allowed: tuple[str, ...]) -> HttpProblem:
    problem = HttpProblem(405, "method not allowed", detail=f"this path answers {', '.join(allowed)}")
    problem.headers = {"Allow": ", ".join(allowed)}  # type: ignore[attr-defined]  # RFC 9110
    return problem


async def json_body(request: Request) -> Any:
    """The request's JSON body ({} when empty); BadQuery `body` when it is not JSON."""
    raw = await request.read()  # bounded by max_request_bytes (HttpError 413 past it)
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadQuery("body", f"is not JSON: {exc}") from None


def write_problem(service: str, error: dict, *, may_be_missing: bool) -> HttpProblem:
    """The HTTP answer to a write's JSON-RPC error: -32602 is 400 naming the param, -32006 404,
    a refusal (risk rule, market closed, task running) 409 with its reason and data, a service
    that cannot act now 503; anything else (a bug there) 502 with its message."""
    code, message, data = error["code"], error["message"], error.get("data") or {}
    if code == INVALID_PARAMS:
        return HttpProblem(400, "invalid parameter", param=str(data.get("param", "")), detail=message)
    if code == NOT_FOUND and may_be_missing:
        return HttpProblem(404, "not found", detail=message)
    status = WRITE_ERROR_STATUS.get(code, 502)
    problem = HttpProblem(
        status,
        {409: "refused", 503: "unavailable"}.get(status, "service error"),
        service=service,
        detail=message,
    )
    problem.body |= {"code": code, "data": data}
    return problem


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext | None:
    """None (plain HTTP) when neither is set; a server context (TLS 1.2 and up) when both load."""
    if not cert_file and not key_file:
        return None
    if not (cert_file and key_file):
        raise ConfigError(
            "TRADING_GATEWAY_TLS_CERT_FILE and TRADING_GATEWAY_TLS_KEY_FILE go together: set both"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"TRADING_GATEWAY_TLS_CERT_FILE/_KEY_FILE: cannot load {cert_file} with {key_file}: {reason}"
        ) from None
    return context


def _route(name: str) -> Route:
    from services.gateway.gateway_routes import BY_NAME

    return BY_NAME[name]


def cpu_seconds(pids: dict[str, Any]) -> dict[str, float]:
    """User + system CPU seconds of each service's process (psutil), for those still there."""
    import psutil

    found = {}
    for name, pid in pids.items():
        if not isinstance(pid, int):
            continue
        try:
            times = psutil.Process(pid).cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found[name] = round(times.user + times.system, 3)
    return found


def quote_ages(symbols, quotes, now: datetime) -> dict[str, float]:
    """Seconds from each quote's own time to the suite's now."""
    ages = {}
    for symbol, quote in zip(symbols, quotes, strict=True):
        if isinstance(quote, dict) and quote.get("quote_time"):
            try:
                ages[symbol] = round((now - datetime.fromisoformat(quote["quote_time"])).total_seconds(), 3)
            except (TypeError, ValueError):
                continue
    return ages


def list_replays(root: Path) -> list[dict]:
    """Each replay folder with a report.json, newest first: its name, files and headline figures."""
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        report = folder / "report.json"
        if folder.name.startswith(".") or not report.is_file():
            continue
        summary = read_replay(root, folder.name) or {}
        found.append(
            {
                "name": folder.name,
                "modified": datetime.fromtimestamp(report.stat().st_mtime).astimezone().isoformat(),
                "files": sorted(p.name for p in folder.iterdir() if p.is_file()),
                "summary": {
                    k: v for k, v in summary.items() if isinstance(v, (str, int, float, bool)) or v is None
                },
            }
        )
    return sorted(found, key=lambda r: r["modified"], reverse=True)


def read_replay_image(root: Path, name: str, file: str) -> bytes | None:
    """A PNG from one replay's folder; None (404) unless `file` is a plain name ending .png whose
    real path (symlinks resolved) is inside `root`, a regular file within REPLAY_IMAGE_MAX_BYTES
    that starts with the PNG signature."""
    if not (plain_name(name) and plain_name(file) and file.lower().endswith(".png")):
        return None
    try:
        real_root = root.resolve(strict=True)
        real = (root / name / file).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL byte
        return None
    if not real.is_relative_to(real_root) or real == real_root:
        return None
    try:
        # O_NOFOLLOW: a symlink swapped in after the check is refused, not followed.
        descriptor = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (OSError, ValueError):
        return None
    with os.fdopen(descriptor, "rb") as handle:
        stat = os.fstat(handle.fileno())
        if not S_ISREG(stat.st_mode) or stat.st_size > REPLAY_IMAGE_MAX_BYTES:
            return None
        content = handle.read(REPLAY_IMAGE_MAX_BYTES + 1)
    return content if content.startswith(PNG_SIGNATURE) and len(content) <= REPLAY_IMAGE_MAX_BYTES else None


def plain_name(name: str) -> bool:
    """One path component that is not hidden, `..`, or made of separators or NUL."""
    return (
        bool(name)
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
        and name == Path(name).name
    )


def read_replay(root: Path, name: str) -> dict | None:
    """One replay's report.json; None when there is none (or the name leaves the folder)."""
    if not plain_name(name):
        return None
    path = root / name / "report.json"
    try:
        if not path.is_file() or path.stat().st_size > REPLAY_REPORT_MAX_BYTES:
            return None
        report = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return report if isinstance(report, dict) else {"report": report}


if __name__ == "__main__":
    run_service(GatewayService)
