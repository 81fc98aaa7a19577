"""The replay driver's plain decisions: which days, which models, which environment."""

from __future__ import annotations

import itertools
import json
from datetime import date, time, timedelta
from pathlib import Path

import pytest

from services.management.replay import (
    IntradayPlan,
    ReplayError,
    ReplayOptions,
    at,
    default_out,
    fill_basis_note,
    intraday_plan,
    models_trained_before,
    replay_days,
    suite_env,
)

D = date.fromisoformat
BIG4 = ("CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX")


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        ("2019-06-03", "2019-06-03", ["2019-06-03"]),
        # 8 June is a Saturday, 10 June 2019 the Queen's Birthday holiday: neither is replayed
        ("2019-06-07", "2019-06-11", ["2019-06-07", "2019-06-11"]),
        ("2019-12-24", "2019-12-27", ["2019-12-24", "2019-12-27"]),  # Christmas and Boxing Day
        ("2019-06-08", "2019-06-09", None),  # a weekend: nothing to replay
        ("2019-06-11", "2019-06-07", None),  # reversed
    ],
)
def test_replay_days(first, last, expected):
    if expected is None:
        with pytest.raises(ReplayError):
            replay_days(D(first), D(last))
    else:
        assert replay_days(D(first), D(last)) == [D(d) for d in expected]


def write_manifest(folder: Path, label_ends: dict[str, str]) -> Path:
    models = [{"symbol": s, "model_name": "m", "data": {"label_end": end}} for s, end in label_ends.items()]
    (folder / "manifest.json").write_text(json.dumps({"models": models}))
    return folder


@pytest.mark.parametrize(
    ("label_ends", "reusable"),
    [
        (dict.fromkeys(BIG4, "2019-05-31"), True),
        # a label that ends on --from itself saw that day's close: look-ahead
        ({**dict.fromkeys(BIG4, "2019-05-31"), "NAB.AX": "2019-06-03"}, False),
        (dict.fromkeys(BIG4, "2020-05-19"), False),  # trained on the replay period
        (dict.fromkeys(BIG4[:3], "2019-05-31"), False),  # NAB has no model
    ],
)
def test_models_are_reused_only_when_trained_before_the_period(tmp_path, label_ends, reusable):
    assert models_trained_before(write_manifest(tmp_path, label_ends), D("2019-06-03"), BIG4) is reusable


@pytest.mark.parametrize(
    "content", [None, "{not json", '{"models": [{"symbol": "CBA.AX"}]}', '{"models": []}']
)
def test_missing_or_broken_manifest_means_train(tmp_path, content):
    if content is not None:
        (tmp_path / "manifest.json").write_text(content)
    assert models_trained_before(tmp_path, D("2019-06-03"), BIG4) is False
    assert models_trained_before(None, D("2019-06-03"), BIG4) is False


def test_suite_env_isolates_the_replay_from_the_live_suite(tmp_path):
    live = {
        "PATH": "/usr/bin",
        "TRADING_SOCKET_DIR": "/tmp/trading_sockets",
        "TRADING_REDIS_URL": "redis://live:6379/0",
        "TRADING_CLOCK_START": "2025-01-02T10:00:00+11:00",
        "TRADING_CLOCK_SPEED": "60",
        "TRADING_SECRETS_FILE": "/home/trader/.secrets",
        "MARKETAUX_API_TOKEN": "token",
        "IG_API_KEY": "key",
        "TRADING_PAPER_TRADING_IG_MIRROR": "true",
        "TRADING_ALERTS_TELEGRAM_BOT_TOKEN": "1:x",  # a replay pages nobody
        "TRADING_SYMBOLS": "CBA.AX,NAB.AX",  # the trader's universe and knobs carry over
        "TRADING_PAPER_TRADING_SLIPPAGE_BPS": "7",
    }
    options = ReplayOptions(
        first=D("2019-06-03"), last=D("2019-06-07"), data_dir=tmp_path / "csv", out=tmp_path / "out",
        extra_env={"TRADING_PAPER_TRADING_SLIPPAGE_BPS": "9"},
    )  # fmt: skip
    env = suite_env(tmp_path / "root", options, live)
    for gone in ("TRADING_REDIS_URL", "TRADING_CLOCK_START", "TRADING_CLOCK_SPEED", "TRADING_SECRETS_FILE",
                 "MARKETAUX_API_TOKEN", "IG_API_KEY", "TRADING_PAPER_TRADING_IG_MIRROR",
                 "TRADING_ALERTS_TELEGRAM_BOT_TOKEN"):  # fmt: skip
        assert gone not in env, gone
    assert env["TRADING_SOCKET_DIR"] == str(tmp_path / "root" / "sock")
    assert env["TRADING_DATA_DIR"] == str(tmp_path / "root" / "data")
    assert env["TRADING_CLOCK_FILE"] == str(tmp_path / "root" / "clock.json")
    assert env["TRADING_MARKET_DATA_SOURCE"] == "csv"
    assert env["TRADING_MARKET_DATA_DIR"] == str((tmp_path / "csv").resolve())
    assert env["TRADING_SCHEDULER_DEFAULTS"] == "false"
    assert env["TRADING_PREDICTION_DEGRADE"] == "false"  # a decision never depends on speed
    assert env["TRADING_SYMBOLS"] == "CBA.AX,NAB.AX"
    assert env["TRADING_PAPER_TRADING_SLIPPAGE_BPS"] == "9"


