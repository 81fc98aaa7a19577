"""The suite's terminal dashboard: `service_manager.py dashboard [--once]`.

An I/O shell around services.management.dashboard_view: `Collector` asks the supervisor and the
services for what the view needs (every call concurrent and bounded by a short timeout, any
failure recorded as `Unavailable`), `EventFeed` keeps the latest alert-worthy events from Redis
pub/sub, and `DashboardApp` (Textual) redraws the pure view every refresh. Nothing here can block
the UI: the collection runs in a worker and the UI only ever renders the last snapshot.

Configuration: TRADING_DASHBOARD_* knobs (services/management/manager_knobs.py, DashboardKnobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections import deque
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import orjson
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Log, Static

from services.base import BaseService, Settings, SuiteClock, get_settings
from services.base.events import CHANNEL_PREFIX
from services.base.knobs import read_knobs
from services.domain import asx_calendar
from services.domain.supervision import start_order
from services.management.dashboard_view import (
    HELP,
    DashboardView,
    Line,
    Snapshot,
    Unavailable,
    build_view,
    render_lines,
    render_text,
)
from services.management.manager_cli import format_log_line, tail_lines
from services.management.manager_knobs import DashboardKnobs
from services.registry import DASHBOARD, SUPERVISOR, consumed_by

MANAGER = SUPERVISOR
#: Events worth an alert line (the registry's events the dashboard consumes); the rest (prices,
#: predictions) show through the RPC figures.
ALERT_EVENTS = consumed_by(DASHBOARD)
MAX_SYMBOLS = 50  # market-data calls per refresh stay bounded for a large universe
STYLES = {"title": "bold", "head": "bold", "ok": "green", "warn": "yellow", "bad": "bold red", "text": ""}


class Collector:
    """One round of questions to the suite, every call concurrent and bounded by `timeout_s`."""

    def __init__(self, settings: Settings, timeout_s: float):
        self.settings = settings
        self.timeout_s = timeout_s
        self.client = BaseService("dashboard", settings)
        self.clock = SuiteClock(settings.clock_start, settings.clock_speed, settings.clock_epoch)

    async def call(self, service: str, method: str, /, timeout_s: float | None = None, **params: Any) -> Any:
        """The result, or Unavailable with the reason: a bad reply must never reach the UI as an error."""
        try:
            return await self.client.call_service(
                service, method, timeout=timeout_s or self.timeout_s, retries=0, **params
            )
        except Exception as exc:  # typed RPC errors, dropped connections, undecodable replies alike
            return Unavailable(getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")

    async def snapshot(self, events: list[dict]) -> Snapshot:
        symbols = list(self.settings.symbols)[:MAX_SYMBOLS]
        calls = {
            "status": self.call(MANAGER, "status"),
            "market_status": self.call("scheduler", "get_market_status"),
            "predictions": self.call(
                "prediction", "get_recent_predictions", limit=min(4 * len(symbols) + 20, 1000)
            ),
            "buy_rate": self.call("prediction", "get_buy_rate"),
            "portfolio": self.call("paper-trading", "get_portfolio_status"),
            "positions": self.call("paper-trading", "get_positions"),
            "big4": self.call("sentiment", "get_big4_sentiment"),
            "tasks": self.call("scheduler", "list_tasks"),
            "incidents": self.call("alerts", "list_alerts", limit=10),
            **{f"health:{name}": self.call(name, "health") for name in start_order()},
            **{
                f"market:{symbol}": self.call("market-data", "get_market_data", symbol=symbol)
                for symbol in symbols
            },
        }
        replies = dict(zip(calls, await asyncio.gather(*calls.values()), strict=True))
        return Snapshot(
            status=replies["status"],
            health={name: replies[f"health:{name}"] for name in start_order()},
            market_status=replies["market_status"],
            market_data={symbol: replies[f"market:{symbol}"] for symbol in symbols},
            predictions=replies["predictions"],
            buy_rate=replies["buy_rate"],
            portfolio=replies["portfolio"],
            positions=replies["positions"],
            big4=replies["big4"],
            tasks=replies["tasks"],
            incidents=replies["incidents"],
            events=events,
            symbols=symbols,
        )

    def suite_now(self, snapshot: Snapshot) -> datetime:
        """The suite's time as the supervisor reports it (a replay clock runs there), else ours."""
        supervisor = snapshot.status.get("supervisor") if isinstance(snapshot.status, dict) else None
        text = supervisor.get("suite_time") if isinstance(supervisor, dict) else None
        if isinstance(text, str):
            with contextlib.suppress(ValueError):
                moment = datetime.fromisoformat(text)
                if moment.tzinfo is not None:
                    return moment
        return self.clock.now()

    async def view(self, events: list[dict]) -> DashboardView:
        snapshot = await self.snapshot(events)
        now = self.suite_now(snapshot)
        if not isinstance(snapshot.market_status, dict):
            # The calendar is pure: without the scheduler the market phase is still known.
            snapshot = replace(snapshot, market_status=asx_calendar.market_status(now))
        return build_view(snapshot, asx_calendar.to_sydney(now))

    async def close(self) -> None:
        await self.client.close_clients()


