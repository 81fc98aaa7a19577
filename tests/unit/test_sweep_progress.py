"""The sweep's progress line and its cache of finished runs (no cluster, no replay)."""

from __future__ import annotations

import io
import json
from datetime import date

from services.domain.sweep_spec import Period
from services.management.sweep import Progress, Run, cached_result, save_result


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_counts_and_eta_in_plain_lines():
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress(4, stream, clock)
    progress.show(running=2)
    clock.now = 60.0
    progress.done = 1
    progress.show(running=2)
    clock.now = 90.0
    progress.failed = 1
    progress.show(running=1, note="run 2 failed: the suite did not start")
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("0/4  done 0  failed 0  running 2  elapsed 0s  ETA ?")
    assert lines[1].endswith(
        "1/4  done 1  failed 0  running 2  elapsed 1m00s  ETA 3m00s"
    )  # 60 s a run, 3 left
    assert lines[2] == "run 2 failed: the suite did not start"
    assert lines[3].endswith("2/4  done 1  failed 1  running 1  elapsed 1m30s  ETA 1m30s")
    assert "\r" not in stream.getvalue()  # not a terminal: no redrawn line


def test_cached_runs_do_not_count_towards_the_eta():
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress(3, stream, clock)
    progress.done = progress.cached = 2
    clock.now = 10.0
    progress.show(running=1)
    assert stream.getvalue().strip().endswith("2/3  done 2  failed 0  running 1  elapsed 10s  ETA ?")


def test_only_an_ok_run_is_cached(tmp_path):
    run = Run(1, 1, {"TRADING_PREDICTION_SIGNAL_BUY_THRESHOLD": "0.1"}, "BUY_THRESHOLD=0.1",
              Period(date(2019, 6, 3), date(2019, 6, 14), 2.0), "k1")  # fmt: skip
    assert cached_result(tmp_path, run) is None
    save_result(tmp_path, run, {"status": "failed", "reason": "crash loop", "files": {"logs/a.log": b"x"}})
    assert cached_result(tmp_path, run) is None  # tried again next time
    assert (tmp_path / "runs" / "k1" / "logs" / "a.log").read_bytes() == b"x"
    save_result(tmp_path, run, {"status": "ok", "files": {"report.json": b"{}"}, "seconds": 3.0})
    assert cached_result(tmp_path, run)["status"] == "ok"
    assert not (tmp_path / "runs" / "k1" / "logs").exists()  # the failed attempt's files replaced
    record = json.loads((tmp_path / "runs" / "k1" / "result.json").read_text())
    assert record["period"] == {
        "first": "2019-06-03",
        "last": "2019-06-14",
        "train_years": 2.0,
        "kind": "fixed",
    }
