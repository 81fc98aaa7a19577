"""paper-trading halts when its ledger cannot be written, and resumes by itself when it can.

The fault is real: the running service's file-size limit (RLIMIT_FSIZE), set from outside with
prlimit as a same-user process may (the hard limit stays, so it is raised again without
privileges). CPython ignores SIGXFSZ (and the service says so too), so a write past the limit
fails instead of killing the process: the kernel writes up to the limit, SQLite writes the rest
and gets EFBIG, which it reports as `disk I/O error` (SQLITE_IOERR_WRITE; only ENOSPC is
SQLITE_FULL, `database or disk is full`, which the tmpfs test below gets from a really full file
system). Either way SQLite rolls the transaction back. Raising the limit again is the disk mended.

The stack is test_paper_trading_service's: market-data on CSV prices (100.00 for every bank)
and paper-trading, the suite clock on Monday 17 June 2024 at 11:00 Sydney (the market open),
with the timed exit check and quote refreshes out of the way, so the test's orders are the only
writes to the ledger.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
import redis

from services.base.rpc import NotFound, StorageUnavailable
from services.paper_trading.trade_store import TradeStore
from tests.service.test_paper_trading_service import Stack, prediction, price_move, publish
from tests.support import EventWatcher, async_wait_until, rpc_call_sync

DISK_FULL = "disk full: database or disk is full (SQLITE_FULL)"
IO_ERROR = "I/O error: disk I/O error (SQLITE_IOERR_WRITE)"
#: One WAL frame: a 24-byte header and a 4 KiB page.
FRAME = 24 + 4096
QUOTE_TIME = "2024-06-17T11:00:00+10:00"  # the 10:55 bar's close, the quote orders fill at
STALL = {"market_env": {"TRADING_MARKET_DATA_QUOTE_S": "3600"}, "TRADING_PAPER_TRADING_EXIT_CHECK_S": "86400"}


def set_file_size_limit(pid: int, soft: int) -> int:
    """Set `pid`'s soft RLIMIT_FSIZE; the soft limit it had."""
    old_soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
    return old_soft


def wal_size(db: Path) -> int:
    """Where the ledger's next WAL frame goes: nothing has checkpointed it yet (1000 pages)."""
    return Path(f"{db}-wal").stat().st_size


def ledger(db: Path) -> dict:
    """What the ledger on disk holds, read beside the running service (WAL: readers never block)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        found = {
            "integrity": conn.execute("PRAGMA integrity_check").fetchone()[0],
            "trades": conn.execute(
                "SELECT trade_id, symbol, action, quantity, gross, commission FROM trades ORDER BY trade_id"
            ).fetchall(),
            "account": conn.execute("SELECT cash, realized_pnl FROM account").fetchone(),
            "positions": {
                s: (q, D(c)) for s, q, c in conn.execute("SELECT symbol, quantity, cost_basis FROM positions")
            },
            "marks": dict(conn.execute("SELECT symbol, as_of FROM marks")),
        }
    conn.close()
    return found


def audit(db: Path, trade_ids: list[int], published: list[int]) -> None:
    """No partial trade: the ledger holds these trades, each once (and each published once), its
    integrity check passes, and cash and positions are exactly what the trades make them."""
    books = ledger(db)
    assert books["integrity"] == "ok"
    assert [t[0] for t in books["trades"]] == sorted(trade_ids)
    assert sorted(published) == sorted(trade_ids) and max(Counter(published).values()) == 1
    assert all(action == "BUY" for _, _, action, _, _, _ in books["trades"])  # the tests only buy
    commissions = sum((D(t[5]) for t in books["trades"]), D(0))
    cash, realized = (D(v) for v in books["account"])
    # Cash + the cost of the open positions - realised P&L = the capital net of commissions.
    assert books["positions"] == {t[1]: (t[3], D(t[4])) for t in books["trades"]}
    assert cash + sum(cost for _, cost in books["positions"].values()) - realized == D(100_000) - commissions
    store = TradeStore(db, D(100_000), datetime.now(UTC))  # the service has stopped
    try:
        assert store.replay_ledger() == store.load_portfolio()  # the book is exactly its trades
    finally:
        store.close()


async def wait_resumed(paper: Path) -> float:
    """Seconds from now until paper-trading's health says the storage is ok again."""
    mended = time.monotonic()
    await async_wait_until(
        lambda: rpc_call_sync(paper, "health"),
        60,
        0.05,
        what="the storage to be ok again",
        until=lambda h: h["storage"] == {"state": "ok"},
    )
    return time.monotonic() - mended


