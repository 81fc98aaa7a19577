"""Training pipeline: labels, metrics, baselines, the manifest, and runs on synthetic and real data."""

import dataclasses
import json
import math
import time
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from services.base.model_inference import INFERENCE_DIR, read_cached
from services.base.model_sets import serving_dir, set_names
from services.base.model_store import load_manifest, sha256_file
from services.domain.bars import Bar
from services.domain.features import FEATURE_NAMES, FEATURE_VERSION
from services.ml_model import train_models
from services.ml_model.model_converter import load_verified_model
from tests.unit._ml_helpers import random_walk_bars, weekdays

REPO = Path(__file__).resolve().parents[2]
ASX_DATA = REPO.parent / "shared" / "data" / "asx"
BIG4 = ["CBA.AX", "WBC.AX", "ANZ.AX", "NAB.AX"]


def _dataset(labels: list[int], yesterday_up: list[int]) -> train_models.Dataset:
    features = np.zeros((len(labels), len(FEATURE_NAMES)))
    features[:, FEATURE_NAMES.index("return_1d")] = [0.01 if u else -0.01 for u in yesterday_up]
    days = weekdays(date(2020, 1, 1), len(labels))
    return train_models.Dataset(days, features, np.array(labels), days[-1])


def test_labels_are_the_next_days_direction_and_the_last_bar_is_unlabelled() -> None:
    stock, index = random_walk_bars(300, seed=5), random_walk_bars(300, seed=6, price=6000.0)
    # Make day 260 -> 261 flat: a flat day is "not up".
    stock[261] = dataclasses.replace(stock[261], adj_close=stock[260].adj_close)
    dataset = train_models.build_dataset(stock, index)
    assert dataset.dates[-1] == stock[-2].date  # the last bar has no next day yet
    assert dataset.label_end == stock[-1].date
    by_date = {bar.date: i for i, bar in enumerate(stock)}
    for day, label in zip(dataset.dates, dataset.labels, strict=True):
        t = by_date[day]
        assert label == int(stock[t + 1].adj_close > stock[t].adj_close)
    assert dataset.labels[dataset.dates.index(stock[260].date)] == 0
    assert dataset.features.shape == (len(dataset.dates), len(FEATURE_NAMES))


@pytest.mark.parametrize(
    ("labels", "probabilities", "expected"),
    [
        # Perfect ranking, confident: accuracy 1, AUC 1, Brier (0.1^2).
        ([0, 0, 1, 1], [0.1, 0.1, 0.9, 0.9], {"accuracy": 1.0, "roc_auc": 1.0, "brier": 0.01}),
        # Coin flips: AUC 0.5 (all tied), Brier 0.25; p > 0.5 is false, so "down" every time.
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], {"accuracy": 0.5, "roc_auc": 0.5, "brier": 0.25}),
        # Perfectly wrong.
        ([1, 1, 0, 0], [0.2, 0.2, 0.8, 0.8], {"accuracy": 0.0, "roc_auc": 0.0, "brier": 0.64}),
        # One class only in the test block: AUC undefined, reported as None, not a number.
        ([1, 1, 1], [0.6, 0.7, 0.8], {"accuracy": 1.0, "roc_auc": None, "brier": 0.0967}),
    ],
)
def test_score_known_answers(labels: list[int], probabilities: list[float], expected: dict) -> None:
    scored = train_models.score(np.array(labels), np.array(probabilities))
    for key, value in expected.items():
        assert scored[key] == (value if value is None else pytest.approx(value, abs=1e-4)), key
    assert scored["n_test"] == len(labels)


def test_auc_standard_error_matches_hanley_mcneil() -> None:
    # Hanley & McNeil 1982, table-free check: AUC 0.5 with 50/50 classes of 100 -> sqrt(1/12 * ...).
    labels = np.array([1] * 100 + [0] * 100)
    se = train_models.auc_standard_error(0.5, labels)
    q1, q2 = 0.5 / 1.5, 0.5 / 1.5
    expected = math.sqrt((0.25 + 99 * (q1 - 0.25) + 99 * (q2 - 0.25)) / 10_000)
    assert se == pytest.approx(expected)
    assert 0.035 < se < 0.045  # the familiar ~0.04 for 200 samples


def test_baselines_on_a_series_that_always_reverses() -> None:
    # Up, down, up, down...: "tomorrow like today" is always wrong, "always up" right half the time.
    labels = [i % 2 for i in range(200)]
    yesterday = [1 - label for label in labels]
    dataset = _dataset(labels, yesterday)
    splits = train_models.splits_for(dataset)
    baselines = train_models.evaluate_baselines(dataset, splits)
    assert baselines["yesterday_direction"]["accuracy"] == 0.0
    assert baselines["yesterday_direction"]["roc_auc"] == 0.0
    # Its probability is learned from the training window (P(up | yesterday down) = 1): well calibrated.
    assert baselines["yesterday_direction"]["brier"] == 0.0
    assert baselines["always_up"]["roc_auc"] == 0.5  # a constant call cannot rank
    assert baselines["always_up"]["accuracy"] == pytest.approx(0.5, abs=0.01)
    assert baselines["always_up"]["n_test"] == sum(len(s.test) for s in splits)


