"""The HTTP gateway in a real suite started by `service_manager.py start` (real processes, real
Redis, synthetic market data, models for one bank), over real HTTP: bearer auth, every API route,
bad parameters, the replay PNGs confined to their folder, the state-changing calls refused while
TRADING_GATEWAY_WRITE is off (test_gateway_write.py has them on), /openapi.json, /metrics read back
with Prometheus's own parser, a service that is down, and a bind address that is taken."""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client.parser import text_string_to_metric_families

from services.base.base_service import VERSION
from services.base.config import DEFAULT_SYMBOLS
from services.domain.supervision import start_order
from services.gateway.gateway_routes import ROUTES, openapi_document
from tests.support import (
    REPO,
    Processes,
    SuiteDirs,
    manager_cli,
    png_bytes,
    rpc_call_sync,
    wait_until,
)
from tests.system._gateway_helpers import gateway_client, gateway_desk, token_unless_the_case_breaks_it
from tests.system.test_manager import FAST_TIMERS, wait_for_service

pytestmark = pytest.mark.slow

TOKEN = "test-token-0123456789abcdef"
TRAINED = "CBA.AX"


@pytest.fixture(scope="module")
def desk(synthetic_models: Path):
    with gateway_desk("tg-", TOKEN, models=synthetic_models, symbols=[TRAINED]) as dirs:
        yield dirs


@pytest.fixture(scope="module")
def http(desk: SuiteDirs):
    with gateway_client(desk, TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def anonymous(http: httpx.Client):
    with httpx.Client(base_url=http.base_url, timeout=30) as client:
        yield client


def api(http: httpx.Client, path: str, **query) -> dict:
    answer = http.get(path, params=query)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"data", "down", "errors"}
    return body


# ---- auth and the shape of answers ---------------------------------------------------------------


def test_healthz_needs_no_token_and_names_every_service(anonymous):
    answer = anonymous.get("/healthz")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] in ("healthy", "degraded")
    assert set(body["services"]) == set(start_order())


@pytest.mark.parametrize(
    "path", ["/api/portfolio", "/metrics", "/openapi.json", "/no/such/path", "/api/trades"]
)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-0123456789ab",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        "Bearer",
        f"bearer{TOKEN}",
    ],
)
def test_no_or_a_wrong_token_is_401_without_detail(anonymous, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    answer = anonymous.get(path, headers=headers)
    assert answer.status_code == 401
    assert answer.json() == {"error": "unauthorized"}  # nothing on which part was wrong
    assert answer.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("path", "kind"), [("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css")]
)
def test_the_web_view_shell_is_served_without_a_token_and_holds_no_data(anonymous, path, kind):
    answer = anonymous.get(path)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert "100000" not in answer.text and TOKEN not in answer.text


def test_the_token_in_the_url_is_not_accepted(anonymous):
    assert anonymous.get("/api/portfolio", params={"token": TOKEN}).status_code == 401


def test_unknown_path_is_404_json(http):
    answer = http.get("/api/nothing-here")
    assert answer.status_code == 404 and answer.json() == {"error": "not found"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/trades", {"symbol": "CBA.AX", "action": "BUY", "quantity": 1}),
        ("/api/services/alerts/restart", None),
        ("/api/tasks/any-task/run", {}),
    ],
)
def test_state_changing_calls_are_403_while_the_write_knob_is_off(http, anonymous, path, body):
    answer = http.post(path, json=body)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "state-changing calls are disabled"
    assert "TRADING_GATEWAY_WRITE" in answer.json()["detail"]
    assert anonymous.post(path, json=body).status_code == 401  # the token is checked first
    assert api(http, "/api/trades")["data"]["trades"] == []


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/trades", "GET, HEAD, POST"),
        ("POST", "/api/portfolio", "GET, HEAD"),
        ("PUT", "/metrics", "GET, HEAD"),
        ("GET", "/api/services/alerts/restart", "POST"),
    ],
)
def test_a_method_a_path_does_not_serve_is_405_saying_which_it_does(http, method, path, allow):
    answer = http.request(method, path)
    assert answer.status_code == 405 and answer.headers["Allow"] == allow
    assert answer.json()["error"] == "method not allowed"


