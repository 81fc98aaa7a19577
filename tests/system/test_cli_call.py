"""`service_manager.py call` and `metrics` against a real supervisor and market-data, started by
the manager CLI in temporary directories: results as JSON, remote errors with their code and data,
one-line usage errors, and the metrics table counting the calls just made."""

from __future__ import annotations

import orjson
import pytest

from services.management.manager_cli import CliError, call_params
from tests.support import Processes, manager_cli
from tests.system.test_manager import FAST_TIMERS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def market_suite():
    with Processes() as processes:
        # In a session, whatever the wall clock says (quotes exist from 10:01 Sydney only).
        dirs = processes.suite_dirs("tc-", **FAST_TIMERS, TRADING_CLOCK_START="2024-06-18T11:00:00+10:00")
        yield processes.start_suite(dirs, "market-data")


@pytest.mark.parametrize(
    ("words", "params"),
    [
        ([], None),
        (['{"symbol": "CBA.AX"}'], {"symbol": "CBA.AX"}),
        (['["CBA.AX"]'], ["CBA.AX"]),  # positional params
        (["symbol=CBA.AX", "limit=5"], {"symbol": "CBA.AX", "limit": 5}),
        (['symbols=["CBA.AX","NAB.AX"]'], {"symbols": ["CBA.AX", "NAB.AX"]}),
        (["at=2024-06-14T10:00:00+10:00"], {"at": "2024-06-14T10:00:00+10:00"}),  # not JSON: a string
        (['name="5"'], {"name": "5"}),  # a quoted number stays a string
        (["flag=true", "x=null"], {"flag": True, "x": None}),
    ],
)
def test_params_from_words(words, params):
    assert call_params(words) == params


@pytest.mark.parametrize(
    "words", [["{not json"], ["42"], ["symbol"], ["=5"], ["a=1", "a=2"], ["bad-key=1"], ['"x"']]
)
def test_bad_params_are_usage_errors(words):
    with pytest.raises(CliError) as caught:
        call_params(words)
    assert caught.value.code == 2


def test_call_prints_the_result_as_json(market_suite):
    done = manager_cli(market_suite, "call", "market-data", "get_quote", "symbol=CBA.AX")
    assert done.returncode == 0, done.stderr
    quote = orjson.loads(done.stdout)
    assert quote["symbol"] == "CBA.AX" and quote["source"] == "synthetic"
    done = manager_cli(
        market_suite, "call", "market-data", "get_price_history", '{"symbol": "NAB.AX", "days": 3}'
    )
    assert done.returncode == 0, done.stderr
    assert len(orjson.loads(done.stdout)["bars"]) == 3
    done = manager_cli(market_suite, "call", "manager", "status")
    assert done.returncode == 0 and orjson.loads(done.stdout)["supervisor"]["pid"] > 0


def test_a_remote_error_prints_code_message_and_data(market_suite):
    done = manager_cli(market_suite, "call", "market-data", "get_quote", "symbol=XYZ.AX")
    assert done.returncode == 1
    error = orjson.loads(done.stdout)
    assert error["code"] == -32602 and error["data"]["param"] == "symbol" and error["message"]
    done = manager_cli(market_suite, "call", "market-data", "no_such_method")
    assert done.returncode == 1 and orjson.loads(done.stdout)["code"] == -32601


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["call", "nosuch", "health"], 2, "unknown service: nosuch"),
        (["call", "market-data", "get_quote", "{broken"], 2, "not valid JSON"),
        (["call", "market-data", "get_quote", "symbol"], 2, "key=value"),
        (["call", "market-data", "health", "--timeout", "0"], 2, "--timeout"),
        (["call", "sentiment", "health"], 1, "sentiment is not running"),  # not started here
        (["metrics", "nosuch"], 2, "unknown service: nosuch"),
    ],
)
def test_bad_input_is_one_line(market_suite, args, code, words):
    done = manager_cli(market_suite, *args)
    assert done.returncode == code, done.stdout + done.stderr
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1 and not done.stdout


def test_metrics_counts_the_calls(market_suite):
    before = orjson.loads(manager_cli(market_suite, "metrics", "market-data", "--json").stdout)["market-data"]
    seen = before["methods"].get("get_technical_analysis", {"count": 0, "errors": 0})
    for symbol in ("CBA.AX", "WBC.AX", "NOPE.AX"):
        manager_cli(market_suite, "call", "market-data", "get_technical_analysis", f"symbol={symbol}")
    done = manager_cli(market_suite, "metrics", "market-data", "--json")
    assert done.returncode == 0, done.stderr
    after = orjson.loads(done.stdout)["market-data"]["methods"]["get_technical_analysis"]
    assert after["count"] - seen["count"] == 3 and after["errors"] - seen["errors"] == 1
    assert after["p50_ms"] is not None and after["p50_ms"] <= after["p99_ms"] <= after["max_ms"]
    table = manager_cli(market_suite, "metrics", "market-data")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "SERVICE",
        "METHOD",
        "REQUESTS",
        "ERRORS",
        "P50_MS",
        "P90_MS",
        "P99_MS",
        "MAX_MS",
    ]
    row = next(line.split() for line in lines if "get_technical_analysis" in line)
    assert row[2:4] == [str(after["count"]), str(after["errors"])]


def test_metrics_of_the_whole_suite_says_which_are_down(market_suite):
    done = manager_cli(market_suite, "metrics")
    assert done.returncode == 1  # only market-data (and the supervisor) were started
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert (
        "down:" in rows["sentiment"] and "down:" not in rows["market-data"] and "down:" not in rows["manager"]
    )
