"""`service_manager.py data fetch|status` in a real process, against a fake of yfinance's frames
(tests/fakes/yfinance, first on PYTHONPATH) and against an unreachable Yahoo."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from services.domain.asx_calendar import is_trading_day
from services.domain.bars import SYDNEY
from services.domain.intraday_history import parse_intraday_csv
from services.domain.price_history import history_from_csv, synthetic_bars, trading_sessions
from tests.support import REPO, SuiteDirs, make_suite_env, manager_cli

SYMBOLS = ["CBA.AX", "WBC.AX", "^AXJO"]
FIRST = date(2014, 1, 2)
LAST = date(2024, 6, 14)  # a Friday


def clock_at(day: date, hour: int = 18) -> str:
    return datetime(day.year, day.month, day.day, hour, tzinfo=SYDNEY).isoformat()


def yahoo_rows(symbol: str, until: date = LAST, adj_factor: float = 1.0) -> list[list]:
    """Ten years of plausible bars (the synthetic walk) as Yahoo's rows: date, O, H, L, C, adj, V."""
    bars = synthetic_bars(symbol, trading_sessions(FIRST, until, is_trading_day))
    return [
        [b.date.isoformat(), b.open, b.high, b.low, b.close, round(b.close * 0.8 * adj_factor, 6), b.volume]
        for b in bars
    ]


@pytest.fixture
def env(short_tmp) -> SuiteDirs:
    dirs = make_suite_env(short_tmp / "suite", None)
    spec = short_tmp / "yahoo.json"
    spec.write_text(json.dumps({"daily": {s: yahoo_rows(s) for s in SYMBOLS}}))
    dirs.env.update(
        FAKE_YFINANCE=str(spec),
        PYTHONPATH=f"{REPO / 'tests' / 'fakes'}:{REPO}",
        TRADING_SYMBOLS="CBA.AX,WBC.AX",
        TRADING_CLOCK_START=clock_at(LAST),
    )
    dirs.spec = spec  # type: ignore[attr-defined]
    return dirs


def fetch(dirs: SuiteDirs, *args: str, **env: str):
    return manager_cli({**dirs.env, **env}, "data", "fetch", *args, "--backoff", "0.05")


def calls(dirs: SuiteDirs) -> list[dict]:
    path = Path(str(dirs.spec) + ".calls")  # type: ignore[attr-defined]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def market(dirs: SuiteDirs) -> Path:
    return dirs.data_dir / "market"


def spec_update(dirs: SuiteDirs, **changes) -> None:
    spec = json.loads(dirs.spec.read_text())  # type: ignore[attr-defined]
    spec.update(changes)
    dirs.spec.write_text(json.dumps(spec))  # type: ignore[attr-defined]


def test_fetch_writes_what_a_yahoo_export_would_in_one_request(env):
    result = fetch(env, "--years", "10")
    assert result.returncode == 0, result.stderr
    assert [c["tickers"] for c in calls(env)] == [["CBA.AX", "WBC.AX", "^AXJO"]]  # one batched request
    assert calls(env)[0]["start"] == (LAST - timedelta(days=3652)).isoformat()  # 10 x 365.25 days
    for symbol in SYMBOLS:
        path = market(env) / f"{symbol.lstrip('^')}.csv"
        rows = yahoo_rows(symbol)
        kept = [r for r in rows if r[0] >= calls(env)[0]["start"]]
        expected = ["Date,Open,High,Low,Close,Adj Close,Volume"] + [
            f"{r[0]},{r[1]:.6f},{r[2]:.6f},{r[3]:.6f},{r[4]:.6f},{r[5]:.6f},{r[6]}" for r in kept
        ]
        assert path.read_text().splitlines() == expected
        history = history_from_csv(
            symbol, path.read_text(), datetime.fromisoformat(clock_at(LAST)), is_trading_day
        )
        assert history.bars[-1].date == LAST and len(history.bars) == len(kept)
    assert "^AXJO" in result.stdout and "QUALITY" in result.stdout and "1.00" in result.stdout
    assert not list(market(env).glob(".*tmp*"))


def test_incremental_fetch_adds_exactly_the_new_sessions(env):
    assert fetch(env).returncode == 0
    before = (market(env) / "CBA.AX.csv").read_text()
    later = date(2024, 6, 21)
    spec_update(env, daily={s: yahoo_rows(s, until=later) for s in SYMBOLS})
    result = fetch(env, TRADING_CLOCK_START=clock_at(later))
    assert result.returncode == 0, result.stderr
    assert calls(env)[-1]["start"] == (LAST - timedelta(days=10)).isoformat()  # only a short overlap
    after = (market(env) / "CBA.AX.csv").read_text()
    assert after.startswith(before)  # every earlier row kept, byte for byte
    added = [line.split(",")[0] for line in after[len(before) :].splitlines()]
    assert added == ["2024-06-17", "2024-06-18", "2024-06-19", "2024-06-20", "2024-06-21"]
    assert "5 session(s) added" in result.stdout
    again = fetch(env, TRADING_CLOCK_START=clock_at(later))  # up to date: no request at all
    assert again.returncode == 0 and "nothing new to fetch" in again.stdout and len(calls(env)) == 2


