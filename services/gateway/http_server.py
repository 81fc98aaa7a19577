"""The gateway's HTTP/1.1 server: asyncio streams for the connections, h11 for the protocol.

h11 (a dependency of httpx already) parses and frames HTTP/1.1 and nothing else: 0.3 MB and 8 ms
to import where aiohttp's server cost the gateway process 9.6 MB and ~90 ms (its client, two TLS
contexts with the CA store, its C parsers), on every cold start and every restart. What this
module adds around it is the server's policy, the bounds a public listener needs:

- a connection's request head (request line and headers) must arrive whole within `head_timeout_s`
  of the moment the server waits for it (a new connection, or the end of the previous answer): a
  silent, stalled or trickling client is closed without an answer, however slowly it makes
  progress;
- no request-line or header line longer than `max_line_bytes` (431, then closed), and a head of at
  most 8 of those;
- the body is read only when the handler asks (`Request.read`), at most `max_body_bytes` (413);
  a body the handler left unread closes the connection after the answer, unless it already came
  whole;
- keep-alive and pipelining as HTTP/1.1 allows (h11 decides when a connection must close:
  HTTP/1.0, `Connection: close`, a framing it cannot reuse), `Expect: 100-continue` answered when
  the body is read;
- an answer a client does not read is dropped after `head_timeout_s` (the connection closed).

The handler gets a Request and returns a Response; it owns every status but the protocol's own
(400 for what h11 refuses, 431, 501 for a transfer coding other than chunked, 413 from `read`, 500
when the handler raised). HEAD is answered with
the headers a GET would have (the handler sees HEAD and answers as for GET; no body is sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from ssl import SSLContext
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

import h11
import orjson

log = logging.getLogger("gateway.http")
READ_CHUNK = 65536
#: What a refusal of the protocol says: h11's status hint (400, 431 for a head past its bound, 501
#: for a transfer coding other than chunked, as RFC 9112 asks), or the server's own 431.
REFUSALS = {431: "request header fields too large", 501: "transfer coding not implemented"}
LINGER_S = 1.0  # how long a connection closed after an early answer drains what the client sends


class HttpError(Exception):
    """A request the server refuses for what it is, not for a bug: `answer()` is its JSON reply."""

    status = 400
    error = "bad request"

    def answer(self) -> Response:
        return json_answer({"error": self.error}, self.status)


class BodyTooLarge(HttpError):
    """The request body is longer than the server accepts (413)."""

    status = 413
    error = "request body too large"


class BadRequest(HttpError):
    """A request (target, length, body framing) this server cannot read (400)."""


class Response:
    """An answer: status, body bytes and headers (Content-Length and Date are added)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: bytes = b"", status: int = 200, headers: Mapping[str, str] | None = None):
        self.body = body
        self.status = status
        self.headers = dict(headers or {})


def json_answer(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer (dict keys that are not strings written as strings)."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status,
        {"Content-Type": "application/json", **(headers or {})},
    )


