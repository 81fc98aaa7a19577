"""Train the per-bank direction models with walk-forward validation into a new model set.

Usage:
    python services/ml-model/train_models.py --data-dir DIR [--symbols CBA.AX ...] [--out models/]
    python services/ml-model/train_models.py --source yfinance    # fetch from Yahoo first
    python services/ml-model/train_models.py --synthetic          # no CSVs: labelled SYNTHETIC

Each run writes `<out>/sets/<UTC timestamp>/` (the models, manifest.json, report.txt) and then
points `<out>/current` at it (services.base.model_sets; `--candidate` leaves the pointer alone),
pruning sets beyond `--keep`. Fewer rows than the walk-forward minimum: exit 2 naming the symbol.

Target: the direction of the next trading day's adj-close return (1 = up, 0 = flat or down).
One day is the horizon the prediction service acts on (a signal each day, reviewed next day);
longer horizons would give overlapping labels and far fewer independent test points.

Validation is walk-forward: expanding training windows, each tested on the block that follows
after a one-day embargo (services.domain.walk_forward), features from
services.domain.features (row t uses data up to day t). Metrics pool every out-of-sample
prediction. Two naive baselines are scored on the same test days:
- always_up: direction up every day; probability = the training window's share of up days;
- yesterday_direction: tomorrow moves like today; probability = the training window's share of
  up days after a day in the same direction (ROC AUC uses the 0/1 persistence score itself).
The final model of each kind is then refit on all rows and saved with joblib, and its
inference form (model_inference: what the ml-model service evaluates) is cached in
<out>/.inference/; forms of models no longer in the manifest are deleted.

Reads the CSV files (<DIR>/<SYMBOL>.csv, index AXJO.csv) through the parser and cleaner that
market-data's csv source uses, or the same synthetic walk (services.domain.price_history);
nothing dated after the suite clock's now is used.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.inspection import permutation_importance
from sklearn.metrics import brier_score_loss, roc_auc_score

from services.base import ConfigError, clock, get_settings
from services.base.model_inference import INFERENCE_DIR, SIDECAR_SUFFIX, prune_cache, write_cached
from services.base.model_sets import (
    DEFAULT_KEEP,
    REPORT,
    ModelSetError,
    adopt_flat,
    make_dir,
    new_set_dir,
    promote,
    prune,
    serving_dir,
    write_file,
    write_status,
)
from services.base.model_store import MANIFEST_NAME, write_manifest
from services.clients.yahoo_history import Retry, YahooUnavailable, fetch_daily
from services.domain import asx_calendar
from services.domain.bars import Bar, last_visible_date
from services.domain.features import FEATURE_NAMES, FEATURE_VERSION, MIN_BARS, build_feature_rows
from services.domain.price_history import (
    SYNTHETIC_EPOCH,
    MarketDataError,
    csv_file_name,
    history_from_csv,
    synthetic_bars,
    trading_sessions,
)
from services.domain.walk_forward import assert_no_lookahead, walk_forward_splits
from services.ml_model.model_catalog import MODEL_NAMES, make_model, probability_up
from services.ml_model.model_converter import dump_model, to_inference_form

REPO_ROOT = Path(__file__).resolve().parents[2]

HORIZON_DAYS = 1
EMBARGO = HORIZON_DAYS  # see services.domain.walk_forward: gap >= label horizon
N_SPLITS = 5
MIN_TRAIN_FRACTION = 0.4
SYNTHETIC_WARNING = (
    "TRAINED ON SYNTHETIC RANDOM-WALK BARS, NOT MARKET DATA: these models and their metrics "
    "say nothing about real prices. Retrain with --data-dir on real CSVs before trusting them."
)


# The walk-forward minimum: the first training window (50 rows), the embargo, one row per test block.
MIN_TRAIN_ROWS = 50
MIN_ROWS = MIN_TRAIN_ROWS + EMBARGO + N_SPLITS


class TooLittleData(ValueError):
    """Fewer rows than the walk-forward minimum: more history is needed (exit 2)."""


@dataclass(frozen=True, slots=True)
class Dataset:
    """Rows with complete features and a known next-day label, oldest first."""

    dates: list[date]
    features: np.ndarray  # shape (n, len(FEATURE_NAMES)), columns in FEATURE_NAMES order
    labels: np.ndarray  # 1 = next day's adj close higher, else 0
    label_end: date  # the last bar used by a label

    @property
    def yesterday_up(self) -> np.ndarray:
        return (self.features[:, FEATURE_NAMES.index("return_1d")] > 0).astype(int)


@dataclass(frozen=True, slots=True)
class Evaluation:
    metrics: dict[str, Any]
    importance: dict[str, float]


def build_dataset(bars: list[Bar], index_bars: list[Bar]) -> Dataset:
    """Feature rows joined with next-day labels; the last bar has no label and is left out."""
    rows = build_feature_rows(bars, index_bars)
    dates, matrix, labels = [], [], []
    for t in range(len(bars) - HORIZON_DAYS):
        day, features = rows[t]
        if features is None:
            continue
        dates.append(day)
        matrix.append([features[name] for name in FEATURE_NAMES])
        labels.append(1 if bars[t + HORIZON_DAYS].adj_close > bars[t].adj_close else 0)
    if len(dates) < MIN_ROWS:
        raise TooLittleData(
            f"{len(bars)} bars give {len(dates)} labelled rows with complete features; the walk-forward "
            f"needs at least {MIN_ROWS}, so about {MIN_BARS + MIN_ROWS} daily bars of stock and index"
        )
    return Dataset(dates, np.array(matrix, dtype=float), np.array(labels, dtype=int), bars[-1].date)


def score(
    labels: np.ndarray,
    probabilities: np.ndarray,
    directions: np.ndarray | None = None,
    ranking: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy (of `directions`, default p > 0.5), ROC AUC (of `ranking`, default the
    probabilities) with its standard error, and the Brier score of the probabilities."""
    predicted = directions if directions is not None else (probabilities > 0.5).astype(int)
    ranked = ranking if ranking is not None else probabilities
    auc = float(roc_auc_score(labels, ranked)) if len(set(labels.tolist())) == 2 else None
    return {
        "accuracy": round(float(np.mean(predicted == labels)), 4),
        "roc_auc": None if auc is None else round(auc, 4),
        "roc_auc_se": None if auc is None else round(auc_standard_error(auc, labels), 4),
        "brier": round(float(brier_score_loss(labels, probabilities)), 4),
        "n_test": len(labels),
    }