class EventFeed:
    """The latest alert-worthy events from Redis pub/sub; reconnects with backoff, never raises."""

    def __init__(self, redis_url: str, keep: int = 50):
        self.redis_url = redis_url
        self.events: deque[dict] = deque(maxlen=keep)
        self.connected = False

    async def run(self) -> None:
        from services.base.events import redis_from_url

        delay = 0.5
        while True:
            client = redis_from_url(self.redis_url, socket_connect_timeout=2)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(*(CHANNEL_PREFIX + kind for kind in ALERT_EVENTS))
                    self.connected, delay = True, 0.5
                    async for message in pubsub.listen():
                        self._keep(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis down or restarting: the view shows that; try again later
                self.connected = False
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _keep(self, message: dict) -> None:
        if message.get("type") != "message":
            return
        with contextlib.suppress(orjson.JSONDecodeError, TypeError):
            envelope = orjson.loads(message["data"])
            if isinstance(envelope, dict):
                self.events.append(envelope)


# ---- the Textual app -------------------------------------------------------------------------------


def styled(lines: list[Line]) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    for index, line in enumerate(lines):
        style = STYLES.get(line.tag, "")
        if line.selected:
            style = f"{style} reverse".strip()
        text.append(line.text, style=style)
        if index < len(lines) - 1:
            text.append("\n")
    return text


class ConfirmRestart(ModalScreen[bool]):
    """Asks before restarting: a restart stops the service (and its in-flight work) first."""

    BINDINGS: ClassVar = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]
    DEFAULT_CSS = """
    ConfirmRestart { align: center middle; }
    #question { width: auto; max-width: 70; border: heavy $warning; padding: 1 2; background: $panel; }
    """

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def compose(self) -> ComposeResult:
        yield Static(f"Restart {self.service}?  [y] yes   [n] no", id="question", markup=False)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class LogView(ModalScreen[None]):
    """The selected service's recent log lines, readable, refreshed while open."""

    BINDINGS: ClassVar = [Binding("escape,q,l", "close", "close")]
    DEFAULT_CSS = """
    LogView { background: $background; }
    #log-title { height: 1; background: $panel; }
    #log-help { dock: bottom; height: 1; background: $panel; }
    """

    def __init__(self, service: str, path: Path, lines: int):
        super().__init__()
        self.service = service
        self.path = path
        self.lines = lines
        self.shown: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static(f"{self.service} log: {self.path}", id="log-title", markup=False)
        yield Log(id="log", auto_scroll=True)
        yield Static("esc/l/q back", id="log-help", markup=False)

    def on_mount(self) -> None:
        self.run_worker(self.reload(), exclusive=True)
        self.set_interval(2.0, lambda: self.run_worker(self.reload(), exclusive=True))

    async def reload(self) -> None:
        lines = await asyncio.to_thread(read_log, self.path, self.lines)
        if lines != self.shown:
            self.shown = lines
            log = self.query_one(Log)
            log.clear()
            log.write_lines(lines)

    def action_close(self) -> None:
        self.dismiss(None)


def read_log(path: Path, count: int) -> list[str]:
    if not path.exists():
        return [f"no log yet at {path}"]
    try:
        raw = tail_lines(path, count)
    except OSError as exc:
        return [f"cannot read {path}: {exc.strerror or exc}"]
    return [part for line in raw for part in format_log_line(line).splitlines()]


