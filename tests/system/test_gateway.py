"""The HTTP gateway in a real suite started by `service_manager.py start` (real processes, real
Redis, synthetic market data, models for one bank), over real HTTP: bearer auth, every API route,
bad parameters, /openapi.json, /metrics read back with Prometheus's own parser, a service that is
down, and a bind address that is taken."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
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
from tests.support import REPO, Processes, SuiteDirs, install_models, manager_cli, rpc_call_sync, wait_until
from tests.system.test_manager import FAST_TIMERS, wait_for_service

pytestmark = pytest.mark.slow

TOKEN = "test-token-0123456789abcdef"
TRAINED = "CBA.AX"


@pytest.fixture(scope="module")
def desk(synthetic_models: Path):
    with Processes() as processes:
        dirs = processes.suite_dirs(
            "tg-",
            **FAST_TIMERS,
            TRADING_GATEWAY_TOKEN=TOKEN,
            # The tests ask faster than a browser would: the rate limit has its own test.
            TRADING_GATEWAY_RATE_BURST="100000",
            # In a session, whatever the wall clock says (quotes exist from 10:01 Sydney only).
            TRADING_CLOCK_START="2024-06-18T11:00:00+10:00",
        )
        install_models(synthetic_models, dirs.models_dir, [TRAINED])
        processes.start_suite(dirs)
        yield dirs


@pytest.fixture(scope="module")
def http(desk: SuiteDirs):
    url = rpc_call_sync(desk.socket("gateway"), "get_url")["url"]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
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


def test_writes_are_refused(http):
    answer = http.post("/api/trades", json={"symbol": "CBA.AX", "action": "BUY", "quantity": 1})
    assert answer.status_code == 405 and "read-only" in answer.json()["error"]


# ---- the API ---------------------------------------------------------------------------------------------


def test_status_health_market_and_tasks(http):
    status = api(http, "/api/status")["data"]
    assert {s["name"] for s in status["services"]} == set(start_order())
    health = api(http, "/api/health")
    assert set(health["data"]) == set(start_order()) and health["down"] == {}
    assert health["data"]["gateway"]["url"] == str(http.base_url).rstrip("/")
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
        operation = document["paths"][route.path]["get"]
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
    assert samples(families, "trading_desk_trades", "trading_desk_trades_total") == {(): 0.0}
    by_signal = samples(families, "trading_desk_predictions", "trading_desk_predictions_total")
    assert {k[0][1] for k in by_signal} == {"BUY", "HOLD", "SELL"}
    ages = samples(families, "trading_desk_quote_age_seconds")
    assert {k[0][1] for k in ages} == {"CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX"}
    assert (("event_type", "prediction_generated"),) in samples(families, "trading_dead_letter_events")
    for name in ("trading_events_published_total", "trading_events_received_total", "trading_outbox_events"):
        assert name.removesuffix("_total") in families


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


# ---- schemathesis: generated requests against the running gateway ------------------------------------

SCHEMA = schemathesis.openapi.from_dict(openapi_document(DEFAULT_SYMBOLS, VERSION))


@pytest.fixture(scope="module")
def gateway_url(http: httpx.Client) -> str:
    return str(http.base_url).rstrip("/")


@SCHEMA.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_find_no_5xx_and_no_reply_off_the_schema(case, gateway_url):
    case.call_and_validate(base_url=gateway_url, headers={"Authorization": f"Bearer {TOKEN}"})


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