def auc_standard_error(auc: float, labels: np.ndarray) -> float:
    """Hanley & McNeil (1982) standard error of an AUC: differences under ~2 SE are noise."""
    n_pos, n_neg = int(labels.sum()), int(len(labels) - labels.sum())
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (
        n_pos * n_neg
    )
    return math.sqrt(max(variance, 0.0))


def splits_for(dataset: Dataset):
    n = len(dataset.dates)
    splits = walk_forward_splits(
        dataset.dates,
        n_splits=N_SPLITS,
        min_train=max(MIN_TRAIN_ROWS, int(n * MIN_TRAIN_FRACTION)),
        gap=EMBARGO,
    )
    assert_no_lookahead(dataset.dates, splits, EMBARGO)  # a leak here would void every number
    return splits


def evaluate_model(name: str, dataset: Dataset, splits, seed: int) -> Evaluation:
    """Walk-forward out-of-sample scores, and permutation importance on the last test block."""
    x, y = dataset.features, dataset.labels
    probabilities, labels, fold_auc = [], [], []
    model = None
    for split in splits:
        model = make_model(name, seed)
        model.fit(x[split.train], y[split.train])
        p = probability_up(model, x[split.test])
        probabilities.append(p)
        labels.append(y[split.test])
        if len(set(y[split.test].tolist())) == 2:
            fold_auc.append(round(float(roc_auc_score(y[split.test], p)), 4))
    metrics = score(np.concatenate(labels), np.concatenate(probabilities))
    metrics["fold_roc_auc"] = fold_auc
    metrics["mean_fold_roc_auc"] = round(float(np.mean(fold_auc)), 4) if fold_auc else None
    last = splits[-1]
    scorer = "roc_auc" if len(set(y[last.test].tolist())) == 2 else "accuracy"
    result = permutation_importance(
        model, x[last.test], y[last.test], scoring=scorer, n_repeats=5, random_state=seed
    )
    importance = {n: round(float(v), 5) for n, v in zip(FEATURE_NAMES, result.importances_mean, strict=True)}
    return Evaluation(metrics, importance)


