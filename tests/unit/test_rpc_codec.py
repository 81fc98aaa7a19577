"""JSON-RPC 2.0 codec and param validation, without sockets.

The request/response pairs are the examples of the JSON-RPC 2.0 specification (section 7),
answered by a dispatcher built from real @rpc methods.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Literal

import orjson
import pytest

# Named imports, not `from services.base import rpc`: there `rpc` is the decorator (the one way
# services import it), which shadows the package of the same name.
from services.base.rpc import (
    DependencyUnavailable,
    InvalidParams,
    MarketClosed,
    MethodNotFound,
    MethodSpec,
    NotConfigured,
    NotFound,
    RiskRejected,
    RpcServer,
    RpcTimeout,
    ServiceError,
    dumps,
    error_from_wire,
    rpc,
)


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Demo:
    @rpc
    async def subtract(self, minuend: int, subtrahend: int) -> int:
        return minuend - subtrahend

    @rpc
    async def sum(self, a: int, b: int, c: int = 0) -> int:
        return a + b + c

    @rpc
    async def update(self, a: int, b: int, c: int, d: int, e: int) -> None:
        return None

    @rpc
    async def notify_hello(self, n: int) -> None:
        return None

    @rpc
    async def get_data(self) -> list:
        return ["hello", 5]

    @rpc
    async def typed(
        self,
        symbol: str,
        days: int = 30,
        ratio: float = 1.0,
        flag: bool = False,
        symbols: list[str] | None = None,
        side: Literal["BUY", "SELL"] = "BUY",
        action: Side = Side.BUY,
        config: dict | None = None,
    ) -> dict:
        return {"symbol": symbol, "days": days, "ratio": ratio, "symbols": symbols, "action": action}


def make_server() -> RpcServer:
    demo = Demo()
    specs = {
        name: MethodSpec.from_function(name, getattr(demo, name))
        for name in ("subtract", "sum", "update", "notify_hello", "get_data", "typed")
    }

    async def dispatch(method, params):
        spec = specs.get(method)
        if spec is None:
            raise MethodNotFound("Method not found")
        return await spec.func(**spec.bind(params))

    return RpcServer(path=None, dispatch=dispatch)  # type: ignore[arg-type]


def exchange(frame: str):
    reply = asyncio.run(make_server().handle_frame(frame.encode()))
    return None if reply is None else orjson.loads(reply)


def strip(reply):
    """Drop the message/data texts: the specification fixes only codes, results and ids."""
    if isinstance(reply, list):
        return sorted((strip(x) for x in reply), key=lambda x: str(x.get("id")))
    if "error" in reply:
        return {"jsonrpc": "2.0", "error": {"code": reply["error"]["code"]}, "id": reply["id"]}
    return reply


SPEC_EXAMPLES = [
    # positional parameters
    (
        '{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}',
        {"jsonrpc": "2.0", "result": 19, "id": 1},
    ),
    (
        '{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}',
        {"jsonrpc": "2.0", "result": -19, "id": 2},
    ),
    # named parameters, in either order
    (
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}',
        {"jsonrpc": "2.0", "result": 19, "id": 3},
    ),
    (
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}',
        {"jsonrpc": "2.0", "result": 19, "id": 4},
    ),
    # notifications get no reply
    ('{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}', None),
    ('{"jsonrpc": "2.0", "method": "foobar"}', None),
    # non-existent method
    (
        '{"jsonrpc": "2.0", "method": "foobar", "id": "1"}',
        {"jsonrpc": "2.0", "error": {"code": -32601}, "id": "1"},
    ),
    # invalid JSON
    (
        '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]',
        {"jsonrpc": "2.0", "error": {"code": -32700}, "id": None},
    ),
    # invalid request object
    (
        '{"jsonrpc": "2.0", "method": 1, "params": "bar"}',
        {"jsonrpc": "2.0", "error": {"code": -32600}, "id": None},
    ),
    # batch, invalid JSON
    (
        '[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},{"jsonrpc": "2.0", "method"]',
        {"jsonrpc": "2.0", "error": {"code": -32700}, "id": None},
    ),
    # empty array: one error, not an array
    ("[]", {"jsonrpc": "2.0", "error": {"code": -32600}, "id": None}),
    # non-empty invalid batch
    ("[1]", [{"jsonrpc": "2.0", "error": {"code": -32600}, "id": None}]),
    ("[1,2,3]", [{"jsonrpc": "2.0", "error": {"code": -32600}, "id": None}] * 3),
    # mixed batch
    (
        """[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
        ]""",
        [
            {"jsonrpc": "2.0", "result": 7, "id": "1"},
            {"jsonrpc": "2.0", "result": 19, "id": "2"},
            {"jsonrpc": "2.0", "error": {"code": -32600}, "id": None},
            {"jsonrpc": "2.0", "error": {"code": -32601}, "id": "5"},
            {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"},
        ],
    ),
    # batch of notifications only: nothing at all
    (
        '[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},{"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]',
        None,
    ),
]


@pytest.mark.parametrize(("frame", "expected"), SPEC_EXAMPLES)
def test_specification_examples(frame, expected):
    reply = exchange(frame)
    if expected is None:
        assert reply is None
    else:
        assert strip(reply) == strip(expected)


HOSTILE = [
    ("NaN", -32700),  # JSON has no NaN
    ('{"jsonrpc": "2.0", "method": "sum", "params": [NaN, 1], "id": 1}', -32700),
    ("[" * 10_000 + "]" * 10_000, -32700),  # nesting past the parser's bound
    ("1" * 5000, -32700),  # a 5,000-digit integer cannot be represented
    ('{"jsonrpc": "2.0", "method": "sum", "params": [' + "9" * 5000 + ', 1], "id": 1}', -32700),
    ("\xff\xfe garbage", -32700),
    ('{"jsonrpc": "1.0", "method": "sum", "params": [1, 2], "id": 1}', -32600),  # wrong version
    ('{"jsonrpc": "2.0", "method": "sum", "params": 5, "id": 1}', -32600),  # params not structured
    ('{"jsonrpc": "2.0", "method": "sum", "params": [1, 2], "id": [1]}', -32600),  # id must be scalar
    ('{"jsonrpc": "2.0", "method": "sum", "params": [1, 2], "id": true}', -32600),
    ('{"jsonrpc": "2.0", "method": "sum", "params": ["1", 2], "id": 1}', -32602),  # wrong type
    ('{"jsonrpc": "2.0", "method": "sum", "params": [true, 2], "id": 1}', -32602),  # bool is not an int
    ('{"jsonrpc": "2.0", "method": "sum", "params": [1], "id": 1}', -32602),  # missing b
    ('{"jsonrpc": "2.0", "method": "sum", "params": [1, 2, 3, 4], "id": 1}', -32602),  # too many
    ('{"jsonrpc": "2.0", "method": "sum", "params": {"a": 1, "b": 2, "z": 3}, "id": 1}', -32602),  # unknown
    ('{"jsonrpc": "2.0", "method": "no_such", "id": 1}', -32601),
]


@pytest.mark.parametrize(("frame", "code"), HOSTILE)
def test_hostile_input_gets_the_right_code(frame, code):
    reply = exchange(frame)
    assert reply["error"]["code"] == code
    assert set(reply["error"]["data"]) >= {"type", "detail"}


def test_a_batch_at_the_limit_is_served_and_one_over_is_one_error():
    call = '{"jsonrpc": "2.0", "method": "get_data", "id": %d}'
    assert len(exchange("[" + ",".join(call % i for i in range(100)) + "]")) == 100  # the default
    refused = exchange("[" + ",".join(["{}"] * 101) + "]")
    assert refused["id"] is None and refused["error"]["code"] == -32600  # one object, not a list
    assert "exceeds the limit of 100 (TRADING_RPC_MAX_BATCH)" in refused["error"]["message"]


@pytest.mark.parametrize(
    ("params", "param", "problem"),
    [
        ({"days": 5}, "symbol", "missing required parameter"),
        ({"symbol": 5}, "symbol", "expected string, got integer"),
        ({"symbol": "CBA.AX", "days": 1.5}, "days", "expected integer, got number"),
        ({"symbol": "CBA.AX", "symbols": ["A", 3]}, "symbols", "symbols[1]: expected string, got integer"),
        ({"symbol": "CBA.AX", "symbols": "CBA.AX"}, "symbols", "expected array[string], got string"),
        ({"symbol": "CBA.AX", "side": "HOLD"}, "side", "expected one of 'BUY' | 'SELL', got 'HOLD'"),
        ({"symbol": "CBA.AX", "action": "HOLD"}, "action", "expected one of 'BUY', 'SELL', got 'HOLD'"),
        ({"symbol": "CBA.AX", "config": []}, "config", "expected object, got array"),
        ({"symbol": "CBA.AX", "flag": 1}, "flag", "expected boolean, got integer"),
        ({"symbol": "CBA.AX", "extra": 1}, "extra", "unknown parameter"),
    ],
)
def test_invalid_params_name_the_parameter(params, param, problem):
    spec = MethodSpec.from_function("typed", Demo().typed)
    with pytest.raises(InvalidParams) as info:
        spec.bind(params)
    assert info.value.param == param
    assert info.value.data["param"] == param
    assert info.value.detail == problem


def test_valid_params_are_coerced():
    spec = MethodSpec.from_function("typed", Demo().typed)
    kwargs = spec.bind({"symbol": "CBA.AX", "ratio": 2, "symbols": ["A"], "action": "SELL"})
    assert kwargs == {"symbol": "CBA.AX", "ratio": 2.0, "symbols": ["A"], "action": Side.SELL}
    assert isinstance(kwargs["ratio"], float)
    assert spec.bind(["CBA.AX", 10]) == {"symbol": "CBA.AX", "days": 10}


def test_describe_lists_params_and_doc():
    described = MethodSpec.from_function("typed", Demo().typed).describe()
    names = [p["name"] for p in described["params"]]
    assert names == ["symbol", "days", "ratio", "flag", "symbols", "side", "action", "config"]
    assert described["params"][0] == {"name": "symbol", "type": "string", "required": True}
    assert described["params"][1]["default"] == 30


def test_remote_errors_rebuild_as_typed_exceptions():
    for cls in (
        DependencyUnavailable,
        NotConfigured,
        RiskRejected,
        MarketClosed,
        RpcTimeout,
        NotFound,
    ):
        wire = cls("boom", detail="why", data={"rule": "x"}).to_wire()
        rebuilt = error_from_wire(orjson.loads(orjson.dumps(wire)))
        assert type(rebuilt) is cls
        assert (rebuilt.code, rebuilt.message, rebuilt.detail, rebuilt.data["rule"]) == (
            cls.code,
            "boom",
            "why",
            "x",
        )
    params = error_from_wire(InvalidParams("symbol", "unknown").to_wire())
    assert isinstance(params, InvalidParams) and params.param == "symbol"
    odd = error_from_wire({"code": -31999, "message": "custom"})
    assert isinstance(odd, ServiceError) and odd.code == -31999


def test_dumps_handles_decimal_and_nan():
    from decimal import Decimal

    assert orjson.loads(dumps({"a": Decimal("1.5"), "b": float("nan")})) == {"a": 1.5, "b": None}


def test_rpc_decorator_marks_without_wrapping():
    async def method(self):
        return 1

    assert rpc(method) is method and method.__rpc__ is True
    with pytest.raises(TypeError):
        rpc(lambda self: 1)