async def test_a_fill_cut_short_records_nothing_and_trading_resumes(suite, processes, client):
    stack = Stack(suite, processes, **STALL).start()
    url, paper = suite.env["TRADING_REDIS_URL"], stack.paper.socket
    async with EventWatcher(url, "storage_halted", "storage_resumed", "trade_executed") as watcher:
        # WBC gets a mark first, so the order's own mark is an update of one page: one WAL frame.
        await publish(suite, "market-data", "market_data_updated", price_move("WBC.AX", 100.0))
        await async_wait_until(
            lambda: ledger(stack.db)["marks"], 30, what="WBC's mark", until=lambda m: "WBC.AX" in m
        )
        first = await client.call_service(
            "paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=10
        )
        before = rpc_call_sync(paper, "get_portfolio_status")

        # Room for the order's mark and 100 bytes more: its fill's first frame is cut short.
        original = set_file_size_limit(stack.paper.pid, wal_size(stack.db) + FRAME + 100)
        with pytest.raises(StorageUnavailable) as refused:
            await client.call_service(
                "paper-trading", "execute_trade", symbol="WBC.AX", action="BUY", quantity=10
            )
        assert (refused.value.code, refused.value.message) == (-32007, f"storage unavailable: {IO_ERROR}")
        halted = await watcher.wait_for("storage_halted")
        assert halted["data"]["reason"] == IO_ERROR
        # The mark written just before the fill is there; of the fill, nothing.
        books = ledger(stack.db)
        assert books["marks"]["WBC.AX"] == QUOTE_TIME
        assert [t[0] for t in books["trades"]] == [first["trade_id"]] and books["integrity"] == "ok"
        # And the service's book is still the ledger's: the failed fill never reached it.
        status = rpc_call_sync(paper, "get_portfolio_status")
        assert (status["cash"], status["open_positions"]) == (before["cash"], 1)
        assert (
            status["trading_halted"] is True and status["halt_reason"] == f"storage unavailable: {IO_ERROR}"
        )
        assert status["storage"]["state"] == "halted" and status["storage"]["error"] == "SQLITE_IOERR_WRITE"
        positions = rpc_call_sync(paper, "get_positions")["positions"]
        assert [(p["symbol"], p["quantity"]) for p in positions] == [("CBA.AX", 10)]
        # Reports still answer while halted (they write no equity snapshot then).
        assert rpc_call_sync(paper, "get_trading_performance")["number_of_trades"] == 1

        set_file_size_limit(stack.paper.pid, original)
        print(
            f"\nfill cut short: trading resumed {await wait_resumed(paper):.2f} s after it took writes again"
        )
        second = await client.call_service(
            "paper-trading", "execute_trade", symbol="WBC.AX", action="BUY", quantity=10
        )
        assert (second["symbol"], second["quantity"]) == ("WBC.AX", 10)
        await watcher.settle()
        published = [e["data"]["trade_id"] for e in watcher.of_type("trade_executed")]
        assert len(watcher.of_type("storage_resumed")) == 1
    stack.stop()
    audit(stack.db, [first["trade_id"], second["trade_id"]], published)


def pending_deliveries(url: str, prediction_id: str, group: str) -> int:
    """How often Redis delivered the prediction's stream entry to paper-trading's consumer group
    (`paper-trading@<ledger id>`; metrics name it): it is pending."""
    client = redis.Redis.from_url(url)
    try:
        entry = next(
            entry_id
            for entry_id, fields in client.xrange("trading:stream:prediction_generated")
            if prediction_id.encode() in fields[b"event"]
        )
        rows = client.xpending_range(
            "trading:stream:prediction_generated", group, min=entry, max=entry, count=1
        )
    finally:
        client.close()
    assert len(rows) == 1, f"the entry of {prediction_id} is not pending"
    return int(rows[0]["times_delivered"])


