"""BaseService with real parts: service processes on real Unix sockets, a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import orjson
import pytest

from services.base.base_service import BaseService
from services.base.rpc import DependencyUnavailable, InternalError, InvalidParams, NotFound, RpcTimeout
from tests.support import (
    REPO,
    EventWatcher,
    Processes,
    ServiceProcess,
    async_wait_until,
    raw_exchange,
    rpc_call_sync,
    wait_until,
)

DEMO = "tests/service/_demo_service.py"


def demo(processes: Processes, suite, name="demo", **env) -> ServiceProcess:
    """The demo service as `name` (to start; stopped at teardown by the processes fixture)."""
    return processes.service(name, suite, entry=DEMO, extra_env={"DEMO_NAME": name, **env})


@pytest.fixture
def demo_service(suite, processes):
    return demo(processes, suite).start()


def test_health_and_builtins(demo_service, suite):
    health = rpc_call_sync(demo_service.socket, "health")
    assert health["service"] == "demo" and health["status"] == "healthy"
    assert health["redis"] == "connected" and health["pid"] == demo_service.pid
    assert health["memory_usage"] > 0 and health["version"]
    for key in ("uptime", "cpu_usage"):
        assert key in health
    methods = {m["name"]: m for m in rpc_call_sync(demo_service.socket, "list_methods")}
    assert {"health", "metrics", "shutdown", "list_methods", "subtract"} <= set(methods)
    assert methods["subtract"]["params"][0] == {"name": "minuend", "type": "integer", "required": True}
    assert methods["subtract"]["doc"].startswith("minuend - subtrahend")
    # JSON log lines in the log directory
    log_lines = (suite.log_dir / "demo.log").read_text().splitlines()
    assert any(orjson.loads(line)["msg"] == "demo started" for line in log_lines)


def test_socket_permissions(demo_service, suite):
    assert stat.S_IMODE(os.stat(suite.socket_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(demo_service.socket).st_mode) == 0o600


def test_spec_examples_over_the_socket(demo_service):
    path = demo_service.socket
    reply = orjson.loads(
        raw_exchange(path, b'{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}\n')
    )
    assert reply == {"jsonrpc": "2.0", "result": 19, "id": 1}
    batch = b'[{"jsonrpc":"2.0","method":"sum","params":[1,2,4],"id":"1"},{"jsonrpc":"2.0","method":"notify_hello","params":[7]},{"foo":"boo"}]\n'
    replies = orjson.loads(raw_exchange(path, batch))
    assert {r["id"]: r.get("result", r.get("error", {}).get("code")) for r in replies} == {
        "1": 7,
        None: -32600,
    }
    assert (
        raw_exchange(path, b'{"jsonrpc":"2.0","method":"update","params":[1,2,3,4,5]}\n', expect_reply=False)
        == b""
    )


def test_out_of_order_replies_on_one_connection(demo_service):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(demo_service.socket))
        s.sendall(
            b'{"jsonrpc":"2.0","method":"sleep","params":[0.5],"id":"slow"}\n'
            b'{"jsonrpc":"2.0","method":"get_data","id":"fast"}\n'
        )
        buf = b""
        while buf.count(b"\n") < 2:
            buf += s.recv(4096)
    first, second = (orjson.loads(line) for line in buf.splitlines())
    assert first["id"] == "fast" and second["id"] == "slow"


HOSTILE_FRAMES = [
    (os.urandom(512).replace(b"\n", b" ") + b"\n", -32700),
    (b"NaN\n", -32700),
    (b"[" * 10_000 + b"]" * 10_000 + b"\n", -32700),
    (b"1" * 5000 + b"\n", -32700),
    (b'{"jsonrpc":"2.0","method":"nope","id":1}\n', -32601),
    (b'{"jsonrpc":"2.0","method":"subtract","params":["a",1],"id":1}\n', -32602),
    (b'[{"jsonrpc":"2.0"}, 5]\n', -32600),
]


@pytest.mark.parametrize(("frame", "code"), HOSTILE_FRAMES)
def test_hostile_frames_answered_and_service_keeps_serving(demo_service, frame, code):
    reply = orjson.loads(raw_exchange(demo_service.socket, frame))
    first = reply[0] if isinstance(reply, list) else reply
    assert first["error"]["code"] == code
    assert rpc_call_sync(demo_service.socket, "subtract", [2, 1]) == 1


def test_oversized_frame_is_refused_before_it_is_buffered(demo_service):
    """A 2 MiB line: -32600 with id null, then the connection closes; others are served."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.connect(str(demo_service.socket))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(demo_service.socket))
            chunk = b'{"jsonrpc":"2.0","method":"get_data","params":{"x":"' + b"a" * (64 * 1024)
            sent = 0
            reply = b""
            try:
                s.sendall(chunk)
                sent += len(chunk)
                while sent < 2 * 1024 * 1024:  # never a newline: the server must answer mid-frame
                    s.sendall(b"a" * 65536)
                    sent += 65536
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    reply += data
            except ConnectionResetError:
                pass
        error = orjson.loads(reply.split(b"\n")[0])
        assert error["id"] is None and error["error"]["code"] == -32600
        other.sendall(b'{"jsonrpc":"2.0","method":"get_data","id":7}\n')
        assert orjson.loads(other.recv(4096))["result"] == ["hello", 5]
    metrics = rpc_call_sync(demo_service.socket, "metrics")
    assert metrics["inflight"] <= 1