def evaluate_baselines(dataset: Dataset, splits) -> dict[str, dict[str, Any]]:
    """Both naive baselines on exactly the test days the models were scored on."""
    y, yesterday = dataset.labels, dataset.yesterday_up
    up_p, persist_p, persist_dir, test_y = [], [], [], []
    for split in splits:
        train_y, train_yesterday = y[split.train], yesterday[split.train]
        base_rate = float(train_y.mean())
        up_p.append(np.full(len(split.test), base_rate))
        # P(up | yesterday's direction), from the training window only.
        after = {
            d: float(train_y[train_yesterday == d].mean()) if (train_yesterday == d).any() else base_rate
            for d in (0, 1)
        }
        persist_p.append(np.array([after[int(d)] for d in yesterday[split.test]]))
        persist_dir.append(yesterday[split.test])
        test_y.append(y[split.test])
    labels, persist = np.concatenate(test_y), np.concatenate(persist_dir)
    ups = np.ones(len(labels), dtype=int)
    # ROC AUC ranks by each rule's own 0/1 call (always-up: a constant, so exactly 0.5), not by
    # the per-window base rates, which would let the pooled AUC rank whole test blocks.
    return {
        "always_up": score(labels, np.concatenate(up_p), directions=ups, ranking=ups),
        "yesterday_direction": score(labels, np.concatenate(persist_p), directions=persist, ranking=persist),
    }


def train_symbol(
    symbol: str, bars: list[Bar], index_bars: list[Bar], context: dict[str, Any]
) -> list[dict[str, Any]]:
    """Validate and fit every model for one bank; write the files; return their manifest entries."""
    dataset = build_dataset(bars, index_bars)
    splits = splits_for(dataset)
    baselines = evaluate_baselines(dataset, splits)
    entries = []
    for name in MODEL_NAMES:
        evaluation = evaluate_model(name, dataset, splits, context["seed"])
        final = make_model(name, context["seed"])
        final.fit(dataset.features, dataset.labels)
        file_name = f"{symbol}__{name}.joblib"
        sha = dump_model(context["out"], file_name, final)
        # The serving process never unpickles: cache the form it evaluates (model_inference),
        # and record the form's own SHA-256, so the service never trusts a form by its name.
        _, form_sha = write_cached(context["out"], to_inference_form(final, sha))
        entry = _manifest_entry(symbol, name, file_name, sha, dataset, splits, evaluation, baselines, context)
        entries.append({**entry, "inference_sha256": form_sha})
    return entries


def _manifest_entry(
    symbol, name, file_name, sha, dataset, splits, evaluation, baselines, context
) -> dict[str, Any]:
    auc = evaluation.metrics["roc_auc"]
    baseline_aucs = [b["roc_auc"] for b in baselines.values()]
    return {
        "symbol": symbol,
        "model_name": name,
        "file": file_name,
        "sha256": sha,
        "version": sha[:12],
        "feature_names": list(FEATURE_NAMES),
        "feature_version": FEATURE_VERSION,
        "source": context["source"],
        "synthetic": context["source"] == "synthetic",
        "trained_at": context["trained_at"],
        "target": f"direction of the {HORIZON_DAYS}-day adj-close return (1 = up)",
        "horizon_days": HORIZON_DAYS,
        "data": {
            "first_date": dataset.dates[0].isoformat(),
            "last_date": dataset.dates[-1].isoformat(),
            "label_end": dataset.label_end.isoformat(),
            "n_rows": len(dataset.dates),
        },
        "walk_forward": {
            "n_splits": len(splits),
            "embargo": EMBARGO,
            "min_train": len(splits[0].train),
            "first_test_date": dataset.dates[splits[0].test[0]].isoformat(),
            "last_test_date": dataset.dates[splits[-1].test[-1]].isoformat(),
        },
        "metrics": evaluation.metrics,
        "baselines": baselines,
        "beats_baselines_roc_auc": auc is not None and all(b is not None and auc > b for b in baseline_aucs),
        "importance": {
            "method": "permutation, ROC AUC drop on the last walk-forward test block",
            "values": evaluation.importance,
        },
    }


