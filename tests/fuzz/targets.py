"""Fuzz targets: one function per target, bytes in, and only documented outcomes allowed out.

Each target feeds its input to a piece of code that reads what a stranger may write (an RPC frame
on the socket, a request's params, a CSV file in the data directory, the bytes of an HTTP
connection to the gateway) and checks that the code
either answers or raises one of its documented errors. Anything else (another exception, a reply
that is no JSON-RPC reply, a coerced value of the wrong type) raises `Crash` or escapes as is:
for atheris that is a crash, and for the corpus replay (tests/unit/test_fuzz_corpus.py) a failure.

No atheris import here: CI replays the corpus with this module alone.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson

from services.base.base_service import BaseService
from services.base.rpc import InvalidParams, MethodSpec, RpcServer, rpc
from services.base.rpc.params import coerce
from services.domain import asx_calendar
from services.domain.bars import FIRST_BAR_DATE, LAST_BAR_DATE, trading_days_between
from services.domain.history_merge import rows_from_csv
from services.domain.intraday import NoIntradayData
from services.domain.intraday_history import IntradaySeries, parse_intraday_csv
from services.domain.price_history import MarketDataError, history_from_csv
from services.gateway import http_server

#: The longest input a target is given (the fuzz script passes it as atheris -max_len).
MAX_LEN = 4096


class Crash(AssertionError):
    """An outcome the code under test does not document."""


# --- a demo service: one method per kind of annotation the suite's @rpc methods use -------------


class Side(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"


def _check(value: Any, tp: Any, name: str) -> None:
    """The coerced value has the annotation's type (ints widened to float, enums made members)."""
    if not isinstance(value, tp) or (tp in (int, float) and isinstance(value, bool)):
        raise Crash(f"{name}: coerced to {type(value).__name__}, expected {tp.__name__}: {value!r}")


class FuzzDemo(BaseService):
    """Never started: only its dispatch (MethodSpec.bind, then the method) is exercised."""

    name = "fuzz-demo"

    @rpc
    async def scalars(self, symbol: str, quantity: int, price: float, live: bool = False) -> dict:
        """Plain JSON scalars; a float param takes an int."""
        _check(symbol, str, "symbol")
        _check(quantity, int, "quantity")
        _check(price, float, "price")
        _check(live, bool, "live")
        return {"symbol": symbol, "quantity": quantity, "price": price, "live": live}

    @rpc
    async def choices(self, side: Side, mode: Literal["fast", "slow", 3] = "fast") -> str:
        """An enum from its value and a Literal of mixed types."""
        _check(side, Side, "side")
        if mode not in ("fast", "slow", 3) or isinstance(mode, bool):
            raise Crash(f"mode: {mode!r} passed a Literal")
        return f"{side.value}:{mode}"

    @rpc
    async def optional(self, limit: int | None = None, note: str | float | None = None) -> list:
        """Unions with null."""
        if limit is not None:
            _check(limit, int, "limit")
        if note is not None and not isinstance(note, (str, float)):
            raise Crash(f"note: {note!r} passed str | float | None")
        return [limit, note]

    @rpc
    async def containers(
        self, symbols: list[str], weights: dict[str, float] | None = None, pair: tuple = ()
    ) -> int:
        """Typed lists and dicts: each element is checked."""
        for s in symbols:
            _check(s, str, "symbols[]")
        for v in (weights or {}).values():
            _check(v, float, "weights{}")
        return len(symbols) + len(weights or {}) + len(pair)

    @rpc
    async def anything(self, payload: Any = None, extra: dict | None = None) -> Any:
        """Unchecked params echo back: the reply encoder sees whatever the decoder made."""
        return {"payload": payload, "extra": extra}


_DOCUMENTED_CODES = frozenset({-32700, -32600, -32601, -32602})


