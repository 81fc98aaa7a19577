"""The JSON-RPC server on one Unix stream socket: one JSON text per line in both directions.

Each connection is an asyncio Protocol (no stream reader in between), so the server decides what
is held and when reading stops:

- who: the peer's SO_PEERCRED uid must be this process's or in TRADING_RPC_ALLOWED_UIDS, and at
  most `max_connections` are open; any other connection is closed before a byte is read;
- input: a frame longer than `max_frame_bytes` is refused as soon as the partial frame passes
  the limit, never buffered whole; a partial frame with no new byte for `idle_timeout_s` is
  closed (an idle connection between frames may stay: clients keep theirs open);
- work: at most `max_in_flight` frames run at once per connection; the rest of the read waits
  unsplit (at most one socket read, as the bytes read) and reading pauses until one finishes; and
  at most `max_in_flight` requests run at once per connection, the items of batches counted one by
  one (a batch's requests beyond the cap wait for a running one to finish: `RequestGate`);
- output: while the transport's write buffer is over its high-water mark (the peer does not read
  its replies) no new frame starts and reading pauses, so replies are never piled up;
- fairness: the work of one loop turn is bounded whatever the number of connections, so many
  connections sending big frames at once cannot starve a small `health` on another one. A frame
  over LIGHT_BYTES waits for its turn to be parsed (LARGE_BYTES_PER_TURN of them per loop turn,
  in arrival order), and a connection whose read brought over LIGHT_BYTES pauses until its turn
  to read comes back (HEAVY_READS_PER_TURN such connections read per loop turn).

Several requests may be in flight on one connection; each is its own task and its response
carries the request's id, so responses may come in any order. After the peer's EOF the replies
still owed are sent, then the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
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
from services.base.rpc.limits import LogLimit, RpcKnobs, peer_credentials

Dispatcher = Callable[[str, Any], Awaitable[Any]]

#: A frame, or a read, larger than this waits for its turn (requests are far smaller).
LIGHT_BYTES = 4096
#: Large frames parsed per loop turn, in bytes (at least one frame): ~25 ms of the densest JSON
#: (1 MiB of `{}` takes ~110 ms to parse and free on this machine).
LARGE_BYTES_PER_TURN = 256 * 1024
#: Heavy readers let read again per loop turn (each read is at most asyncio's 256 KiB).
HEAVY_READS_PER_TURN = 2

log = logging.getLogger("rpc")

#: The counters `metrics` shows under "rpc" (each since start).
COUNTERS = (
    "connections_accepted",
    "connections_refused",  # peer uid not allowed
    "connections_over_limit",  # more than max_connections open
    "idle_closed",  # a partial frame made no progress for idle_timeout_s
    "frames_too_big",
    "batches_too_big",
    "reading_paused",  # times reading stopped: max_in_flight reached or replies not read
    "reads_deferred",  # times a heavy reader waited its turn (fairness between connections)
    "large_frames",  # frames over LIGHT_BYTES, each parsed in its turn
)


class RequestGate:
    """At most `cap` requests of one connection dispatched at once. A request enters at once while
    fewer run (no await: the hot path of single requests); else it waits, first come first served,
    and a leaving request hands its place straight to the next waiting one."""

    __slots__ = ("_waiting", "cap", "running")

    def __init__(self, cap: int):
        self.cap = cap
        self.running = 0
        self._waiting: deque[asyncio.Future] = deque()

    def try_enter(self) -> bool:
        if self.running < self.cap and not self._waiting:
            self.running += 1
            return True
        return False

    async def enter(self) -> None:
        if self.try_enter():
            return
        place = asyncio.get_running_loop().create_future()
        self._waiting.append(place)
        try:
            await place
        except asyncio.CancelledError:
            if place.done() and not place.cancelled():  # handed a place as it was cancelled
                self.leave()
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(place)
            raise

    def leave(self) -> None:
        while self._waiting:
            place = self._waiting.popleft()
            if not place.done():
                place.set_result(None)  # the place passes on: `running` stays
                return
        self.running -= 1


class RpcServer:
    """Serves one Unix socket. `dispatch(method, params)` runs a call and raises RpcError."""

    def __init__(
        self,
        path: Path,
        dispatch: Dispatcher,
        max_frame_bytes: int = 1 << 20,
        limits: RpcKnobs | None = None,
    ):
        self.path = path
        self.dispatch = dispatch
        self.max_frame_bytes = max_frame_bytes
        self.limits = limits or RpcKnobs()
        self.uid = os.geteuid()
        self.allowed_uids = frozenset((self.uid, *self.limits.allowed_uids))
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._inflight: set[asyncio.Task] = set()
        self._heavy: deque[_Connection] = deque()  # heavy readers waiting for their turn
        self._turn_scheduled = False
        self._large: deque[tuple[asyncio.Future, int]] = deque()  # large frames waiting to parse
        self._parse_turn_scheduled = False
        self._refused_log = LogLimit()
        self._over_limit_log = LogLimit()
        self._idle_log = LogLimit()
        self.accepting = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        old_umask = os.umask(0o177)  # the socket is created 0600: only this user may call
        try:
            self._server = await loop.create_unix_server(lambda: _Connection(self), path=str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        self.accepting = True

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def stats(self) -> dict:
        """The counters since start, the connections open now and the bounds in force."""
        return {
            "connections_open": len(self._connections),
            **self.counters,
            "limits": {
                "max_frame_bytes": self.max_frame_bytes,
                "max_batch": self.limits.max_batch,
                "max_in_flight": self.limits.max_in_flight,
                "idle_timeout_s": self.limits.idle_timeout_s,
                "max_connections": self.limits.max_connections,
            },
        }

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
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # ---- admission ------------------------------------------------------------------------------

    def admit(self, connection: _Connection, transport: asyncio.Transport) -> bool:
        """Whether a new connection may stay: its peer's uid, then the connection bound."""
        sock = transport.get_extra_info("socket")
        try:
            pid, uid = peer_credentials(sock)
        except (OSError, AttributeError):  # no credentials to check: not a peer we can trust
            pid, uid = 0, -1
        if uid not in self.allowed_uids:
            self.counters["connections_refused"] += 1
            self._log_refusal(
                self._refused_log,
                "refused an RPC connection from uid %d (pid %d): not this service's uid %d nor in"
                " TRADING_RPC_ALLOWED_UIDS",
                uid,
                pid,
                self.uid,
            )
            return False
        if len(self._connections) >= self.limits.max_connections:
            self.counters["connections_over_limit"] += 1
            self._log_refusal(
                self._over_limit_log,
                "closed an RPC connection from pid %d: %d connections open (TRADING_RPC_MAX_CONNECTIONS)",
                pid,
                len(self._connections),
            )
            return False
        self.counters["connections_accepted"] += 1
        self._connections.add(connection)
        return True

    def _log_refusal(self, limit: LogLimit, message: str, *args: Any, level: int = logging.WARNING) -> None:
        # Rate-limited: a flood of connections must not fill the log (one line per window).
        suppressed = limit.allow(asyncio.get_running_loop().time())
        if suppressed is None:
            return
        if suppressed:
            message += "; %d more like it not logged"
            args = (*args, suppressed)
        log.log(level, message, *args)

    def closed_idle(self, idle_s: float) -> None:
        self.counters["idle_closed"] += 1
        self._log_refusal(
            self._idle_log,
            "closed an RPC connection holding a partial frame with no new byte for %.0fs"
            " (TRADING_RPC_IDLE_TIMEOUT_S)",
            idle_s,
            level=logging.INFO,
        )

    def forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)

    def defer(self, connection: _Connection) -> None:
        """Queue a connection that read a lot at once; it reads again when its turn comes."""
        self.counters["reads_deferred"] += 1
        self._heavy.append(connection)
        if not self._turn_scheduled:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    async def large_frame_turn(self, size: int) -> None:
        """Wait until this large frame may be parsed (its turn among the large ones)."""
        self.counters["large_frames"] += 1
        turn = asyncio.get_running_loop().create_future()
        self._large.append((turn, size))
        if not self._parse_turn_scheduled:
            self._parse_turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_parse_turn)
        await turn

    def _next_parse_turn(self) -> None:
        # Once per loop turn while large frames wait: wake the first ones within the byte budget;
        # their tasks parse in the next turn, beside everything small that is ready by then.
        self._parse_turn_scheduled = False
        budget = LARGE_BYTES_PER_TURN
        while self._large and budget > 0:
            turn, size = self._large.popleft()
            if not turn.done():  # its task was cancelled (the service stops)
                turn.set_result(None)
                budget -= size
        if self._large:
            self._parse_turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_parse_turn)

    def _next_turn(self) -> None:
        # call_soon runs this once per loop turn while heavy readers wait: each turn lets a few
        # of them read again, in the order they came, so light connections are never behind.
        self._turn_scheduled = False
        resumed = 0
        while self._heavy and resumed < HEAVY_READS_PER_TURN:
            connection = self._heavy.popleft()
            if not connection.closed:
                connection.deferred = False
                connection.update_reading()
                resumed += 1
        if self._heavy:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def start_request(self, coro: Coroutine[Any, Any, None]) -> None:
        # Each request is its own task, so a slow one never holds up the others on the connection.
        # (Running the first step inline would save a loop turn, but libraries that pin state to
        # the current task, such as anyio cancel scopes and asyncio.timeout, would then break.)
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    # ---- frames ---------------------------------------------------------------------------------

    async def handle_frame(self, frame: bytes, gate: RequestGate | None = None) -> bytes | None:
        """One frame in, the encoded reply out (None when nothing is to be sent). With a `gate`
        (its connection's), each request, a batch's one by one, runs only once it has a place."""
        try:
            message = loads(frame)
        except (orjson.JSONDecodeError, ValueError, RecursionError):
            return dumps(error_response(ParseError("parse error: not valid JSON")))
        if isinstance(message, list):
            if not message:
                return dumps(error_response(InvalidRequest("invalid request: empty batch")))
            if len(message) > self.limits.max_batch:
                self.counters["batches_too_big"] += 1
                too_many = InvalidRequest(
                    f"invalid request: a batch of {len(message)} requests exceeds the limit of"
                    f" {self.limits.max_batch} (TRADING_RPC_MAX_BATCH)"
                )
                return dumps(error_response(too_many))
            replies = await asyncio.gather(*(self._handle_gated(item, gate) for item in message))
            answered = [r for r in replies if r is not None]
            return dumps(answered) if answered else None
        reply = await self._handle_gated(message, gate)
        return None if reply is None else dumps(reply)

    async def _handle_gated(self, obj: Any, gate: RequestGate | None) -> dict | None:
        if gate is None:
            return await self._handle_one(obj)
        if not gate.try_enter():
            await gate.enter()
        try:
            return await self._handle_one(obj)
        finally:
            gate.leave()

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


