"""The dashboard against a real suite started by `service_manager.py start` in temporary
directories: driven headless with Textual's pilot (frame contents, selection, restart with its
confirmation, logs, quit) and `dashboard --once` as a script sees it."""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
import pytest
from rich.cells import cell_len

from services.base.config import Settings
from services.domain.supervision import start_order
from services.management.dashboard import Collector, ConfirmRestart, DashboardApp, EventFeed, LogView
from services.management.dashboard_view import render_text
from tests.support import Processes, async_wait_until, manager_cli
from tests.system.test_manager import FAST_TIMERS, by_name

pytestmark = pytest.mark.slow

SIZE = (80, 24)


@pytest.fixture(scope="module")
def running_suite():
    with Processes() as processes:
        dirs = processes.suite_dirs("td-", **FAST_TIMERS, TRADING_MANAGER_MAX_FAILURES="100")
        yield processes.start_suite(dirs)


def make_app(dirs, refresh_s: float = 0.3) -> DashboardApp:
    settings = Settings.from_env(dirs.env)
    return DashboardApp(Collector(settings, timeout_s=1.0), refresh_s, 100, EventFeed(settings.redis_url))


def screen_lines(app: DashboardApp) -> list[str]:
    """What the terminal shows, row by row (the compositor's strips: no public text export)."""
    return [strip.text.rstrip() for strip in app.screen._compositor.render_strips()]


async def until(pilot, predicate, timeout_s: float = 30.0, what: str = "") -> None:
    """Poll while the app runs: pilot.pause lets it process its messages between probes."""
    await async_wait_until(predicate, timeout_s, 0.05, what, sleep=pilot.pause)


async def select(pilot, app: DashboardApp, service: str) -> None:
    for _ in range(len(start_order())):
        if app.selected_service == service:
            return
        await pilot.press("down")
    raise AssertionError(f"{service} cannot be selected")


# ---- live, headless -------------------------------------------------------------------------------


async def test_frame_shows_the_suite_and_the_help_line_at_80x24(running_suite):
    app = make_app(running_suite)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.rounds >= 1 and app.view.market is not None, what="the first refresh")
        await pilot.pause(0.1)
        lines = screen_lines(app)
        assert len(lines) == 24 and all(cell_len(line) <= 80 for line in lines)
        assert lines[0].startswith(("🟢 HEALTHY", "🟡 DEGRADED")), lines[0]
        assert lines[1].split()[:3] == ["SERVICE", "STATE", "HEALTH"]
        for row, name in zip(lines[2 : 2 + len(start_order())], start_order(), strict=True):
            assert row.split()[:2] == [name, "running"], row
        text = "\n".join(lines)
        for expected in ("MARKET", "SYMBOL", "CBA.AX", "PORTFOLIO equity $", "BUY RATE", "BIG 4", "NEXT"):
            assert expected in text, expected
        assert lines[-1].startswith(
            "↑↓/jk select  r restart  l logs  PgUp/PgDn scroll  q quit"
        )  # always visible
        # Each refresh redraws the same rows in place: the layout does not jump between frames.
        rounds = app.rounds
        await until(pilot, lambda: app.rounds > rounds + 1, what="two more refreshes")
        assert screen_lines(app)[1] == lines[1] and screen_lines(app)[-1].startswith("↑↓/jk")


async def test_restart_asks_first_then_restarts_the_selected_service(running_suite):
    before = by_name(running_suite)["scheduler"]["pid"]
    app = make_app(running_suite)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.rounds >= 1, what="the first refresh")
        await select(pilot, app, "scheduler")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmRestart), what="the confirmation")
        assert "Restart scheduler?" in "\n".join(screen_lines(app))
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmRestart), what="the dialog to close")
        assert app.message == "restart of scheduler cancelled"
        assert by_name(running_suite)["scheduler"]["pid"] == before
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmRestart), what="the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: app.message == "restart of scheduler requested", what="the restart RPC")

        def restarted() -> bool:
            row = {r.name: r for r in app.view.services}["scheduler"]
            return (
                row.state == "running"
                and row.pid not in (None, before)
                and row.health in ("healthy", "degraded")
            )

        await until(pilot, restarted, 60, what="the scheduler back with a new pid")
    assert by_name(running_suite)["scheduler"]["pid"] not in (None, before)


async def test_logs_of_the_selected_service_and_back(running_suite):
    app = make_app(running_suite)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.rounds >= 1, what="the first refresh")
        await select(pilot, app, "sentiment")
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LogView) and app.screen.shown, what="the log lines")
        shown = app.screen.shown
        assert any("sentiment" in line and "started" in line for line in shown), shown[-5:]
        assert not any(line.lstrip().startswith('{"ts"') for line in shown)  # readable, not raw JSON
        assert "sentiment log:" in screen_lines(app)[0]
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, LogView), what="the log view to close")
        assert app.selected_service == "sentiment"