def metrics_table(entries: list[dict[str, Any]]) -> str:
    """The metric table the CLI prints: models, then both baselines, per symbol."""
    header = (
        f"{'symbol':<9} {'model':<28} {'accuracy':>8} {'roc_auc':>8} {'±se':>6} {'brier':>7} {'n_test':>6}"
    )
    lines = [header, "-" * len(header)]
    for symbol in dict.fromkeys(e["symbol"] for e in entries):
        mine = [e for e in entries if e["symbol"] == symbol]
        rows = [(e["model_name"], e["metrics"]) for e in mine]
        rows += [(f"baseline: {name}", m) for name, m in mine[0]["baselines"].items()]
        for label, m in rows:
            lines.append(
                f"{symbol:<9} {label:<28} {m['accuracy']:>8.4f} {_fmt(m['roc_auc'])} {_fmt(m['roc_auc_se'], 6)} "
                f"{m['brier']:>7.4f} {m['n_test']:>6}"
            )
        lines.append(_verdict(symbol, mine))
    return "\n".join(lines)


def _fmt(value: float | None, width: int = 8) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.4f}"


def _verdict(symbol: str, entries: list[dict[str, Any]]) -> str:
    best = max(entries, key=lambda e: e["metrics"]["roc_auc"] or 0.0)
    m, baselines = best["metrics"], best["baselines"]
    strongest = max((b["roc_auc"] or 0.0) for b in baselines.values())
    if not best["beats_baselines_roc_auc"]:
        return f"  -> {symbol}: no model beats both baselines on ROC AUC (best {best['model_name']} {_fmt(m['roc_auc'], 0)})"
    margin_se = (m["roc_auc"] - strongest) / m["roc_auc_se"] if m["roc_auc_se"] else 0.0
    noise = "within noise" if margin_se < 2 else "about 2+ SE"
    return f"  -> {symbol}: {best['model_name']} beats both baselines on ROC AUC by {m['roc_auc'] - strongest:.4f} ({margin_se:.1f} SE, {noise})"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="folder of Yahoo-format CSVs <SYMBOL>.csv and AXJO.csv (default: TRADING_MARKET_DATA_DIR)",
    )
    parser.add_argument("--symbols", nargs="+", help="symbols to train (default: TRADING_SYMBOLS)")
    parser.add_argument("--out", type=Path, help="models folder (default: TRADING_MODELS_DIR)")
    parser.add_argument(
        "--source",
        choices=("yfinance", "csv", "synthetic"),
        help="yfinance: fetch the history into --data-dir first (as `service_manager.py data fetch`), "
        "falling back to the CSVs there, then to synthetic bars; default: csv when there are CSVs, "
        "else synthetic",
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="train on the synthetic provider's bars (labelled synthetic)"
    )
    parser.add_argument(
        "--years", type=float, default=5.0, help="years of labelled history to use, most recent (default 5)"
    )
    parser.add_argument(
        "--synthetic-years",
        type=float,
        help="years to use when the bars are synthetic (set-up: 2, they carry no signal; default --years)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed for the tree models (default 0)")
    parser.add_argument(
        "--candidate",
        action="store_true",
        help="write the set but do not promote it (models/current stays; the retrain task decides)",
    )
    parser.add_argument(
        "--keep",
        type=int,
        default=DEFAULT_KEEP,
        help=f"model sets kept when pruning (default {DEFAULT_KEEP})",
    )
    parser.add_argument("--fetch-attempts", type=int, default=3, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _choose_source(args: argparse.Namespace, default_dir: Path) -> tuple[Path | None, str]:
    """(CSV folder or None for synthetic, how it was chosen): csv when asked or when CSVs exist;
    synthetic when asked or when nothing else exists."""
    if args.synthetic or args.source == "synthetic":
        return None, "synthetic"
    directory = args.data_dir or default_dir
    if directory.is_dir() and any(directory.glob("*.csv")):
        return directory, f"csv files in {directory}"
    if (args.data_dir is not None and args.source != "fallback") or args.source == "csv":
        raise MarketDataError(f"no CSV files in {directory}")
    return None, f"synthetic (no CSV files in {directory})"


def fetch_history(args: argparse.Namespace, directory: Path, symbols: list[str], now: datetime) -> str | None:
    """--source yfinance: bring the CSVs in `directory` up to date from Yahoo. None when every
    file is fresh from Yahoo, else why not (the training then falls back, and says so)."""
    years = max(10.0, args.years + 2)  # the warm-up of the features comes before the first row
    try:
        reports = fetch_daily(directory, symbols, now, years=years, retry=Retry(attempts=args.fetch_attempts))
    except (YahooUnavailable, MarketDataError, OSError) as exc:
        return str(exc)
    refused = [f"{r.symbol}: {r.detail}" for r in reports if r.status == "refused"]
    return "; ".join(refused) or None


def read_bars(directory: Path | None, symbols: list[str], now: datetime) -> dict[str, list[Bar]]:
    """Each symbol's cleaned daily bars final at `now`, from `<directory>/<SYMBOL>.csv` or, when
    `directory` is None, the synthetic walk: what market-data serves from the same files or walk."""
    if directory is None:
        sessions = trading_sessions(SYNTHETIC_EPOCH, last_visible_date(now), asx_calendar.is_trading_day)
        return {symbol: synthetic_bars(symbol, sessions) for symbol in symbols}
    return {symbol: _csv_bars(directory, symbol, now) for symbol in symbols}


def _csv_bars(directory: Path, symbol: str, now: datetime) -> list[Bar]:
    path = directory / csv_file_name(symbol)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise MarketDataError(
            f"no CSV file for {symbol} ({path.name}) in the market data directory"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MarketDataError(f"{path.name} is unreadable: {exc}") from exc
    return list(history_from_csv(symbol, text, now, asx_calendar.is_trading_day).bars)


def _recent(bars: list[Bar], years: float) -> list[Bar]:
    """The last `years` of bars plus the warm-up the features need before the first row."""
    if not bars:
        return bars
    warm_up_days = int(MIN_BARS * 7 / 5) + 14  # trading days to calendar days, plus holidays
    cutoff = bars[-1].date - timedelta(days=int(years * 365.25) + warm_up_days)
    return [bar for bar in bars if bar.date >= cutoff]


def kept_entries(out: Path, retrained: list[str], source: str) -> list[dict]:
    """Models of other symbols that a retrain of only `retrained` keeps from the existing manifest.

    Kept only when they were built the same way (same feature version, same kind of data), so a
    manifest never mixes synthetic and real models or two feature layouts.
    """
    try:
        old = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if old.get("feature_version") != FEATURE_VERSION or old.get("source") != source:
        return []
    return [
        entry
        for entry in old.get("models", [])
        if entry.get("symbol") not in retrained and (out / str(entry.get("file", ""))).is_file()
    ]


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.monotonic()
    try:
        settings = get_settings()
        symbols = [s.upper() for s in (args.symbols or settings.symbols)]
        now = clock.now()
        fetched = None
        if args.source == "yfinance":
            directory = args.data_dir or settings.market_data_dir
            why_not = fetch_history(args, directory, [*symbols, settings.market_index], now)
            if why_not is None:
                fetched = f"yfinance history fetched into {directory}"
            else:
                print(f"train_models: Yahoo history not fetched ({why_not}); falling back", file=sys.stderr)
                args.source = "fallback"  # csv when there are files, else synthetic: labelled so
        directory, detail = _choose_source(args, settings.market_data_dir)
        source = "synthetic" if directory is None else ("yfinance" if fetched else "csv")
        detail = fetched or (f"{detail}; Yahoo not reached" if args.source == "fallback" else detail)
        histories = read_bars(directory, [*symbols, settings.market_index], now)
    except (ConfigError, MarketDataError) as exc:
        print(f"train_models: {exc}", file=sys.stderr)
        if isinstance(exc, MarketDataError) and args.data_dir is not None:
            print(
                f"  expected files like {args.data_dir / csv_file_name(symbols[0])} and "
                f"{args.data_dir / csv_file_name(settings.market_index)}",
                file=sys.stderr,
            )
        return 2
    root = args.out or settings.models_dir
    make_dir(root)  # 0755 at most: ml-model refuses a models folder others may write
    adopted = adopt_flat(root, now)
    if adopted:
        print(f"moved the models trained before model sets into set {adopted}")
    previous_dir = serving_dir(root)
    out = new_set_dir(root, now)
    context = {"source": source, "seed": args.seed, "out": out, "trained_at": clock.isoformat(now)}
    if source == "synthetic":
        print(f"WARNING: {SYNTHETIC_WARNING}", file=sys.stderr)
        args.years = args.synthetic_years or args.years
    try:
        entries = _train_all(symbols, histories, settings.market_index, args, context)
    except (TooLittleData, ValueError) as exc:
        shutil.rmtree(out, ignore_errors=True)  # no half set is left behind
        print(f"train_models: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, TooLittleData) else 1
    kept = kept_entries(previous_dir, symbols, source) if args.symbols else []
    if kept:
        print(
            f"keeping {len(kept)} models of {', '.join(sorted({e['symbol'] for e in kept}))} from the manifest"
        )
        copy_kept(previous_dir, out, kept)
        symbols = [*symbols, *sorted({e["symbol"] for e in kept} - set(symbols))]
    top = {
        "generated_at": context["trained_at"],
        "source": source,
        "source_detail": detail,
        "synthetic": source == "synthetic",
        **({"warning": SYNTHETIC_WARNING} if source == "synthetic" else {}),
        "feature_version": FEATURE_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "index_symbol": settings.market_index,
        "symbols": symbols,
        "model_set": out.name,
        "training_command": " ".join(
            ["python", "services/ml-model/train_models.py", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    manifest = write_manifest(out, top, [*entries, *kept])
    prune_cache(out, {entry["sha256"] for entry in [*entries, *kept]})
    table = metrics_table(entries)
    summary = (
        f"{len(entries)} models from {detail}, written to {manifest} in {time.monotonic() - started:.1f}s"
    )
    write_file(out / REPORT, f"{table}\n\n{summary}\n".encode())
    print(table)
    print(f"\n{summary}")
    try:
        print(finish_set(root, out, args, now))
    except ModelSetError as exc:
        print(f"train_models: {exc}", file=sys.stderr)
        return 1
    if source == "synthetic":
        print(f"WARNING: {SYNTHETIC_WARNING}")
    return 0


def _train_all(symbols, histories, index_symbol, args, context) -> list[dict[str, Any]]:
    index_bars = _recent(histories[index_symbol], args.years)
    entries = []
    for symbol in symbols:
        try:
            entries += train_symbol(symbol, _recent(histories[symbol], args.years), index_bars, context)
        except ValueError as exc:
            raise type(exc)(f"{symbol}: {exc}") from exc
    return entries


def copy_kept(source: Path, out: Path, kept: list[dict]) -> None:
    """The kept models' files (and their inference forms) into the new set: a set is whole."""
    for entry in kept:
        write_file(out / entry["file"], (source / entry["file"]).read_bytes())
        form = source / INFERENCE_DIR / f"{entry['sha256']}.json"
        for cached in (form, form.with_name(form.name + SIDECAR_SUFFIX)):
            if cached.is_file():
                make_dir(out / INFERENCE_DIR)
                write_file(out / INFERENCE_DIR / cached.name, cached.read_bytes())


def finish_set(root: Path, out: Path, args: argparse.Namespace, now: datetime) -> str:
    """Promote the new set (or leave it a candidate), then prune; the line saying what happened."""
    if args.candidate:
        write_status(out, "candidate", clock.isoformat(now), reason="trained; waits for the promotion rule")
        return f"model set {out.name} written as a candidate (not promoted)"
    promote(root, out.name, now, "trained")
    removed = prune(root, args.keep)
    pruned = f"; pruned {len(removed)} old set(s)" if removed else ""
    return f"model set {out.name} promoted: {root / 'current'} -> sets/{out.name}{pruned}"


if __name__ == "__main__":
    sys.exit(main())
