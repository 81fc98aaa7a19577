"""The RPC server's bounds and who may connect: knobs, the peer's credentials, a log rate limit.

Every bound is per service process. What a hostile peer on the socket can hold, at most:

- input: one partial frame (`TRADING_RPC_MAX_FRAME_BYTES`) plus one read of the socket per
  connection; a partial frame that makes no progress for `idle_timeout_s` is closed;
- work: `max_in_flight` frames (a request or a batch of at most `max_batch`) per connection,
  reading stops while that many run; of their requests (a batch's counted one by one) at most
  `max_in_flight` run at once, the others wait parsed;
- output: the transport's write buffer (64 KiB high-water mark) plus the replies of the frames in
  flight; reading stops while a peer does not read its replies (backpressure), so nothing queues;
- `max_connections` connections at once; more are closed at once.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import ClassVar

from services.base.knobs import knob

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid (Linux)
MAX_UID = (1 << 32) - 2  # (uid_t)-1 means "no uid"


def parse_uids(raw: str) -> tuple[int, ...]:
    """`1000,65534` -> (1000, 65534); ValueError naming the item that is not a uid."""
    uids: list[int] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        if not item.isdigit() or int(item) > MAX_UID:
            raise ValueError(f"{item!r} is not a numeric uid (0..{MAX_UID})")
        uids.append(int(item))
    return tuple(uids)


@dataclass(frozen=True, slots=True)
class RpcKnobs:
    """Every service's RPC server bounds (TRADING_RPC_*); TRADING_RPC_MAX_FRAME_BYTES is Settings'."""

    service: ClassVar[str] = "rpc"

    max_batch: int = knob(100, low=1, high=100_000, doc="a batch with more requests is refused (-32600)")
    max_in_flight: int = knob(
        64,
        low=1,
        high=100_000,
        doc="requests (a batch's counted one by one) run at once per connection, and frames started; reading waits",
    )
    idle_timeout_s: float = knob(
        30.0,
        low=0.1,
        high=86_400,
        doc="a connection holding a partial frame with no new byte this long is closed",
    )
    max_connections: int = knob(
        256, low=1, high=100_000, doc="connections open at once; more are closed at once"
    )
    allowed_uids: tuple[int, ...] = knob(
        (),
        parse=parse_uids,
        doc="uids besides the service's own that may connect (comma list); others are closed at once",
    )


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a connected Unix socket (SO_PEERCRED)."""
    pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid


class LogLimit:
    """At most one log line per `window_s` for one kind of event; the others are counted.

    `allow(now)` -> the number of events suppressed since the last line allowed, or None when this
    one must not be logged. Pure: the caller passes the time.
    """

    __slots__ = ("_next_s", "_suppressed", "window_s")

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        self._next_s = float("-inf")
        self._suppressed = 0

    def allow(self, now_s: float) -> int | None:
        if now_s < self._next_s:
            self._suppressed += 1
            return None
        suppressed, self._suppressed = self._suppressed, 0
        self._next_s = now_s + self.window_s
        return suppressed