def test_full_replaces_and_a_dividend_rescales_earlier_adj_close(env):
    assert fetch(env).returncode == 0
    later = date(2024, 6, 21)
    spec_update(env, daily={s: yahoo_rows(s, until=later, adj_factor=0.97) for s in SYMBOLS})
    result = fetch(env, TRADING_CLOCK_START=clock_at(later))
    assert result.returncode == 0 and "multiplied by 0.970000" in result.stdout
    first = (market(env) / "CBA.AX.csv").read_text().splitlines()[1].split(",")
    original = next(r for r in yahoo_rows("CBA.AX") if r[0] == first[0])
    assert float(first[5]) == pytest.approx(original[5] * 0.97, rel=1e-5)
    assert float(first[4]) == pytest.approx(original[4], rel=1e-6)  # the raw close is not touched
    full = fetch(env, "--full", "--years", "1", TRADING_CLOCK_START=clock_at(later))
    assert full.returncode == 0
    lines = (market(env) / "CBA.AX.csv").read_text().splitlines()
    assert lines[1].startswith(str(later.year - 1)) and len(lines) < 270


def test_a_symbol_with_holes_or_no_rows_is_refused_and_left_untouched(env):
    assert fetch(env).returncode == 0
    before = {s: (market(env) / f"{s.lstrip('^')}.csv").read_bytes() for s in SYMBOLS}
    later = date(2024, 6, 28)
    daily = {s: yahoo_rows(s, until=later) for s in SYMBOLS}
    daily["CBA.AX"] = [r for r in daily["CBA.AX"] if r[0] not in ("2024-06-19", "2024-06-20")]
    daily["WBC.AX"] = []
    spec_update(env, daily=daily)
    result = fetch(env, TRADING_CLOCK_START=clock_at(later))
    assert result.returncode == 1
    assert result.stderr.strip() == "refused (files untouched): CBA.AX, WBC.AX"
    assert "2 of" in result.stdout and "no rows" in result.stdout
    assert (market(env) / "CBA.AX.csv").read_bytes() == before["CBA.AX"]
    assert (market(env) / "WBC.AX.csv").read_bytes() == before["WBC.AX"]
    assert (market(env) / "AXJO.csv").read_bytes() != before["^AXJO"]  # the good one still moves on


def test_rate_limited_then_answering_is_retried(env):
    spec_update(env, fail=2)
    result = fetch(env, "--attempts", "3")
    assert result.returncode == 0, result.stderr
    assert len(calls(env)) == 3 and result.stdout.count("retrying in") == 2


def test_yahoo_failing_every_attempt_is_one_line_and_nothing_changes(env):
    assert fetch(env).returncode == 0
    before = (market(env) / "CBA.AX.csv").read_bytes()
    spec_update(env, fail=5, daily={s: yahoo_rows(s, until=date(2024, 6, 21)) for s in SYMBOLS})
    result = fetch(env, "--attempts", "2", TRADING_CLOCK_START=clock_at(date(2024, 6, 21)))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "after 2 attempt(s)" in result.stderr
    assert (market(env) / "CBA.AX.csv").read_bytes() == before


