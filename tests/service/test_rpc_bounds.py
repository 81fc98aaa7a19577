"""The RPC server's bounds against a hostile client, and who may connect (a real demo service).

The contract (README, "The wire protocol"): while one client does its worst on a service, a caller
on a kept connection has `health` answered every time, within HEALTH_DEADLINE_S here (a loaded
2-core CI machine; the benchmark tests/benchmarks/bench_rpc_attack.py prints the real figures),
and the service's memory grows by less than MEMORY_GROWTH_MIB.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest

from services.base.knobs import ConfigError, read_knobs
from services.base.rpc.limits import LogLimit, RpcKnobs, parse_uids
from tests.service._rpc_attacks import (
    MIB,
    Prober,
    big_batch,
    closed_by_peer,
    connect,
    idle_partial_frames,
    many_connections,
    pipelined_never_read,
    read_line,
    read_lines,
)
from tests.support import rpc_call_sync, wait_until

DEMO = "tests/service/_demo_service.py"
HEALTH_DEADLINE_S = 5.0
MEMORY_GROWTH_MIB = 150
NOBODY = 65534
#: The system's interpreter: the venv's may live where another user cannot read (/root/...).
SYSTEM_PYTHON = Path("/usr/bin/python3")


def start_demo(processes, suite, name: str = "demo", **env: str):
    return processes.service(name, suite, entry=DEMO, extra_env={"DEMO_NAME": name, **env}).start()


# ---- the knobs and the log limit (pure) -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "uids"),
    [
        ("1000", (1000,)),
        (" 1000, 65534 ,", (1000, 65534)),  # blanks and a trailing comma are ignored
        ("0", (0,)),
    ],
)
def test_allowed_uids_parse(raw, uids):
    assert parse_uids(raw) == uids


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"TRADING_RPC_ALLOWED_UIDS": "nobody"}, "'nobody' is not a numeric uid"),
        ({"TRADING_RPC_ALLOWED_UIDS": "-1"}, "'-1' is not a numeric uid"),
        ({"TRADING_RPC_ALLOWED_UIDS": "4294967295"}, "is not a numeric uid"),  # (uid_t)-1: no uid
        ({"TRADING_RPC_MAX_BATCH": "0"}, "0 is outside 1..100000"),
        ({"TRADING_RPC_IDLE_TIMEOUT_S": "nan"}, "not a number"),
        ({"TRADING_RPC_MAX_CONNECTIONS": "many"}, "not an integer"),
    ],
)
def test_bad_rpc_knobs_name_the_variable(env, problem):
    with pytest.raises(ConfigError) as caught:
        read_knobs(RpcKnobs, env)
    assert str(caught.value).startswith(next(iter(env))) and problem in str(caught.value)


def test_rpc_knob_defaults():
    knobs = read_knobs(RpcKnobs, {})
    assert (knobs.max_batch, knobs.max_in_flight, knobs.idle_timeout_s, knobs.max_connections) == (
        100,
        64,
        30.0,
        256,
    )
    assert knobs.allowed_uids == ()


def test_log_limit_lets_one_line_through_per_window_and_counts_the_rest():
    limit = LogLimit(window_s=10)
    assert limit.allow(100.0) == 0
    assert [limit.allow(t) for t in (101.0, 105.0, 109.9)] == [None, None, None]
    assert limit.allow(110.0) == 3  # the next line says how many were not logged
    assert limit.allow(110.5) is None
    assert limit.allow(125.0) == 1


# ---- bounds ----------------------------------------------------------------------------------


def test_a_service_with_a_bad_rpc_knob_stops_with_one_line(processes, suite):
    service = processes.service(
        "demo", suite, entry=DEMO, extra_env={"DEMO_NAME": "demo", "TRADING_RPC_MAX_IN_FLIGHT": "0"}
    ).start(wait=False)
    assert service.wait_exit(60) == 2
    assert "configuration error: TRADING_RPC_MAX_IN_FLIGHT: 0 is outside 1..100000" in service.output()


def test_a_batch_over_the_limit_is_one_error_naming_it(processes, suite):
    service = start_demo(processes, suite, TRADING_RPC_MAX_BATCH="3")
    call = b'{"jsonrpc":"2.0","method":"get_data","id":%d}'
    with connect(service.socket) as s:
        s.sendall(b"[" + b",".join(call % i for i in range(3)) + b"]\n")
        assert len(orjson.loads(read_line(s))) == 3  # at the limit: served
        s.sendall(b"[" + b",".join(call % i for i in range(4)) + b"]\n")
        refused = orjson.loads(read_line(s))
    assert refused["id"] is None and refused["error"]["code"] == -32600
    assert "batch of 4 requests exceeds the limit of 3 (TRADING_RPC_MAX_BATCH)" in refused["error"]["message"]
    assert rpc_call_sync(service.socket, "metrics")["rpc"]["batches_too_big"] == 1


def test_requests_in_flight_per_connection_are_capped_and_all_answered(processes, suite):
    service = start_demo(processes, suite, TRADING_RPC_MAX_IN_FLIGHT="4")
    with connect(service.socket, timeout_s=60) as s:
        s.sendall(
            b"".join(b'{"jsonrpc":"2.0","method":"sleep","params":[1.5],"id":%d}\n' % i for i in range(10))
        )
        seen = []

        def running() -> int:
            # `metrics` on another connection counts itself among the requests in flight.
            seen.append(rpc_call_sync(service.socket, "metrics")["inflight"] - 1)
            return seen[-1]

        wait_until(running, timeout_s=60, what="4 sleeps running", until=lambda n: n == 4)
        ids = {orjson.loads(line)["id"] for line in read_lines(s, 10)}
    assert ids == set(range(10))
    assert max(seen) <= 4
    assert rpc_call_sync(service.socket, "metrics")["rpc"]["reading_paused"] >= 1


def test_the_requests_of_batches_count_against_the_in_flight_cap(processes, suite):
    """A batch's requests are counted one by one: two batches of 10 and 3 single requests on one
    connection, with a cap of 4, never run more than 4 at once, and every one is answered."""
    service = start_demo(processes, suite, TRADING_RPC_MAX_IN_FLIGHT="4")
    call = b'{"jsonrpc":"2.0","method":"sleep_counted","params":[0.3],"id":%d}'
    with connect(service.socket, timeout_s=60) as s:
        s.sendall(
            b"[" + b",".join(call % i for i in range(10)) + b"]\n"
            + b"".join(call % i + b"\n" for i in range(10, 13))
            + b"[" + b",".join(call % i for i in range(13, 23)) + b"]\n"
        )  # fmt: skip
        replies = []
        for line in read_lines(s, 5):
            reply = orjson.loads(line)
            replies += reply if isinstance(reply, list) else [reply]
    assert sorted(r["id"] for r in replies) == list(range(23))
    assert max(r["result"] for r in replies) == 4  # the cap was reached, never passed


def test_the_hostile_client_cannot_stop_health_nor_grow_memory(processes, suite):
    """The issue's attacks one after the other (and a 1 MiB batch from 16 connections at once),
    with `health` asked every 50 ms all along on a connection opened before them."""
    service = start_demo(processes, suite, TRADING_RPC_IDLE_TIMEOUT_S="2")
    prober = Prober(service.socket, service.pid).start()
    try:
        replies = big_batch(service.socket, times=2)
        assert all(r["id"] is None and r["error"]["code"] == -32600 for r in replies)
        assert "TRADING_RPC_MAX_BATCH" in replies[0]["error"]["message"]
        # the same from 16 connections at once: each 1 MiB frame waits for its turn to be parsed
        flood = [
            threading.Thread(target=big_batch, args=(service.socket,), kwargs={"times": 1}) for _ in range(16)
        ]
        for thread in flood:
            thread.start()
        for thread in flood:
            thread.join(120)

        taken = pipelined_never_read(service.socket, requests=200_000, hold_s=2.0)
        assert taken < 200_000 * 50, "the service read everything: no backpressure"
        # the writer's side: the service stopped reading rather than queueing replies
        assert prober.call("metrics")["rpc"]["reading_paused"] >= 1
        # the smallest frames (each answered -32700): one read of them is held unsplit
        taken = pipelined_never_read(service.socket, requests=2_000_000, hold_s=1.0, one=b"1\n")
        assert taken < 2_000_000 * 2, "the service read everything: no backpressure"

        closed = idle_partial_frames(service.socket, connections=40, timeout_s=30)
        assert closed == 40, f"only {closed} of 40 idle partial frames were closed"

        refused, kept = many_connections(service.socket, connections=300)
        assert kept <= 255 and refused >= 300 - 255  # the prober holds one of the 256
        stats = prober.call("metrics")["rpc"]
    finally:
        prober.stop()
    rss_mib, pss_mib = prober.growth_mib()
    print(
        f"\nhealth answered {len(prober.latencies_s)} times, worst {prober.worst_s * 1000:.1f} ms;"
        f" memory growth RSS {rss_mib:.1f} MiB, PSS {pss_mib:.1f} MiB; rpc counters {stats}"
    )
    assert not prober.failures, prober.failures
    assert len(prober.latencies_s) >= 10
    assert prober.worst_s < HEALTH_DEADLINE_S
    assert rss_mib < MEMORY_GROWTH_MIB and pss_mib < MEMORY_GROWTH_MIB
    assert stats["idle_closed"] == 40 and stats["connections_over_limit"] >= 300 - 255
    assert stats["batches_too_big"] == 2 + 16 and stats["large_frames"] >= 2 + 16
    # and new callers are served again once the flood is gone
    assert rpc_call_sync(service.socket, "get_data") == ["hello", 5]


def test_an_idle_partial_frame_is_closed_and_an_idle_connection_stays(processes, suite):
    """(A frame past the size bound: tests/service/test_base_service.py.)"""
    service = start_demo(processes, suite, TRADING_RPC_IDLE_TIMEOUT_S="0.5")
    with connect(service.socket) as idle:
        # no partial frame: a kept connection outlives several idle timeouts
        assert not closed_by_peer(idle, timeout_s=2.0)
        idle.sendall(b'{"jsonrpc":"2.0","method":"get_data","id":1}\n')
        assert orjson.loads(read_line(idle))["result"] == ["hello", 5]
        with connect(service.socket) as half:
            half.sendall(b'{"jsonrpc":"2.0","method":"get_d')
            assert closed_by_peer(half, timeout_s=30)
    assert rpc_call_sync(service.socket, "metrics")["rpc"]["idle_closed"] == 1


def test_replies_owed_are_sent_after_the_peer_half_closes(processes, suite):
    service = start_demo(processes, suite)
    with connect(service.socket) as s:
        s.sendall(
            b'{"jsonrpc":"2.0","method":"sleep","params":[0.3],"id":1}\n{"jsonrpc":"2.0","method":"get_data","id":2}'
        )
        s.shutdown(socket.SHUT_WR)
        lines = b""
        while chunk := s.recv(4096):
            lines += chunk
    assert sorted(orjson.loads(line)["id"] for line in lines.splitlines()) == [1, 2]


# ---- peer credentials ------------------------------------------------------------------------

# Run as another uid by the system's Python: connect, ask `health`, print what came back.
CALLER = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"jsonrpc":"2.0","method":"health","id":1}\\n')
    buf = b""
    while not buf.endswith(b"\\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
except (BrokenPipeError, ConnectionResetError):
    buf = b""
sys.stdout.write(buf.decode() or "CLOSED")
"""