async def test_live_events_from_redis_become_alerts(running_suite):
    import redis.asyncio as aioredis

    app = make_app(running_suite)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.rounds >= 1 and app.feed.connected, what="the event feed")
        envelope = {
            "id": "e1", "type": "risk_limit_hit", "source": "paper-trading", "seq": 1,
            "timestamp": "2026-11-24T05:00:00+00:00",
            "data": {"rule": "max_position", "detail": "position would be 12% of equity", "symbol": "CBA.AX"},
        }  # fmt: skip
        client = aioredis.from_url(app.collector.settings.redis_url)
        try:
            # Published on the platform's channel, as paper-trading's bus would.
            await client.publish("trading:events:risk_limit_hit", orjson.dumps(envelope))
            await client.publish("trading:events:risk_limit_hit", b"\x00 not an envelope")
        finally:
            await client.aclose()
        expected = "16:00 risk limit max_position (CBA.AX): position would be 12% of equity"
        await until(pilot, lambda: expected in "\n".join(screen_lines(app)), what="the alert line")
        assert app.is_running  # the malformed message was dropped, not fatal


async def test_quit_key_ends_the_app(running_suite):
    app = make_app(running_suite)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.rounds >= 1, what="the first refresh")
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, what="the app to exit")
    assert app.return_value == 0


async def test_a_stopped_service_shows_down_and_the_light_turns_red(running_suite):
    app = make_app(running_suite)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.rounds >= 1, what="the first refresh")
        stop = await asyncio.to_thread(manager_cli, running_suite, "stop", "paper-trading")
        assert stop.returncode == 0, stop.stderr
        try:
            await until(
                pilot,
                lambda: any(line.split()[:2] == ["paper-trading", "stopped"] for line in screen_lines(app)),
                what="paper-trading shown stopped",
            )
            lines = screen_lines(app)
            assert lines[0].startswith("🔴 DOWN"), lines[0]
            assert "PORTFOLIO unknown" in "\n".join(lines)
        finally:
            start = await asyncio.to_thread(manager_cli, running_suite, "start")
        assert start.returncode == 0, start.stdout + start.stderr


# ---- --once, as scripts see it -------------------------------------------------------------------------


@pytest.fixture
def empty_suite(processes):
    """Directories and environment with nothing running in them."""
    return processes.suite_dirs("tdn-")


def assert_plain_80(text: str) -> None:
    assert "\x1b" not in text  # no escape codes: stdout is a pipe here
    assert all(cell_len(line) <= 80 for line in text.splitlines()), text


def test_once_prints_one_plain_frame(running_suite):
    result = manager_cli(running_suite, "dashboard", "--once", timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert_plain_80(result.stdout)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(("🟢 HEALTHY", "🟡 DEGRADED")), lines[0]
    for name in start_order():
        assert any(line.split()[:2] == [name, "running"] for line in lines), name
    assert "MARKET" in result.stdout and "PORTFOLIO equity $" in result.stdout


def test_once_without_a_suite_shows_everything_down(empty_suite):
    result = manager_cli(empty_suite, "dashboard", "--once", timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert_plain_80(result.stdout)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("🔴 DOWN · ") and "supervisor not running" in lines[0]
    for name in start_order():
        assert any(line.split()[:2] == [name, "down"] for line in lines), name
    # The market phase needs no service: the calendar is computed locally.
    assert any(line.startswith("MARKET ") and "unknown" not in line for line in lines)


def test_live_mode_needs_a_terminal(empty_suite):
    result = manager_cli(empty_suite, "dashboard", timeout_s=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "service_manager.py: the live dashboard needs a terminal; use: dashboard --once"
    ]


# ---- services answering badly ----------------------------------------------------------------------------


async def serve_badly(path, answer) -> asyncio.AbstractServer:
    """A Unix socket that reads JSON-RPC requests and answers whatever `answer(request)` gives."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # CancelledError too: handlers still reading when the test's loop ends just stop.
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            while line := await reader.readline():
                reply = answer(orjson.loads(line))
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, path=str(path))


async def test_garbage_and_silent_services_cost_one_short_timeout(empty_suite):
    dirs = empty_suite
    settings = Settings.from_env(dirs.env)
    servers = [
        # Valid JSON-RPC, nonsense results: a number for health, a string for everything else.
        await serve_badly(
            dirs.socket("prediction"),
            lambda req: (
                orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": req["id"],
                        "result": {"status": 42} if req["method"] == "health" else "x",
                    }
                )
                + b"\n"
            ),
        ),
        await serve_badly(dirs.socket("scheduler"), lambda req: b"\x00\x1b[31mnot json at all\n"),
        await serve_badly(dirs.socket("market-data"), lambda req: None),  # hangs: never answers
        await serve_badly(
            dirs.socket("manager"), lambda req: b'{"jsonrpc": "2.0", "id": null, "result": []}\n'
        ),
    ]
    collector = Collector(settings, timeout_s=0.3)
    try:
        started = time.monotonic()
        view = await collector.view([])
        elapsed = time.monotonic() - started
    finally:
        await collector.close()
        for server in servers:
            server.close()
    assert elapsed < 2.0  # all calls in parallel, each bounded by the timeout
    rows = {r.name: r for r in view.services}
    assert (rows["prediction"].state, rows["prediction"].health) == ("running", "garbage")
    # Without a supervisor, a socket that does not answer is as good as down; the alert says why.
    assert {rows[n].state for n in ("scheduler", "market-data", "sentiment")} == {"down"}
    alerts = [a.text for a in view.alerts]
    assert "market-data is down: market-data.health did not answer within 0.3s" in alerts
    assert "sentiment is down: sentiment is unavailable: No such file or directory" in alerts
    assert view.overall == "down" and view.market is not None  # the local calendar stands in
    assert_plain_80(render_text(view))
