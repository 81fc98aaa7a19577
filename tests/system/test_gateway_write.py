"""The gateway's state-changing calls with TRADING_GATEWAY_WRITE=true, in a real suite whose clock is
in a trading session: a manual paper trade goes through paper-trading's own RPC and risk gate (a
trade a rule refuses is 409 with the rule), a scheduled task runs now, a service restarts. Off by
default: test_gateway.py checks the 403. Schemathesis generates manual trades and task runs (not
restarts: they would stop the services under the other tests) and finds no 5xx and no reply off the
schema."""

from __future__ import annotations

import socket

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from services.base.base_service import VERSION
from services.base.config import DEFAULT_SYMBOLS
from services.gateway.gateway_routes import openapi_document
from tests.support import SuiteDirs, rpc_call_sync
from tests.system._gateway_helpers import gateway_client, gateway_desk, token_unless_the_case_breaks_it
from tests.system.test_manager import wait_for_service

pytestmark = pytest.mark.slow

TOKEN = "write-token-0123456789abcdef"


@pytest.fixture(scope="module")
def desk():
    with gateway_desk("tgw-", TOKEN, TRADING_GATEWAY_WRITE="true") as dirs:
        yield dirs


@pytest.fixture(scope="module")
def http(desk: SuiteDirs):
    with gateway_client(desk, TOKEN) as client:
        yield client


def test_a_manual_trade_is_placed_through_paper_tradings_rpc(http, desk):
    assert rpc_call_sync(desk.socket("gateway"), "health")["write_enabled"] is True
    held_before = wbc_shares(desk)
    answer = http.post("/api/trades", json={"symbol": "WBC.AX", "action": "BUY", "quantity": 2})
    assert answer.status_code == 200, answer.text
    trade = answer.json()["data"]
    assert (trade["symbol"], trade["action"], trade["quantity"], trade["reason"]) == (
        "WBC.AX",
        "BUY",
        2,
        "manual",
    )
    assert trade["prediction_id"] is None
    listed = http.get("/api/trades").json()["data"]["trades"]
    assert trade["trade_id"] in {t["trade_id"] for t in listed}
    assert wbc_shares(desk) == held_before + 2  # in paper-trading's own book


def wbc_shares(desk: SuiteDirs) -> int:
    positions = rpc_call_sync(desk.socket("paper-trading"), "get_positions")["positions"]
    return sum(p["quantity"] for p in positions if p["symbol"] == "WBC.AX")


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        ({"symbol": "CBA.AX", "action": "BUY", "quantity": 10_000}, "position_size"),  # far over 5% of equity
        ({"symbol": "NAB.AX", "action": "SELL", "quantity": 1}, "no_short_selling"),  # none held
    ],
)
def test_a_trade_the_risk_rules_refuse_is_409_with_the_rule(http, body, rule):
    before = http.get("/api/trades").json()["data"]["count"]
    answer = http.post("/api/trades", json=body)
    assert answer.status_code == 409, answer.text
    refusal = answer.json()
    assert (refusal["error"], refusal["code"], refusal["service"]) == ("refused", -32003, "paper-trading")
    assert refusal["data"]["rule"] == rule and rule in refusal["detail"]
    assert http.get("/api/trades").json()["data"]["count"] == before  # nothing booked


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (b'{"symbol": "CBA.AX", "action": "BUY"}', "quantity"),
        (b'{"symbol": "CBA.AX", "action": "BUY", "quantity": 1, "price": 1}', "price"),
        (b'{"symbol": "BHP.AX", "action": "BUY", "quantity": 1}', "symbol"),
        (b'{"symbol": "CBA.AX", "action": "BUY", "quantity": "1"}', "quantity"),
        (b"[1, 2]", "body"),
        (b"symbol=CBA.AX", "body"),  # not JSON
    ],
)
def test_a_bad_trade_body_is_400_naming_the_field(http, content, param):
    answer = http.post("/api/trades", content=content, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid parameter" and answer.json()["param"] == param


def test_a_body_whose_chunked_framing_is_broken_is_400_and_the_gateway_serves_on(http):
    """Found by fuzzing the HTTP server: a chunk size that is no number was a 500."""
    url = httpx.URL(str(http.base_url))
    head = f"POST /api/trades HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    head += "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection((url.host, url.port or 80), timeout=30) as conn:
        conn.sendall(head.encode() + b"2\r\n{}\r\nzz\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and answer.endswith(
        b'{"error":"bad request"}'
    ), answer
    assert http.get("/healthz").status_code in (200, 503)


def test_a_scheduled_task_runs_now(http, desk):
    tasks = http.get("/api/tasks").json()["data"]
    task = next(t for t in tasks if t["name"] == "market_monitoring")
    answer = http.post(f"/api/tasks/{task['task_id']}/run", json={"ignore_dependencies": True})
    assert answer.status_code == 200, answer.text
    run = answer.json()["data"]
    assert run["task_id"] == task["task_id"] and run["status"] == "running" and run["run_id"]
    history = rpc_call_sync(desk.socket("scheduler"), "get_task_history", {"task_id": task["task_id"]})
    assert run["run_id"] in {r["run_id"] for r in history["runs"]}
    missing = http.post("/api/tasks/no-such-task/run")
    assert missing.status_code == 404 and missing.json()["error"] == "not found"


def test_a_service_restarts_and_the_gateway_will_not_restart_itself(http, desk):
    before = wait_for_service(desk, "alerts", lambda r: r["state"] == "running")
    answer = http.post("/api/services/alerts/restart")
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"restarting": ["alerts"]}
    wait_for_service(desk, "alerts", lambda r: r["state"] == "running" and r["pid"] != before["pid"], 60)
    itself = http.post("/api/services/gateway/restart")
    assert itself.status_code == 400 and itself.json()["param"] == "service"


WRITES = schemathesis.openapi.from_dict(openapi_document(DEFAULT_SYMBOLS, VERSION)).include(
    operation_id=["place_trade", "run_task"]
)


@pytest.fixture(scope="module")
def gateway_url(http: httpx.Client) -> str:
    return str(http.base_url).rstrip("/")


@WRITES.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_writes_find_no_5xx_and_no_reply_off_the_schema(case, gateway_url):
    case.call_and_validate(base_url=gateway_url, headers=token_unless_the_case_breaks_it(case, TOKEN))