async def test_100_concurrent_callers_one_and_many_connections(demo_service, client):
    results = await asyncio.gather(
        *(client.call_service("demo", "sum", a=i, b=1, timeout=10) for i in range(100))
    )
    assert results == [i + 1 for i in range(100)]

    async def own_connection(i):
        reader, writer = await asyncio.open_unix_connection(str(demo_service.socket))
        writer.write(
            orjson.dumps({"jsonrpc": "2.0", "method": "subtract", "params": [i, 1], "id": i}) + b"\n"
        )
        reply = orjson.loads(await reader.readline())
        writer.close()
        return reply["result"]

    assert await asyncio.gather(*(own_connection(i) for i in range(100))) == [i - 1 for i in range(100)]
    metrics = rpc_call_sync(demo_service.socket, "metrics")
    assert metrics["methods"]["sum"]["count"] == 100 and metrics["methods"]["subtract"]["count"] == 100
    assert metrics["methods"]["sum"]["p99_ms"] is not None


async def test_call_service_raises_typed_errors(demo_service, client):
    with pytest.raises(NotFound, match="no such key: k"):
        await client.call_service("demo", "missing", key="k")
    with pytest.raises(InvalidParams) as info:
        await client.call_service("demo", "pick", side="SELL", tags=["bad"])
    assert info.value.param == "tags"
    with pytest.raises(InternalError) as crash:
        await client.call_service("demo", "crash")
    assert "secret internals" not in str(crash.value.to_wire())
    with pytest.raises(RpcTimeout):
        await client.call_service("demo", "sleep", seconds=2.0, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable, match="nobody is unavailable"):
        await client.call_service("nobody", "health", timeout=5)
    assert time.monotonic() - started < 2  # bounded retries with backoff, not the whole timeout
    log_text = demo_service.dirs.log_dir.joinpath("demo.log").read_text()
    assert "secret internals" in log_text and "Traceback" in log_text  # logged once, with the traceback


def test_copies_started_at_once_leave_exactly_one_running(suite, processes):
    # Checking the socket, then binding it, would let two of these both pass: the lock does not.
    copies = [demo(processes, suite) for _ in range(3)]
    for copy in copies:
        copy.start(wait=False)
    exited = wait_until(
        lambda: [c for c in copies if c.process is not None and c.process.poll() is not None],
        60, what="all but one copy to exit", until=lambda done: len(done) == 2,
    )  # fmt: skip
    assert [c.process.returncode for c in exited if c.process] == [1, 1]
    (survivor,) = [c for c in copies if c not in exited]
    survivor.wait_healthy()
    assert (suite.socket_dir / "demo.lock").read_text().strip() == str(survivor.pid)
    assert rpc_call_sync(survivor.socket, "subtract", [3, 1]) == 2


def test_live_socket_refuses_a_second_copy_and_stale_socket_is_replaced(demo_service, suite, processes):
    second = demo(processes, suite)
    second.start(wait=False)
    assert second.wait_exit(20) == 1
    lock = suite.socket_dir / "demo.lock"
    assert f"demo: another copy holds {lock} (pid {demo_service.pid}): stop it first" in second.output()
    assert rpc_call_sync(demo_service.socket, "subtract", [3, 1]) == 2
    demo_service.signal(signal.SIGKILL)
    demo_service.wait_exit()
    assert demo_service.socket.exists()  # a stale socket file left behind
    third = demo(processes, suite).start()
    assert rpc_call_sync(third.socket, "subtract", [3, 1]) == 2


