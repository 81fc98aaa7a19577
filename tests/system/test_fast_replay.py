"""The in-process replay engine against the service replay: the same period, the same trades.

Both replay the same months of the market CSVs (the real ASX files of ../shared/data/asx when
present, else synthetic ones in the same format) with the same models and knobs. The service
replay runs the real suite; the engine (services/management/fast_replay.py) runs the same domain
functions in this process. Every trade must agree on its symbol, side, quantity, price, gross,
commission, slippage, realised and net P&L, reason and step (the minute: the suite clock runs on
for the milliseconds a step takes, the engine's stands at the step's instant), and the equity
curve and the report on every figure.
"""

from __future__ import annotations

import csv
import os
from datetime import date

import pytest

from services.management.fast_replay import InprocReplay
from services.management.replay import ReplayDriver, ReplayError, ReplayOptions, ReplayResult
from tests.support import manager_cli
from tests.system._replay_helpers import MODELS_BEFORE, TRADING_KNOBS, market_csv_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Two months: 42 trading days, dozens of trades both ways, stop-losses and take-profits.
FIRST, LAST = date(2019, 6, 3), date(2019, 7, 31)
assert FIRST >= MODELS_BEFORE  # the session's replay models were trained before FIRST
COMPARED = (
    "symbol", "action", "quantity", "price", "gross", "commission", "slippage", "realized_pnl",
    "net_pnl", "reason", "closes_position",
)  # fmt: skip


def options(tmp_path_factory, models, name: str, **knobs: str) -> ReplayOptions:
    return ReplayOptions(
        first=FIRST,
        last=LAST,
        data_dir=market_csv_dir(),
        out=tmp_path_factory.mktemp(name),
        models_dir=models,
        extra_env={**TRADING_KNOBS, **knobs},
    )


@pytest.fixture(scope="module")
def service_replay(tmp_path_factory, replay_models) -> ReplayResult:
    return ReplayDriver(options(tmp_path_factory, replay_models, "service")).run()


@pytest.fixture(scope="module")
def inproc_replay(tmp_path_factory, replay_models) -> ReplayResult:
    return InprocReplay(options(tmp_path_factory, replay_models, "inproc"), workers=2).run()


def trade_rows(result: ReplayResult) -> list[tuple]:
    """Each trade's compared fields and its step (the Sydney minute, from the UTC timestamp)."""
    return [(t["timestamp"][:16], *(t[k] for k in COMPARED)) for t in result.trades]


def differences(service: ReplayResult, inproc: ReplayResult) -> list[str]:
    """Where the two replays disagree: the first diverging trade and the equity days, or nothing."""
    found = []
    ours, theirs = trade_rows(inproc), trade_rows(service)
    for number, (a, b) in enumerate(zip(theirs, ours, strict=False), start=1):
        if a != b:
            found.append(f"trade {number}: service {a} vs inproc {b}")
            break
    if len(ours) != len(theirs):
        found.append(f"{len(theirs)} trades in the service replay, {len(ours)} in-process")
    found += [
        f"equity on {a[0]}: service {a[1]:.2f} vs inproc {b[1]:.2f}"
        for a, b in zip(service.curve, inproc.curve, strict=True)
        if a != b
    ]
    return found


def test_the_engine_trades_as_the_service_replay_does(service_replay, inproc_replay):
    trades = service_replay.trades
    # The period must exercise what is compared: buys, signal sells, both exits.
    reasons = {t["reason"].split(" ")[0] for t in trades}
    assert {"signal", "stop_loss", "take_profit"} <= reasons, reasons
    assert {t["action"] for t in trades} == {"BUY", "SELL"}
    assert len(trades) >= 20
    assert differences(service_replay, inproc_replay) == []
    assert [d for d, _ in inproc_replay.curve] == [d for d, _ in service_replay.curve]


def test_the_engine_reports_what_the_service_replay_reports(service_replay, inproc_replay):
    ours = {k: v for k, v in inproc_replay.report.items() if k != "run"}
    theirs = {k: v for k, v in service_replay.report.items() if k != "run"}
    assert ours == theirs
    assert inproc_replay.notes == service_replay.notes
    for name in ("trades.csv", "equity.csv", "report.json", "report.txt", "equity.png"):
        assert (inproc_replay.out / name).is_file()
    assert (inproc_replay.out / "equity.csv").read_text() == (service_replay.out / "equity.csv").read_text()


def test_a_diverging_engine_is_caught(tmp_path_factory, replay_models, service_replay):
    """The comparison sees a difference of one basis point of slippage (a cent here and there)."""
    nudged = InprocReplay(
        options(tmp_path_factory, replay_models, "nudged", TRADING_PAPER_TRADING_SLIPPAGE_BPS="6")
    ).run()
    found = differences(service_replay, nudged)
    assert found and found[0].startswith("trade 1:"), found


def test_the_cli_runs_the_engine_with_engine_inproc(tmp_path, replay_models, service_replay):
    env = {
        **os.environ,
        **TRADING_KNOBS,
        "TRADING_DATA_DIR": str(tmp_path / "data"),
        "TRADING_MODELS_DIR": str(replay_models),
    }
    out = tmp_path / "out"
    args = ("--from", FIRST.isoformat(), "--to", LAST.isoformat(), "--data-dir", str(market_csv_dir()))
    result = manager_cli(env, "replay", *args, "--out", str(out), "--engine", "inproc", timeout_s=300)
    assert result.returncode == 0, result.stderr
    assert "starting the replay suite" not in result.stderr  # no suite: nothing was started
    with open(out / "trades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["timestamp"][:16], *(r[k] for k in COMPARED)) for r in rows] == [
        (t["timestamp"][:16], *(str(t[k]) for k in COMPARED)) for t in service_replay.trades
    ]


def test_intraday_files_are_refused_before_anything_runs(tmp_path, replay_models):
    """The engine replays daily bars only: a data folder with intraday CSVs names the service replay."""
    for path in market_csv_dir().glob("*.csv"):
        (tmp_path / path.name).symlink_to(path)
    (tmp_path / "CBA.AX_5m.csv").write_text(
        "Datetime,Open,High,Low,Close,Volume\n2019-06-03T10:05:00+10:00,80,80.5,79.5,80.2,1000\n"
    )
    nothing = tmp_path / "out"
    with pytest.raises(ReplayError, match=r"daily bars only.*5m.*service replay"):
        InprocReplay(
            ReplayOptions(first=FIRST, last=LAST, data_dir=tmp_path, out=nothing, models_dir=replay_models)
        )
    assert not nothing.exists()


def test_the_split_between_prediction_workers_changes_nothing(tmp_path_factory, replay_models, inproc_replay):
    """The fixture's days were predicted by two forked workers; one process predicts the same."""
    assert "predictions 10:15 (2 process(es))" in inproc_replay.report["run"]["step_seconds"]
    alone = InprocReplay(options(tmp_path_factory, replay_models, "alone"), workers=1).run()
    assert trade_rows(alone) == trade_rows(inproc_replay) and alone.curve == inproc_replay.curve

    def decided(result: ReplayResult) -> list[tuple]:
        return [(p["symbol"], p["created_at"], p["signal"], p["confidence"]) for p in result.predictions]

    assert decided(alone) == decided(inproc_replay)
