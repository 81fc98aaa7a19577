"""The JSON-RPC client: one multiplexed connection per target socket, typed errors rebuilt."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from pathlib import Path
from typing import Any

import orjson

from services.base.rpc.codec import dumps, loads
from services.base.rpc.errors import error_from_wire

log = logging.getLogger("rpc")


class ConnectionLost(ConnectionError):
    """The connection dropped after the request was sent: it may or may not have run."""


class RpcClient:
    def __init__(self, path: Path, max_frame_bytes: int = 1 << 20):
        self.path = path
        self.max_frame_bytes = max_frame_bytes
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        # By request id; a reply is looked up by the id it carries (any JSON-RPC id).
        self._pending: dict[int | str | None, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._reader_task: asyncio.Task | None = None
        self._connect_lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        # at_eof: the peer closed (e.g. the service restarted) even if our reader has not run yet.
        return (
            self._writer is not None
            and not self._writer.is_closing()
            and self._reader is not None
            and not self._reader.at_eof()
        )

    async def connect(self) -> None:
        """Open the connection if needed. Raises OSError when nothing listens."""
        if self.connected:
            return
        async with self._connect_lock:
            if self.connected:
                return
            if self._reader_task is not None:
                self._reader_task.cancel()
                self._fail_pending()
            reader, writer = await asyncio.open_unix_connection(
                str(self.path), limit=max(self.max_frame_bytes, 1 << 16) * 4
            )
            self._reader, self._writer = reader, writer
            self._reader_task = asyncio.create_task(self._read_loop(reader))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readuntil(b"\n")
                try:
                    message = loads(line)
                except orjson.JSONDecodeError:
                    log.warning("unparseable reply from %s", self.path.name)
                    continue
                for reply in message if isinstance(message, list) else (message,):
                    future = self._pending.pop(reply.get("id"), None) if isinstance(reply, dict) else None
                    if future is not None and not future.done():
                        future.set_result(reply)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._fail_pending()

    def _fail_pending(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(f"connection to {self.path.name} lost"))

    async def call(self, method: str, params: Any = None) -> Any:
        """Send one request and wait for its reply. Raises OSError when it could not be sent
        (nothing listening), ConnectionLost when it was sent but the connection dropped before
        the reply (it may or may not have run), or the remote RpcError."""
        frame = {"jsonrpc": "2.0", "method": method, "id": 0}
        if params is not None:
            frame["params"] = params
        for last_try in (False, True):
            await self.connect()
            request_id = frame["id"] = next(self._ids)
            future = asyncio.get_running_loop().create_future()
            self._pending[request_id] = future
            try:
                writer = self._writer
                if writer is None:
                    raise ConnectionResetError("connection closed")
                writer.write(dumps(frame) + b"\n")
                await writer.drain()
            except (ConnectionError, OSError) as exc:
                # The write itself failed: the peer was already gone (e.g. it restarted while this
                # cached connection sat idle), so nothing was delivered. Reconnect once and resend.
                self._pending.pop(request_id, None)
                self._fail_pending()
                if last_try:
                    raise ConnectionRefusedError(f"cannot send to {self.path.name}: {exc}") from None
                continue
            break
        try:
            reply = await future
        finally:
            self._pending.pop(request_id, None)
        if "error" in reply:
            raise error_from_wire(reply["error"])
        return reply.get("result")

    async def notify(self, method: str, params: Any = None) -> None:
        await self.connect()
        frame = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            frame["params"] = params
        assert self._writer is not None
        self._writer.write(dumps(frame) + b"\n")
        await self._writer.drain()

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
            self._reader_task = None
        self._fail_pending()
