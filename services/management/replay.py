"""Replay a past period through the real suite, day after day, and report how it traded.

    service_manager.py replay --from 2019-06-03 --to 2019-06-28 [--speed X] [--data-dir DIR] [--out DIR]

The driver starts its OWN suite (supervisor, managed Redis, every service) in a fresh temporary
directory, so the live suite and its portfolio are never touched and the paper portfolio starts
fresh. Market data comes from the CSV files of --data-dir (the suite's market-data serves them
with TRADING_MARKET_DATA_SOURCE=csv; the report reads them through services.domain.price_history);
the suite clock is a control file (TRADING_CLOCK_FILE) that the driver moves from step to step.

Models: a replay must never trade on models that saw the replay period (look-ahead). The models of
TRADING_MODELS_DIR are reused when every one was trained on labels ending before --from;
otherwise train_models.py trains fresh ones with the suite clock at --from 00:00, so it sees only
bars that were final by then.

Each trading day D runs the live code path, with the idle time in between skipped:
  09:45  the scheduler's market_data_refresh task, as the default schedule
         (services.domain.day_plan) runs it (market_monitoring depends on it having run today);
  10:15  the day's open is quoted (get_quote: market_data_updated, on which the prediction
         service re-predicts) and those predictions are acted on; then
         the scheduler's market_monitoring task: refresh, then generate_predictions (forced);
         on the same quote and inputs the prediction service answers with the open quote's
         prediction instead of making a second one (TRADING_PREDICTION_REUSE_S), and the driver
         counts that one as the step's prediction; every prediction_generated event
         reaches paper-trading through its durable stream and it trades within its risk rules
         (stop-loss and take-profit on market_data_updated). A symbol the task gave no
         prediction for (a service was restarting) gets one forced prediction, so each symbol
         has exactly one;
  16:15  a refresh once D's bar is final (16:10): positions are marked to D's close and the day's
         equity is read from paper-trading. Live, the prediction service would re-predict on the
         new bar (and paper-trading reject those: the market is closed); the replay suite runs
         with TRADING_PREDICTION_REFRESH_WHILE_CLOSED=false, so a closed market's bars (09:45,
         16:15) make no prediction: never traded, and the next session's first quote predicts
         on the same bars anyway.
Daily bars only become visible at 16:10, so predictions on day D see D-1's close; orders fill at
market-data's quote: with daily bars only that is D's open (known from 10:00), plus slippage; a
symbol with intraday CSVs fills at its latest intraday bar's close at the time (fill_basis_note).
After every step the driver waits until each symbol's latest prediction is made on the data
market-data serves (in the session; on a closed market none is made) and paper-trading's consumer
group has acknowledged every prediction.

Interruptions: before each step the driver waits until the supervisor reports every service
healthy. A closed-market step during which a service restarted runs again (same data, so
nothing new is predicted or traded). In a trading step the monitoring task runs once and is
never re-run; symbols without a prediction afterwards (a service was restarting) get one forced
prediction, and a batch that failed is never re-sent (symbols done before it died would be
doubled). When paper-trading restarted during the step, one more refresh repeats the
market_data_updated events it missed, so stop-loss and take-profit are checked at the same
prices. paper-trading acts on each prediction id at most once and its stream redelivers what it
had not acknowledged. Not covered: a model or sentiment call that fails because ml-model or
sentiment is restarting at that very moment gives a degraded prediction, which is traded.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from services.base import SYDNEY, BaseService, DependencyUnavailable, RpcError, Settings
from services.base.child_env import TRAIN_MODELS, child_environment
from services.base.clock import write_clock_file
from services.base.events import CHANNEL_PREFIX, STREAM_PREFIX
from services.base.knobs import parse_bool
from services.base.model_sets import serving_dir
from services.domain import asx_calendar, replay_report
from services.domain.day_plan import default_tasks
from services.domain.intraday import INTERVALS, session_day
from services.domain.intraday_history import intraday_csv_file_name, parse_intraday_csv
from services.domain.price_history import csv_file_name, history_from_csv
from services.domain.supervision import UP
from services.registry import SERVICES, SUPERVISOR

if TYPE_CHECKING:
    from redis.asyncio import Redis

REPO = Path(__file__).resolve().parents[2]

REFRESH_AT = clock_time(9, 45)
TRADE_AT = clock_time(10, 15)
MONITORING_EVERY = timedelta(minutes=15)  # the default schedule's market_monitoring, from 10:15
MARK_AT = clock_time(16, 15)  # after 16:10, when the day's bar becomes final
PREDICTION_STREAM = STREAM_PREFIX + "prediction_generated"
PREDICTION_CHANNEL = CHANNEL_PREFIX + "prediction_generated"
# Waiting for the suite: a prediction's pub/sub event wakes the driver at once; between events it
# checks again after POLL_FIRST_S, doubling up to POLL_MAX_S (paper-trading acknowledges without an
# event), and reads the prediction service's store at least every RECHECK_S (an event can be lost:
# pub/sub is at most once, and Redis may be restarting).
POLL_FIRST_S = 0.001
POLL_MAX_S = 0.02
RECHECK_S = 0.25
TRADER = "paper-trading"
TASK_NAMES = ("market_data_refresh", "market_monitoring")
# Variables of the caller's environment that must not reach the replay suite: its own
# directories, clock and Redis are set below, and live news or a live broker account have no
# place in a replay of the past (sentiment falls back to neutral, IG stays unconfigured); nor
# does a person's phone: the replay's alerts process records its alerts but has no channel.
DROPPED_PREFIXES = ("MARKETAUX_", "IG_", "TRADING_ALERTS_")
DROPPED = frozenset(
    {
        "TRADING_SOCKET_DIR", "TRADING_LOG_DIR", "TRADING_DATA_DIR", "TRADING_MODELS_DIR",
        "TRADING_REDIS_URL", "TRADING_MARKET_DATA_SOURCE", "TRADING_MARKET_DATA_DIR",
        "TRADING_CLOCK_START", "TRADING_CLOCK_SPEED", "TRADING_CLOCK_EPOCH", "TRADING_CLOCK_FILE",
        "TRADING_SECRETS_FILE", "TRADING_PAPER_TRADING_IG_MIRROR", "TRADING_SCHEDULER_DEFAULTS",
        "TRADING_ML_MODEL_MAX_AGE_DAYS",
    }
)  # fmt: skip
TRADE_COLUMNS = (
    "trade_id", "timestamp", "symbol", "action", "quantity", "price", "gross", "commission",
    "slippage", "realized_pnl", "net_pnl", "prediction_id", "reason", "closes_position",
)  # fmt: skip


class ReplayError(Exception):
    """The replay cannot run or cannot go on; the message says what to fix."""


@dataclass(frozen=True)
class ReplayOptions:
    first: date
    last: date
    data_dir: Path  # the CSV files
    out: Path
    speed: float = 1.0
    models_dir: Path | None = None  # reused only when trained before `first`
    train_years: float = 5.0
    step_timeout_s: float = 120.0
    keep_dir: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class ReplayResult:
    report: dict
    text: str
    out: Path
    curve: list[tuple[date | None, float]]
    trades: list[dict]
    predictions: list[dict]  # each symbol's first of each session (scored for accuracy)
    notes: list[str]
    seconds: float
    session_predictions: list[dict] = field(default_factory=list)  # every one the sessions acted on


def at(day: date, moment: clock_time) -> datetime:
    return datetime.combine(day, moment, tzinfo=SYDNEY)


def replay_days(first: date, last: date) -> list[date]:
    """The ASX trading days to replay; refuses an empty or reversed period."""
    if first > last:
        raise ReplayError(f"--from {first} is after --to {last}")
    days = asx_calendar.trading_days_between(first, last)
    if not days:
        raise ReplayError(f"no ASX trading day between {first} and {last}")
    return days


def models_trained_before(models_dir: Path | None, first: date, symbols: tuple[str, ...]) -> bool:
    """True when the manifest covers every symbol with labels that all end before `first`."""
    if models_dir is None:
        return False
    try:
        manifest = json.loads((serving_dir(models_dir) / "manifest.json").read_text())
        entries = manifest["models"]
        ends = {e["symbol"]: date.fromisoformat(e["data"]["label_end"]) for e in entries}
        latest = max(date.fromisoformat(e["data"]["label_end"]) for e in entries)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return set(symbols) <= set(ends) and latest < first


def suite_env(root: Path, options: ReplayOptions, base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in DROPPED and not k.startswith(DROPPED_PREFIXES)}
    env.update(
        {
            "TRADING_SOCKET_DIR": str(root / "sock"),
            "TRADING_LOG_DIR": str(root / "logs"),
            "TRADING_DATA_DIR": str(root / "data"),
            "TRADING_MODELS_DIR": str(root / "models"),
            "TRADING_MARKET_DATA_SOURCE": "csv",
            "TRADING_MARKET_DATA_DIR": str(options.data_dir.resolve()),
            "TRADING_CLOCK_FILE": str(root / "clock.json"),
            # The driver runs the default tasks itself, one step a day: a schedule loop firing
            # the same tasks after a clock jump would run them twice.
            "TRADING_SCHEDULER_DEFAULTS": "false",
            # The replay's models were trained before --from on purpose and serve the whole
            # period: they must not expire as the replayed days pass.
            "TRADING_ML_MODEL_MAX_AGE_DAYS": "3650",
            # A decision must not depend on the machine's speed: a prediction whose sentiment or
            # model call fails (a dependency restarting, a busy core) fails and is made again,
            # never degraded into a different signal.
            "TRADING_PREDICTION_DEGRADE": "false",
            # A prediction while the market is closed (the 09:45 and 16:15 refreshes bring new bars)
            # is never traded, and the session's first quote makes one anyway: not made at all,
            # a replayed day predicts each symbol once instead of twice.
            "TRADING_PREDICTION_REFRESH_WHILE_CLOSED": "false",
            # The private suite's files are thrown away after the run: a commit need not wait for
            # the disk (WAL with synchronous=NORMAL still survives a killed process, as the
            # kill-mid-replay and chaos tests require). FULL spent ~3.5 ms of fsync per commit.
            "TRADING_STORAGE_SYNCHRONOUS": "NORMAL",
            # Its gateway must not take the live suite's port: a free one of the kernel's choosing.
            "TRADING_GATEWAY_BIND": "127.0.0.1:0",
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(options.extra_env)
    return env


@dataclass(frozen=True)
class IntradayPlan:
    """Which replayed days step through the session on intraday bars, and at what interval."""

    interval: str | None  # the finest interval of any symbol's intraday CSV; None: daily bars only
    days: frozenset[date]  # the replayed days some symbol has intraday bars on
    symbols: tuple[str, ...]  # the symbols with intraday files of that interval

    def steps(self, day: date) -> list[datetime]:
        """The session's step instants: every bar end from the first to the close, and the
        monitoring times (10:15 every 15 minutes while the market is open), in order."""
        opens, closes = asx_calendar.session_open(day), asx_calendar.session_close(day)
        moments = {at(day, TRADE_AT) + k * MONITORING_EVERY for k in range(40)}
        moments = {m for m in moments if m < closes}
        if self.interval is not None and day in self.days:
            step = timedelta(seconds=INTERVALS[self.interval])
            bar_ends = {opens + k * step for k in range(1, 2000) if opens + k * step < closes}
            moments |= bar_ends | {closes}
        return sorted(moments)

    def is_monitoring(self, moment: datetime) -> bool:
        """A market_monitoring time: 10:15 and every 15 minutes while the market is open."""
        day = moment.date()
        first, closes = at(day, TRADE_AT), asx_calendar.session_close(day)
        return first <= moment < closes and (moment - first) % MONITORING_EVERY == timedelta(0)


def intraday_plan(data_dir: Path, symbols: tuple[str, ...], days: list[date]) -> IntradayPlan:
    """The finest interval with `<SYMBOL>_<interval>.csv` files, and the replayed days they cover."""
    wanted = set(days)
    for interval in INTERVALS:  # finest first
        holders = tuple(s for s in symbols if (data_dir / intraday_csv_file_name(s, interval)).is_file())
        if not holders:
            continue
        covered: set[date] = set()
        for symbol in holders:
            name = intraday_csv_file_name(symbol, interval)
            parsed = parse_intraday_csv((data_dir / name).read_bytes().decode("utf-8"), name)
            covered |= {session_day(b.start) for b in parsed.bars} & wanted
        return IntradayPlan(interval, frozenset(covered), holders)
    return IntradayPlan(None, frozenset(), ())


def fill_basis_note(plan: IntradayPlan, symbols: tuple[str, ...], days: list[date]) -> str:
    """The report's line on the prices orders and exits filled at."""
    daily = (
        "orders fill at the day's open (known from 10:00) plus slippage; stop-loss and take-profit on"
        " the day's high and low once its bar is final (16:10)"
    )
    if plan.interval is None or not plan.days:
        return f"daily bars only: {daily}; predictions see the previous close's bars"
    others = [s for s in symbols if s not in plan.symbols]
    note = (
        f"intraday {plan.interval} bars on {len(plan.days)} of {len(days)} days"
        f" ({', '.join(plan.symbols)}): the session is stepped every {plan.interval}, orders fill at"
        " the latest bar's close plus slippage, stop-loss and take-profit on each bar's high and low"
        " (a bar opening through a level fills at its open)"
    )
    if others:
        note += f"; daily bars only for {', '.join(others)}: {daily}"
    if len(plan.days) < len(days):
        note += f"; days without intraday bars: {daily}"
    return note