async def test_no_write_at_all_halts_every_order_path_and_a_held_prediction_trades_after(
    suite, processes, client
):
    stack = Stack(suite, processes, **STALL).start()
    url, paper = suite.env["TRADING_REDIS_URL"], stack.paper.socket
    async with EventWatcher(url, "storage_halted", "storage_resumed", "trade_executed") as watcher:
        first = await client.call_service(
            "paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=10
        )
        health = rpc_call_sync(paper, "health")
        assert (health["status"], health["storage"]) == ("healthy", {"state": "ok"})

        # Below the WAL's first frame (after its 32-byte header): no write of the ledger can start.
        original = set_file_size_limit(stack.paper.pid, 4096)
        with pytest.raises(StorageUnavailable) as refused:
            await client.call_service(
                "paper-trading", "execute_trade", symbol="WBC.AX", action="BUY", quantity=10
            )
        assert refused.value.code == -32007 and refused.value.message == f"storage unavailable: {IO_ERROR}"
        data = refused.value.data
        assert (data["type"], data["reason"], data["error"]) == (
            "storage_unavailable",
            IO_ERROR,
            "SQLITE_IOERR_WRITE",
        )
        halted = await watcher.wait_for("storage_halted")
        assert halted["source"] == "paper-trading"
        assert halted["data"] == {
            "service": "paper-trading",
            "state": "halted",
            "reason": IO_ERROR,
            "error": "SQLITE_IOERR_WRITE",
            "since": data["since"],
        }
        health = rpc_call_sync(paper, "health")
        assert health["status"] == "degraded" and health["trading_halted"] is True
        assert health["storage"] == {k: v for k, v in halted["data"].items() if k != "service"}
        assert f"storage unavailable: {IO_ERROR}" in health["warnings"]
        with pytest.raises(StorageUnavailable):  # exits too: every order path is refused
            await client.call_service("paper-trading", "check_exits")

        # A durable prediction received meanwhile is not consumed: pending, its one delivery not
        # spent, while the handler waits for the storage as for a dependency away.
        held = prediction(stack, "NAB.AX", "BUY")
        # And one that is 2 s short of SIGNAL_MAX_AGE_S (3600) now: past it once writes work again.
        now = datetime.fromisoformat(stack.now())
        ageing = prediction(stack, "ANZ.AX", "BUY") | {
            "created_at": (now - timedelta(seconds=3598)).isoformat()
        }
        await publish(suite, "prediction", "prediction_generated", held, ageing)
        probes = rpc_call_sync(paper, "health")["storage_probes"]
        await async_wait_until(
            lambda: rpc_call_sync(paper, "health"),
            60,
            0.2,
            what="three more probes, failing",
            until=lambda h: h["storage_probes"] >= probes + 3,
        )
        assert rpc_call_sync(paper, "health")["storage"]["state"] == "halted"
        group = rpc_call_sync(paper, "metrics")["events"]["consumer_group"]
        assert pending_deliveries(url, held["prediction_id"], group) == 1
        with pytest.raises(NotFound):  # no outcome: not acted on, not recorded as anything
            await client.call_service(
                "paper-trading", "get_prediction_outcome", prediction_id=held["prediction_id"]
            )
        assert stack.paper.process.poll() is None  # alive: SIGXFSZ did not kill it

        set_file_size_limit(stack.paper.pid, original)
        resumed_after_s = await wait_resumed(paper)
        print(f"\nno writes at all: trading resumed {resumed_after_s:.2f} s after the disk took writes again")
        resumed = await watcher.wait_for("storage_resumed")
        assert (resumed["data"]["service"], resumed["data"]["reason"]) == ("paper-trading", IO_ERROR)
        assert resumed["data"]["halted_s"] > 0
        assert rpc_call_sync(paper, "health")["status"] == "healthy"

        # The held prediction trades now (younger than SIGNAL_MAX_AGE_S), once.
        outcome = await async_wait_until(
            lambda: client.call_service(
                "paper-trading", "get_prediction_outcome", prediction_id=held["prediction_id"]
            ),
            60,
            0.1,
            what="the held prediction's outcome",
            ignoring=(NotFound,),  # not retried yet (the bus waits up to 5 s between tries)
            until=lambda o: o["outcome"] == "traded",
        )
        expired = await async_wait_until(
            lambda: client.call_service(
                "paper-trading", "get_prediction_outcome", prediction_id=ageing["prediction_id"]
            ),
            60,
            0.1,
            what="the ageing prediction's outcome",
            ignoring=(NotFound,),
        )
        assert expired["outcome"] == "ignored" and expired["detail"].startswith("expired:")
        second = await client.call_service(
            "paper-trading", "execute_trade", symbol="WBC.AX", action="BUY", quantity=10
        )
        await watcher.settle()
        published = [e["data"]["trade_id"] for e in watcher.of_type("trade_executed")]
        assert len(watcher.of_type("storage_halted")) == 1 and len(watcher.of_type("storage_resumed")) == 1
    stack.stop()
    audit(stack.db, [first["trade_id"], outcome["trade_id"], second["trade_id"]], published)