def test_default_out_is_under_the_data_directory(tmp_path):
    assert (
        default_out(tmp_path, D("2019-06-03"), D("2019-06-07"))
        == tmp_path / "replays" / "2019-06-03_2019-06-07"
    )


def write_bars(folder: Path, symbol: str, interval: str, days: list[date], minutes: int) -> None:
    rows = []
    for day in days:
        start = at(day, time(10, 0))
        for k in range(0, 6 * 60, minutes):
            moment = (start + timedelta(minutes=k)).isoformat()
            rows.append(f"{moment},10,10.5,9.5,10.2,100")
    (folder / f"{symbol}_{interval}.csv").write_text(
        "Datetime,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n"
    )


def test_the_intraday_plan_takes_the_finest_interval_and_the_days_it_covers(tmp_path):
    days = [D("2019-06-03"), D("2019-06-04"), D("2019-06-05")]
    assert intraday_plan(tmp_path, BIG4, days) == IntradayPlan(None, frozenset(), ())  # daily bars only
    write_bars(tmp_path, "CBA.AX", "15m", days, 15)
    write_bars(tmp_path, "WBC.AX", "5m", days[:2], 5)
    write_bars(tmp_path, "NAB.AX", "5m", [D("2019-05-31"), days[1]], 5)  # a day before the period too
    plan = intraday_plan(tmp_path, BIG4, days)
    assert plan == IntradayPlan("5m", frozenset(days[:2]), ("WBC.AX", "NAB.AX"))


def test_an_intraday_session_steps_at_every_bar_end_and_monitors_every_15_minutes():
    day, early = D("2019-06-04"), D("2019-12-24")  # a normal day, and an early close at 14:10
    plan = IntradayPlan("5m", frozenset({day, early}), BIG4)
    steps = plan.steps(day)
    assert (steps[0], steps[-1], len(steps)) == (at(day, time(10, 5)), at(day, time(16, 0)), 72)
    assert all(b - a == timedelta(minutes=5) for a, b in itertools.pairwise(steps))
    monitoring = [m for m in steps if plan.is_monitoring(m)]
    assert (monitoring[0], monitoring[-1], len(monitoring)) == (
        at(day, time(10, 15)),
        at(day, time(15, 45)),
        23,
    )
    short = plan.steps(early)
    assert (short[-1], len(short)) == (at(early, time(14, 10)), 50)
    assert max(m for m in short if plan.is_monitoring(m)) == at(early, time(14, 0))
    # 60m bars: the monitoring times between two bar ends are steps too.
    hourly = IntradayPlan("60m", frozenset({day}), BIG4).steps(day)
    assert hourly[:3] == [at(day, time(10, 15)), at(day, time(10, 30)), at(day, time(10, 45))]
    assert at(day, time(11, 0)) in hourly and at(day, time(16, 0)) == hourly[-1]
    # A day without intraday bars: the monitoring times alone (the driver runs its one daily step).
    assert IntradayPlan("5m", frozenset({day}), BIG4).steps(early)[0] == at(early, time(10, 15))
    assert not plan.is_monitoring(at(day, time(10, 0))) and not plan.is_monitoring(at(day, time(16, 0)))


def test_the_fill_basis_note_names_the_prices_used():
    days = [D("2019-06-03"), D("2019-06-04")]
    daily = fill_basis_note(IntradayPlan(None, frozenset(), ()), BIG4, days)
    assert daily.startswith("daily bars only: orders fill at the day's open")
    assert "the day's high and low once its bar is final (16:10)" in daily
    mixed = fill_basis_note(IntradayPlan("5m", frozenset(days[:1]), ("CBA.AX",)), BIG4, days)
    assert mixed.startswith("intraday 5m bars on 1 of 2 days (CBA.AX): the session is stepped every 5m")
    assert "each bar's high and low" in mixed
    assert "daily bars only for WBC.AX, ANZ.AX, NAB.AX" in mixed and "days without intraday bars" in mixed


def test_the_degraded_note_says_none_or_which_and_why():
    from services.management.replay import degraded_note

    assert degraded_note([]).startswith("no prediction was degraded")
    late = {"prediction_id": "p1", "symbol": "CBA.AX", "created_at": "2019-06-05T10:15:02+10:00",
            "missing": {"model": "ml-model unavailable: connection refused"}}  # fmt: skip
    note = degraded_note([late, late])
    assert note == (
        "1 prediction(s) degraded (made without an input):"
        " CBA.AX 2019-06-05T10:15: model ml-model unavailable: connection refused"
    )