def check_data(data_dir: Path, symbols: tuple[str, ...], index: str) -> None:
    missing = [csv_file_name(s) for s in (*symbols, index) if not (data_dir / csv_file_name(s)).is_file()]
    if missing:
        raise ReplayError(f"{data_dir} lacks {', '.join(missing)} (Yahoo-format daily CSV files)")


# ---- the suite ---------------------------------------------------------------------------------


def manager_cli(env: dict[str, str], *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "services/management/service_manager.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
    )


def train_models(env: dict[str, str], options: ReplayOptions, models_dir: Path) -> None:
    """Train on data final before --from: the clock stands at --from 00:00 while it reads."""
    train_env = {k: v for k, v in child_environment(TRAIN_MODELS, env).items() if k != "TRADING_CLOCK_FILE"}
    train_env["TRADING_CLOCK_START"] = at(options.first, clock_time(0, 0)).isoformat()
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "services/ml-model/train_models.py"),
            "--data-dir",
            str(options.data_dir),
            "--out",
            str(models_dir),
            "--years",
            repr(options.train_years),
        ],
        env=train_env,
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise ReplayError(f"training the models failed: {result.stderr.strip()[-500:]}")


# ---- the driver ----------------------------------------------------------------------------------


class ReplayDriver:
    def __init__(self, options: ReplayOptions, progress: Callable[[str], None] = lambda _m: None):
        self.options = options
        self.progress = progress
        self.days = replay_days(options.first, options.last)
        self.settings = Settings.from_env(suite_env(Path("/tmp"), options, dict(os.environ)))
        self.symbols = self.settings.symbols
        check_data(options.data_dir, self.symbols, self.settings.market_index)
        self.root = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp"))  # short: socket path limit
        for sub in ("sock", "logs", "data", "models"):
            (self.root / sub).mkdir(mode=0o700)  # the socket directory must be 0700
        self.env = suite_env(self.root, options, dict(os.environ))
        self.settings = Settings.from_env(self.env)
        self.clock_file = self.root / "clock.json"
        # Whether the prediction service re-predicts on a closed market's new bars (the replay turns
        # it off: never traded, and the session's first quote predicts anyway): only then does a
        # closed step wait for predictions on the data it refreshed.
        # Read here rather than through prediction's knob class: no package imports another's
        # modules (tests/unit/test_import_boundaries.py); prediction refuses a malformed value.
        knob = "TRADING_PREDICTION_REFRESH_WHILE_CLOSED"
        self.predicts_while_closed = parse_bool(knob, self.env.get(knob, "true"))
        self.client = BaseService("replay", settings=self.settings)
        self.redis: Redis | None = None  # open while _replay runs
        self.task_ids: dict[str, str] = {}
        self.plan = intraday_plan(options.data_dir, self.symbols, self.days)
        self.curve: list[tuple[date | None, float]] = []
        self.step_predictions: list[dict] = []  # each symbol's first of each session: scored
        self.session_predictions: dict[str, dict] = {}  # every one the sessions acted on, by id
        self.notes: list[str] = []
        # Wall-clock seconds of the day loop by step (report["run"]["step_seconds"]): where the
        # time goes, for the README's profile and the benchmark.
        self.spans: dict[str, float] = {}
        self._woken = asyncio.Event()  # set by every prediction_generated event (see _listen)
        self._heard: dict[str, str | None] = {}  # each symbol's latest announced quote time
        self._known_healthy: dict[str, int] | None = None  # see _wait_healthy
        self._closed_quotes: dict[str, str] = {}  # each quote's time at the last closed step

    # ---- life

    def run(self) -> ReplayResult:
        started = time.monotonic()
        days = self.days
        try:
            self._prepare_models()
            self._start_suite(days[0])
            result = asyncio.run(self._replay(days, started))
        except BaseException:
            self.progress(f"replay failed; its suite's logs are kept in {self.root / 'logs'}")
            self._stop_suite()
            raise
        self._stop_suite()
        if not self.options.keep_dir:
            shutil.rmtree(self.root, ignore_errors=True)
        return result

    def _prepare_models(self) -> None:
        models = self.root / "models"
        source = self.options.models_dir
        if source is not None and models_trained_before(source, self.options.first, self.symbols):
            shutil.copytree(serving_dir(source), models, dirs_exist_ok=True)  # the set in service, flat
            self.notes.append(f"models reused from {source} (trained on labels ending before --from)")
            return
        self.progress(f"training models on data before {self.options.first} ...")
        train_models(self.env, self.options, models)
        self.notes.append(
            f"models trained for this replay on up to {self.options.train_years:g} year(s) before --from"
        )

    def _start_suite(self, first_day: date) -> None:
        prime = at(asx_calendar.previous_trading_day(first_day), MARK_AT)
        write_clock_file(self.clock_file, prime, self.options.speed)
        self.progress(f"starting the replay suite in {self.root} ...")
        result = manager_cli(self.env, "start", "--timeout", "120")
        if result.returncode != 0:
            raise ReplayError(
                f"the replay suite did not start: {(result.stderr or result.stdout).strip()[-800:]}"
            )

    def _stop_suite(self) -> None:
        if (self.root / "sock" / "manager.sock").exists():
            manager_cli(self.env, "stop", timeout_s=300)

    async def _replay(self, days: list[date], started: float) -> ReplayResult:
        from services.base.events import redis_from_url

        self.redis = redis = redis_from_url(self.settings.redis_url)
        self._woken = asyncio.Event()
        listener = asyncio.create_task(self._listen(), name="replay-listen")
        try:
            await self._set_up_tasks()
            self.curve.append((None, await self._equity()))
            await self._closed_step(asx_calendar.previous_trading_day(days[0]), MARK_AT)
            loop_started = time.monotonic()
            for number, day in enumerate(days, start=1):
                await self._trading_day(day)
                self.progress(f"day {number}/{len(days)} {day}: equity {self.curve[-1][1]:,.2f}")
            loop_s = time.monotonic() - loop_started
            trades = await self._trades()
            return self._result(days, trades, started, loop_s)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await self.client.close_clients()
            await redis.aclose()

    async def _listen(self) -> None:
        """Set _woken on every prediction_generated event; reconnects while Redis is away."""
        import redis.exceptions

        assert self.redis is not None
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(PREDICTION_CHANNEL)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._heard_prediction(message.get("data"))
                        self._woken.set()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                await asyncio.sleep(0.1)  # the waits poll meanwhile
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _heard_prediction(self, payload: Any) -> None:
        """Note the quote time of the symbol's prediction an event announced (see _settle_on_quotes)."""
        try:
            data = orjson.loads(payload)["data"]
            quote = (data.get("inputs") or {}).get("quote") or {}
            self._heard[str(data["symbol"])] = quote.get("quote_time")
        except (TypeError, ValueError, KeyError, AttributeError):
            return  # not a prediction's event: the store is read at the next recheck

    async def _nap(self, wait_s: float) -> bool:
        """Sleep until a prediction event or `wait_s`; True when an event came (and clear it)."""
        try:
            await asyncio.wait_for(self._woken.wait(), wait_s)
        except TimeoutError:
            return False
        self._woken.clear()
        return True

    # ---- one day

    @contextlib.contextmanager
    def _span(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.spans[name] = self.spans.get(name, 0.0) + time.perf_counter() - started

    async def _trading_day(self, day: date) -> None:
        with self._span("refresh 09:45"):
            await self._closed_step(day, REFRESH_AT)
        if day in self.plan.days:
            await self._intraday_session(day)
        else:
            await self._trading_step(day, at(day, TRADE_AT), first=True)
        with self._span("close 16:15"):
            await self._closed_step(day, MARK_AT)
        with self._span("exits and equity"):
            # With daily bars only, the day's bar (final at 16:10) shows the range the resting
            # stop-loss and take-profit orders saw in the session: paper-trading checks it now.
            await self._call(TRADER, "check_exits")
            status = await self._wait_traded()
            self.curve.append((day, float(status["equity"])))

    async def _intraday_session(self, day: date) -> None:
        """Step through the session at the bar interval, as the live suite sees it: each step's
        quotes (market_data_updated, so stops are checked and predictions follow the price), and
        the monitoring task every 15 minutes from 10:15."""
        first = True
        for moment in self.plan.steps(day):
            self._jump(moment)
            with self._span("intraday quotes"):
                await self._quote_step(moment)
            if self.plan.is_monitoring(moment):
                await self._trading_step(day, moment, first=first)
                first = False
        if first:
            raise ReplayError(f"{day}: no monitoring step in the session")

    async def _quote_step(self, moment: datetime, *, collect: bool = True) -> None:
        """The quotes of `moment`, every symbol's prediction on them, exits checked, trades done;
        the session's predictions collected unless the monitoring step that follows at the same
        moment collects them (it reads back to the open)."""
        # Asked in one call: one refresh of the universe's quotes, which publishes
        # market_data_updated for each quote that moved (in the symbols' sorted order).
        reply = await self._call("market-data", "get_quotes", symbols=list(self.symbols))
        for symbol, error in reply["errors"].items():
            self.progress(f"{moment:%Y-%m-%d %H:%M}: no quote for {symbol} ({error['message']})")
        quote_times = {s: reply["quotes"][s]["quote_time"] for s in self.symbols if s in reply["quotes"]}
        if not self.predicts_while_closed:
            # Nothing is predicted on a quote while the market is closed (the close's quote step
            # on intraday bars), nor on one that has not moved since the market was closed (no
            # bar today: the last close's stays, and no market_data_updated announces it); the
            # monitoring task's batch predicts that one (as it did when the closed market's
            # prediction was too old to reuse). Not waited for: each would be forced after a
            # quarter of the step's timeout.
            if not asx_calendar.is_market_open(moment):
                quote_times = {}
            quote_times = {s: t for s, t in quote_times.items() if self._closed_quotes.get(s) != t}
        await self._settle_on_quotes(quote_times)
        await self._call(TRADER, "check_exits")
        await self._wait_traded()
        if collect:
            await self._collect_session_predictions(moment.date())

    async def _closed_step(self, day: date, moment: clock_time) -> None:
        """A refresh while the market is closed, until every symbol's prediction is on its data."""
        self._jump(at(day, moment))
        for _ in range(5):
            before = await self._healthy_at_step_start()
            run = await self._run_task("market_data_refresh")
            self._closed_quotes = refreshed_quote_times(run)
            if self.predicts_while_closed:
                await self._settle(self.options.step_timeout_s / 4, refreshed_as_of(run))
            if not await self._restarted_since(before):
                return
            # A service restarted meanwhile (e.g. paper-trading missed the marks): once more,
            # with everything up, on the same data.
        raise ReplayError(f"services kept restarting during the {moment} step of {day}")

    async def _trading_step(self, day: date, start: datetime, *, first: bool) -> None:
        """The monitoring task: predictions that paper-trading follows within its rules."""
        self._jump(start)
        before = await self._healthy_at_step_start()
        if first and day not in self.plan.days:
            # Daily bars: the day's open is quoted from 10:00, and market_data_updated brings it to
            # the prediction service, which re-predicts on it. Those predictions are made and acted
            # on first, as on intraday days (_quote_step); otherwise the task's forced batch would
            # join the ones still being computed and recompute those already done, so the number
            # of predictions (and of orders) would depend on the machine's speed.
            with self._span("open quotes 10:15"):
                await self._quote_step(start, collect=False)
        with self._span("monitoring task"):
            await self._monitoring(day, start, before, first=first)

    async def _monitoring(self, day: date, start: datetime, before: dict[str, int], *, first: bool) -> None:
        task_start = datetime.fromtimestamp(_clock_now(self.clock_file), SYDNEY)
        try:
            # Run once, never re-run: a second forced run could publish a second prediction.
            run = await self.client.call_service(
                "scheduler",
                "execute_task",
                timeout=self.options.step_timeout_s,
                task_id=self.task_ids["market_monitoring"],
            )
            if run["status"] != "succeeded":
                self.progress(f"{day}: market_monitoring {run['status']}: {run.get('error')}")
        except RpcError as exc:
            self.progress(f"{day}: market_monitoring failed ({exc.message}); completing the step")
        # The task's batch complete (a symbol it missed while a service restarted is forced), so
        # every run of the step makes the same predictions; the day's first ones are scored.
        rows = await self._complete_step(day, start, task_start)
        made = first_since(rows, start) if first else {}
        services = await self._status()
        counts = {s["name"]: s["restarts"] for s in services}
        if counts == before and _all_up(services):
            self._known_healthy = counts  # the next step starts on this reading
        if counts.get(TRADER) != before.get(TRADER):
            # paper-trading was down for part of the step: the market_data_updated events that
            # check stop-loss and take-profit went unheard. The same prices again, now.
            await self._wait_healthy()
            await self._call("market-data", "refresh_all_data")
        await self._wait_traded()
        self._check_clock(day)
        self.step_predictions.extend(made[s] for s in self.symbols if s in made)
        await self._collect_session_predictions(day)

    async def _collect_session_predictions(self, day: date) -> None:
        """Every prediction made in `day`'s session so far (the signal counts are over these)."""
        opens, closes = asx_calendar.session_open(day), asx_calendar.session_close(day)
        rows = await self._recent_predictions(
            # back to the open, or to one collected already (the older ones were collected with it)
            lambda oldest: (
                datetime.fromisoformat(oldest["created_at"]) < opens
                or oldest["prediction_id"] in self.session_predictions
            ),
            most=8 * len(self.symbols) + 8,
            first=2 * len(self.symbols),
        )
        for row in rows:
            if opens <= datetime.fromisoformat(row["created_at"]) < closes:
                self.session_predictions.setdefault(row["prediction_id"], row)

    async def _settle_on_quotes(self, quote_times: dict[str, str]) -> None:
        """Every symbol's latest prediction made on its current quote, and acted on.

        The prediction service re-predicts when market_data_updated brings a quote that moved;
        one that did not come in time (a lost event, a restart) is forced here.
        """
        deadline = time.monotonic() + self.options.step_timeout_s
        forced = time.monotonic() + self.options.step_timeout_s / 4
        stale = list(quote_times)
        # Read at once only when the events already announced each prediction (a quote that did
        # not move has its prediction from before); else when they do, or at the recheck.
        check = all(self._heard.get(symbol) == quote_times[symbol] for symbol in stale)
        nap, recheck = POLL_FIRST_S, time.monotonic() + RECHECK_S
        made_on: dict[str, str | None] = {}
        while True:
            if check:
                # Cleared before the read: an event during it wakes the next nap at once.
                self._woken.clear()
                recheck = time.monotonic() + RECHECK_S
                latest = await self._latest_predictions()
                made_on = {
                    s: ((latest.get(s) or {}).get("inputs", {}).get("quote") or {}).get("quote_time")
                    for s in quote_times
                }
                stale = [s for s, quote_time in quote_times.items() if made_on[s] != quote_time]
            if not stale and await self._trader_caught_up():
                return
            if time.monotonic() > deadline:
                detail = "; ".join(
                    f"{s} quoted {quote_times[s]}, predicted on {made_on.get(s)}" for s in stale
                )
                raise ReplayError(
                    f"predictions did not follow the quotes: {detail or 'paper-trading behind'}"
                )
            if stale and time.monotonic() > forced:
                # In the order market-data announces quotes (sorted), as the lost events would
                # have had them made: paper-trading acts in the order predictions come.
                for symbol in sorted(stale):
                    await self._call(
                        "prediction", "generate_single_prediction", symbol=symbol, force_refresh=True
                    )
                forced = time.monotonic() + self.options.step_timeout_s / 4
            woken = await self._nap(nap)
            nap = POLL_FIRST_S if woken else min(2 * nap, POLL_MAX_S)
            # The store is the authority, read once the events announced every stale symbol's
            # prediction on its quote (one read a step instead of one per event), or at the
            # recheck: pub/sub is at most once, and Redis may be restarting.
            announced = all(self._heard.get(symbol) == quote_times[symbol] for symbol in stale)
            check = bool(stale) and ((woken and announced) or time.monotonic() > recheck)

    async def _complete_step(self, day: date, step_start: datetime, start: datetime) -> list[dict]:
        """Each symbol's one prediction of the task's run (started at `start`): one made since
        `start`, or else its latest when that was made in this step (from `step_start`: on the
        open's quote), which the task's forced batch got back instead of a second one on the same
        inputs (the prediction service reuses it); those it gave none for (it failed because a
        service was restarting) are forced. A symbol that has one is never predicted twice.
        Returns the stored predictions, newest first, back to before `step_start`."""
        rows = await self._rows_since(step_start)
        made = step_made(rows, self.symbols, step_start, start)
        for _ in range(5):
            missing = [s for s in self.symbols if s not in made]
            if not missing:
                return rows
            await self._wait_healthy()
            forced: dict[str, dict] = {}
            try:
                # Never re-sent after a failure: symbols done before it died must not be doubled.
                reply = await self.client.call_service(
                    "prediction",
                    "generate_predictions",
                    timeout=self.options.step_timeout_s,
                    symbols=missing,
                    force_refresh=True,
                )
                forced = reply["predictions"]
            except RpcError as exc:
                self.progress(f"{day}: forced predictions failed ({exc.message}); checking what was made")
            rows = await self._rows_since(step_start)
            made = {**step_made(rows, self.symbols, step_start, start), **forced}
        self.notes.append(f"{day}: no prediction for {', '.join(missing)} after 5 attempts")
        return rows

    async def _rows_since(self, start: datetime) -> list[dict]:
        """The stored predictions back to one made before `start` (so every symbol's latest made
        since is among them), newest first: one read a step as a rule (two symbols' worth first)."""
        return await self._recent_predictions(
            lambda oldest: datetime.fromisoformat(oldest["created_at"]) < start,
            most=8 * len(self.symbols) + 8,
            first=2 * len(self.symbols),
        )

    # ---- the clock, health and tasks

    def _jump(self, moment: datetime) -> None:
        write_clock_file(self.clock_file, moment, self.options.speed)

    def _check_clock(self, day: date) -> None:
        now = datetime.fromtimestamp(_clock_now(self.clock_file), SYDNEY)
        if now >= asx_calendar.session_close(day):
            raise ReplayError(f"the suite clock ran past the close of {day} during the step: lower --speed")

    async def _status(self) -> list[dict]:
        return (await self.client.call_service(SUPERVISOR, "status", timeout=10))["services"]

    async def _healthy_at_step_start(self) -> dict[str, int]:
        """_wait_healthy at a step's start; right after a step that ended with every service up
        and none restarted (_restarted_since), that reading instead of asking again: a restart
        after it still shows in the next comparison of the counters, which re-runs or completes
        the step, and a call to a service that is away waits for health (_call)."""
        known, self._known_healthy = self._known_healthy, None
        return known if known is not None else await self._wait_healthy()

    async def _wait_healthy(self) -> dict[str, int]:
        """Wait until every service runs and answers healthy; return the restart counters."""
        self._known_healthy = None
        deadline = time.monotonic() + self.options.step_timeout_s
        while True:
            services = await self._status()
            if _all_up(services):
                return {s["name"]: s["restarts"] for s in services}
            if any(s["state"] == "fatal" for s in services) or time.monotonic() > deadline:
                bad = [f"{s['name']} {s['state']}" for s in services if s["state"] != "running"]
                raise ReplayError(f"the replay suite is not healthy: {', '.join(bad) or 'health failing'}")
            await asyncio.sleep(0.05)

    async def _restarted_since(self, before: dict[str, int]) -> bool:
        services = await self._status()
        counts = {s["name"]: s["restarts"] for s in services}
        if counts == before and _all_up(services):
            self._known_healthy = counts  # the next step starts on this reading
        return counts != before

    async def _call(self, service: str, method: str, **params: Any) -> Any:
        """One call, retried while the service is restarting (nothing sent, nothing doubled)."""
        deadline = time.monotonic() + self.options.step_timeout_s
        while True:
            try:
                return await self.client.call_service(
                    service, method, timeout=self.options.step_timeout_s, **params
                )
            except DependencyUnavailable:
                if time.monotonic() > deadline:
                    raise
                await self._wait_healthy()

    async def _set_up_tasks(self) -> None:
        """The default schedule's refresh and monitoring tasks, run by the driver (no schedule)."""
        existing = {t["name"]: t["task_id"] for t in await self._call("scheduler", "list_tasks")}
        for config in default_tasks(self.symbols):
            if config["name"] not in TASK_NAMES:
                continue
            manual = {k: v for k, v in config.items() if k not in ("schedule", "catch_up_grace_s")}
            if config["name"] in existing:
                self.task_ids[config["name"]] = existing[config["name"]]
                continue
            reply = await self._call("scheduler", "schedule_task", config=manual)
            self.task_ids[config["name"]] = reply["task_id"]

    async def _run_task(self, name: str) -> dict:
        """Run a scheduler task now; a run that failed because a service restarted is run again."""
        for _ in range(5):
            run = await self._call("scheduler", "execute_task", task_id=self.task_ids[name])
            if run["status"] == "succeeded":
                return run
            self.progress(f"task {name} {run['status']}: {run.get('error')}; retrying")
            await self._wait_healthy()
        raise ReplayError(f"task {name} kept failing: {run.get('error')}")

    # ---- waiting for the suite to finish a step

    async def _settle(self, force_after_s: float, served: dict[str, str]) -> None:
        """Every symbol's latest prediction made on the data market-data now serves, and acted on.

        The prediction service re-predicts by itself when market_data_updated brings new data;
        if that did not happen in time (e.g. it was restarting), a forced prediction stands in.
        The market is closed here, so these predictions are rejected, never traded.
        """
        deadline = time.monotonic() + self.options.step_timeout_s
        forced = time.monotonic() + force_after_s
        check, nap, recheck, stale = True, POLL_FIRST_S, 0.0, list(self.symbols)
        while True:
            if check:
                self._woken.clear()  # before the read: an event during it wakes the next nap
                recheck = time.monotonic() + RECHECK_S
                stale = await self._stale_symbols(served)
            if not stale and await self._trader_caught_up():
                return
            if time.monotonic() > deadline:
                raise ReplayError(f"predictions did not settle for {', '.join(stale) or 'paper-trading'}")
            if stale and time.monotonic() > forced:
                for symbol in stale:
                    await self._call(
                        "prediction", "generate_single_prediction", symbol=symbol, force_refresh=True
                    )
                forced = time.monotonic() + force_after_s
            woken = await self._nap(nap)
            nap = POLL_FIRST_S if woken else min(2 * nap, POLL_MAX_S)
            check = bool(stale) and (woken or time.monotonic() > recheck)

    async def _stale_symbols(self, served: dict[str, str]) -> list[str]:
        """The symbols whose latest prediction is not on the data market-data serves: `served`,
        each symbol's `as_of` in the step's refresh, or asked for when the refresh lacks it."""
        latest = await self._latest_predictions()
        unknown = [s for s in self.symbols if s not in served]
        asked = await asyncio.gather(
            *(self._call("market-data", "get_price_history", symbol=s, days=1) for s in unknown)
        )
        as_of = {**served, **{s: history["as_of"] for s, history in zip(unknown, asked, strict=True)}}
        stale = []
        for symbol in self.symbols:
            made_on = (latest.get(symbol) or {}).get("inputs", {}).get("market_data", {}).get("as_of")
            if made_on != as_of[symbol]:
                stale.append(symbol)
        return stale

    async def _recent_predictions(
        self, enough: Callable[[dict], bool], most: int, first: int | None = None
    ) -> list[dict]:
        """The latest stored predictions, newest first: `first` (one per symbol) at first,
        doubling until `enough(oldest row)` or `most` rows (a stored prediction is a few kB of
        inputs and features: the driver asks for them many times a day)."""
        limit = min(first or len(self.symbols), most)
        while True:
            rows = (await self._call("prediction", "get_recent_predictions", limit=limit))["predictions"]
            if len(rows) < limit or limit >= most or enough(rows[-1]):
                return rows
            limit = min(2 * limit, most)

    async def _latest_predictions(self) -> dict[str, dict]:
        """Each symbol's latest prediction: the newest rows, one per symbol as a rule."""
        count = len(self.symbols)
        latest: dict[str, dict] = {}
        for limit in (count, 4 * count + 8):
            rows = (await self._call("prediction", "get_recent_predictions", limit=limit))["predictions"]
            for row in rows:  # newest first
                latest.setdefault(row["symbol"], row)
            if len(latest) == count or len(rows) < limit:
                break
        return latest

    async def _wait_traded(self) -> dict:
        """Wait until paper-trading has acted on every prediction; its portfolio status then."""
        deadline = time.monotonic() + self.options.step_timeout_s
        nap = POLL_FIRST_S
        while not await self._trader_caught_up():
            if time.monotonic() > deadline:
                raise ReplayError("paper-trading did not process the step's predictions in time")
            await asyncio.sleep(nap)
            nap = min(2 * nap, POLL_MAX_S)
        # The trade lock is fair: a status read queues behind any handler still holding it.
        status: dict = await self._call(TRADER, "get_portfolio_status")
        return status

    async def _trader_caught_up(self) -> bool:
        """Every prediction is on the stream (none left in the prediction service's outbox, as
        after a Redis restart) and paper-trading's consumer group (`paper-trading@<ledger id>`,
        one per ledger; the replay runs one) has read and acknowledged it.

        The stream is read first (Redis, cheap) and the outbox asked only once it looks caught
        up; then the stream again, since a prediction sent between the two reads would be in
        neither."""
        if not await self._stream_acknowledged():
            return False
        if (await self._call("prediction", "health"))["outbox"]:
            return False
        return await self._stream_acknowledged()

    async def _stream_acknowledged(self) -> bool:
        import redis.exceptions

        if self.redis is None:
            raise ReplayError("the replay is not running: its Redis connection is closed")
        try:
            # One round trip for both (a pipeline, not a transaction: two reads).
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xinfo_stream(PREDICTION_STREAM)
                pipe.xinfo_groups(PREDICTION_STREAM)
                stream, groups = await pipe.execute()
        except redis.exceptions.ResponseError:
            return True  # no stream yet: nothing was predicted
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            # The suite's Redis died (the supervisor restarts it from its append-only file) or is
            # still loading: not known to be caught up, so the caller asks again until its deadline.
            return False
        group = next((g for g in groups if _text(g["name"]).startswith(f"{TRADER}@")), None)
        if group is None:
            return stream["length"] == 0
        return group["pending"] == 0 and _text(group["last-delivered-id"]) == _text(
            stream["last-generated-id"]
        )

    # ---- results

    async def _equity(self) -> float:
        status = await self._call(TRADER, "get_portfolio_status")
        return float(status["equity"])

    async def _trades(self) -> list[dict]:
        trades: dict[int, dict] = {}
        for symbol in self.symbols:
            reply = await self._call(TRADER, "get_trade_history", limit=1000, symbol=symbol)
            if reply["count"] >= 1000:
                self.notes.append(f"{symbol}: only the latest 1000 trades are in trades.csv")
            trades.update({t["trade_id"]: t for t in reply["trades"]})
        return [trades[k] for k in sorted(trades)]

    def _result(self, days: list[date], trades: list[dict], started: float, loop_s: float) -> ReplayResult:
        return replay_result(
            self.options,
            self.symbols,
            self.settings.market_index,
            self.plan,
            days,
            ReplayRecord(
                self.curve,
                trades,
                self.step_predictions,
                list(self.session_predictions.values()),
                self.notes,
                self.spans,
            ),
            started,
            loop_s,
        )


@dataclass
class ReplayRecord:
    """What a replay's day loop saw, whichever engine ran it: the report is built from this."""

    curve: list[tuple[date | None, float]]
    trades: list[dict]  # paper-trading's trade history rows, oldest first
    step_predictions: list[dict]  # each symbol's first of each session (scored for accuracy)
    session_predictions: list[dict]  # every one the sessions acted on
    notes: list[str]
    spans: dict[str, float]  # wall-clock seconds of the day loop by step


def replay_result(
    options: ReplayOptions,
    symbols: tuple[str, ...],
    index: str,
    plan: IntradayPlan,
    days: list[date],
    record: ReplayRecord,
    started: float,
    loop_s: float,
) -> ReplayResult:
    """The report of a replay (the service replay's and the in-process engine's alike), its files
    written to options.out."""
    prices = read_prices(options.data_dir, (*symbols, index), at(days[-1], clock_time(23, 59)))
    report = replay_report.build_report(
        first_day=days[0],
        last_day=days[-1],
        entry_day=asx_calendar.previous_trading_day(days[0]),
        curve=record.curve,
        trades=record.trades,
        predictions=[scored(p) for p in record.step_predictions],
        signal_predictions=[scored(p) for p in record.session_predictions] or None,
        basis=fill_basis_note(plan, symbols, days),
        closes={s: prices[s][0] for s in symbols},
        adj_closes={s: prices[s][1] for s in symbols},
        index_closes=prices[index][0],
        index_symbol=index,
    )
    seconds = time.monotonic() - started
    # Throughput counts the day loop only: training and the suite's start are one-off costs.
    report["run"] = {
        "seconds": round(seconds, 1),
        "day_loop_seconds": round(loop_s, 1),
        "days_per_minute": round(len(days) / loop_s * 60, 2),
        "step_seconds": {name: round(s, 2) for name, s in record.spans.items()},
    }
    degraded = [p for p in (*record.step_predictions, *record.session_predictions) if p.get("degraded")]
    report["degraded_predictions"] = len({p["prediction_id"] for p in degraded})
    notes = [
        degraded_note(degraded),
        "sentiment: no historical news in a replay, so the neutral fallback is used",
        *record.notes,
    ]
    result = ReplayResult(
        report, replay_report.format_report(report, notes), options.out, record.curve, record.trades,
        record.step_predictions, notes, seconds, record.session_predictions,
    )  # fmt: skip
    write_outputs(result, prices, days, index)
    return result


def first_since(rows: list[dict], start: datetime) -> dict[str, dict]:
    """Each symbol's first prediction made at or after `start`, of `rows` (newest first)."""
    mine: dict[str, dict] = {}
    for row in reversed(rows):  # oldest first
        if datetime.fromisoformat(row["created_at"]) >= start:
            mine.setdefault(row["symbol"], row)
    return mine


def step_made(
    rows: list[dict], symbols: tuple[str, ...], step_start: datetime, start: datetime
) -> dict[str, dict]:
    """Each symbol's prediction of a task's run begun at `start`: its first since `start`, or else
    its latest when made in the step (from `step_start`); `rows` newest first, back to before
    `step_start`, so a symbol's latest in the step is among them."""
    made = first_since(rows, start)
    latest: dict[str, dict] = {}
    for row in rows:  # newest first
        latest.setdefault(row["symbol"], row)
    for symbol in symbols:
        newest = latest.get(symbol)
        if symbol not in made and newest and datetime.fromisoformat(newest["created_at"]) >= step_start:
            made[symbol] = newest
    return made


def _all_up(services: list[dict]) -> bool:
    """Every service of the registry runs and answers healthy, by a supervisor `status` reply."""
    up = {s["name"] for s in services if s["state"] == "running" and s["health"] in UP}
    return up >= set(SERVICES)


def refreshed_quote_times(run: dict) -> dict[str, str]:
    """Each symbol's quote time in a market_data_refresh run's reply (refresh_all_data's quotes)."""
    return _per_symbol(run, "quotes", "quote_time")


def refreshed_as_of(run: dict) -> dict[str, str]:
    """Each symbol's `as_of` in a market_data_refresh run's reply (refresh_all_data's results)."""
    return _per_symbol(run, "results", "as_of")


def _per_symbol(run: dict, group: str, key: str) -> dict[str, str]:
    """{symbol: text} from `run.result[group][symbol][key]`, leaving out whatever is not there."""
    results = run.get("result")
    rows = results.get(group) if isinstance(results, dict) else None
    if not isinstance(rows, dict):
        return {}
    return {s: r[key] for s, r in rows.items() if isinstance(r, dict) and isinstance(r.get(key), str)}


def degraded_note(degraded: list[dict]) -> str:
    """The report's line on degraded predictions (made without an input): none, or which and why."""
    unique = {p["prediction_id"]: p for p in degraded}
    if not unique:
        return "no prediction was degraded: every one had its market data, sentiment and model"
    reasons = sorted(
        f"{p['symbol']} {p['created_at'][:16]}: {'; '.join(f'{k} {v}' for k, v in p['missing'].items())}"
        for p in unique.values()
    )
    shown = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")
    return f"{len(unique)} prediction(s) degraded (made without an input): {shown}"


def scored(prediction: dict) -> replay_report.ScoredPrediction:
    inputs = prediction.get("inputs") or {}
    as_of = (inputs.get("market_data") or {}).get("as_of")
    if not isinstance(as_of, str):
        raise ReplayError(f"prediction {prediction.get('prediction_id')} has no market data as_of")
    model = inputs.get("model") or {}
    return replay_report.ScoredPrediction(
        symbol=prediction["symbol"],
        bar_date=datetime.fromisoformat(as_of).astimezone(SYDNEY).date(),
        signal=prediction["signal"],
        direction=model.get("direction"),
    )


def read_prices(data_dir: Path, symbols: tuple[str, ...], now: datetime) -> dict[str, tuple[list, list]]:
    out = {}
    for symbol in symbols:
        text = (data_dir / csv_file_name(symbol)).read_bytes().decode("utf-8")
        bars = history_from_csv(symbol, text, now, asx_calendar.is_trading_day).bars
        out[symbol] = ([(b.date, b.close) for b in bars], [(b.date, b.adj_close) for b in bars])
    return out


def _clock_now(clock_file: Path) -> float:
    state = json.loads(clock_file.read_text())
    start = datetime.fromisoformat(state["start"]).timestamp()
    return start + (time.time() - float(state["epoch"])) * float(state["speed"])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---- outputs -------------------------------------------------------------------------------------


def write_outputs(result: ReplayResult, prices: dict, days: list[date], index: str) -> None:
    out = result.out
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "trades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TRADE_COLUMNS)
        for trade in result.trades:
            writer.writerow([trade.get(c) for c in TRADE_COLUMNS])
    with open(out / "equity.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("date", "equity"))
        for day, equity in result.curve:
            writer.writerow((day.isoformat() if day else "start", f"{equity:.2f}"))
    (out / "report.json").write_text(json.dumps({**result.report, "notes": result.notes}, indent=2) + "\n")
    (out / "report.txt").write_text(result.text + "\n")
    plot_equity(out / "equity.png", result, prices, days, index)


def plot_equity(path: Path, result: ReplayResult, prices: dict, days: list[date], index: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    capital = result.curve[0][1]
    entry = asx_calendar.previous_trading_day(days[0])
    symbols = [s for s in prices if s != index]
    x = [entry, *days]
    universe = [
        capital * (1 + (replay_report.buy_and_hold_return({s: prices[s][0] for s in symbols}, entry, d) or 0))
        for d in x
    ]
    bench = [
        capital * (1 + (replay_report.buy_and_hold_return({index: prices[index][0]}, entry, d) or 0))
        for d in x
    ]
    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    # matplotlib plots dates through its unit converters; its stubs accept only numbers and arrays.
    ax.plot(x, [v for _, v in result.curve], label="paper portfolio", linewidth=2)  # type: ignore[arg-type]
    ax.plot(x, universe, label="buy-and-hold universe (equal weight)", linestyle="--")  # type: ignore[arg-type]
    ax.plot(x, bench, label=f"buy-and-hold {index}", linestyle=":")  # type: ignore[arg-type]
    ax.set_title(f"Replay {days[0]} .. {days[-1]}")
    ax.set_ylabel("equity (AUD)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def default_out(data_dir: Path, first: date, last: date) -> Path:
    return data_dir / "replays" / f"{first.isoformat()}_{last.isoformat()}"
