"""The gateway's pure parts: the token file, the bind address, query parameters against the route
table, the OpenAPI document from it, and the Prometheus text read back by the official parser."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.base import ConfigError, Settings
from services.gateway.gateway_knobs import parse_bind
from services.gateway.gateway_routes import BY_NAME, ROUTES, BadQuery, match, openapi_document, parse_params
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


def test_defaults_fill_what_is_not_given():
    assert parse_params(BY_NAME["trades"], {}, {"limit": "7"}, SYMBOLS) == {"limit": 7, "symbol": None}
    assert parse_params(BY_NAME["performance"], {}, {}, SYMBOLS) == {"period": "all"}


def test_openapi_has_every_route_and_its_schema_for_data_and_down():
    document = openapi_document(SYMBOLS, "0.1.0")
    assert set(document["paths"]) == {r.path for r in ROUTES} | {"/healthz", "/metrics", "/openapi.json"}
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
