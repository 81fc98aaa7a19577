"""The gateway's HTTP/1.1 server (services/gateway/http_server.py) on a real socket, spoken to in
raw bytes: framing, keep-alive, pipelining, HEAD, bounds and what it refuses. The gateway's routes
over it are tested in tests/system/test_gateway.py."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from services.gateway.http_server import HttpServer, Request, Response


async def echo(request: Request) -> Response:
    """What the server read, as JSON (the body only when the path asks for it)."""
    body = await request.read() if request.path.startswith("/read") else None
    seen = {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "auth": request.headers.get("authorization"),
        "length": request.content_length,
        "body": body.decode() if body is not None else None,
    }
    return Response(orjson.dumps(seen), headers={"Content-Type": "application/json"})


@pytest.fixture
async def server():
    http = HttpServer(echo, head_timeout_s=1.0, max_line_bytes=1024, max_body_bytes=64)
    host, port = await http.start("127.0.0.1", 0)
    http.address = (host, port)  # type: ignore[attr-defined]
    yield http
    await http.close()


async def exchange(
    server, raw: bytes, answers: int = 1, deadline_s: float = 30.0
) -> list[tuple[int, dict, bytes]]:
    """Send `raw`; read `answers` responses (status, headers, body), or fewer if the server closes."""
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(raw)
    found = []
    try:
        async with asyncio.timeout(deadline_s):
            for _ in range(answers):
                status_line = await reader.readline()
                if not status_line:
                    break
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", 0))
                body = await reader.readexactly(length) if length and b"HEAD" not in raw[:5] else b""
                found.append((int(status_line.split()[1]), headers, body))
    finally:
        writer.close()
    return found


async def closed_by_server(server, raw: bytes, deadline_s: float = 30.0) -> tuple[bool, bytes]:
    """Send `raw` and read until the server closes: (closed within the deadline, what it sent)."""
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(raw)
    try:
        async with asyncio.timeout(deadline_s):
            return True, await reader.read()
    except TimeoutError:
        return False, b""
    finally:
        writer.close()


async def test_a_request_is_read_and_answered_with_length_and_date(server):
    [(status, headers, body)] = await exchange(
        server,
        b"GET /api/x%5EY?a=1&b=two+words&b=&c=%C3%A9 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\n\r\n",
    )
    assert status == 200 and headers["content-length"] == str(len(body)) and "date" in headers
    seen = orjson.loads(body)
    assert seen["path"] == "/api/x^Y"
    assert seen["query"] == {"a": ["1"], "b": ["two words", ""], "c": ["é"]}
    assert seen["auth"] == "Bearer t" and seen["length"] is None


async def test_keep_alive_and_pipelined_requests_on_one_connection(server):
    raw = b"GET /one HTTP/1.1\r\nHost: h\r\n\r\nGET /two HTTP/1.1\r\nHost: h\r\n\r\n"
    answers = await exchange(server, raw, answers=2)
    assert [orjson.loads(body)["path"] for _, _, body in answers] == ["/one", "/two"]


async def test_a_body_is_read_when_asked_and_bounded(server):
    [(status, _, body)] = await exchange(
        server, b"POST /read HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert status == 200 and orjson.loads(body)["body"] == "hello"
    chunked = b"POST /read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"40\r\n" + b"x" * 64 + b"\r\n1\r\nx\r\n0\r\n\r\n"  # 65 bytes: one past the bound
    [(status, _, _)] = await exchange(server, chunked)
    assert status == 413


async def test_an_unread_body_closes_the_connection_unless_it_came_whole(server):
    whole = (
        b"POST /skip HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert [orjson.loads(b)["path"] for _, _, b in await exchange(server, whole, answers=2)] == [
        "/skip",
        "/next",
    ]
    partial = b"POST /skip HTTP/1.1\r\nHost: h\r\nContent-Length: 30\r\n\r\nab"
    closed, answer = await closed_by_server(server, partial)
    # and says so: a client that kept the connection would send its next request on it
    assert closed and answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" in answer.lower()


async def test_expect_100_continue_is_answered_when_the_body_is_read(server):
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"POST /read HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    async with asyncio.timeout(30):
        assert await reader.readline() == b"HTTP/1.1 100 Continue\r\n"
        writer.write(b"ok")
        rest = await reader.read(4096)
        while b'"body":"ok"' not in rest:
            rest += await reader.read(4096)
    writer.close()


async def test_head_has_the_headers_of_get_and_no_body(server):
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n")
    async with asyncio.timeout(30):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: " in head.lower()
        # the next thing on the wire is the GET's answer, not a body
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_http_1_0_is_answered_then_closed(server):
    closed, answer = await closed_by_server(server, b"GET /old HTTP/1.0\r\n\r\n")
    assert closed and answer.startswith(b"HTTP/1.1 200 OK") and b'"path":"/old"' in answer


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /x HTTP/1.1\r\nHost: h\r\nX-Big: " + b"y" * 2000 + b"\r\n\r\n", 431),  # a line past 1024
        (b"GET /" + b"p" * 2000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 431),
        (b"GET /%FF HTTP/1.1\r\nHost: h\r\n\r\n", 400),  # not UTF-8 once decoded
        (b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n", 400),
        # found by fuzzing: a chunk size that is no number, seen while the handler reads the body
        (b"POST /read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n", 400),
        (b"POST /read HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),  # RFC 9112
    ],
)
async def test_what_it_cannot_read_is_refused_and_closed_and_it_serves_on(server, raw, status):
    closed, answer = await closed_by_server(server, raw)
    assert closed and answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:80]
    assert answer.endswith(b"}") and b"connection: close" in answer.lower()
    [(ok, _, _)] = await exchange(server, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert ok == 200


@pytest.mark.parametrize("raw", [b"", b"GET /x HTT", b"GET /x HTTP/1.1\r\nHost: h\r\n"])
async def test_a_head_not_whole_in_time_is_closed_without_an_answer(server, raw):
    closed, answer = await closed_by_server(server, raw)
    assert closed and answer == b""


async def test_a_trickling_head_is_closed_in_time_however_it_progresses(server):
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"GET /x HTTP/1.1\r\n")
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(30):
            while not reader.at_eof():
                writer.write(b"X-Slow: 1\r\n")
                try:
                    async with asyncio.timeout(0.2):
                        assert await reader.read(100) == b""
                except TimeoutError:
                    continue
    except ConnectionError:
        pass
    finally:
        writer.close()
    assert loop.time() - started < 20  # closed at the 1 s head bound, not kept open by progress


async def test_a_handler_that_raises_is_a_500_and_the_connection_serves_on():
    async def broken(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("a bug")
        return Response(b"{}", headers={"Content-Type": "application/json"})

    http = HttpServer(broken, head_timeout_s=1.0, max_line_bytes=1024, max_body_bytes=64)
    http.address = await http.start("127.0.0.1", 0)  # type: ignore[attr-defined]
    try:
        raw = b"GET /boom HTTP/1.1\r\nHost: h\r\n\r\nGET /fine HTTP/1.1\r\nHost: h\r\n\r\n"
        assert [status for status, _, _ in await exchange(http, raw, answers=2)] == [500, 200]
    finally:
        await http.close()


async def test_close_ends_open_connections_and_the_listener(server):
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    await server.close()
    async with asyncio.timeout(30):
        await reader.read()  # to its end: the server closed the kept-alive connection
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection(*server.address)