def test_offline_run_with_the_real_client(short_tmp):
    """The real yfinance, with every proxy variable on a closed local port: no network at all."""
    dirs = make_suite_env(short_tmp / "suite", None, TRADING_SYMBOLS="CBA.AX")
    closed = "http://127.0.0.1:9"
    proxies = {k: closed for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")}
    result = manager_cli({**dirs.env, **proxies}, "data", "fetch", "--attempts", "2", "--backoff", "0.05")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "data fetch: Yahoo daily bars download failed after 2 attempt(s)" in result.stderr
    assert not list((dirs.data_dir / "market").glob("*.csv"))


def test_an_interrupted_write_leaves_the_old_file(env, tmp_path):
    """A fetch killed while writing (here: the disk fills during the write) keeps the old file."""
    assert fetch(env).returncode == 0
    before = (market(env) / "CBA.AX.csv").read_bytes()
    spec_update(env, daily={s: yahoo_rows(s, until=date(2024, 6, 21)) for s in SYMBOLS})
    failing = tmp_path / "sitecustomize.py"  # loaded at start by the child: fsync fails
    failing.write_text(
        "import os\ndef fsync(fd):\n    raise OSError(28, 'No space left on device')\nos.fsync = fsync\n"
    )
    result = fetch(
        env,
        TRADING_CLOCK_START=clock_at(date(2024, 6, 21)),
        PYTHONPATH=f"{tmp_path}:{env.env['PYTHONPATH']}",
    )
    assert result.returncode == 1 and "No space left on device" in result.stderr
    assert (market(env) / "CBA.AX.csv").read_bytes() == before
    assert not [p for p in market(env).iterdir() if "tmp" in p.name]


def test_status_lists_each_file(env):
    assert manager_cli(env, "data", "status").returncode == 1  # no files yet
    assert fetch(env).returncode == 0
    result = manager_cli(env, "data", "status")
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert set(lines) >= set(SYMBOLS)
    assert lines["CBA.AX"].split()[2] == "2014-06-16"  # the first session of the 10 years
    assert LAST.isoformat() in lines["CBA.AX"] and "1.00" in lines["CBA.AX"]


def test_intraday_intervals_are_merged_into_the_intraday_files(env):
    start = datetime(2024, 6, 14, 10, 0, tzinfo=SYDNEY)
    bars = [
        [
            (start + timedelta(minutes=5 * i)).isoformat(),
            117 + i * 0.01,
            117.2 + i * 0.01,
            116.9,
            117.1 + i * 0.01,
            1000 + i,
        ]
        for i in range(72)
    ]
    spec_update(env, intraday={"5m": {"CBA.AX": bars, "WBC.AX": bars, "^AXJO": bars}})
    result = fetch(
        env, "--intervals", "5m", TRADING_CLOCK_START=datetime(2024, 6, 14, 12, 0, tzinfo=SYDNEY).isoformat()
    )
    assert result.returncode == 0, result.stderr
    parsed = parse_intraday_csv((market(env) / "CBA.AX_5m.csv").read_text(), "CBA.AX_5m.csv")
    assert len(parsed.bars) == 24 and not parsed.dropped  # 10:00 to 11:55: the bars complete at noon
    assert parsed.bars[0].start == start and parsed.bars[0].close == pytest.approx(117.1)
    again = fetch(env, "--intervals", "5m", TRADING_CLOCK_START=clock_at(date(2024, 6, 14)))
    assert again.returncode == 0
    assert len(parse_intraday_csv((market(env) / "CBA.AX_5m.csv").read_text(), "x").bars) == 72


# ---- training on fetched history -----------------------------------------------------------------


def train(env: dict, *args: str):
    import subprocess
    import sys

    command = [sys.executable, str(REPO / "services/ml-model/train_models.py"), *args]
    return subprocess.run(
        command, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600, cwd=REPO
    )


def test_train_source_yfinance_fetches_then_trains_on_it(env):
    result = train(
        env.env, "--source", "yfinance", "--symbols", "CBA.AX", "--years", "1.5", "--out", str(env.models_dir)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (market(env) / "CBA.AX.csv").is_file() and (market(env) / "AXJO.csv").is_file()
    from services.base.model_sets import serving_dir

    manifest = json.loads((serving_dir(env.models_dir) / "manifest.json").read_text())
    assert manifest["source"] == "yfinance" and manifest["synthetic"] is False
    assert manifest["source_detail"].startswith("yfinance history fetched into")
    assert {m["data"]["label_end"] for m in manifest["models"]} == {LAST.isoformat()}


def test_train_source_yfinance_offline_falls_back_and_says_so(short_tmp):
    dirs = make_suite_env(short_tmp / "suite", None, TRADING_SYMBOLS="CBA.AX")
    closed = "http://127.0.0.1:9"
    proxies = {k: closed for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")}
    result = train(
        {**dirs.env, **proxies},
        "--source", "yfinance", "--fetch-attempts", "1", "--synthetic-years", "1.5", "--out", str(dirs.models_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Yahoo history not fetched" in result.stderr and "falling back" in result.stderr
    from services.base.model_sets import serving_dir

    manifest = json.loads((serving_dir(dirs.models_dir) / "manifest.json").read_text())
    assert manifest["synthetic"] is True and "SYNTHETIC" in manifest["warning"]
    assert manifest["source_detail"].endswith("Yahoo not reached")


def test_a_file_that_is_not_a_yahoo_export_is_one_line_and_left_alone(env):
    market(env).mkdir(parents=True)
    (market(env) / "CBA.AX.csv").write_text("when,price\n2024-06-14,1\n")
    result = fetch(env)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "CBA.AX.csv: missing column(s)" in result.stderr
    assert (market(env) / "CBA.AX.csv").read_text() == "when,price\n2024-06-14,1\n"
    status = manager_cli(env, "data", "status")
    assert status.returncode == 1 and "unreadable" in status.stdout
