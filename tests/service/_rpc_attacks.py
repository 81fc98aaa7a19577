"""A hostile client's attacks on one service's RPC socket, and a well-behaved caller that asks
`health` all along and keeps the worst latency and the service's memory peak.

Used by tests/service/test_rpc_bounds.py (the contract, with the bounds asserted) and
tests/benchmarks/bench_rpc_attack.py (the figures printed). Plain blocking sockets: the attacks
run in the caller's thread, the prober in its own thread on a connection opened before them (as
the supervisor keeps its connection), so a flood of new connections does not shut it out.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

MIB = 1 << 20


def connect(path: Path, timeout_s: float = 10.0) -> socket.socket:
    deadline = time.monotonic() + timeout_s
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout_s)
        try:
            s.connect(str(path))
            return s
        except BlockingIOError:  # the listen backlog is full (a socket with a timeout never waits)
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def read_line(s: socket.socket) -> bytes:
    """One reply line, or b"" when the peer closed first."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 16)
        if not chunk:
            return b""
        buf += chunk
    return buf


def read_lines(s: socket.socket, count: int) -> list[bytes]:
    """`count` reply lines (fewer when the peer closes first)."""
    buf = b""
    while buf.count(b"\n") < count:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
    return buf.splitlines()


def closed_by_peer(s: socket.socket, timeout_s: float = 10.0) -> bool:
    """True when the peer closes the connection (EOF or reset) within `timeout_s`, sending nothing."""
    s.settimeout(timeout_s)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@dataclass
class Memory:
    rss: int
    pss: int

    @classmethod
    def of(cls, pid: int) -> Memory:
        info = psutil.Process(pid).memory_full_info()
        return cls(rss=info.rss, pss=info.pss)


@dataclass
class Prober:
    """Calls `health` on one kept connection every `interval_s`; records latencies and memory."""

    path: Path
    pid: int
    interval_s: float = 0.05
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    baseline: Memory | None = None
    peak: Memory | None = None

    def __post_init__(self) -> None:
        self._sock = connect(self.path)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-prober", daemon=True)
        self.baseline = self.peak = Memory.of(self.pid)

    def call(self, method: str, params: Any = None) -> Any:
        """One call on the kept connection (metrics between attacks: new ones may be refused)."""
        frame: dict = {"jsonrpc": "2.0", "method": method, "id": 1}
        if params is not None:
            frame["params"] = params
        with self._lock:
            self._sock.sendall(orjson.dumps(frame) + b"\n")
            line = read_line(self._sock)
        if not line:
            raise ConnectionError(f"{self.path.name} closed the prober's connection")
        return orjson.loads(line)["result"]

    def start(self) -> Prober:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                health = self.call("health")
                self.latencies_s.append(time.perf_counter() - started)
                if health.get("status") not in ("healthy", "degraded"):
                    self.failures.append(f"health status {health.get('status')}")
            except Exception as exc:  # recorded, and the test fails on it
                self.failures.append(f"health failed: {exc!r}")
                return
            self._sample_memory()
            self._stop.wait(self.interval_s)

    def _sample_memory(self) -> None:
        now = Memory.of(self.pid)
        assert self.peak is not None
        self.peak = Memory(rss=max(self.peak.rss, now.rss), pss=max(self.peak.pss, now.pss))

    @property
    def worst_s(self) -> float:
        return max(self.latencies_s, default=float("nan"))

    def growth_mib(self) -> tuple[float, float]:
        """(RSS, PSS) peak growth over the baseline, MiB."""
        assert self.baseline is not None and self.peak is not None
        return (self.peak.rss - self.baseline.rss) / MIB, (self.peak.pss - self.baseline.pss) / MIB


# ---- the attacks: each returns what it observed ------------------------------------------------


def big_batch(path: Path, frame_bytes: int = MIB, times: int = 3) -> list[dict]:
    """One batch of as many `{}` as fit in one frame, `times` times on one connection."""
    count = (frame_bytes - 2) // 3  # "[" + "{}," * n, the last comma replaced by "]"
    frame = b"[" + b"{}," * (count - 1) + b"{}]\n"
    replies = []
    with connect(path, timeout_s=60) as s:
        for _ in range(times):
            s.sendall(frame)
            replies.append(orjson.loads(read_line(s)))
    return replies


CALL = b'{"jsonrpc":"2.0","method":"get_data","id":123456}\n'


def pipelined_never_read(path: Path, requests: int = 200_000, hold_s: float = 2.0, one: bytes = CALL) -> int:
    """Send `requests` frames `one` without reading a reply; the bytes the service took before
    it stopped reading (backpressure), after `hold_s` of it not taking any more."""
    payload = memoryview(one * requests)
    sent = 0
    with connect(path) as s:
        s.settimeout(hold_s)
        try:
            while sent < len(payload):
                sent += s.send(payload[sent : sent + (1 << 16)])
        except TimeoutError:
            pass  # nothing more taken for hold_s: the service stopped reading
    return sent


def idle_partial_frames(
    path: Path, connections: int = 40, frame_bytes: int = MIB, timeout_s: float = 30.0
) -> int:
    """`connections` connections each send all of a `frame_bytes` frame but its last bytes, then
    wait; how many the service closed within `timeout_s` (the idle timeout plus a margin)."""
    body = b'{"jsonrpc":"2.0","method":"get_data","params":{"x":"' + b"a" * frame_bytes
    body = body[: frame_bytes - 64]  # within the frame bound: only the idle timeout can end it
    socks = [connect(path) for _ in range(connections)]
    try:
        for s in socks:
            s.sendall(body)
        deadline = time.monotonic() + timeout_s
        return sum(closed_by_peer(s, max(0.1, deadline - time.monotonic())) for s in socks)
    finally:
        for s in socks:
            s.close()


def many_connections(path: Path, connections: int = 300) -> tuple[int, int]:
    """Open `connections` at once and hold them: (closed at once by the service, still open).
    Each is asked for one `get_data` so a kept one is known to be served."""
    socks = []
    try:
        for _ in range(connections):
            socks.append(connect(path))
        closed = open_ = 0
        for s in socks:
            try:
                s.sendall(b'{"jsonrpc":"2.0","method":"get_data","id":1}\n')
                reply = read_line(s)
            except (BrokenPipeError, ConnectionResetError):
                reply = b""
            if reply:
                open_ += 1
            else:
                closed += 1
        return closed, open_
    finally:
        for s in socks:
            s.close()