# ---- the API ---------------------------------------------------------------------------------------------


def test_status_health_market_and_tasks(http):
    status = api(http, "/api/status")["data"]
    assert {s["name"] for s in status["services"]} == set(start_order())
    health = api(http, "/api/health")
    assert set(health["data"]) == set(start_order()) and health["down"] == {}
    assert health["data"]["gateway"]["url"] == str(http.base_url).rstrip("/")
    assert health["data"]["gateway"]["write_enabled"] is False  # the default
    market = api(http, "/api/market/status")["data"]
    assert market["phase"] in ("pre_market", "open", "post_market", "closed")
    tasks = api(http, "/api/tasks")["data"]
    assert "market_monitoring" in {t["name"] for t in tasks}


def test_quotes_and_market_data(http):
    quotes = api(http, "/api/quotes")["data"]
    assert set(quotes) == {"CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX"}
    assert all(q["source"] == "synthetic" and q["price"] > 0 for q in quotes.values())
    data = api(http, "/api/market/NAB.AX")["data"]
    assert data["symbol"] == "NAB.AX" and data["technical"]["rsi"] is not None


def test_predictions_list_and_one_with_its_inputs(http, desk):
    made = rpc_call_sync(desk.socket("prediction"), "generate_single_prediction", {"symbol": TRAINED}, 60)
    listed = api(http, "/api/predictions", limit=5, symbol=TRAINED)["data"]
    assert made["prediction_id"] in {p["prediction_id"] for p in listed["predictions"]}
    one = api(http, f"/api/predictions/{made['prediction_id']}")["data"]
    assert one["signal"] == made["signal"] and one["inputs"]["thresholds"]
    missing = http.get("/api/predictions/no-such-prediction")
    assert missing.status_code == 404 and missing.json()["error"] == "not found"


def test_portfolio_positions_trades_performance_alerts(http):
    portfolio = api(http, "/api/portfolio")["data"]
    assert portfolio["cash"] == portfolio["equity"] == 100000
    assert api(http, "/api/positions")["data"]["positions"] == []
    assert api(http, "/api/trades", limit=10)["data"]["trades"] == []
    performance = api(http, "/api/performance", period="week")["data"]
    assert performance["number_of_trades"] == 0 and performance["period"] == "week"
    alerts = api(http, "/api/alerts", limit=5)["data"]
    assert "alerts" in alerts


def test_replay_reports_on_disk(http, desk):
    folder = desk.data_dir / "replays" / "2019-06-03_2019-06-07"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_bytes(
        orjson.dumps({"first": "2019-06-03", "sharpe": 1.25, "trades": [1, 2]})
    )
    (folder / "equity.png").write_bytes(b"\x89PNG")
    listed = api(http, "/api/replays")["data"]
    assert listed[0]["name"] == folder.name and "equity.png" in listed[0]["files"]
    assert listed[0]["summary"] == {"first": "2019-06-03", "sharpe": 1.25}  # scalars only
    assert api(http, f"/api/replays/{folder.name}")["data"]["trades"] == [1, 2]
    for name in ("nope", "..", ".hidden", "%2e%2e"):
        assert http.get(f"/api/replays/{name}").status_code == 404


def test_a_replays_png_is_served_with_the_token_and_nothing_outside_the_folder(http, anonymous, desk):
    folder = desk.data_dir / "replays" / "2019-07-01_2019-07-05"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_bytes(b"{}")
    png = png_bytes(8, 4, (30, 120, 200))
    (folder / "equity.png").write_bytes(png)
    (folder / "notes.png").write_bytes(b"not a png at all")
    secret = desk.data_dir / "secret.png"
    secret.write_bytes(png)
    (folder / "linked.png").symlink_to(secret)
    answer = http.get(f"/api/replays/{folder.name}/equity.png")
    assert answer.status_code == 200 and answer.content == png
    assert (
        answer.headers["content-type"] == "image/png"
        and answer.headers["X-Content-Type-Options"] == "nosniff"
    )
    assert anonymous.get(f"/api/replays/{folder.name}/equity.png").status_code == 401
    for path in (
        f"/api/replays/{folder.name}/linked.png",  # a symlink out of the reports folder
        f"/api/replays/{folder.name}/notes.png",  # not a PNG, whatever its name
        f"/api/replays/{folder.name}/report.json",
        f"/api/replays/{folder.name}/%2e%2e%2fsecret.png",
        "/api/replays/..%2f/secret.png",
        "/api/replays/../secret.png",
        f"/api/replays/{folder.name}/missing.png",
    ):
        refused = http.get(path)
        assert refused.status_code == 404 and refused.json()["error"] == "not found", path


