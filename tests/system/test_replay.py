"""Replay of a short past period through the real suite, checked against its own trade log.

Runs on the real ASX CSVs of ../shared/data/asx when present, else on synthetic CSVs written in
the same format. The first replay runs in-process (so the test can read paper-trading's own
trade log and performance before the replay suite stops); the second runs through the CLI with
a service SIGKILLed at five points, two of them in the middle of a trading step (see KILLS; the
supervisor restarts each), and must give the same trades and the same equity curve.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path

import orjson
import pytest

from services.base.base_service import socket_is_live
from services.base.clock import SYDNEY
from services.base.events import CHANNEL_PREFIX
from services.domain import asx_calendar
from services.management.replay import ReplayDriver, ReplayOptions
from tests.support import Drain, SuiteDirs, manager_cli, manager_command, rpc_call_sync, wait_until
from tests.system._replay_helpers import INDEX, MODELS_BEFORE, SYMBOLS, TRADING_KNOBS, market_csv_dir

# A replay runs a whole suite; the first test also waits for the models if they must be trained.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FIRST, LAST = date(2019, 6, 3), date(2019, 6, 28)  # a month, 19 trading days: 10 June 2019 was a holiday
assert FIRST >= MODELS_BEFORE  # the session's replay models were trained before FIRST
# Which service dies when. "clock": as the driver's clock jumps to that Sydney time (a step
# begins). "prediction": the instant the first prediction of that step is published, so
# paper-trading dies while it trades the step, and prediction while the rest of its batch is
# still being computed.
KILLS = (
    ("clock", "2019-06-05T16:15", "scheduler"),
    ("prediction", "2019-06-06T10:15", "paper-trading"),
    ("prediction", "2019-06-07T10:15", "prediction"),
    ("clock", "2019-06-11T09:45", "market-data"),
    ("clock", "2019-06-12T16:15", "ml-model"),
)
FAST_MANAGER = {"TRADING_MANAGER_HEALTH_INTERVAL_S": "0.5", "TRADING_MANAGER_BACKOFF_BASE_S": "0.2"}


class CapturingDriver(ReplayDriver):
    """Reads paper-trading's trade log and performance just before the replay suite stops."""

    trade_log: dict | None = None
    performance: dict | None = None

    def _stop_suite(self) -> None:
        trader = self.root / "sock" / "paper-trading.sock"
        if trader.exists():
            self.trade_log = rpc_call_sync(trader, "get_trade_history", {"limit": 1000})
            self.performance = rpc_call_sync(trader, "get_trading_performance", {"period": "all"})
        super()._stop_suite()


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, replay_models):
    out = tmp_path_factory.mktemp("replay")
    options = ReplayOptions(
        first=FIRST,
        last=LAST,
        data_dir=market_csv_dir(),
        out=out,
        models_dir=replay_models,
        extra_env={**TRADING_KNOBS, **FAST_MANAGER},
    )
    driver = CapturingDriver(options)
    result = driver.run()
    return driver, result


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def daily_bars(symbol: str) -> dict[date, dict[str, float]]:
    rows = read_csv(market_csv_dir() / f"{symbol.lstrip('^')}.csv")
    keys = ("Open", "High", "Low", "Close")
    return {
        date.fromisoformat(r["Date"]): {k: float(r[k]) for k in keys}
        for r in rows
        if r["Close"] not in ("", "null")
    }


def closes(symbol: str) -> dict[date, float]:
    """Closes straight from the CSV file (an independent reading, not the provider's)."""
    rows = read_csv(market_csv_dir() / f"{symbol.lstrip('^')}.csv")
    return {date.fromisoformat(r["Date"]): float(r["Close"]) for r in rows if r["Close"] not in ("", "null")}