class _Connection(asyncio.Protocol):
    """One accepted connection: splits frames, bounds what runs and what is held."""

    def __init__(self, server: RpcServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.partial = bytearray()  # the bytes of a frame whose newline has not come yet
        # Bytes read but not yet split into frames: the in-flight cap was reached (at most one read;
        # kept whole, since a read of tiny frames split at once would cost ~20x its size).
        self.backlog = b""
        self.in_flight = 0
        self.gate = RequestGate(server.limits.max_in_flight)  # requests, a batch's one by one
        self.reading = True
        self.deferred = False  # waiting for its turn to read again (RpcServer.defer)
        self.large_waiting = 0  # large frames of this connection waiting for their parse turn
        self.writing_paused = False
        self.eof = False
        self.closed = False
        self.last_progress_s = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None

    # ---- transport callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.server.admit(self, transport):
            self.closed = True
            transport.abort()  # at once, unread: nothing the peer sent is looked at

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.forget(self)
        self.backlog = b""
        self.partial = bytearray()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.backlog = self.backlog + data if self.backlog else data  # (empty while reading)
        self._consume()
        if len(data) > LIGHT_BYTES and not self.closed:
            self.deferred = True
            self.server.defer(self)
        if self.backlog or self.deferred:
            self.update_reading()

    def eof_received(self) -> bool:
        if self.closed:
            return False
        self.eof = True
        if self.backlog or self.partial.strip():  # a last frame without its newline is a frame
            self.backlog += b"\n"
            self._consume()
        self._close_when_done()
        return True  # keep our side open until the replies owed are written

    def pause_writing(self) -> None:
        # The peer is not reading its replies: start nothing new and stop reading from it.
        self.writing_paused = True
        self.update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._run_waiting()

    # ---- frames ---------------------------------------------------------------------------------

    def _consume(self) -> None:
        """Start the complete frames of the backlog while the in-flight cap allows; a frame still
        coming goes to `partial` (within the frame bound), the rest stays in the backlog."""
        data, pos = self.backlog, 0
        cap, limit = self.server.limits.max_in_flight, self.server.max_frame_bytes
        while self.in_flight < cap and not self.writing_paused and not self.closed:
            newline = data.find(b"\n", pos)
            if newline < 0:
                if pos < len(data):
                    self.partial += data[pos:]
                    pos = len(data)
                break
            frame = data[pos:newline]
            pos = newline + 1
            if self.partial:
                self.partial += frame
                frame, self.partial = bytes(self.partial), bytearray()
            if len(frame) > limit:
                self._refuse_oversized()
                return
            if frame.strip():
                self.in_flight += 1
                self.server.start_request(self._serve(frame))
        self.backlog = data[pos:] if pos < len(data) else b""
        if self.partial and not self.closed:
            self._held_partial()

    async def _serve(self, frame: bytes) -> None:
        try:
            if len(frame) > LIGHT_BYTES:
                # Reading pauses meanwhile, so a connection holds at most one read of such frames.
                self.large_waiting += 1
                self.update_reading()
                try:
                    await self.server.large_frame_turn(len(frame))
                finally:
                    self.large_waiting -= 1
                if self.closed:  # the peer left while it waited: nobody to answer
                    return
                self.update_reading()
            reply = await self.server.handle_frame(frame, self.gate)
            if reply is not None and not self.closed:
                assert self.transport is not None
                self.transport.write(reply + b"\n")  # one write per reply keeps replies whole
        finally:
            self.in_flight -= 1
            if self.backlog or not self.reading:
                self._run_waiting()
            elif self.eof:
                self._close_when_done()

    def _run_waiting(self) -> None:
        if self.backlog and not self.closed:
            self._consume()
        if not self.reading:
            self.update_reading()
        if self.eof:
            self._close_when_done()

    def _close_when_done(self) -> None:
        if not self.backlog and self.in_flight == 0 and not self.closed:
            self.close()

    def update_reading(self) -> None:
        """Read while nothing holds it back: frames waiting, replies unread, a deferred turn."""
        if self.closed or self.eof or self.transport is None:
            return
        held = bool(self.backlog) or self.writing_paused
        want = not (held or self.deferred or self.large_waiting)
        if want and not self.reading:
            self.reading = True
            self.last_progress_s = asyncio.get_running_loop().time()  # paused time is not idleness
            self.transport.resume_reading()
        elif not want and self.reading:
            self.reading = False
            if held:
                self.server.counters["reading_paused"] += 1
            self.transport.pause_reading()

    # ---- partial frames -------------------------------------------------------------------------

    def _held_partial(self) -> None:
        if len(self.partial) > self.server.max_frame_bytes:
            self._refuse_oversized()
            return
        loop = asyncio.get_running_loop()
        self.last_progress_s = loop.time()
        if self.idle_timer is None:
            self.idle_timer = loop.call_later(self.server.limits.idle_timeout_s, self._check_idle)

    def _check_idle(self) -> None:
        self.idle_timer = None
        if self.closed or self.eof or not self.partial:  # after EOF it ends when its work is done
            return
        loop = asyncio.get_running_loop()
        timeout_s = self.server.limits.idle_timeout_s
        idle_s = loop.time() - self.last_progress_s
        if self.reading and idle_s >= timeout_s:
            self.server.closed_idle(idle_s)
            self.abort()
            return
        # Still progressing, or paused by us (backpressure is not the peer's idleness): look again.
        self.idle_timer = loop.call_later(timeout_s - idle_s if self.reading else timeout_s, self._check_idle)

    def _refuse_oversized(self) -> None:
        # Refused before it is buffered whole: answer once, then hang up on this peer.
        self.server.counters["frames_too_big"] += 1
        self.partial = bytearray()
        self.backlog = b""
        too_big = InvalidRequest(f"frame exceeds {self.server.max_frame_bytes} bytes")
        assert self.transport is not None
        self.transport.write(dumps(error_response(too_big)) + b"\n")
        self.close()

    # ---- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close after what is already written is flushed (within the idle timeout)."""
        transport = self.transport
        if transport is not None and not self.closed:
            self.closed = True
            transport.close()
            if transport.get_write_buffer_size():  # a peer that never reads must not hold it open
                asyncio.get_running_loop().call_later(self.server.limits.idle_timeout_s, transport.abort)

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            self.transport.abort()