def test_the_equity_history_ends_with_the_equity_now(http):
    body = api(http, "/api/equity", days=30)["data"]
    assert body["days"] == 30 and body["starting_capital"] == 100000
    assert body["points"][-1]["day"] == "2024-06-18" and body["points"][-1]["equity"] == 100000
    assert api(http, "/api/equity")["data"]["days"] == 90  # the default


@pytest.mark.parametrize(
    ("path", "query", "param"),
    [
        ("/api/trades", {"limit": "0"}, "limit"),
        ("/api/trades", {"limit": "abc"}, "limit"),
        ("/api/trades", {"limit": "501"}, "limit"),
        ("/api/trades", {"symbol": "XYZ.AX"}, "symbol"),
        ("/api/predictions", {"unknown": "1"}, "unknown"),
        ("/api/performance", {"period": "year"}, "period"),
        ("/api/market/XYZ.AX", {}, "symbol"),
        ("/api/portfolio", {"limit": "1"}, "limit"),  # no params at all there
        ("/api/alerts", {"kind": "no_such_kind"}, "kind"),
        ("/api/equity", {"days": "0"}, "days"),
        ("/api/equity", {"days": "3661"}, "days"),
    ],
)
def test_bad_parameters_are_400_naming_them(http, path, query, param):
    answer = http.get(path, params=query)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == "invalid parameter" and body["param"] == param and body["detail"]


def test_a_repeated_parameter_is_400(http):
    answer = http.get("/api/trades?limit=1&limit=2")
    assert answer.status_code == 400 and answer.json()["param"] == "limit"


def test_an_oversized_header_is_refused_and_the_gateway_serves_on(http):
    answer = http.get("/api/portfolio", headers={"X-Big": "x" * 20000})
    assert 400 <= answer.status_code < 500
    assert api(http, "/api/portfolio")["data"]["equity"] > 0


def test_an_oversized_body_is_413_unread(http):
    answer = http.request("GET", "/api/portfolio", content=b"x" * 200_000)
    assert answer.status_code == 413 and answer.json() == {"error": "request body too large"}
    assert api(http, "/api/portfolio")["data"]["equity"] > 0


# ---- OpenAPI and /metrics ---------------------------------------------------------------------------


def test_openapi_lists_every_route_with_its_parameters(http):
    document = http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert operation["operationId"] == route.name
        assert {p["name"] for p in operation["parameters"]} == {
            p.name for p in (*route.query, *route.path_params)
        }
    assert document["paths"]["/healthz"]["get"]["security"] == []
    trades = document["paths"]["/api/trades"]["get"]["parameters"]
    assert next(p for p in trades if p["name"] == "symbol")["schema"]["enum"] == [
        "CBA.AX",
        "WBC.AX",
        "ANZ.AX",
        "NAB.AX",
    ]


def metric_families(http: httpx.Client) -> dict:
    answer = http.get("/metrics")
    assert (
        answer.status_code == 200
        and answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    )
    return {family.name: family for family in text_string_to_metric_families(answer.text)}


def samples(families: dict, name: str, sample_name: str | None = None) -> dict:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in families[name].samples
        if s.name == (sample_name or name)
    }