def test_replay_walks_every_trading_day_and_writes_its_files(replayed):
    _, result = replayed
    days = asx_calendar.trading_days_between(FIRST, LAST)
    assert [d for d, _ in result.curve[1:]] == days
    assert result.report["equity"]["trading_days"] == len(days) == 19
    # Daily bars only: the report says so, first thing.
    assert result.report["basis"].startswith("daily bars only: orders fill at the day's open")
    assert result.report["degraded_predictions"] == 0 and result.notes[0].startswith(
        "no prediction was degraded"
    )
    assert result.text.splitlines()[1].startswith("  fill basis        daily bars only")
    equity_rows = read_csv(result.out / "equity.csv")
    assert [r["date"] for r in equity_rows] == ["start", *(d.isoformat() for d in days)]
    assert (result.out / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (result.out / "report.txt").read_text().strip() == result.text
    # One step prediction per symbol per day, each made on the previous close (no look-ahead).
    assert len(result.predictions) == len(days) * len(SYMBOLS)
    for prediction in result.predictions:
        made = date.fromisoformat(prediction["created_at"][:10])
        seen = date.fromisoformat(prediction["inputs"]["market_data"]["as_of"][:10])
        assert seen == asx_calendar.previous_trading_day(made), prediction["prediction_id"]


def test_report_figures_match_the_trade_log(replayed):
    driver, result = replayed
    log = sorted(driver.trade_log["trades"], key=lambda t: t["trade_id"])
    rows = read_csv(result.out / "trades.csv")
    assert len(rows) == len(log) == result.report["trading"]["trades"]
    assert [int(r["trade_id"]) for r in rows] == [t["trade_id"] for t in log]
    for row, trade in zip(rows, log, strict=True):
        assert (row["symbol"], row["action"], int(row["quantity"])) == (
            trade["symbol"],
            trade["action"],
            trade["quantity"],
        )
        assert float(row["price"]) == trade["price"] and float(row["commission"]) == trade["commission"]
        assert (row["prediction_id"] or None) == trade["prediction_id"]
    trading = result.report["trading"]
    buys = [t for t in log if t["action"] == "BUY"]
    sells = [t for t in log if t["action"] == "SELL"]
    assert buys, "the test period should trade: the knobs in TRADING_KNOBS make it"
    assert (trading["buys"], trading["sells"]) == (len(buys), len(sells))
    assert trading["commissions"] == pytest.approx(sum(t["commission"] for t in log))
    assert trading["commissions"] == pytest.approx(driver.performance["commissions_paid"])
    wins = sum(1 for t in sells if t["net_pnl"] > 0)
    assert trading["win_rate"] == (pytest.approx(wins / len(sells)) if sells else None)
    assert trading["win_rate"] == driver.performance["win_rate"]
    equity = result.report["equity"]
    assert equity["final_equity"] == pytest.approx(driver.performance["equity"], abs=0.01)
    assert equity["total_return"] == pytest.approx(driver.performance["total_return"], abs=1e-9)
    assert equity["max_drawdown"] == pytest.approx(driver.performance["max_drawdown"], abs=1e-9)


def test_every_trade_follows_its_prediction_or_an_exit_rule(replayed):
    _, result = replayed
    # Each day one prediction per symbol: on the open's quote, which the monitoring task's forced
    # batch, on the same quote, gets back instead of a second one.
    predictions = {p["prediction_id"]: p for p in result.session_predictions}
    assert len(predictions) == len(result.curve[1:]) * len(SYMBOLS)
    assert {p["prediction_id"] for p in result.predictions} <= set(predictions)
    linked = [t for t in result.trades if t["prediction_id"]]
    assert len({t["prediction_id"] for t in linked}) == len(linked)  # each prediction traded at most once
    for trade in result.trades:
        if trade["prediction_id"] is None:
            assert trade["action"] == "SELL" and trade["reason"] in ("stop_loss", "take_profit"), trade
            assumptions = trade["assumptions"]
            if "exit_bar" in assumptions:  # the day's range, once its bar was final
                day = date.fromisoformat(assumptions["exit_bar"]["start"][:10])
                bar = daily_bars(trade["symbol"])[day]
                assert (
                    assumptions["exit_bar"]["interval"] == "1d"
                    and assumptions["quote_basis"] == "daily_close"
                )
                assert bar["Low"] <= trade["price"] <= bar["High"]
                if assumptions["fill_basis"].endswith(":open"):
                    assert trade["price"] == bar["Open"]
            else:  # the day's open, already through a level when it was first quoted at 10:00
                assert (
                    assumptions["fill_basis"].endswith(":quote")
                    and assumptions["quote_basis"] == "daily_open"
                )
            continue
        prediction = predictions[trade["prediction_id"]]
        assert prediction["signal"] == trade["action"] and prediction["symbol"] == trade["symbol"]
        # Filled at the price the prediction saw (daily bars only: the day's open, market-data's
        # 10:00 quote), plus slippage against the trader.
        seen = prediction["inputs"]["market_data"]["price"]
        assert trade["price"] > seen if trade["action"] == "BUY" else trade["price"] < seen
        assert trade["timestamp"][:10] == prediction["created_at"][:10]


def test_buy_and_hold_figures_from_the_csv_files(replayed):
    _, result = replayed
    entry = asx_calendar.previous_trading_day(FIRST)
    singles = [closes(s)[LAST] / closes(s)[entry] - 1 for s in SYMBOLS]
    bench = result.report["benchmarks"]
    assert bench["universe_buy_and_hold"] == pytest.approx(sum(singles) / len(singles))
    assert bench["index_buy_and_hold"] == pytest.approx(closes(INDEX)[LAST] / closes(INDEX)[entry] - 1)
    signals = result.report["signals"]
    # Every prediction of the sessions (the monitoring task's, and those on each new quote),
    # at least the one step prediction per symbol and day the accuracy is scored on.
    assert signals["total"] >= len(result.predictions)
    assert signals["buy_rate"] == pytest.approx(signals["counts"]["BUY"] / signals["total"])


def test_usage_errors_exit_2_with_one_line():
    """Checked before anything starts: no suite, no training, one line on stderr."""
    for args in (
        ["--from", "2019-06-13", "--to", "2019-06-03"],
        ["--from", "June", "--to", "2019-06-03"],
        ["--from", "2019-06-03", "--to", "2019-06-13", "--speed", "0"],
        ["--from", "2019-06-03"],  # --to missing
    ):
        result = manager_cli(
            {**os.environ, "TRADING_DATA_DIR": str(market_csv_dir())}, "replay", *args, timeout_s=60
        )
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def trade_signature(rows: list[dict]) -> list[tuple]:
    """What must not change when a service is killed: everything but ids and fill seconds."""
    return [
        (
            r["timestamp"][:10],
            r["symbol"],
            r["action"],
            r["quantity"],
            r["price"],
            r["commission"],
            r["reason"],
        )
        for r in rows
    ]


@pytest.mark.parametrize(
    "cpu_hogs, launch", [(0, "exec"), (2, "zygote")], ids=["idle-exec", "two-busy-cores-zygote"]
)
def test_killing_services_mid_replay_gives_the_same_trades(
    replayed, replay_models, tmp_path, processes, cpu_hogs, launch
):
    # With two CPU-bound processes beside it the machine is slower, never the decisions: a slow
    # or restarting dependency is waited for, never turned into a degraded prediction. The idle
    # run starts each service as its own interpreter (TRADING_MANAGER_LAUNCH=exec), the other and
    # the uninterrupted replay fork them from the zygote: the same trades either way.
    for _ in range(cpu_hogs):
        processes.popen([sys.executable, "-c", "while True: pass"])
    _, uninterrupted = replayed
    out = tmp_path / "killed"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRADING_")},
        **TRADING_KNOBS,
        **FAST_MANAGER,
        "TRADING_MANAGER_LAUNCH": launch,
        "TRADING_DATA_DIR": str(tmp_path / "data"),
        "TRADING_MODELS_DIR": str(replay_models),
    }
    command = manager_command(
        "replay",
        "--from", FIRST.isoformat(), "--to", LAST.isoformat(),
        "--data-dir", str(market_csv_dir()), "--out", str(out),
    )  # fmt: skip
    proc = processes.popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = Path(
        wait_for_line(proc, "starting the replay suite in ").split(" in ", 1)[1].removesuffix(" ...\n")
    )
    processes.suite(SuiteDirs(root))  # its processes killed at teardown if the replay leaves any
    supervisor = wait_until(
        lambda: rpc_call_sync(root / "sock" / "manager.sock", "status")["supervisor"],
        120,
        0.01,
        what="the replay's supervisor",
        ignoring=(OSError,),
    )
    assert supervisor["launch"] == launch
    # Read both pipes from now on: a replay whose progress lines fill a pipe nobody reads (64 KiB)
    # blocks on its next write, and its clock stops.
    drained = Drain(proc)
    run_kills(root, proc, drained)
    proc.wait(timeout=600)
    stdout, stderr = drained.text()
    assert proc.returncode == 0, stderr[-3000:]
    assert f"Replay {FIRST} .. {LAST} (19 trading days)" in stdout
    # Services died mid-step, yet no prediction was made without its inputs.
    assert json.loads((out / "report.json").read_text())["degraded_predictions"] == 0
    assert trade_signature(read_csv(out / "trades.csv")) == trade_signature(
        read_csv(uninterrupted.out / "trades.csv")
    )
    assert read_csv(out / "equity.csv") == read_csv(uninterrupted.out / "equity.csv")