def test_sigterm_lets_in_flight_requests_finish(demo_service):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(demo_service.socket))
        s.sendall(b'{"jsonrpc":"2.0","method":"sleep","params":[1.0],"id":1}\n')
        wait_until(
            lambda: rpc_call_sync(demo_service.socket, "metrics")["inflight"],
            what="the sleep in flight (with this metrics call)",
            until=lambda inflight: inflight >= 2,
        )
        demo_service.signal(signal.SIGTERM)
        reply = orjson.loads(s.recv(4096))
    assert reply == {"jsonrpc": "2.0", "result": 1.0, "id": 1}
    assert demo_service.wait_exit() == 0
    assert not demo_service.socket.exists()


def test_second_signal_exits_at_once(demo_service):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(demo_service.socket))
        s.sendall(b'{"jsonrpc":"2.0","method":"sleep","params":[30],"id":1}\n')
        wait_until(
            lambda: rpc_call_sync(demo_service.socket, "metrics")["inflight"],
            what="the sleep in flight (with this metrics call)",
            until=lambda inflight: inflight >= 2,
        )
        demo_service.signal(signal.SIGTERM)
        # The second signal must reach a service that has handled the first (it logs it).
        wait_until(
            lambda: (demo_service.dirs.log_dir / "demo.log").read_text(),
            what="the first SIGTERM handled",
            until=lambda log: "signal SIGTERM: shutting down" in log,
        )
        started = time.monotonic()
        demo_service.signal(signal.SIGTERM)
        assert demo_service.wait_exit(5) != 0
        assert time.monotonic() - started < 3


def test_shutdown_method(demo_service):
    assert rpc_call_sync(demo_service.socket, "shutdown")["status"] == "stopping"
    assert demo_service.wait_exit() == 0
    assert not demo_service.socket.exists()


async def test_event_round_trip_between_two_processes(suite, processes, client):
    demo(processes, suite, "demo-a").start(), demo(processes, suite, "demo-b").start()
    sent = await client.call_service("demo-a", "emit", event_type="demo_plain", data={"n": 1})

    async def got():
        return (await client.call_service("demo-b", "received"))["plain"]

    seen = await async_wait_until(got, 30, what="demo-b to receive the event")
    assert seen[0]["id"] == sent["id"] and seen[0]["source"] == "demo-a" and seen[0]["data"] == {"n": 1}
    metrics = await client.call_service("demo-a", "metrics")
    assert metrics["events"]["published"] >= 1


async def test_redis_restart_resubscribe_and_durable_delivery_once(suite, redis_server, processes, client):
    publisher, consumer = demo(processes, suite, "demo-a").start(), demo(processes, suite, "demo-b").start()
    # Durable events published while the consumer is down arrive once when it is back.
    consumer.stop()
    for n in range(5):
        await client.call_service("demo-a", "emit", event_type="demo_durable", data={"n": n}, durable=True)
    consumer = demo(processes, suite, "demo-b").start()

    async def durable():
        return (await client.call_service("demo-b", "received"))["durable"]

    await async_wait_until(durable, 30, what="5 durable events", until=lambda got: len(got) >= 5)

    # Redis goes away: RPC still answers and reports degraded.
    redis_server.kill()
    await async_wait_until(lambda: _status(consumer), 30, what="consumer degraded", until="degraded".__eq__)
    assert rpc_call_sync(consumer.socket, "subtract", [5, 2]) == 3
    # A durable event published while Redis is down waits in the publisher's outbox.
    await client.call_service("demo-a", "emit", event_type="demo_durable", data={"n": 99}, durable=True)
    redis_server.start()
    await async_wait_until(lambda: _status(consumer), 30, what="consumer reconnected", until="healthy".__eq__)
    await async_wait_until(
        lambda: _status(publisher), 30, what="publisher reconnected", until="healthy".__eq__
    )

    async def after_restart():
        got = await client.call_service("demo-b", "received")
        return any(e["data"] == {"n": 99} for e in got["durable"])

    await async_wait_until(after_restart, 30, what="outbox event after the Redis restart")

    async def plain_after_restart():
        await client.call_service("demo-a", "emit", event_type="demo_plain", data={"after": True})
        got = await client.call_service("demo-b", "received")
        return any(e["data"] == {"after": True} for e in got["plain"])

    await async_wait_until(plain_after_restart, 30, interval_s=0.3, what="pub/sub after the Redis restart")

    durable_seen = (await client.call_service("demo-b", "received"))["durable"]
    ns = [e["data"]["n"] for e in durable_seen]
    assert sorted(ns) == [0, 1, 2, 3, 4, 99]  # each exactly once