def _momentum_bars(n: int, seed: int) -> list[Bar]:
    """Bars whose next-day direction copies a hidden mix of today's RSI extremes: a planted signal."""
    rng = np.random.default_rng(seed)
    bars = random_walk_bars(n, seed=seed)
    prices = [bars[0].adj_close]
    for t in range(1, n):
        # Mean reversion on the 5-day return: strong, so a working pipeline must find it.
        past = prices[-1] / prices[max(0, t - 6)] - 1
        drift = -0.6 * past + rng.normal(0, 0.004)
        prices.append(prices[-1] * math.exp(drift))
    return [
        dataclasses.replace(b, close=p, adj_close=p, open=p, high=p * 1.01, low=p * 0.99)
        for b, p in zip(bars, prices, strict=True)
    ]


def test_a_planted_signal_is_found_out_of_sample() -> None:
    # Guards against a pipeline that can only ever score 0.5 (e.g. shuffled labels or features).
    stock, index = _momentum_bars(700, seed=8), random_walk_bars(700, seed=9, price=6000.0)
    dataset = train_models.build_dataset(stock, index)
    splits = train_models.splits_for(dataset)
    evaluation = train_models.evaluate_model("logistic_regression", dataset, splits, seed=0)
    assert evaluation.metrics["roc_auc"] > 0.7
    top = max(evaluation.importance, key=evaluation.importance.get)
    assert top in {"return_5d", "rsi_14", "bollinger_pct_b", "return_10d", "price_vs_sma50", "macd_hist_pct"}


def _check_manifest(root: Path, symbols: list[str], source: str) -> dict:
    out = serving_dir(root)  # the set `current` points at
    assert out.parent.name == "sets" and (out / "report.txt").is_file()
    manifest = load_manifest(out)
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["source"] == source and raw["synthetic"] is (source == "synthetic")
    assert [e.symbol for e in manifest.entries] == [s for s in symbols for _ in train_models.MODEL_NAMES]
    for entry in manifest.entries:
        assert entry.sha256 == sha256_file(out / entry.file)
        assert entry.feature_names == FEATURE_NAMES and entry.feature_version == FEATURE_VERSION
        item = entry.raw
        assert (
            item["data"]["first_date"] < item["walk_forward"]["first_test_date"] <= item["data"]["last_date"]
        )
        for metrics in (item["metrics"], *item["baselines"].values()):
            assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["brier"] <= 1
            assert 0 <= metrics["roc_auc"] <= 1
        assert set(item["importance"]["values"]) == set(FEATURE_NAMES)
        model = load_verified_model(out, entry)
        assert list(model.classes_) == [0, 1]
        # The form the service evaluates was cached from this very model at training time, and
        # the manifest records the form's own SHA-256 (the service trusts no form by its name).
        form = read_cached(out, entry.sha256, len(FEATURE_NAMES), item["inference_sha256"])
        assert form is not None and form.source_sha256 == entry.sha256
    # Only the current models' forms (each with its hash sidecar): retraining prunes the rest.
    assert {p.stem for p in (out / INFERENCE_DIR).glob("*.json")} == {e.sha256 for e in manifest.entries}
    assert len(list((out / INFERENCE_DIR).iterdir())) == 2 * len(manifest.entries)
    return raw


def test_cli_trains_on_synthetic_bars_and_says_so_loudly(tmp_path: Path, capsys) -> None:
    stale = tmp_path / INFERENCE_DIR / f"{'0' * 64}.json"  # a form left by an earlier training run
    stale.parent.mkdir()
    stale.write_text("{}")
    code = train_models.main(["--synthetic", "--symbols", "CBA.AX", "--years", "1.5", "--out", str(tmp_path)])
    assert code == 0
    raw = _check_manifest(tmp_path, ["CBA.AX"], "synthetic")
    assert "SYNTHETIC" in raw["warning"]
    assert all(item["synthetic"] and item["source"] == "synthetic" for item in raw["models"])
    captured = capsys.readouterr()
    assert "SYNTHETIC" in captured.err and "SYNTHETIC" in captured.out
    assert "baseline: always_up" in captured.out and "baseline: yesterday_direction" in captured.out


def test_retraining_some_symbols_keeps_the_others(tmp_path: Path) -> None:
    assert (
        train_models.main(["--synthetic", "--symbols", "CBA.AX", "--years", "1.5", "--out", str(tmp_path)])
        == 0
    )
    first = json.loads((serving_dir(tmp_path) / "manifest.json").read_text())
    cba = {m["sha256"] for m in first["models"]}
    assert (
        train_models.main(["--synthetic", "--symbols", "WBC.AX", "--years", "1.5", "--out", str(tmp_path)])
        == 0
    )
    merged = json.loads((serving_dir(tmp_path) / "manifest.json").read_text())
    assert {m["symbol"] for m in merged["models"]} == {"CBA.AX", "WBC.AX"}
    assert cba <= {m["sha256"] for m in merged["models"]}  # CBA's models kept as they were
    assert set(merged["symbols"]) == {"CBA.AX", "WBC.AX"}
    for entry in merged["models"]:
        assert (serving_dir(tmp_path) / entry["file"]).is_file()  # a set holds every file it lists
    assert len(set_names(tmp_path)) == 2  # the first set is still there to roll back to