def wait_for_line(proc: subprocess.Popen, prefix: str, timeout_s: float = 600) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            raise AssertionError(f"the replay exited ({proc.returncode}) before printing {prefix!r}")
    raise AssertionError(f"no {prefix!r} line within {timeout_s}s")


def run_kills(root: Path, replay: subprocess.Popen, drained: Drain) -> None:
    """SIGKILL each service of KILLS at its moment, then wait until the supervisor has it running
    again under a new pid; the replay goes on meanwhile. A replay that exits before the last kill
    fails the test at once with its own last words."""
    import redis

    wait_until(lambda: socket_is_live(root / "sock" / "redis.sock"), 120, 0.01, what="the replay's redis")
    pubsub = redis.Redis(unix_socket_path=str(root / "sock" / "redis.sock")).pubsub(
        ignore_subscribe_messages=True
    )
    pubsub.subscribe(CHANNEL_PREFIX + "prediction_generated")
    clock_file = root / "clock.json"
    # Generous: the killed services' steps wait for them (forced predictions after a quarter of
    # the step timeout), and three test workers share two busy cores.
    deadline = time.monotonic() + 600
    try:
        for kind, moment, service in KILLS:
            while not (
                clock_reached(clock_file, moment)
                if kind == "clock"
                else published_at(pubsub.get_message(timeout=0.01), moment)
            ):
                if replay.poll() is not None:
                    err = drained.text()[1]
                    raise AssertionError(
                        f"the replay exited ({replay.returncode}) before {kind} {moment}: {err[-3000:]}"
                    )
                assert time.monotonic() < deadline, f"never reached {kind} {moment}"
            kill_and_wait(root / "sock" / "manager.sock", service)
    finally:
        pubsub.close()


def clock_reached(clock_file: Path, moment: str) -> bool:
    """The replay's clock is at `moment` (Sydney time) or past it: a step can be shorter than this
    loop's turn on busy cores, so waiting for the exact moment could miss it."""
    try:
        start = orjson.loads(clock_file.read_bytes())["start"]
    except (OSError, ValueError, KeyError):
        return False  # not written yet
    return datetime.fromisoformat(start) >= datetime.fromisoformat(moment).replace(tzinfo=SYDNEY)


def published_at(message: dict | None, moment: str) -> bool:
    if not message:
        return False
    created = orjson.loads(message["data"])["data"]["created_at"]
    return datetime.fromisoformat(created).astimezone(SYDNEY).isoformat().startswith(moment)


def kill_and_wait(manager: Path, service: str) -> None:
    pid = next(s["pid"] for s in rpc_call_sync(manager, "status")["services"] if s["name"] == service)
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: next(s for s in rpc_call_sync(manager, "status")["services"] if s["name"] == service),
        60,
        0.05,
        what=f"{service} restarted",
        until=lambda s: s["state"] == "running" and s["pid"] not in (None, pid),
        ignoring=(OSError,),  # a status call that timed out on busy cores is asked again
    )