@pytest.fixture
def small_tmpfs(suite):
    """The suite's data folder on a tmpfs of its own (16 MiB), so that the disk can really fill up:
    root only (mount), skipped elsewhere. Unmounted (lazily: whatever still holds it) afterwards;
    request it before `processes`, so that the services have stopped by then."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(suite.data_dir)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield suite.data_dir
    finally:
        subprocess.run(["umount", "-l", str(suite.data_dir)], check=False)


def fill_up(path: Path) -> int:
    """Write zeros to `path` until the file system refuses (ENOSPC): the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as ballast:
        for chunk in (1 << 20, 4096, 1):
            block = bytes(chunk)
            while True:
                try:
                    n = ballast.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                written += n or 0
                if not n:
                    break
    return written


async def test_a_really_full_disk_is_sqlite_full_and_trading_resumes_when_space_is_freed(
    suite, small_tmpfs, processes, client
):
    stack = Stack(suite, processes, **STALL).start()
    url, paper = suite.env["TRADING_REDIS_URL"], stack.paper.socket
    ballast = small_tmpfs / "ballast"
    async with EventWatcher(url, "storage_halted", "storage_resumed", "trade_executed") as watcher:
        first = await client.call_service(
            "paper-trading", "execute_trade", symbol="CBA.AX", action="BUY", quantity=10
        )
        assert await asyncio.to_thread(fill_up, ballast) > 0
        with pytest.raises(StorageUnavailable) as refused:
            await client.call_service(
                "paper-trading", "execute_trade", symbol="WBC.AX", action="BUY", quantity=10
            )
        assert (refused.value.code, refused.value.message) == (-32007, f"storage unavailable: {DISK_FULL}")
        assert refused.value.data["error"] == "SQLITE_FULL"
        assert (await watcher.wait_for("storage_halted"))["data"]["reason"] == DISK_FULL
        health = rpc_call_sync(paper, "health")
        assert health["status"] == "degraded" and health["storage"]["reason"] == DISK_FULL

        ballast.unlink()  # space again
        print(f"\nreally full disk: trading resumed {await wait_resumed(paper):.2f} s after space was freed")
        assert (await watcher.wait_for("storage_resumed"))["data"]["reason"] == DISK_FULL
        second = await client.call_service(
            "paper-trading", "execute_trade", symbol="WBC.AX", action="BUY", quantity=10
        )
        await watcher.settle()
        published = [e["data"]["trade_id"] for e in watcher.of_type("trade_executed")]
    stack.stop()
    audit(stack.db, [first["trade_id"], second["trade_id"]], published)