class Request:
    """One request: `method` ("GET"), `path` (percent-decoded), `query` (name -> every value, in
    order), `headers` (lower-case names; repeated ones joined with ", "), `remote` (the peer's
    address), `content_length` (None when not given). The body comes from `read`."""

    __slots__ = ("_body", "_exchange", "content_length", "headers", "method", "path", "query", "remote")

    def __init__(
        self, event: h11.Request, remote: str, exchange: _Exchange | None = None, body: bytes | None = None
    ):
        self.method = event.method.decode("ascii")
        try:
            target = event.target.decode("ascii")  # h11 let through only visible ASCII
            if not target.startswith("/"):
                if not target.lower().startswith(("http://", "https://")):
                    raise BadRequest("request target")  # authority or asterisk form: not served here
                parts = urlsplit(target)
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            raw_path, _, raw_query = target.partition("?")
            self.path = unquote_to_bytes(raw_path).decode("utf-8")
            query: dict[str, list[str]] = {}
            for name, value in parse_qsl(
                raw_query, keep_blank_values=True, encoding="utf-8", errors="strict"
            ):
                query.setdefault(name, []).append(value)
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("request target") from None
        self.query = query
        headers: dict[str, str] = {}
        for raw_name, raw_value in event.headers:
            key = raw_name.decode("ascii")  # h11 gives names lower-cased
            text = raw_value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.headers = headers
        self.remote = remote
        length = headers.get("content-length")
        try:  # h11 checked the value; a repeated equal one is joined here: "5, 5"
            self.content_length = int(length.split(",")[0]) if length is not None else None
        except ValueError:
            raise BadRequest("content-length") from None
        self._exchange = exchange
        self._body = body

    async def read(self) -> bytes:
        """The whole body (b"" when there is none); BodyTooLarge past the server's bound,
        BadRequest when its framing is broken, ConnectionError when the client left inside it."""
        if self._body is None:
            self._body = await self._exchange.read_body() if self._exchange is not None else b""
        return self._body


Handler = Callable[[Request], Awaitable[Response]]


class _Exchange:
    """One connection's h11 state and streams, for the request being answered."""

    def __init__(self, server: HttpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.reader = reader
        self.writer = writer
        # The head is bounded per line below; h11's own bound is on the whole head.
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=8 * server.max_line_bytes)
        self.body_read = False
        self.answered_early = False  # an answer went out before the request was read to its end

    async def receive(self, deadline: float | None) -> bool:
        """More bytes into h11; False when the peer closed or the deadline passed."""
        try:
            async with asyncio.timeout_at(deadline):
                data = await self.reader.read(READ_CHUNK)
        except (TimeoutError, ConnectionError):
            return False
        self.conn.receive_data(data)  # b"" tells h11 the peer closed
        return bool(data)

    async def read_body(self) -> bytes:
        if self.conn.they_are_waiting_for_100_continue:
            self.writer.write(
                self.conn.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
                or b""
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:  # e.g. a chunk size that is no number
                raise BadRequest("request body framing") from None
            if event is h11.NEED_DATA:
                if not await self.receive(None):  # the handler's own timeout bounds this wait
                    raise ConnectionResetError("the client closed inside its request body")
                continue
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.server.max_body_bytes:
                    raise BodyTooLarge(size)
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.body_read = True
                return b"".join(chunks)
            else:  # ConnectionClosed: h11 says the body ended early
                raise ConnectionResetError("the client closed inside its request body")

    def drain_buffered_body(self) -> bool:
        """Consume what is left of the request body if it is all here already; False if not."""
        if self.body_read:
            return True
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                return False
            if isinstance(event, h11.EndOfMessage):
                self.body_read = True
                return True
            if not isinstance(event, h11.Data):  # NEED_DATA, PAUSED, ConnectionClosed
                return False

    async def answer(self, response: Response, method: bytes) -> bool:
        """Send `response`; False when the connection is gone or the client does not read it."""
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers.items()
        ]
        headers += [
            (b"content-length", str(len(response.body)).encode()),
            (b"date", formatdate(usegmt=True).encode()),
        ]
        try:
            reason = HTTPStatus(response.status).phrase.encode()
        except ValueError:
            reason = b""
        out = self.conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason)) or b""
        if response.body and method != b"HEAD":
            out += self.conn.send(h11.Data(data=response.body)) or b""
        out += self.conn.send(h11.EndOfMessage()) or b""
        try:
            self.writer.write(out)
            async with asyncio.timeout(self.server.head_timeout_s):
                await self.writer.drain()
        except (TimeoutError, ConnectionError):
            return False
        return True