def call_as(uid: int, path: Path) -> str:
    done = subprocess.run(
        [str(SYSTEM_PYTHON), "-I", "-S", "-c", CALLER, str(path)],
        user=uid,
        group=uid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def open_to_others(service, suite) -> None:
    """Let another uid reach the socket, after the service started (it refuses such a directory
    at start): every directory above it searchable, the socket writable by all."""
    for directory in [suite.socket_dir, *suite.socket_dir.parents]:
        if directory == Path("/tmp") or directory == Path("/"):
            break
        os.chmod(directory, 0o711)
    os.chmod(service.socket, 0o666)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a caller as uid 65534 (CI runs as root)")
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason=f"needs {SYSTEM_PYTHON} for the caller as uid 65534")
def test_a_caller_of_another_uid_is_refused_unless_allowed(processes, suite):
    refusing = start_demo(processes, suite, "demo")
    allowing = start_demo(processes, suite, "demo-allow", TRADING_RPC_ALLOWED_UIDS=str(NOBODY))
    open_to_others(refusing, suite)
    open_to_others(allowing, suite)

    for _ in range(5):  # a small flood: each refused and counted, one log line
        assert call_as(NOBODY, refusing.socket) == "CLOSED"
    assert rpc_call_sync(refusing.socket, "metrics")["rpc"]["connections_refused"] == 5
    log = [orjson.loads(line) for line in (suite.log_dir / "demo.log").read_text().splitlines()]
    refusals = [entry["msg"] for entry in log if "refused an RPC connection" in entry["msg"]]
    assert len(refusals) == 1 and f"uid {NOBODY} (pid " in refusals[0], refusals
    assert rpc_call_sync(refusing.socket, "get_data") == ["hello", 5]  # its own uid: served

    reply = orjson.loads(call_as(NOBODY, allowing.socket))
    assert reply["result"]["service"] == "demo-allow"
    assert rpc_call_sync(allowing.socket, "metrics")["rpc"]["connections_refused"] == 0


def test_the_refusal_is_checked_on_the_peer_credentials(processes, suite):
    """Without root: the service's own uid is let in, and the metrics say the bounds in force."""
    service = start_demo(processes, suite, TRADING_RPC_MAX_CONNECTIONS="8")
    stats = rpc_call_sync(service.socket, "metrics")["rpc"]
    assert stats["connections_refused"] == 0 and stats["connections_accepted"] >= 1
    assert stats["limits"]["max_connections"] == 8 and stats["limits"]["max_frame_bytes"] == MIB
    assert sys.platform.startswith("linux")  # SO_PEERCRED is Linux's