def test_cli_refuses_a_data_dir_without_csvs(tmp_path: Path, capsys) -> None:
    assert train_models.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "no CSV files" in capsys.readouterr().err
    assert not (tmp_path / "m" / "manifest.json").exists() and not set_names(tmp_path / "m")


@pytest.mark.slow
@pytest.mark.skipif(not ASX_DATA.is_dir(), reason="shared ASX data (../shared/data/asx) not present")
def test_cli_trains_the_big4_on_real_data_quickly(tmp_path: Path, capsys) -> None:
    started = time.monotonic()
    code = train_models.main(["--data-dir", str(ASX_DATA), "--symbols", *BIG4, "--out", str(tmp_path)])
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 120, f"training the Big 4 took {elapsed:.0f}s"
    raw = _check_manifest(tmp_path, BIG4, "csv")
    for item in raw["models"]:
        assert item["data"]["first_date"].startswith("2016-")  # a year of warm-up from 2015-05
        assert item["data"]["label_end"] == "2020-05-20"
        assert item["metrics"]["n_test"] > 600
    out = capsys.readouterr().out
    # One verdict per bank, whichever way it goes: the honest answer is printed, not assumed.
    assert all(f"-> {symbol}: " in out for symbol in BIG4)


@pytest.mark.skipif(not ASX_DATA.is_dir(), reason="shared ASX data (../shared/data/asx) not present")
def test_training_in_a_replay_never_sees_bars_after_the_suite_clock(tmp_path: Path, monkeypatch) -> None:
    # A replay starting 2018-06-01 must train as if that were today: the CSVs run to 2020, but
    # no bar after the clock's now may reach the features or the labels.
    from services.base import clock, config

    monkeypatch.setenv("TRADING_CLOCK_START", "2018-06-01T09:00:00+10:00")
    # get_clock() exports TRADING_CLOCK_EPOCH for child processes: registered here so it is undone.
    monkeypatch.delenv("TRADING_CLOCK_EPOCH", raising=False)
    config.reset_settings()
    clock.set_clock(None)
    try:
        code = train_models.main(["--data-dir", str(ASX_DATA), "--symbols", "CBA.AX", "--out", str(tmp_path)])
    finally:
        monkeypatch.undo()
        config.reset_settings()
        clock.set_clock(None)
    assert code == 0
    item = json.loads((serving_dir(tmp_path) / "manifest.json").read_text())["models"][0]
    assert item["data"]["label_end"] == "2018-05-31"  # the last close visible at 09:00 on 1 June
    assert item["data"]["last_date"] == "2018-05-30"  # its label needs the 31st's close
    assert item["trained_at"].startswith("2018-05-31T23:00")  # suite time, not the wall clock


def test_too_little_data_is_exit_2_naming_the_symbol_and_the_rows_needed(tmp_path: Path, capsys) -> None:
    from services.domain.asx_calendar import is_trading_day
    from services.domain.history_merge import DailyRow, format_yahoo_csv
    from services.domain.price_history import synthetic_bars, trading_sessions

    data = tmp_path / "market"
    data.mkdir()
    sessions = trading_sessions(date(2023, 5, 1), date(2024, 3, 1), is_trading_day)  # ~215 bars
    for symbol, name in (("CBA.AX", "CBA.AX.csv"), ("^AXJO", "AXJO.csv")):
        rows = [
            DailyRow(b.date, b.open, b.high, b.low, b.close, b.adj_close, b.volume)
            for b in synthetic_bars(symbol, sessions)
        ]
        (data / name).write_text(format_yahoo_csv(rows))
    code = train_models.main(["--data-dir", str(data), "--symbols", "CBA.AX", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "CBA.AX:" in err and f"needs at least {train_models.MIN_ROWS}" in err
    assert set_names(tmp_path) == []  # no half set left behind


def test_a_candidate_set_is_written_but_not_promoted(tmp_path: Path, capsys) -> None:
    from services.base.model_sets import current_name, read_status

    args = ["--synthetic", "--symbols", "CBA.AX", "--years", "1.5", "--out", str(tmp_path)]
    assert train_models.main(args) == 0
    served = current_name(tmp_path)
    assert train_models.main([*args, "--candidate"]) == 0
    names = set_names(tmp_path)
    assert len(names) == 2 and current_name(tmp_path) == served != names[-1]
    assert read_status(tmp_path / "sets" / names[-1])["state"] == "candidate"
    assert "written as a candidate" in capsys.readouterr().out