def test_metrics_parse_and_follow_the_naming_rules(http, desk):
    rpc_call_sync(desk.socket("market-data"), "get_quote", {"symbol": "ANZ.AX"})
    families = metric_families(http)
    for family in families.values():
        assert re.fullmatch(r"trading_[a-z_]+", family.name), family.name
        assert family.documentation
        if family.type == "counter":  # the parser strips _total from a counter family's name
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
    names = (*start_order(), "manager")
    assert samples(families, "trading_service_up") == {(("service", n),): 1.0 for n in names}
    assert set(samples(families, "trading_service_restarts", "trading_service_restarts_total")) == {
        (("service", n),) for n in start_order()
    }
    healthy = samples(families, "trading_service_health_state")
    assert sum(v for k, v in healthy.items() if ("service", "market-data") in k) == 1
    assert all(v > 0 for v in samples(families, "trading_service_memory_rss_bytes").values())
    assert len(samples(families, "trading_service_cpu_seconds", "trading_service_cpu_seconds_total")) == len(
        names
    )
    requests = samples(families, "trading_rpc_requests", "trading_rpc_requests_total")
    assert requests[(("method", "get_quote"), ("service", "market-data"))] >= 1
    buckets = samples(families, "trading_rpc_latency_seconds", "trading_rpc_latency_seconds_bucket")
    inf = buckets[(("le", "+Inf"), ("method", "get_quote"), ("service", "market-data"))]
    count = samples(families, "trading_rpc_latency_seconds", "trading_rpc_latency_seconds_count")
    assert inf == count[(("method", "get_quote"), ("service", "market-data"))]
    assert samples(families, "trading_desk_equity_aud") == {(): 100000.0}
    assert samples(families, "trading_desk_cash_aud") == {(): 100000.0}
    assert samples(families, "trading_desk_open_positions") == {(): 0.0}
    assert samples(families, "trading_desk_exposure_ratio") == {(): 0.0}
    assert samples(families, "trading_desk_day_pnl_aud") == {(): 0.0}
    assert samples(families, "trading_desk_trading_halted") == {(): 0.0}
    (buy_rate,) = samples(families, "trading_desk_buy_rate_ratio").values()
    assert 0.0 <= buy_rate <= 1.0
    assert samples(families, "trading_desk_trades", "trading_desk_trades_total") == {(): 0.0}
    by_signal = samples(families, "trading_desk_predictions", "trading_desk_predictions_total")
    assert {k[0][1] for k in by_signal} == {"BUY", "HOLD", "SELL"}
    ages = samples(families, "trading_desk_quote_age_seconds")
    assert {k[0][1] for k in ages} == {"CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX"}
    assert (("event_type", "prediction_generated"),) in samples(families, "trading_dead_letter_events")
    for name in ("trading_events_published_total", "trading_events_received_total", "trading_outbox_events"):
        assert name.removesuffix("_total") in families
    # The RPC server's bounds (issue 19): connections open, accepted, and closed or refused by reason.
    assert samples(families, "trading_rpc_connections_open")[(("service", "market-data"),)] >= 1
    accepted = samples(families, "trading_rpc_connections_accepted", "trading_rpc_connections_accepted_total")
    assert accepted[(("service", "market-data"),)] >= 1
    closed = samples(families, "trading_rpc_connections_refused", "trading_rpc_connections_refused_total")
    assert {k for k in closed if ("service", "market-data") in k} == {
        (("reason", r), ("service", "market-data")) for r in ("idle", "over_limit", "peer_uid")
    }
    assert all(v == 0 for v in closed.values())
    frames = samples(families, "trading_rpc_frames_refused", "trading_rpc_frames_refused_total")
    assert {k[0] for k in frames} == {("reason", "batch_too_big"), ("reason", "too_big")}


# ---- a service down ------------------------------------------------------------------------------------


def test_a_stopped_service_shows_down_and_the_rest_is_served(http, anonymous, desk):
    stopped = manager_cli(desk, "stop", "alerts")
    assert stopped.returncode == 0, stopped.stderr
    try:
        body = api(http, "/api/alerts")
        assert body["data"] is None and "alerts" in body["down"]
        health = api(http, "/api/health")
        assert "alerts" in health["down"] and "market-data" in health["data"]
        assert api(http, "/api/portfolio")["data"]["equity"] > 0
        families = metric_families(http)
        assert samples(families, "trading_service_up")[(("service", "alerts"),)] == 0
        healthz = anonymous.get("/healthz")
        assert healthz.status_code == 200 and healthz.json()["services"]["alerts"] == "stopped"
    finally:
        started = manager_cli(desk, "start", "alerts")
        assert started.returncode == 0, started.stderr