class DashboardApp(App[int]):
    """Live view of the suite; the state is the last DashboardView plus the selected row."""

    TITLE = "trading suite"
    CSS = """
    Screen { overflow: hidden; }
    #body { height: 1fr; scrollbar-size-vertical: 1; }
    #frame { width: 100%; }
    #help { dock: bottom; height: 1; background: $panel; }
    """
    # Screen-level keys, not priority ones: inside the log view the same keys scroll and close it.
    BINDINGS: ClassVar = [
        Binding("up,k", "move(-1)", "up"),
        Binding("down,j", "move(1)", "down"),
        Binding("pageup", "page(-1)", "page up"),
        Binding("pagedown", "page(1)", "page down"),
        Binding("r", "restart", "restart"),
        Binding("l", "logs", "logs"),
        Binding("q", "quit_dashboard", "quit"),
        Binding("ctrl+c", "quit_dashboard", "quit", priority=True),
    ]

    def __init__(
        self, collector: Collector, refresh_s: float, log_lines: int = 200, feed: EventFeed | None = None
    ):
        super().__init__()
        self.collector = collector
        self.refresh_s = refresh_s
        self.log_lines = log_lines
        self.feed = feed
        self.view: DashboardView = build_view(Snapshot(), None)
        self.selected = 0
        self.message = "connecting…"
        self.rounds = 0  # completed refreshes (tests wait on it)

    def compose(self) -> ComposeResult:
        with Vertical():
            body = VerticalScroll(id="body")
            body.can_focus = False  # arrows select services; the frame scrolls with page keys
            with body:
                yield Static(id="frame", markup=False)
            yield Static(id="help", markup=False)

    def on_mount(self) -> None:
        self.redraw()
        # exit_on_error=False: a failing worker costs its own job, never the dashboard.
        self.run_worker(self.poll(), name="poll", group="poll", exit_on_error=False)
        if self.feed is not None:
            self.run_worker(self.feed.run(), name="events", group="events", exit_on_error=False)

    async def poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                view = await self.collector.view(list(self.feed.events) if self.feed else [])
            except Exception as exc:  # a bug in a view path must cost one frame, not the dashboard
                self.message = f"refresh failed: {type(exc).__name__}: {exc}"
            else:
                self.view = view
                self.rounds += 1
                if self.message == "connecting…":
                    self.message = ""
            self.redraw()
            # Every refresh_s from the start of a round: a slow round does not stretch the period.
            await asyncio.sleep(max(self.refresh_s - (loop.time() - started), 0.05))

    async def on_unmount(self) -> None:
        await self.collector.close()

    def on_resize(self) -> None:
        self.redraw()

    def frame_lines(self) -> list[Line]:
        width = max(self.size.width - 1, 40)  # one column for the scrollbar
        return render_lines(self.view, width, self.selected, alerts=20)

    def redraw(self) -> None:
        with contextlib.suppress(Exception):  # not mounted yet / shutting down
            self.query_one("#frame", Static).update(styled(self.frame_lines()))
            help_text = HELP + (f"  │ {self.message}" if self.message else "")
            self.query_one("#help", Static).update(Text(help_text, no_wrap=True, overflow="ellipsis"))

    @property
    def selected_service(self) -> str:
        names = [row.name for row in self.view.services] or start_order()
        return names[self.selected % len(names)]

    def action_move(self, step: int) -> None:
        count = len(self.view.services) or len(start_order())
        self.selected = (self.selected + step) % count
        self.redraw()

    def action_page(self, direction: int) -> None:
        body = self.query_one("#body", VerticalScroll)
        if direction > 0:
            body.scroll_page_down()
        else:
            body.scroll_page_up()

    def action_restart(self) -> None:
        service = self.selected_service

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.message = f"restarting {service}…"
                self.redraw()
                self.run_worker(self.restart(service), group="restart", exit_on_error=False)
            else:
                self.message = f"restart of {service} cancelled"
                self.redraw()

        self.push_screen(ConfirmRestart(service), confirmed)

    async def restart(self, service: str) -> None:
        # restart_service stops the service first: allow its stop grace period, off the UI path.
        result = await self.collector.call(MANAGER, "restart_service", timeout_s=120.0, service=service)
        if isinstance(result, Unavailable):
            self.message = f"restart of {service} failed: {result.reason}"
        else:
            self.message = f"restart of {service} requested"
        self.redraw()

    def action_logs(self) -> None:
        service = self.selected_service
        path = self.collector.settings.log_dir / f"{service}.log"
        self.push_screen(LogView(service, path, self.log_lines))

    async def action_quit_dashboard(self) -> None:
        self.exit(0)


# ---- entry point ---------------------------------------------------------------------------------------


def once_width() -> int:
    """80 columns for scripts and pipes; the terminal's width (at least 80) on a terminal."""
    if not sys.stdout.isatty():
        return 80
    return max(shutil.get_terminal_size((80, 24)).columns, 80)


async def one_frame(settings: Settings, timeout_s: float) -> DashboardView:
    collector = Collector(settings, timeout_s)
    try:
        return await collector.view([])
    finally:
        await collector.close()


def run_dashboard(once: bool) -> int:
    """Live dashboard until the user quits; with `once`, print one plain-text frame and return."""
    settings = get_settings()
    knobs = read_knobs(DashboardKnobs, settings.environ)
    timeout_s = knobs.rpc_timeout_s
    if once:
        view = asyncio.run(one_frame(settings, timeout_s))
        try:
            print(render_text(view, once_width()), flush=True)
        except BrokenPipeError:  # `dashboard --once | head`: the reader has all it wanted
            sys.stdout = open(os.devnull, "w")  # the exit flush stays quiet
        return 0
    if not sys.stdout.isatty():
        print(
            "service_manager.py: the live dashboard needs a terminal; use: dashboard --once", file=sys.stderr
        )
        return 2
    app = DashboardApp(
        Collector(settings, timeout_s), knobs.refresh_s, knobs.log_lines, EventFeed(settings.redis_url)
    )
    return app.run() or 0
