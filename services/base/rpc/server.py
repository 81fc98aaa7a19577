"""The JSON-RPC server on one Unix stream socket: one JSON text per line in both directions.

The frame limit is enforced by the stream reader's own limit, so an oversized line is refused
before it is buffered whole. Several requests may be in flight on one connection; each is its own
task and its response carries the request's id, so responses may come in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from services.base.rpc.codec import (
    check_request,
    dumps,
    error_response,
    loads,
    request_id_of,
    result_response,
)
from services.base.rpc.errors import InvalidRequest, ParseError, RpcError

Dispatcher = Callable[[str, Any], Awaitable[Any]]


class RpcServer:
    """Serves one Unix socket. `dispatch(method, params)` runs a call and raises RpcError."""

    def __init__(self, path: Path, dispatch: Dispatcher, max_frame_bytes: int = 1 << 20):
        self.path = path
        self.dispatch = dispatch
        self.max_frame_bytes = max_frame_bytes
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._inflight: set[asyncio.Task] = set()
        self._conn_tasks: set[asyncio.Task] = set()
        self.accepting = False

    async def start(self) -> None:
        old_umask = os.umask(0o177)  # the socket is created 0600: only this user may call
        try:
            self._server = await asyncio.start_unix_server(
                self._serve_connection, path=str(self.path), limit=self.max_frame_bytes
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        self.accepting = True

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def stop_accepting(self) -> None:
        self.accepting = False
        if self._server is not None:
            self._server.close()

    async def drain(self, grace_s: float) -> bool:
        """Wait for in-flight requests; True when they all finished within the grace period."""
        if not self._inflight:
            return True
        _, pending = await asyncio.wait(set(self._inflight), timeout=grace_s)
        return not pending

    async def close(self) -> None:
        for task in list(self._inflight):
            task.cancel()
        for writer in list(self._connections):
            writer.close()  # each connection's reader sees EOF and its loop ends by itself
        if self._conn_tasks:
            _, pending = await asyncio.wait(set(self._conn_tasks), timeout=1.0)
            # Cancel only stragglers: asyncio 3.11 logs "Exception in callback" for every
            # cancelled connection task (its done-callback calls task.exception()).
            for task in pending:
                task.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_task = asyncio.current_task()
        if conn_task is not None:
            self._conn_tasks.add(conn_task)
        self._connections.add(writer)
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        await self._handle_frame(exc.partial, writer)
                    break
                except asyncio.LimitOverrunError:
                    # Refused before buffering it whole: answer once, then hang up on this peer.
                    too_big = InvalidRequest(f"frame exceeds {self.max_frame_bytes} bytes")
                    await self._write(writer, dumps(error_response(too_big)))
                    break
                if not line.strip():
                    continue
                self._start_request(self._handle_frame(line, writer))
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            self._connections.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
            if conn_task is not None:
                self._conn_tasks.discard(conn_task)

    def _start_request(self, coro) -> None:
        # Each request is its own task, so a slow one never holds up the others on the connection.
        # (Running the first step inline would save a loop turn, but libraries that pin state to
        # the current task, such as anyio cancel scopes and asyncio.timeout, would then break.)
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _write(self, writer: asyncio.StreamWriter, payload: bytes) -> None:
        if writer.is_closing():
            return
        # One write() call per reply keeps replies whole without a lock; concurrent drain() calls
        # are safe (asyncio keeps a queue of drain waiters since 3.10).
        writer.write(payload + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _handle_frame(self, frame: bytes, writer: asyncio.StreamWriter) -> None:
        reply = await self.handle_frame(frame)
        if reply is not None:
            await self._write(writer, reply)

    async def handle_frame(self, frame: bytes) -> bytes | None:
        """One frame in, the encoded reply out (None when nothing is to be sent)."""
        try:
            message = loads(frame)
        except (orjson.JSONDecodeError, ValueError, RecursionError):
            return dumps(error_response(ParseError("parse error: not valid JSON")))
        if isinstance(message, list):
            if not message:
                return dumps(error_response(InvalidRequest("invalid request: empty batch")))
            replies = await asyncio.gather(*(self._handle_one(item) for item in message))
            answered = [r for r in replies if r is not None]
            return dumps(answered) if answered else None
        reply = await self._handle_one(message)
        return None if reply is None else dumps(reply)

    async def _handle_one(self, obj: Any) -> dict | None:
        try:
            method, params, request_id, notification = check_request(obj)
        except InvalidRequest as exc:
            return error_response(exc, request_id_of(obj))
        try:
            result = await self.dispatch(method, params)
        except RpcError as exc:
            return None if notification else error_response(exc, request_id)
        return None if notification else result_response(result, request_id)