class _RpcHarness:
    """One event loop, one demo service and one (never started) server for every input."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.service = FuzzDemo()
        # Never started: handle_frame is called directly, so the socket path is never created.
        self.server = RpcServer(Path("fuzz-demo.sock"), self.service.dispatch)
        # bind's targets: the demo's own methods (the built-ins take no params worth fuzzing)
        own = sorted(n for n, f in vars(FuzzDemo).items() if getattr(f, "__rpc__", False))
        self.specs = [self.service._methods[name] for name in own]

    def frame(self, data: bytes) -> None:
        reply = self.loop.run_until_complete(self.server.handle_frame(data))
        if reply is None:
            return
        try:
            decoded = orjson.loads(reply)
        except orjson.JSONDecodeError as exc:
            raise Crash(f"the reply is not JSON: {reply[:200]!r}") from exc
        for message in decoded if isinstance(decoded, list) else [decoded]:
            _check_reply(message)


def _check_reply(message: Any) -> None:
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or "id" not in message:
        raise Crash(f"not a JSON-RPC reply: {message!r:.200}")
    if "result" in message:
        return
    error = message.get("error")
    if not isinstance(error, dict) or error.get("code") not in _DOCUMENTED_CODES:
        # -32603 here means an exception escaped the demo's dispatch: a bug, not bad input.
        raise Crash(f"undocumented error: {error!r:.300}")
    if not isinstance(error.get("message"), str) or not error["message"]:
        raise Crash(f"an error without a message: {error!r:.300}")


_harness: _RpcHarness | None = None


def _rpc() -> _RpcHarness:
    global _harness
    if _harness is None:
        _harness = _RpcHarness()
    return _harness


def rpc_frame(data: bytes) -> None:
    """A frame as it arrives on the socket -> RpcServer.handle_frame -> one JSON-RPC reply."""
    _rpc().frame(data)


def rpc_params(data: bytes) -> None:
    """The first byte picks a demo method; the rest is its params (JSON) -> MethodSpec.bind.

    Documented: InvalidParams naming a declared parameter (or "params"); on success, each value
    has its annotation's type. Then coerce() straight, for annotations no demo method has.
    """
    if not data:
        return
    specs = _rpc().specs
    spec: MethodSpec = specs[data[0] % len(specs)]
    try:
        params = orjson.loads(data[1:])
    except orjson.JSONDecodeError:
        return  # the frame decoder's business (rpc_frame): bind only ever sees decoded JSON
    if params is not None and not isinstance(params, (list, dict)):
        return  # check_request refuses these before bind
    try:
        kwargs = spec.bind(params)
    except InvalidParams as exc:
        if exc.param != "params" and exc.param not in spec.by_name and not isinstance(params, dict):
            raise Crash(f"InvalidParams names {exc.param!r}, not a parameter of {spec.name}") from exc
        if not exc.message:
            raise Crash("InvalidParams without a message") from exc
    else:
        _rpc().loop.run_until_complete(spec.func(**kwargs))
    for tp in (int | float, list[int], dict[str, list[float]], Literal["a", 1], Side | None):
        try:
            coerce(params, tp, "value")
        except ValueError as exc:
            if not str(exc):
                raise Crash(f"coerce({tp}) raised a ValueError without a message") from exc


# --- CSV files in the data directory ---------------------------------------------------------------

# After every date a fuzzed file is likely to name, so all of it is visible.
_NOW = datetime(2030, 1, 2, 7, 0, tzinfo=UTC)


def _text(data: bytes) -> str | None:
    """The callers read the file as UTF-8 and refuse (MarketDataError) what does not decode."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def yahoo_csv(data: bytes) -> None:
    """A daily Yahoo export -> the cleaned history (market-data's csv source, training) and the
    merge rows (yahoo_history's fetch). Documented: MarketDataError naming the file."""
    text = _text(data)
    if text is None:
        return
    for read in (
        lambda: history_from_csv("CBA.AX", text, _NOW, asx_calendar.is_trading_day),
        lambda: history_from_csv("CBA.AX", text, _NOW),
        lambda: rows_from_csv(text, "CBA.AX.csv"),
    ):
        try:
            read()
        except MarketDataError as exc:
            if "CBA.AX.csv" not in str(exc):
                raise Crash(f"MarketDataError does not name the file: {exc}") from exc