async def test_failing_durable_handler_goes_to_dead_letter(suite, redis_server, processes, client):
    import redis.asyncio as aioredis

    demo(processes, suite, "demo-a").start()
    demo(processes, suite, "demo-b", DEMO_FAIL_DURABLE="1", TRADING_EVENTS_MAX_DELIVERIES="3").start()
    async with aioredis.from_url(redis_server.url) as r:
        await client.call_service(
            "demo-a", "emit", event_type="demo_durable", data={"poison": True}, durable=True
        )
        await client.call_service("demo-a", "emit", event_type="demo_durable", data={"n": 1}, durable=True)
        await async_wait_until(
            lambda: r.xlen("trading:dead:demo_durable"), 30, what="one dead-lettered entry", until=(1).__eq__
        )

    async def durable():
        return [e["data"] for e in (await client.call_service("demo-b", "received"))["durable"]]

    await async_wait_until(durable, 30, what="the next event after the poison one", until=[{"n": 1}].__eq__)
    metrics = await client.call_service("demo-b", "metrics")
    assert metrics["events"]["dead_lettered"] == 1


async def test_an_entry_that_kills_its_consumer_is_dead_lettered_across_restarts(
    suite, redis_server, processes, client
):
    # Redis counts the deliveries (XPENDING), so a consumer that dies on an entry, restarted again
    # and again, stops receiving it after MAX_DELIVERIES: the alert says so, the rest flows.
    import redis.asyncio as aioredis

    demo(processes, suite, "demo-a").start()
    env = {"DEMO_CRASH_DURABLE": "1", "TRADING_EVENTS_MAX_DELIVERIES": "3"}
    consumer = demo(processes, suite, "demo-b", **env).start()
    async with (
        aioredis.from_url(redis_server.url) as r,
        EventWatcher(redis_server.url, "event_dead_lettered") as watcher,
    ):
        await client.call_service(
            "demo-a", "emit", event_type="demo_durable", data={"crash": True}, durable=True
        )
        await client.call_service("demo-a", "emit", event_type="demo_durable", data={"n": 1}, durable=True)
        exits = [consumer.wait_exit(30)]
        for _ in range(2):  # deliveries 2 and 3 kill it too
            consumer = demo(processes, suite, "demo-b", **env)
            consumer.start(wait=False)
            exits.append(consumer.wait_exit(60))
        assert exits == [3, 3, 3]
        consumer = demo(processes, suite, "demo-b", **env).start()  # the 4th delivery is refused
        alert = await watcher.wait_for("event_dead_lettered", timeout_s=30)
        assert await r.xlen("trading:dead:demo_durable") == 1
    data = alert["data"]
    assert (data["event_type"], data["consumer"], data["delivered"]) == ("demo_durable", "demo-b", 4)
    assert "delivered 4 times without being settled" in data["error"]

    async def durable():
        return [e["data"] for e in (await client.call_service("demo-b", "received"))["durable"]]

    await async_wait_until(durable, 30, what="the event after the poison one", until=[{"n": 1}].__eq__)


