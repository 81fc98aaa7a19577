"""Bad input gets a clear error and loses nothing, on every RPC method of a real suite.

One suite is started once through the manager CLI (real processes, real Redis, synthetic market
data, models for one bank from the session's run of the real training script). Every domain method found by
`list_methods` then gets, generated from its own description: each required param missing, each
param of the wrong JSON type and an unknown extra param; a hand-written table adds the domain
checks (ranges, unknown names, bad dates, broken task configs, bad feature dicts). Each answer must
be -32602 naming the parameter in `data.param` (or -32006 where "not found" is the documented
answer) in one line, and afterwards every service is still the same healthy process, no trade or
task was recorded and no service logged an unhandled error.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.base.base_service import BUILTIN_METHODS
from services.domain.features import FEATURE_NAMES
from services.domain.supervision import start_order
from tests.support import Processes, SuiteDirs, install_models, rpc_call_sync

pytestmark = pytest.mark.slow

SERVICES = ["manager", *start_order()]
INVALID_PARAMS, NOT_FOUND = -32602, -32006
TRAINED = "CBA.AX"  # the one bank given models: enough for "unknown model" to mean not found
FEATURES = {name: 0.0 for name in FEATURE_NAMES}
TASK = {
    "name": "rv_probe",
    "calls": [{"service": "market-data", "method": "get_market_data", "params": {"symbol": "CBA.AX"}}],
    "schedule": {"type": "daily", "at": "10:00"},
}

# A valid call of every domain method: the base each bad value is put into, so the error can only
# be about that value. A method missing here fails test_every_domain_method_is_covered.
VALID: dict[tuple[str, str], dict[str, Any]] = {
    ("manager", "status"): {},
    ("manager", "start_services"): {"services": ["market-data"]},
    ("manager", "stop_services"): {"services": ["scheduler"]},
    ("manager", "restart_service"): {"service": "scheduler"},
    ("manager", "wait_services"): {"services": ["market-data"], "timeout_s": 0},
    ("manager", "service_started"): {"service": "market-data", "pid": 1},
    ("market-data", "get_market_context"): {},
    ("market-data", "get_market_data"): {"symbol": "CBA.AX"},
    ("market-data", "get_quote"): {"symbol": "CBA.AX"},
    ("market-data", "get_quotes"): {"symbols": ["CBA.AX", "WBC.AX"]},
    ("market-data", "get_intraday_bars"): {"symbol": "CBA.AX", "interval": "5m", "limit": 10},
    ("market-data", "get_price_history"): {"symbol": "CBA.AX", "days": 5},
    ("market-data", "get_technical_analysis"): {"symbol": "CBA.AX"},
    ("market-data", "refresh_all_data"): {},
    ("ml-model", "get_ensemble_prediction"): {"features": FEATURES, "symbol": TRAINED, "as_of": None},
    ("ml-model", "get_feature_importance"): {"model_name": "random_forest", "symbol": TRAINED},
    ("ml-model", "get_model_performance"): {"symbol": TRAINED},
    ("ml-model", "list_available_models"): {},
    ("ml-model", "load_model"): {"model_name": "random_forest", "symbol": TRAINED},
    ("ml-model", "predict"): {"model_name": "random_forest", "features": FEATURES, "symbol": TRAINED},
    ("ml-model", "record_outcome"): {"symbol": TRAINED, "as_of": "2025-06-10", "outcome": "up"},
    ("ml-model", "reload_models"): {},
    ("ml-model", "retrain_models"): {},
    ("sentiment", "analyze_sentiment"): {"symbol": "CBA.AX"},
    ("sentiment", "get_big4_sentiment"): {},
    ("sentiment", "get_market_sentiment"): {},
    ("sentiment", "refresh_sentiment_cache"): {},
    ("prediction", "clear_cache"): {},
    ("prediction", "generate_predictions"): {"symbols": ["CBA.AX"], "force_refresh": False, "timeout_s": 5},
    ("prediction", "generate_single_prediction"): {
        "symbol": "CBA.AX",
        "force_refresh": False,
        "timeout_s": 5,
    },
    ("prediction", "get_buy_rate"): {},
    ("prediction", "get_prediction"): {"prediction_id": "p"},
    ("prediction", "get_recent_predictions"): {"limit": 5, "symbol": "CBA.AX"},
    ("paper-trading", "check_exits"): {},
    ("paper-trading", "execute_trade"): {"symbol": "CBA.AX", "action": "BUY", "quantity": 1},
    ("paper-trading", "get_prediction_outcome"): {"prediction_id": "p"},
    ("paper-trading", "get_portfolio_status"): {},
    ("paper-trading", "get_positions"): {},
    ("paper-trading", "get_trade_history"): {"limit": 5, "symbol": "CBA.AX"},
    ("paper-trading", "get_trading_performance"): {"period": "all"},
    ("paper-trading", "get_equity_history"): {"days": 30},
    ("paper-trading", "sync_with_ig_markets"): {},
    ("paper-trading", "adopt_ig_state"): {},
    ("paper-trading", "reconcile_ig"): {},
    ("scheduler", "backup_databases"): {"keep": 3},
    ("scheduler", "cancel_task"): {"task_id": "t"},
    ("scheduler", "execute_task"): {"task_id": "t", "wait": True, "ignore_dependencies": False},
    ("scheduler", "get_market_status"): {"at": "2025-06-10T10:30:00+10:00"},
    ("scheduler", "get_task_history"): {"task_id": "t", "limit": 5},
    ("scheduler", "list_tasks"): {},
    ("scheduler", "schedule_task"): {"config": TASK},
    ("alerts", "list_alerts"): {"limit": 5, "kind": "task_failed"},
    ("alerts", "silence"): {"kind": "task_failed", "duration": "1m"},
    ("alerts", "test_channel"): {"channel": "webhook"},
    ("alerts", "get_summary"): {"period": "day"},
    ("gateway", "get_url"): {},
}


def _task(**changes: Any) -> dict:
    return {"config": {**TASK, **changes}}


def _features(**changes: Any) -> dict:
    return {**FEATURES, **changes}


# Domain checks: (service, method, params, expected code, param named in data.param or None).
DOMAIN_CASES: list[tuple[str, str, dict, int, str | None]] = [
    # alerts
    ("alerts", "list_alerts", {"limit": 0}, INVALID_PARAMS, "limit"),
    ("alerts", "list_alerts", {"kind": "nonsense"}, INVALID_PARAMS, "kind"),
    ("alerts", "silence", {"kind": "nonsense"}, INVALID_PARAMS, "kind"),
    ("alerts", "silence", {"kind": "task_failed", "duration": "soon"}, INVALID_PARAMS, "duration"),
    ("alerts", "silence", {"kind": "task_failed", "duration": "90d"}, INVALID_PARAMS, "duration"),
    ("alerts", "test_channel", {"channel": "pigeon"}, INVALID_PARAMS, "channel"),
    ("alerts", "get_summary", {"period": "year"}, INVALID_PARAMS, "period"),
    # market-data
    ("market-data", "get_market_data", {"symbol": "ZZZ.AX"}, INVALID_PARAMS, "symbol"),
    ("market-data", "get_market_data", {"symbol": "  "}, INVALID_PARAMS, "symbol"),
    ("market-data", "get_technical_analysis", {"symbol": "ZZZ.AX"}, INVALID_PARAMS, "symbol"),
    ("market-data", "get_quote", {"symbol": "ZZZ.AX"}, INVALID_PARAMS, "symbol"),
    ("market-data", "get_quotes", {"symbols": ["CBA.AX", "ZZZ.AX"]}, INVALID_PARAMS, "symbols"),
    ("market-data", "get_quotes", {"symbols": []}, INVALID_PARAMS, "symbols"),
    ("market-data", "get_quotes", {"symbols": "CBA.AX"}, INVALID_PARAMS, "symbols"),
    (
        "market-data",
        "get_market_data",
        {"symbol": "CBA.AX", "history_days": 0},
        INVALID_PARAMS,
        "history_days",
    ),
    ("market-data", "get_intraday_bars", {"symbol": "ZZZ.AX"}, INVALID_PARAMS, "symbol"),
    ("market-data", "get_intraday_bars", {"symbol": "CBA.AX", "interval": "2m"}, INVALID_PARAMS, "interval"),
    ("market-data", "get_intraday_bars", {"symbol": "CBA.AX", "limit": 0}, INVALID_PARAMS, "limit"),
    ("market-data", "get_intraday_bars", {"symbol": "CBA.AX", "limit": 10**6}, INVALID_PARAMS, "limit"),
    ("market-data", "get_price_history", {"symbol": "ZZZ.AX"}, INVALID_PARAMS, "symbol"),
    ("market-data", "get_price_history", {"symbol": "CBA.AX", "days": 0}, INVALID_PARAMS, "days"),
    ("market-data", "get_price_history", {"symbol": "CBA.AX", "days": -1}, INVALID_PARAMS, "days"),
    ("market-data", "get_price_history", {"symbol": "CBA.AX", "days": 10**9}, INVALID_PARAMS, "days"),
    # ml-model: features are checked against the model's names, finiteness and plausible ranges
    ("ml-model", "predict", {**VALID[("ml-model", "predict")], "features": {}}, INVALID_PARAMS, "features"),
    (
        "ml-model",
        "predict",
        {**VALID[("ml-model", "predict")], "features": _features(rsi_14=None)},
        INVALID_PARAMS,
        "features",
    ),
    (
        "ml-model",
        "predict",
        {**VALID[("ml-model", "predict")], "features": _features(rsi_14="NaN")},  # a string, not a float
        INVALID_PARAMS,
        "features",
    ),
    (
        "ml-model",
        "predict",
        {**VALID[("ml-model", "predict")], "features": _features(rsi_14=1e308)},
        INVALID_PARAMS,
        "features",
    ),
    (
        "ml-model",
        "predict",
        {**VALID[("ml-model", "predict")], "features": _features(rsi_14=True)},  # bool is not a number
        INVALID_PARAMS,
        "features",
    ),
    (
        "ml-model",
        "get_ensemble_prediction",
        {"symbol": TRAINED, "features": _features(surprise=1.0)},
        INVALID_PARAMS,
        "features",
    ),
    (
        "ml-model",
        "get_ensemble_prediction",
        {"symbol": TRAINED, "features": {k: v for k, v in FEATURES.items() if k != "rsi_14"}},
        INVALID_PARAMS,
        "features",
    ),
    ("ml-model", "predict", {**VALID[("ml-model", "predict")], "model_name": "nope"}, NOT_FOUND, None),
    (
        "ml-model",
        "predict",
        {**VALID[("ml-model", "predict")], "as_of": "yesterday"},
        INVALID_PARAMS,
        "as_of",
    ),
    (
        "ml-model",
        "predict",
        {**VALID[("ml-model", "predict")], "as_of": "2999-01-01"},
        INVALID_PARAMS,
        "as_of",
    ),
    (
        "ml-model",
        "get_ensemble_prediction",
        {"features": FEATURES, "symbol": TRAINED, "as_of": "0001-01-01"},
        INVALID_PARAMS,
        "as_of",
    ),
    (
        "ml-model",
        "record_outcome",
        {"symbol": TRAINED, "as_of": "0001-01-01", "outcome": "up"},
        INVALID_PARAMS,
        "as_of",
    ),
    ("ml-model", "load_model", {"model_name": "nope", "symbol": TRAINED}, NOT_FOUND, None),
    ("ml-model", "load_model", {"model_name": "random_forest", "symbol": "ZZZ.AX"}, NOT_FOUND, None),
    ("ml-model", "get_feature_importance", {"model_name": "nope", "symbol": TRAINED}, NOT_FOUND, None),
    ("ml-model", "get_ensemble_prediction", {"features": FEATURES, "symbol": "ZZZ.AX"}, NOT_FOUND, None),
    ("ml-model", "get_model_performance", {"symbol": "ZZZ.AX"}, NOT_FOUND, None),
    ("ml-model", "get_model_performance", {"symbol": ""}, INVALID_PARAMS, "symbol"),
    (
        "ml-model",
        "record_outcome",
        {"symbol": TRAINED, "as_of": "10/06/2025", "outcome": "up"},
        INVALID_PARAMS,
        "as_of",
    ),
    (
        "ml-model",
        "record_outcome",
        {"symbol": TRAINED, "as_of": "2025-06-10", "outcome": "flat"},
        INVALID_PARAMS,
        "outcome",
    ),
    (
        "ml-model",
        "record_outcome",
        {"symbol": "ZZZ.AX", "as_of": "2025-06-10", "outcome": "up"},
        NOT_FOUND,
        None,
    ),
    # sentiment: outside the universe there is nothing to read (and it would spend API quota)
    ("sentiment", "analyze_sentiment", {"symbol": "ZZZ.AX"}, INVALID_PARAMS, "symbol"),
    ("sentiment", "analyze_sentiment", {"symbol": "not a symbol!"}, INVALID_PARAMS, "symbol"),
    # prediction: an unknown symbol is "not found" at market-data (documented, per symbol)
    ("prediction", "generate_single_prediction", {"symbol": "ZZZ.AX"}, NOT_FOUND, None),
    (
        "prediction",
        "generate_single_prediction",
        {"symbol": "CBA.AX", "timeout_s": -1},
        INVALID_PARAMS,
        "timeout_s",
    ),
    ("prediction", "generate_predictions", {"symbols": []}, INVALID_PARAMS, "symbols"),
    ("prediction", "generate_predictions", {"timeout_s": 0}, INVALID_PARAMS, "timeout_s"),
    ("prediction", "generate_predictions", {"timeout_s": 1e9}, INVALID_PARAMS, "timeout_s"),
    ("prediction", "generate_predictions", {"symbols": ["CBA.AX", "no way"]}, INVALID_PARAMS, "symbols[1]"),
    ("prediction", "get_prediction", {"prediction_id": "nope"}, NOT_FOUND, None),
    ("prediction", "get_recent_predictions", {"limit": 0}, INVALID_PARAMS, "limit"),
    ("prediction", "get_recent_predictions", {"limit": 10**9}, INVALID_PARAMS, "limit"),
    ("prediction", "get_recent_predictions", {"symbol": "???"}, INVALID_PARAMS, "symbol"),
    # paper-trading: nothing may reach the book
    (
        "paper-trading",
        "execute_trade",
        {"symbol": "CBA.AX", "action": "HOLD", "quantity": 1},
        INVALID_PARAMS,
        "action",
    ),
    (
        "paper-trading",
        "execute_trade",
        {"symbol": "ZZZ.AX", "action": "BUY", "quantity": 1},
        INVALID_PARAMS,
        "symbol",
    ),
    # the index has a price but is not tradable
    (
        "paper-trading",
        "execute_trade",
        {"symbol": "^AXJO", "action": "BUY", "quantity": 1},
        INVALID_PARAMS,
        "symbol",
    ),
    (
        "paper-trading",
        "execute_trade",
        {"symbol": "CBA.AX", "action": "BUY", "quantity": 0},
        INVALID_PARAMS,
        "quantity",
    ),
    (
        "paper-trading",
        "execute_trade",
        {"symbol": "CBA.AX", "action": "SELL", "quantity": -5},
        INVALID_PARAMS,
        "quantity",
    ),
    (
        "paper-trading",
        "execute_trade",
        {"symbol": "CBA.AX", "action": "BUY", "quantity": 1.5},
        INVALID_PARAMS,
        "quantity",
    ),
    (
        "paper-trading",
        "execute_trade",
        {"symbol": "CBA.AX", "action": "BUY", "quantity": 10**9},
        INVALID_PARAMS,
        "quantity",
    ),
    ("paper-trading", "get_trade_history", {"limit": 0}, INVALID_PARAMS, "limit"),
    ("paper-trading", "get_trade_history", {"limit": 10**9}, INVALID_PARAMS, "limit"),
    ("paper-trading", "get_trade_history", {"symbol": "ZZZ.AX"}, INVALID_PARAMS, "symbol"),
    ("paper-trading", "get_trading_performance", {"period": "year"}, INVALID_PARAMS, "period"),
    ("paper-trading", "get_equity_history", {"days": 0}, INVALID_PARAMS, "days"),
    ("paper-trading", "get_equity_history", {"days": 3661}, INVALID_PARAMS, "days"),
    # scheduler
    ("scheduler", "backup_databases", {"keep": 0}, INVALID_PARAMS, "keep"),
    ("scheduler", "backup_databases", {"keep": 10**9}, INVALID_PARAMS, "keep"),
    ("scheduler", "cancel_task", {"task_id": "nope"}, NOT_FOUND, None),
    ("scheduler", "execute_task", {"task_id": "nope"}, NOT_FOUND, None),
    ("scheduler", "get_task_history", {"task_id": "nope"}, NOT_FOUND, None),
    ("scheduler", "get_task_history", {"task_id": "nope", "limit": 0}, INVALID_PARAMS, "limit"),
    ("scheduler", "get_market_status", {"at": "tomorrow"}, INVALID_PARAMS, "at"),
    ("scheduler", "get_market_status", {"at": "2026-13-01T10:00:00+10:00"}, INVALID_PARAMS, "at"),
    ("scheduler", "get_market_status", {"at": "2025-06-10T10:30:00"}, INVALID_PARAMS, "at"),  # no offset
    # the next open after the last day of year 9999 cannot be represented
    ("scheduler", "get_market_status", {"at": "9999-12-31T23:59:59+00:00"}, INVALID_PARAMS, "at"),
    ("scheduler", "get_market_status", {"at": "0001-01-01T00:00:00+00:00"}, INVALID_PARAMS, "at"),
    ("scheduler", "schedule_task", {"config": {}}, INVALID_PARAMS, "config.name"),
    ("scheduler", "schedule_task", _task(name="bad name!"), INVALID_PARAMS, "config.name"),
    (
        "scheduler",
        "schedule_task",
        _task(name="paper_trading_sync"),
        INVALID_PARAMS,
        "config.name",
    ),  # a default
    ("scheduler", "schedule_task", _task(calls=[]), INVALID_PARAMS, "config.calls"),
    (
        "scheduler",
        "schedule_task",
        _task(calls=[{"service": "nope", "method": "health"}]),
        INVALID_PARAMS,
        "config.calls[0].service",
    ),
    # the scheduler may not schedule itself (only backups and market status)
    (
        "scheduler",
        "schedule_task",
        _task(calls=[{"service": "scheduler", "method": "schedule_task"}]),
        INVALID_PARAMS,
        "config.calls[0].method",
    ),
    # a method or param the target does not have would fail at every run
    (
        "scheduler",
        "schedule_task",
        _task(calls=[{"service": "market-data", "method": "no_such"}]),
        INVALID_PARAMS,
        "config.calls[0].method",
    ),
    (
        "scheduler",
        "schedule_task",
        _task(
            calls=[{"service": "market-data", "method": "get_market_data", "params": {"ticker": "CBA.AX"}}]
        ),
        INVALID_PARAMS,
        "config.calls[0].params",
    ),
    (
        "scheduler",
        "schedule_task",
        _task(calls=[{"service": "market-data", "method": "get_market_data", "params": {}}]),  # no symbol
        INVALID_PARAMS,
        "config.calls[0].params",
    ),
    (
        "scheduler",
        "schedule_task",
        _task(calls=[{"service": "market-data", "method": "health", "params": [1]}]),
        INVALID_PARAMS,
        "config.calls[0].params",
    ),
    (
        "scheduler",
        "schedule_task",
        _task(schedule={"type": "daily", "at": "25:00"}),
        INVALID_PARAMS,
        "config.schedule.at",
    ),
    (
        "scheduler",
        "schedule_task",
        _task(schedule={"type": "weekly"}),
        INVALID_PARAMS,
        "config.schedule.type",
    ),
    (
        "scheduler",
        "schedule_task",
        _task(schedule={"type": "interval", "every_minutes": 0}),
        INVALID_PARAMS,
        "config.schedule.every_minutes",
    ),
    (
        "scheduler",
        "schedule_task",
        _task(schedule={"type": "cron", "cron": "61 * * * *"}),
        INVALID_PARAMS,
        "config.schedule.cron.minute",
    ),
    ("scheduler", "schedule_task", _task(depends_on=["ghost"]), INVALID_PARAMS, "config.depends_on"),
    ("scheduler", "schedule_task", _task(timeout_s=-1), INVALID_PARAMS, "config.timeout_s"),
    (
        "scheduler",
        "schedule_task",
        _task(retry={"max_attempts": 0}),
        INVALID_PARAMS,
        "config.retry.max_attempts",
    ),
    ("scheduler", "schedule_task", _task(enabled="yes"), INVALID_PARAMS, "config.enabled"),
    ("scheduler", "schedule_task", _task(bogus=1), INVALID_PARAMS, "config.bogus"),
    # manager: only null means "all"; an empty list or name must not stop the whole suite
    ("manager", "stop_services", {"services": []}, INVALID_PARAMS, "services"),
    ("manager", "start_services", {"services": []}, INVALID_PARAMS, "services"),
    ("manager", "stop_services", {"services": ["nope"]}, INVALID_PARAMS, "services"),
    ("manager", "start_services", {"services": ["market-data", "nope"]}, INVALID_PARAMS, "services"),
    ("manager", "restart_service", {"service": "nope"}, INVALID_PARAMS, "service"),
    ("manager", "restart_service", {"service": ""}, INVALID_PARAMS, "service"),
    ("manager", "wait_services", {"services": []}, INVALID_PARAMS, "services"),
    ("manager", "wait_services", {"services": ["nope"]}, INVALID_PARAMS, "services"),
    ("manager", "wait_services", {"timeout_s": -1}, INVALID_PARAMS, "timeout_s"),
    ("manager", "service_started", {"service": "nope", "pid": 1}, INVALID_PARAMS, "service"),
    ("manager", "service_started", {"service": "sentiment", "pid": 0}, INVALID_PARAMS, "pid"),
]

# A value of the wrong JSON type for each declared type (list_methods' "type" strings).
WRONG_TYPE = {"string": 12345, "integer": "7", "number": "7.5", "boolean": "yes", "object": [1], "array": "x"}


def wrong_value(declared: str) -> Any:
    first = declared.split("|")[0].strip()
    if first.startswith("'"):  # a Literal: a value of another type is outside it
        return 12345
    return WRONG_TYPE[first.split("[")[0]]


def call(dirs: SuiteDirs, service: str, method: str, params: Any) -> dict:
    """One raw JSON-RPC exchange: the whole reply, error or result."""
    frame = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}) + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(dirs.socket(service)))
        s.sendall(frame)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            assert chunk, f"{service} closed the connection on {method}"
            buf += chunk
    return orjson.loads(buf)


def problem(reply: dict, code: int, param: str | None) -> str | None:
    """What is wrong with `reply` as the answer to bad input; None when it is right."""
    error = reply.get("error")
    if error is None:
        return f"accepted: {str(reply.get('result'))[:120]}"
    message = error.get("message", "")
    if error.get("code") != code:
        return f"code {error.get('code')} instead of {code}: {message[:160]}"
    if not message.strip() or "\n" in message or "Traceback" in message:
        return f"message is not one clear line: {message!r}"
    if param is not None and (error.get("data") or {}).get("param") != param:
        return f"data.param {error.get('data', {}).get('param')!r} instead of {param!r}: {message[:160]}"
    if param is not None and param not in message:
        return f"message does not name {param!r}: {message[:160]}"
    return None


@pytest.fixture(scope="module")
def running_suite(synthetic_models: Path) -> SuiteDirs:
    with Processes() as processes:
        # A Saturday, whatever the wall clock says: in a session the scheduler's monitoring task
        # trades on its own, and the last test checks that nothing was booked (it failed so in CI).
        dirs = processes.suite_dirs(
            "rv-", TRADING_MARKET_DATA_SOURCE="synthetic", TRADING_CLOCK_START="2025-06-14T12:00:00+10:00"
        )
        # The rows need a manifest, not good models: one bank's from the session's training.
        install_models(synthetic_models, dirs.models_dir, [TRAINED])
        yield processes.start_suite(dirs)


@pytest.fixture(scope="module")
def before(running_suite: SuiteDirs) -> dict:
    """What must not change: each service's pid, the task list, the paper book."""
    return {
        "pids": {name: rpc_call_sync(running_suite.socket(name), "health")["pid"] for name in SERVICES},
        "tasks": sorted(t["task_id"] for t in rpc_call_sync(running_suite.socket("scheduler"), "list_tasks")),
        "portfolio": rpc_call_sync(running_suite.socket("paper-trading"), "get_portfolio_status")["cash"],
    }


