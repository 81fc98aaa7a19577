"""The gateway's pure parts: the token file, the bind address, query and body parameters against
the route table, the OpenAPI document from it, the replay PNG's confinement to the reports folder,
a write's RPC errors as HTTP answers, and the Prometheus text read back by the official parser."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.base import ConfigError, Settings
from services.gateway.gateway_knobs import parse_bind
from services.gateway.gateway_routes import (
    BY_NAME,
    ROUTES,
    BadQuery,
    WrongMethod,
    match,
    openapi_document,
    parse_body,
    parse_params,
    shape_problem,
)
from services.gateway.gateway_service import (
    PNG_SIGNATURE,
    read_replay_image,
    supervisor_status_ok,
    write_problem,
)
from services.gateway.gateway_token import ensure_token_file, gateway_token
from services.gateway.metrics_exposition import Scrape, exposition

SYMBOLS = ("CBA.AX", "WBC.AX")


def test_the_token_file_is_made_owner_only_once(tmp_path):
    path = tmp_path / "data" / "gateway.token"
    token = ensure_token_file(path)
    assert len(token) >= 40 and path.stat().st_mode & 0o777 == 0o600
    assert ensure_token_file(path) == token  # kept, not remade
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        ensure_token_file(path)


def test_the_environment_token_wins_and_must_be_long_enough(tmp_path):
    base = {"TRADING_DATA_DIR": str(tmp_path)}
    assert gateway_token(Settings.from_env({**base, "TRADING_GATEWAY_TOKEN": "x" * 20})) == "x" * 20
    assert not (tmp_path / "gateway.token").exists()
    with pytest.raises(ConfigError, match="at least 16"):
        gateway_token(Settings.from_env({**base, "TRADING_GATEWAY_TOKEN": "short"}))
    assert gateway_token(Settings.from_env(base)) == (tmp_path / "gateway.token").read_text().strip()


def test_set_ups_token_step_makes_the_file_once_and_leaves_a_given_token_alone(tmp_path):
    """What `setup_microservices.py --init-db` runs: `python -m services.gateway.gateway_token`."""
    import os
    import subprocess
    import sys

    from tests.support import REPO

    def set_up(**extra: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
        env.update(TRADING_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(REPO), **extra)
        return subprocess.run(
            [sys.executable, "-m", "services.gateway.gateway_token"],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    given = set_up(TRADING_GATEWAY_TOKEN="y" * 20)
    assert given.returncode == 0 and "TRADING_GATEWAY_TOKEN is set" in given.stdout
    assert not (tmp_path / "data" / "gateway.token").exists()
    made = set_up()
    path = tmp_path / "data" / "gateway.token"
    assert made.returncode == 0 and f"{path} (mode 0600)" in made.stdout, made.stderr
    token = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600 and token.strip() not in made.stdout + made.stderr
    assert set_up().returncode == 0 and path.read_text() == token  # run again: kept
    path.chmod(0o640)
    refused = set_up()
    assert refused.returncode == 1 and "chmod 600" in refused.stderr


@pytest.mark.parametrize(
    ("text", "bind"),
    [
        ("127.0.0.1:8780", ("127.0.0.1", 8780)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:8780", ("::1", 8780)),
        ("localhost:0", ("localhost", 0)),  # port 0: the kernel chooses (tests)
    ],
)
def test_bind_addresses(text, bind):
    assert parse_bind(text) == bind


@pytest.mark.parametrize(
    "text", ["8780", "127.0.0.1", "127.0.0.1:99999", "example.com:80", ":8780", "1.2.3.4:x"]
)
def test_bad_bind_addresses(text):
    with pytest.raises(ValueError):
        parse_bind(text)


def test_paths_match_their_routes():
    assert match("/api/trades")[0].name == "trades"
    assert match("/api/predictions/abc-123") == (BY_NAME["prediction"], {"prediction_id": "abc-123"})
    assert match("/api/market/status")[0].name == "market_status"  # before /api/market/{symbol}
    assert match("/api/market/CBA.AX")[0].name == "market_data"
    assert match("/api/trades/") is None and match("/api/predictions/a/b") is None and match("/") is None
    assert match("/api/trades", "POST")[0].name == "place_trade"  # one path, a route per method
    assert match("/api/trades", "HEAD")[0].name == "trades"
    assert match("/api/replays/r1/equity.png") == (
        BY_NAME["replay_image"],
        {"name": "r1", "file": "equity.png"},
    )
    assert match("/api/tasks/t-1/run", "POST") == (BY_NAME["run_task"], {"task_id": "t-1"})


@pytest.mark.parametrize(
    ("path", "method", "allowed"),
    [
        ("/api/trades", "DELETE", ("GET", "HEAD", "POST")),
        ("/api/portfolio", "POST", ("GET", "HEAD")),
        ("/api/services/alerts/restart", "GET", ("POST",)),
        ("/api/market/status", "PUT", ("GET", "HEAD")),  # two routes match the path: said once
    ],
)
def test_a_path_served_with_other_methods_says_which(path, method, allowed):
    with pytest.raises(WrongMethod) as caught:
        match(path, method)
    assert caught.value.allowed == allowed


@pytest.mark.parametrize(
    ("route", "query", "param"),
    [
        ("trades", {"limit": "0"}, "limit"),
        ("trades", {"limit": "1.5"}, "limit"),
        ("trades", {"symbol": "BHP.AX"}, "symbol"),
        ("trades", {"since": "today"}, "since"),
        ("performance", {"period": "decade"}, "period"),
        ("alerts", {"kind": ""}, "kind"),
        ("alerts", {"kind": "no_such_kind"}, "kind"),
    ],
)
def test_bad_query_params_name_themselves(route, query, param):
    with pytest.raises(BadQuery) as caught:
        parse_params(BY_NAME[route], {}, query, SYMBOLS)
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("place_trade", [], "body"),  # not an object
        ("place_trade", {"symbol": "CBA.AX", "action": "BUY"}, "quantity"),  # missing
        ("place_trade", {"symbol": "BHP.AX", "action": "BUY", "quantity": 1}, "symbol"),
        ("place_trade", {"symbol": "CBA.AX", "action": "buy", "quantity": 1}, "action"),
        ("place_trade", {"symbol": "CBA.AX", "action": "BUY", "quantity": "1"}, "quantity"),  # JSON type
        ("place_trade", {"symbol": "CBA.AX", "action": "BUY", "quantity": True}, "quantity"),
        ("place_trade", {"symbol": "CBA.AX", "action": "BUY", "quantity": 1.5}, "quantity"),
        ("place_trade", {"symbol": "CBA.AX", "action": "BUY", "quantity": 0}, "quantity"),
        ("place_trade", {"symbol": "CBA.AX", "action": "BUY", "quantity": 1, "price": 9}, "price"),
        ("run_task", {"ignore_dependencies": "yes"}, "ignore_dependencies"),
    ],
)
def test_bad_bodies_name_the_field(route, body, param):
    with pytest.raises(BadQuery) as caught:
        parse_body(BY_NAME[route], body, SYMBOLS)
    assert caught.value.param == param


def test_bodies_parse_with_their_defaults():
    trade = {"symbol": "WBC.AX", "action": "SELL", "quantity": 3}
    assert parse_body(BY_NAME["place_trade"], trade, SYMBOLS) == trade
    assert parse_body(BY_NAME["run_task"], {}, SYMBOLS) == {"ignore_dependencies": False}
    # 2.0 is an integer to JSON Schema (schemathesis sends it): given to the RPC as 2.
    quantity = parse_body(BY_NAME["place_trade"], {**trade, "quantity": 2.0}, SYMBOLS)["quantity"]
    assert quantity == 2 and type(quantity) is int


@pytest.mark.parametrize(
    ("error", "status", "expected"),
    [
        ({"code": -32602, "message": "quantity: too many", "data": {"param": "quantity"}}, 400,
         {"error": "invalid parameter", "param": "quantity"}),
        ({"code": -32003, "message": "position_size: over", "data": {"rule": "position_size"}}, 409,
         {"error": "refused", "code": -32003, "data": {"rule": "position_size"}}),
        ({"code": -32004, "message": "market closed"}, 409, {"error": "refused", "code": -32004}),
        ({"code": -32007, "message": "storage unavailable"}, 503, {"error": "unavailable"}),
        ({"code": -32001, "message": "market-data unavailable"}, 503, {"error": "unavailable"}),
        ({"code": -32006, "message": "no live task x"}, 404, {"error": "not found"}),
        ({"code": -32603, "message": "internal error"}, 502, {"error": "service error"}),
    ],
)  # fmt: skip
def test_a_writes_rpc_error_becomes_an_http_answer_with_its_reason(error, status, expected):
    problem = write_problem("paper-trading", error, may_be_missing=True)
    assert problem.status == status
    assert problem.body["detail"] == error["message"]  # the service's own reason
    assert expected.items() <= problem.body.items()


def test_the_replay_png_is_confined_to_the_reports_folder(tmp_path):
    root, outside = tmp_path / "replays", tmp_path / "elsewhere"
    (root / "r1").mkdir(parents=True)
    outside.mkdir()
    png = PNG_SIGNATURE + b"rest of a png"
    (root / "r1" / "equity.png").write_bytes(png)
    (root / "r1" / "fake.png").write_bytes(b"<svg>not a png</svg>")
    (root / "r1" / "report.json").write_bytes(b"{}")
    (outside / "secret.png").write_bytes(png)
    (root / "r1" / "out.png").symlink_to(outside / "secret.png")
    (root / "r1" / "in.png").symlink_to(root / "r1" / "equity.png")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "r1" / "big.png").write_bytes(png + bytes(17 << 20))
    assert read_replay_image(root, "r1", "equity.png") == png
    assert read_replay_image(root, "r1", "in.png") == png  # a link that stays inside is followed
    for name, file in [
        ("r1", "out.png"),  # a symlink out
        ("linked", "secret.png"),  # a folder linked out
        ("r1", "fake.png"),  # named .png, is not one
        ("r1", "report.json"),  # not a PNG
        ("..", "elsewhere"),
        ("r1", "../r1/equity.png"),
        ("r1", "..\\equity.png"),
        (".", "equity.png"),
        ("r1", "nope.png"),
        ("r1", "big.png"),  # past REPLAY_IMAGE_MAX_BYTES
        ("r1", "equity.png\0"),
    ]:
        assert read_replay_image(root, name, file) is None, (name, file)
    assert read_replay_image(tmp_path / "none", "r1", "equity.png") is None


def test_defaults_fill_what_is_not_given():
    assert parse_params(BY_NAME["trades"], {}, {"limit": "7"}, SYMBOLS) == {"limit": 7, "symbol": None}
    assert parse_params(BY_NAME["performance"], {}, {}, SYMBOLS) == {"period": "all"}


def test_openapi_has_every_route_and_its_schema_for_data_and_down():
    document = openapi_document(SYMBOLS, "0.1.0")
    assert set(document["paths"]) == {r.path for r in ROUTES} | {"/healthz", "/metrics", "/openapi.json"}
    trade = document["paths"]["/api/trades"]["post"]
    assert trade["operationId"] == "place_trade" and "403" in trade["responses"]
    body = trade["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["symbol", "action", "quantity"] and body["additionalProperties"] is False
    assert body["properties"]["symbol"]["enum"] == list(SYMBOLS)
    image = document["paths"]["/api/replays/{name}/{file}"]["get"]["responses"]["200"]["content"]
    assert set(image) == {"image/png"}
    reply = document["paths"]["/api/tasks"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    assert reply["required"] == ["data", "down", "errors"] and reply["properties"]["data"]["type"] == [
        "array",
        "null",
    ]
    assert "404" in document["paths"]["/api/predictions/{prediction_id}"]["get"]["responses"]
    assert "404" not in document["paths"]["/api/portfolio"]["get"]["responses"]


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exposition_reads_back_and_leaves_out_what_did_not_answer():
    histogram = {"le_s": [0.001, 0.01, None], "counts": [3, 5, 6], "sum_s": 0.02}
    scrape = Scrape(
        services=("market-data", "sentiment"),
        status={"services": [{"name": "market-data", "restarts": 2}, {"name": "sentiment", "restarts": 0}]},
        health={"market-data": {"status": "degraded", "memory_usage": 1000, "pid": 1}, "sentiment": None},
        metrics={
            "market-data": {
                "methods": {"get_quote": {"count": 6, "errors": 1, "histogram": histogram}},
                "events": {"published": 4, "received": 0, "dead_lettered": 0, "outbox": 0},
            },
            "sentiment": None,
        },
        cpu_seconds={"market-data": 1.5},
        portfolio={
            "equity": 101000.5,
            "cash": 90000,
            "exposure_pct": 12.5,
            "day_pnl": -3.25,
            "trading_halted": False,
        },
        open_positions=1,
        quote_age_s={'NAB "odd"\nsymbol': 12.0},  # escaped in the label, read back intact
    )
    found = families(exposition(scrape))
    up = {s.labels["service"]: s.value for s in found["trading_service_up"].samples}
    assert up == {"market-data": 1.0, "sentiment": 0.0}
    state = {
        (s.labels["service"], s.labels["state"]): s.value
        for s in found["trading_service_health_state"].samples
    }
    assert state[("market-data", "degraded")] == 1 and state[("sentiment", "down")] == 1
    assert sum(v for (svc, _), v in state.items() if svc == "sentiment") == 1
    assert [s.labels["service"] for s in found["trading_service_memory_rss_bytes"].samples] == ["market-data"]
    buckets = [
        (s.labels["le"], s.value)
        for s in found["trading_rpc_latency_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert buckets == [("0.001", 3), ("0.01", 5), ("+Inf", 6)]
    assert found["trading_desk_exposure_ratio"].samples[0].value == pytest.approx(0.125)
    assert found["trading_desk_day_pnl_aud"].samples[0].value == -3.25
    assert found["trading_desk_buy_rate_ratio"].samples == []  # prediction did not answer: no number
    assert found["trading_desk_quote_age_seconds"].samples[0].labels["symbol"] == 'NAB "odd"\nsymbol'
    assert all(not math.isnan(s.value) for f in found.values() for s in f.samples)


def test_rate_limit_per_client_with_burst_and_refill():
    from services.gateway.rate_limit import RateLimiter

    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert limiter.allow("a", 0.0) == pytest.approx(0.5)  # empty: one token in 0.5 s
    assert limiter.allow("b", 0.0) == 0.0  # another client is not held back
    assert limiter.allow("a", 0.5) == 0.0  # refilled one
    assert limiter.allow("a", 0.5) > 0
    assert [limiter.allow("a", 100.0) for _ in range(4)][-1] > 0  # refills up to the burst only


def test_rate_limit_table_stays_bounded():
    from services.gateway.rate_limit import RateLimiter

    limiter = RateLimiter(rate_per_s=1.0, burst=1, max_clients=4)
    for n in range(20):
        limiter.allow(f"c{n}", 0.0)  # all at once: none idle, the oldest half goes
        assert len(limiter.buckets) <= 4
    limiter.allow("late", 10.0)  # the rest refilled meanwhile: forgotten
    assert set(limiter.buckets) == {"late"}


@pytest.mark.parametrize(
    ("data", "route", "problem"),
    [
        ({"trades": []}, "trades", None),
        (None, "trades", None),  # down: data is null, which the schema allows
        ([1, 2], "trades", "expected object, got an array"),  # a service off its shape
        ("text", "tasks", "expected array, got a string"),
        ([{"name": "t"}], "tasks", None),
    ],
)
def test_a_reply_off_the_routes_shape_is_found(data, route, problem):
    assert shape_problem(data, BY_NAME[route].data) == problem


@pytest.mark.parametrize(
    ("status", "ok"),
    [
        (
            {"services": [{"name": "alerts", "state": "running", "health": "healthy"}], "overall": "healthy"},
            True,
        ),
        ({"services": [{"name": "alerts", "state": "running"}]}, False),  # no health
        ({"services": "all fine"}, False),
        ([], False),
        (None, False),
    ],
)
def test_healthz_reads_only_a_status_of_the_known_shape(status, ok):
    assert supervisor_status_ok(status) is ok