# ---- the bind address in use ----------------------------------------------------------------------------


@pytest.fixture
def taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_taken_address_exits_with_one_line_naming_it(suite, taken_port):
    # As the supervisor runs it (TRADING_SUPERVISED: only warnings on stderr, not the INFO lines).
    env = {**suite.env, "TRADING_GATEWAY_BIND": f"127.0.0.1:{taken_port}", "TRADING_SUPERVISED": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "services/gateway/gateway_service.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{taken_port}" in lines[0] and "TRADING_GATEWAY_BIND" in lines[0]
    assert lines[0].endswith("Address already in use")


def test_the_supervisor_marks_it_fatal_and_the_rest_runs_on(taken_port):
    with Processes() as processes:
        dirs = processes.suite(
            processes.suite_dirs(
                "tgb-",
                **FAST_TIMERS,
                TRADING_GATEWAY_BIND=f"127.0.0.1:{taken_port}",
                TRADING_MANAGER_MAX_FAILURES="3",
            )
        )
        started = manager_cli(dirs, "start", "alerts", "gateway", "--timeout", "120")
        assert started.returncode == 1
        row = wait_for_service(dirs, "gateway", lambda r: r["state"] == "fatal", 120)
        assert "exited during start-up (code 2)" in row["reason"]
        last = (dirs.log_dir / "gateway.stdout.log").read_text().strip().splitlines()[-1]
        assert f"cannot listen on 127.0.0.1:{taken_port}: Address already in use" in last
        alerts = wait_for_service(dirs, "alerts", lambda r: r["state"] == "running", 60)
        assert alerts["health"] in ("healthy", "degraded")
        wait_until(
            lambda: rpc_call_sync(dirs.socket("alerts"), "health")["status"], 30, what="alerts answers"
        )


# ---- alone: nothing else up, and a client asking too fast --------------------------------------------


def test_alone_it_says_the_suite_is_down_and_limits_each_client(suite, processes):
    gateway = processes.start(
        "gateway",
        suite,
        extra_env={
            "TRADING_GATEWAY_TOKEN": TOKEN,
            "TRADING_GATEWAY_RATE_LIMIT_PER_S": "0.1",
            "TRADING_GATEWAY_RATE_BURST": "3",
        },
    )
    url = rpc_call_sync(gateway.socket, "get_url")["url"]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        healthz = client.get("/healthz")
        assert healthz.status_code == 503 and healthz.json()["status"] == "down"
        assert healthz.json()["services"]["manager"] == "down"
        portfolio = client.get("/api/portfolio", headers=headers)
        assert portfolio.status_code == 200 and portfolio.json()["data"] is None
        assert "paper-trading" in portfolio.json()["down"]
        assert client.get("/metrics", headers=headers).status_code == 200
        limited = client.get("/api/portfolio", headers=headers)  # the fourth, past the burst of 3
        assert limited.status_code == 429 and limited.json() == {"error": "too many requests"}
        assert int(limited.headers["Retry-After"]) >= 1
        assert client.get("/api/portfolio", headers={"Authorization": "Bearer wrong"}).status_code == 429


# ---- slow requests: bounded in time as the RPC server bounds a partial frame ---------------------------


def closed_after(
    address: tuple[str, int], first: bytes, trickle: bytes, limit_s: float
) -> tuple[float, bytes]:
    """Send `first`, then `trickle` every 0.2 s (progress, however slow) until the gateway closes
    the connection: the seconds that took and what it answered; (limit_s, answer) if it did not."""
    started = time.monotonic()
    answer = b""
    with socket.create_connection(address, timeout=limit_s) as conn:
        if first:
            conn.sendall(first)
        conn.settimeout(0.2)
        while time.monotonic() - started < limit_s:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                if trickle:
                    with contextlib.suppress(OSError):
                        conn.sendall(trickle)
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
    return time.monotonic() - started, answer


def test_a_slow_request_is_closed_or_answered_503_in_bounded_time(suite, processes):
    """A connection that sends nothing, stops inside its request line, or trickles header lines
    is closed after TRADING_GATEWAY_IDLE_TIMEOUT_S; a body slower than
    TRADING_GATEWAY_REQUEST_TIMEOUT_S is answered 503 timeout. The gateway serves on."""
    gateway = processes.start(
        "gateway",
        suite,
        extra_env={
            "TRADING_GATEWAY_TOKEN": TOKEN,
            "TRADING_GATEWAY_IDLE_TIMEOUT_S": "1",
            "TRADING_GATEWAY_REQUEST_TIMEOUT_S": "2",
            "TRADING_GATEWAY_WRITE": "true",
        },
    )
    url = httpx.URL(rpc_call_sync(gateway.socket, "get_url")["url"])
    address = (url.host, url.port or 80)
    for first, trickle in (
        (b"", b""),
        (b"GET /api/portfolio HTT", b""),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n"),
    ):
        took, answer = closed_after(address, first, trickle, limit_s=30)
        assert answer == b"" and took < 20, (first, took, answer)  # 1 s, under any load
    head = f"POST /api/trades HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    head += "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    took, answer = closed_after(address, head.encode() + b"{", b" ", limit_s=6)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 503 Service Unavailable" and rest.endswith(b'{"error":"timeout"}'), (
        answer
    )
    with httpx.Client(base_url=str(url), timeout=30) as client:
        assert client.get("/healthz").status_code == 503  # alone: the suite is down, but it answers