async def test_a_dependency_away_is_waited_for_not_counted_against_the_entry(
    suite, redis_server, processes, client, tmp_path
):
    import redis.asyncio as aioredis

    flag = tmp_path / "dependency-away"
    flag.touch()
    demo(processes, suite, "demo-a").start()
    demo(
        processes, suite, "demo-b", DEMO_DEPENDENCY_FLAG=str(flag), TRADING_EVENTS_MAX_DELIVERIES="2"
    ).start()
    await client.call_service("demo-a", "emit", event_type="demo_durable", data={"n": 7}, durable=True)

    async def waits() -> int:
        return (await client.call_service("demo-b", "metrics"))["events"]["dependency_waits"]

    await async_wait_until(waits, 60, what="several waits", until=lambda n: n >= 5)  # > MAX_DELIVERIES
    flag.unlink()  # the dependency is back

    async def durable():
        return [e["data"] for e in (await client.call_service("demo-b", "received"))["durable"]]

    await async_wait_until(durable, 60, what="the event handled once back", until=[{"n": 7}].__eq__)
    async with aioredis.from_url(redis_server.url) as r:
        assert await r.xlen("trading:dead:demo_durable") == 0
        pending = await r.xpending("trading:stream:demo_durable", "demo-b")
        assert pending["pending"] == 0
    assert (await client.call_service("demo-b", "metrics"))["events"]["dead_lettered"] == 0


def _status(service: ServiceProcess) -> str:
    try:
        return rpc_call_sync(service.socket, "health", timeout_s=2)["status"]
    except (OSError, RuntimeError):
        return "down"


def test_base_service_imports_stay_light():
    code = (
        "import sys; import services.base.base_service; "
        "heavy = [m for m in ('pandas', 'numpy', 'sklearn', 'yfinance') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


async def test_unstarted_base_service_can_call(demo_service):
    """The seed's quick-start: BaseService('test').call_service(...) with no start()."""
    service = BaseService("test")
    assert await service.call_service("demo", "subtract", minuend=10, subtrahend=4) == 6
    await service.close_clients()


async def test_client_reconnects_after_the_service_restarts(suite, processes, client):
    first = demo(processes, suite).start()
    assert await client.call_service("demo", "subtract", minuend=2, subtrahend=1) == 1
    first.signal(signal.SIGKILL)
    first.wait_exit()
    demo(processes, suite).start()
    # The cached connection is dead; the next call must open a new one, not fail.
    assert await client.call_service("demo", "subtract", minuend=5, subtrahend=1) == 4


async def test_pending_durable_entry_is_redelivered_after_a_crash(suite, redis_server, processes, client):
    """Read but not acknowledged (the consumer died in its handler): delivered again on restart."""
    import redis.asyncio as aioredis

    demo(processes, suite, "demo-a").start()
    consumer = demo(processes, suite, "demo-b", DEMO_SLOW_DURABLE="1").start()
    async with aioredis.from_url(redis_server.url) as r:
        await client.call_service(
            "demo-a", "emit", event_type="demo_durable", data={"slow": True}, durable=True
        )
        await async_wait_until(lambda: _pending(r), 30, what="the entry read and pending", until=(1).__eq__)
        consumer.signal(signal.SIGKILL)
        consumer.wait_exit()
        demo(processes, suite, "demo-b").start()  # this time the handler completes

        async def durable():
            return [e["data"] for e in (await client.call_service("demo-b", "received"))["durable"]]

        await async_wait_until(
            durable, 30, what="re-delivery after the restart", until=[{"slow": True}].__eq__
        )
        await async_wait_until(lambda: _pending(r), 30, what="acknowledged", until=(0).__eq__)


async def _pending(r) -> int:
    return (await r.xpending("trading:stream:demo_durable", "demo-b"))["pending"]


def test_task_pinned_state_survives_dispatch(demo_service):
    """asyncio.timeout (like anyio's cancel scopes in httpx) must enter and exit in one task."""
    assert rpc_call_sync(demo_service.socket, "bounded_sleep", {"seconds": 0.01, "limit_s": 2}) == "slept"
    assert rpc_call_sync(demo_service.socket, "bounded_sleep", {"seconds": 2, "limit_s": 0.05}) == "timed out"
    assert rpc_call_sync(demo_service.socket, "subtract", [3, 1]) == 2  # and the service is fine


async def test_an_event_bus_that_fails_to_close_still_lets_the_socket_go(suite, redis_server):
    """`service_manager.py stop` waits for the supervisor's socket to go: a bus close that raises
    (Redis gone mid-stop) must not leave it behind."""
    service = BaseService("closing")
    await service.start()
    path = service.socket_path("closing")
    assert path.exists() and service.bus is not None

    async def refuse() -> None:
        raise ConnectionError("Redis went away")

    service.bus.close = refuse  # type: ignore[method-assign]
    await service.stop()
    assert not path.exists() and service.lifecycle == "stopped"