@pytest.fixture(scope="module")
def methods(running_suite: SuiteDirs) -> dict[tuple[str, str], list[dict]]:
    found = {}
    for service in SERVICES:
        for method in rpc_call_sync(running_suite.socket(service), "list_methods"):
            if method["name"] not in BUILTIN_METHODS:
                found[(service, method["name"])] = method["params"]
    return found


def test_every_domain_method_is_covered(before, methods) -> None:
    assert sorted(methods) == sorted(VALID), "a method without a valid base call here is not tested"
    assert {(s, m) for s, m, *_ in DOMAIN_CASES} <= set(methods)


@pytest.mark.parametrize("service", SERVICES)
def test_missing_wrong_type_and_unknown_params_name_the_param(
    running_suite, before, methods, service
) -> None:
    failures, checked = [], 0
    for (owner, method), params in methods.items():
        if owner != service:
            continue
        base = VALID[(owner, method)]
        # Positional params too: one more than the method takes cannot bind to anything.
        cases = [({**base, "bogus_param": 1}, "bogus_param"), ([None] * (len(params) + 1), None)]
        for spec in params:
            name = spec["name"]
            if spec["required"]:
                cases.append(({k: v for k, v in base.items() if k != name}, name))
                cases.append(({**base, name: None}, name))  # null is not a value for a required param
            cases.append(({**base, name: wrong_value(spec["type"])}, name))
        for params_sent, param in cases:
            checked += 1
            if issue := problem(call(running_suite, service, method, params_sent), INVALID_PARAMS, param):
                failures.append(f"{method}({params_sent}): {issue}")
    assert checked, f"no domain methods found on {service}"
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("service", "method", "params", "code", "param"),
    DOMAIN_CASES,
    ids=[f"{s}.{m}-{p or c}-{i}" for i, (s, m, _, c, p) in enumerate(DOMAIN_CASES)],
)
def test_domain_checks_refuse_bad_values(running_suite, before, service, method, params, code, param) -> None:
    issue = problem(call(running_suite, service, method, params), code, param)
    assert issue is None, issue


def test_nothing_was_recorded_and_every_service_survived(running_suite, before) -> None:
    """Runs last (file order): after every bad call above."""
    for name in SERVICES:
        health = rpc_call_sync(running_suite.socket(name), "health")
        assert health["status"] in ("healthy", "degraded"), (name, health)
        assert health["pid"] == before["pids"][name], f"{name} restarted"
    trades = rpc_call_sync(running_suite.socket("paper-trading"), "get_trade_history")
    assert trades["count"] == 0, trades
    assert rpc_call_sync(running_suite.socket("paper-trading"), "get_positions")["positions"] == []
    assert (
        rpc_call_sync(running_suite.socket("paper-trading"), "get_portfolio_status")["cash"]
        == before["portfolio"]
    )
    tasks = sorted(t["task_id"] for t in rpc_call_sync(running_suite.socket("scheduler"), "list_tasks"))
    assert tasks == before["tasks"], "a refused config still created a task"
    unhandled = [
        f"{log.name}: {line[:200]}"
        for log in Path(running_suite.log_dir).glob("*.log")
        for line in log.read_text(errors="replace").splitlines()
        if "unhandled error" in line
    ]
    assert not unhandled, "\n".join(unhandled)