class HttpServer:
    """Serves `handler` on a TCP address (see the module's docstring for its bounds)."""

    def __init__(
        self,
        handler: Handler,
        *,
        head_timeout_s: float,
        max_line_bytes: int,
        max_body_bytes: int,
    ):
        self.handler = handler
        self.head_timeout_s = head_timeout_s
        self.max_line_bytes = max_line_bytes
        self.max_body_bytes = max_body_bytes
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()

    async def start(self, host: str, port: int, ssl_context: SSLContext | None = None) -> tuple[str, int]:
        """Listen; the address bound (the kernel's port when `port` is 0). OSError if it cannot."""
        self._server = await asyncio.start_server(
            self._accepted, host, port, backlog=128, ssl=ssl_context, limit=READ_CHUNK
        )
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def close(self) -> None:
        """Stop listening and close every connection (answers in progress are cut)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        exchange = _Exchange(self, reader, writer)
        try:
            await self._serve(exchange)
            if exchange.answered_early:
                await self._linger(exchange)
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug here: the connection goes, the server serves on
            log.exception("HTTP connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, exchange: _Exchange) -> None:
        peer = exchange.writer.get_extra_info("peername")
        remote = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        conn = exchange.conn
        loop = asyncio.get_running_loop()
        while True:
            deadline = loop.time() + self.head_timeout_s
            try:
                event = conn.next_event()
                while event is h11.NEED_DATA:
                    if not await exchange.receive(deadline):
                        return  # silent, stalled, too slow, or gone: closed without an answer
                    event = conn.next_event()
            except h11.RemoteProtocolError as exc:  # 400, or 431 for a head past h11's bound
                await self._refuse(exchange, exc.error_status_hint, b"GET")
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed (or PAUSED after a refused upgrade): done
            if problem := self._head_problem(event):
                await self._refuse(exchange, problem, event.method)
                return
            try:
                request = Request(event, remote, exchange)
            except BadRequest:
                await self._refuse(exchange, 400, event.method)
                return
            exchange.body_read = False
            try:
                response = await self.handler(request)
            except (ConnectionError, asyncio.IncompleteReadError):
                return
            except HttpError as refused:  # from Request.read: too long, or its framing broken
                response = refused.answer()
            except Exception:
                log.exception("internal error answering %s %s", request.method, request.path)
                response = json_answer({"error": "internal error"}, 500)
            if not exchange.drain_buffered_body():
                # Answered before the body came whole: the connection cannot carry another
                # request, and the client must know (else it sends its next one on it).
                response.headers["Connection"] = "close"
                exchange.answered_early = True
            if not await exchange.answer(response, event.method) or exchange.answered_early:
                return
            if conn.our_state is h11.MUST_CLOSE:
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    @staticmethod
    async def _linger(exchange: _Exchange) -> None:
        """After answering a request whose body was not read (413, a timeout, a refusal): stop
        writing, then read and drop what the client still sends, for at most LINGER_S, before
        closing. Closed at once, the unread bytes would make the kernel reset the connection and
        the client could lose the answer it has not read yet (seen: a 200 KB body answered 413)."""
        with contextlib.suppress(Exception):
            if exchange.writer.can_write_eof():
                exchange.writer.write_eof()
            async with asyncio.timeout(LINGER_S):
                while await exchange.reader.read(READ_CHUNK):
                    pass

    def _head_problem(self, event: h11.Request) -> int | None:
        """431 for a request line or header line longer than max_line_bytes, else None."""
        line = len(event.method) + len(event.target) + 10  # "GET " + target + " HTTP/1.1"
        if line > self.max_line_bytes or any(
            len(name) + len(value) + 2 > self.max_line_bytes for name, value in event.headers
        ):
            return 431
        return None

    async def _refuse(self, exchange: _Exchange, status: int, method: bytes) -> None:
        """Answer a protocol error (if a response can still be sent), then close."""
        if exchange.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        error = REFUSALS.get(status, "bad request")
        response = json_answer({"error": error}, status, {"Connection": "close"})
        with contextlib.suppress(h11.LocalProtocolError):
            exchange.answered_early = await exchange.answer(response, method)