# ---- schemathesis: generated requests against the running gateway ------------------------------------

SCHEMA = schemathesis.openapi.from_dict(openapi_document(DEFAULT_SYMBOLS, VERSION))


@pytest.fixture(scope="module")
def gateway_url(http: httpx.Client) -> str:
    return str(http.base_url).rstrip("/")


@SCHEMA.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_find_no_5xx_and_no_reply_off_the_schema(case, gateway_url):
    case.call_and_validate(base_url=gateway_url, headers=token_unless_the_case_breaks_it(case, TOKEN))


# ---- TLS from a certificate path ---------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by the openssl command."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


def test_tls_from_a_certificate_path(suite, processes, certificate):
    cert, key = certificate
    tls = {"TRADING_GATEWAY_TLS_CERT_FILE": str(cert), "TRADING_GATEWAY_TLS_KEY_FILE": str(key)}
    gateway = processes.start("gateway", suite, extra_env={"TRADING_GATEWAY_TOKEN": TOKEN, **tls})
    url = rpc_call_sync(gateway.socket, "get_url")["url"]
    assert url.startswith("https://127.0.0.1:")
    with httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=cert), timeout=30) as client:
        assert client.get("/healthz").status_code == 503  # nothing else runs: down, over TLS
        assert client.get("/api/portfolio").status_code == 401
        answer = client.get("/api/portfolio", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200 and "paper-trading" in answer.json()["down"]
    with pytest.raises(httpx.HTTPError):  # plain HTTP is not spoken on a TLS port
        httpx.get(url.replace("https://", "http://") + "/healthz", timeout=10)


@pytest.mark.parametrize(
    ("which", "words"),
    [
        ({"TRADING_GATEWAY_TLS_CERT_FILE": "cert"}, "go together"),
        (
            {"TRADING_GATEWAY_TLS_CERT_FILE": "/nonexistent.pem", "TRADING_GATEWAY_TLS_KEY_FILE": "key"},
            "cannot load",
        ),
        ({"TRADING_GATEWAY_TLS_CERT_FILE": "key", "TRADING_GATEWAY_TLS_KEY_FILE": "key"}, "cannot load"),
    ],
)
def test_a_bad_certificate_setting_exits_with_one_line(suite, certificate, which, words):
    cert, key = certificate
    paths = {"cert": str(cert), "key": str(key)}
    env = {**suite.env, "TRADING_SUPERVISED": "1", "TRADING_GATEWAY_BIND": "127.0.0.1:0"}
    env.update({k: paths.get(v, v) for k, v in which.items()})
    done = subprocess.run(
        [sys.executable, str(REPO / "services/gateway/gateway_service.py")],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and words in lines[0], done.stderr