def intraday_csv(data: bytes) -> None:
    """An intraday export -> parsed bars -> a series -> the lookups a quote makes. Documented:
    MarketDataError naming the file; NoIntradayData (a ValueError) when no quote can be made."""
    text = _text(data)
    if text is None:
        return
    try:
        parsed = parse_intraday_csv(text, "CBA.AX_5m.csv")
    except MarketDataError as exc:
        if "CBA.AX_5m.csv" not in str(exc):
            raise Crash(f"MarketDataError does not name the file: {exc}") from exc
        return
    if len(parsed.dropped) > parsed.rows_read:
        raise Crash(f"dropped {len(parsed.dropped)} of {parsed.rows_read} rows")
    series = IntradaySeries(parsed.bars, "5m")
    days: list[date] = series.days[-2:] or [date(2024, 6, 14)]
    for day in days:
        series.previous_close(day)
        now = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=5)
        series.latest_visible(20, now)
        try:
            series.quote("CBA.AX", now, 0.0, "csv")
        except NoIntradayData as exc:
            if not str(exc):
                raise Crash("NoIntradayData without a reason") from exc
    try:
        series.resampled("15m")
    except ValueError as exc:
        if not str(exc):
            raise Crash("resample raised a ValueError without a message") from exc


# --- the gateway's HTTP server: a connection's bytes in, well-formed answers out ----------------


class _Sink:
    """The writer side of a connection that only collects what the server sends."""

    def __init__(self) -> None:
        self.sent = bytearray()

    def write(self, data: bytes) -> None:
        self.sent += data

    async def drain(self) -> None:
        return None

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        return None


async def _sizes(request: http_server.Request) -> http_server.Response:
    """Answers with numbers only (a string read from the input could look like a status line)."""
    body = await request.read() if request.method == "POST" else b""
    seen = {"query": len(request.query), "headers": len(request.headers), "body": len(body)}
    return http_server.Response(orjson.dumps(seen), headers={"Content-Type": "application/json"})


_HTTP_DOCUMENTED = frozenset({100, 200, 400, 413, 431, 501})
_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [A-Za-z -]*\r\n")


async def _http_answers(data: bytes) -> bytes:
    server = http_server.HttpServer(_sizes, head_timeout_s=1.0, max_line_bytes=256, max_body_bytes=64)
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    sink = _Sink()
    await server._serve(http_server._Exchange(server, reader, sink))  # type: ignore[arg-type]
    return bytes(sink.sent)


def http_request(data: bytes) -> None:
    """The bytes a client sends on one connection, then its end -> the gateway's HTTP server
    (http_server: h11 and its own bounds, an answer of sizes) -> what it sends back: nothing, or
    answers whose status lines are 100, 200, 400, 413, 431 or 501, and no exception."""
    sent = _rpc().loop.run_until_complete(_http_answers(data))
    if sent and not sent.startswith(b"HTTP/1.1 "):
        raise Crash(f"not an HTTP answer: {sent[:120]!r}")
    for match in _STATUS_LINE.finditer(sent):
        if int(match.group(1)) not in _HTTP_DOCUMENTED:
            raise Crash(f"undocumented status: {match.group(0)!r} in {sent[:300]!r}")


def warm_up() -> None:
    """Once per fuzzing process, before the 1 s hang limit applies: the ASX calendar of every year
    a bar may have (bars.FIRST_BAR_DATE..LAST_BAR_DATE). Years outside the generated holiday table
    come from the `holidays` library, whose import and first use take seconds on a busy machine:
    a one-time cost of a process, not of an input."""
    trading_days_between(FIRST_BAR_DATE, LAST_BAR_DATE, asx_calendar.is_trading_day)
    _rpc()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "rpc_frame": rpc_frame,
    "rpc_params": rpc_params,
    "yahoo_csv": yahoo_csv,
    "intraday_csv": intraday_csv,
    "http_request": http_request,
}

CORPUS_DIR = Path(__file__).parent / "corpus"
CRASHES_DIR = Path(__file__).parent / "crashes"
