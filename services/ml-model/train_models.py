"""Train the per-bank direction models with walk-forward validation and write models/manifest.json.

Usage:
    python services/ml-model/train_models.py --data-dir DIR [--symbols CBA.AX ...] [--out models/]
    python services/ml-model/train_models.py --synthetic          # no CSVs: labelled SYNTHETIC

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
The final model of each kind is then refit on all rows and saved with joblib.

Reads bars through the market-data csv provider (<DIR>/<SYMBOL>.csv, index AXJO.csv) or its
synthetic provider; nothing dated after the suite clock's now is used.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# Run as a script, this folder is on sys.path; the repo (services.*) and the market-data
# folder (its providers module) must be too.
for _extra in (REPO_ROOT, REPO_ROOT / "services" / "market-data"):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

import numpy as np  # noqa: E402
from model_catalog import MODEL_NAMES, make_model, probability_up  # noqa: E402
from model_store import dump_model, write_manifest  # noqa: E402
from providers import CsvSource, MarketDataError, SyntheticSource, csv_file_name  # noqa: E402
from sklearn.inspection import permutation_importance  # noqa: E402
from sklearn.metrics import brier_score_loss, roc_auc_score  # noqa: E402

from services.base import clock  # noqa: E402
from services.base.config import ConfigError, get_settings  # noqa: E402
from services.domain import asx_calendar  # noqa: E402
from services.domain.bars import Bar  # noqa: E402
from services.domain.features import FEATURE_NAMES, FEATURE_VERSION, MIN_BARS, build_feature_rows  # noqa: E402
from services.domain.walk_forward import assert_no_lookahead, walk_forward_splits  # noqa: E402

HORIZON_DAYS = 1
EMBARGO = HORIZON_DAYS  # see services.domain.walk_forward: gap >= label horizon
N_SPLITS = 5
MIN_TRAIN_FRACTION = 0.4
SYNTHETIC_WARNING = (
    "TRAINED ON SYNTHETIC RANDOM-WALK BARS, NOT MARKET DATA: these models and their metrics "
    "say nothing about real prices. Retrain with --data-dir on real CSVs before trusting them."
)


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
    if not dates:
        raise ValueError(f"no complete feature rows: need more than MIN_BARS={MIN_BARS} bars of stock and index")
    return Dataset(dates, np.array(matrix, dtype=float), np.array(labels, dtype=int), bars[-1].date)


def score(labels: np.ndarray, probabilities: np.ndarray, directions: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy (of `directions`, default p > 0.5), ROC AUC with its standard error, Brier score."""
    predicted = directions if directions is not None else (probabilities > 0.5).astype(int)
    auc = float(roc_auc_score(labels, probabilities)) if len(set(labels.tolist())) == 2 else None
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
    variance = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return math.sqrt(max(variance, 0.0))


def splits_for(dataset: Dataset):
    n = len(dataset.dates)
    splits = walk_forward_splits(
        dataset.dates, n_splits=N_SPLITS, min_train=max(50, int(n * MIN_TRAIN_FRACTION)), gap=EMBARGO
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
    last = splits[-1]
    scorer = "roc_auc" if len(set(y[last.test].tolist())) == 2 else "accuracy"
    result = permutation_importance(model, x[last.test], y[last.test], scoring=scorer, n_repeats=5, random_state=seed)
    importance = {n: round(float(v), 5) for n, v in zip(FEATURE_NAMES, result.importances_mean, strict=True)}
    return Evaluation(metrics, importance)


def evaluate_baselines(dataset: Dataset, splits) -> dict[str, dict[str, Any]]:
    """Both naive baselines on exactly the test days the models were scored on."""
    y, yesterday = dataset.labels, dataset.yesterday_up
    up_p, up_y, persist_p, persist_dir, test_y = [], [], [], [], []
    for split in splits:
        train_y, train_yesterday = y[split.train], yesterday[split.train]
        base_rate = float(train_y.mean())
        up_p.append(np.full(len(split.test), base_rate))
        up_y.append(y[split.test])
        # P(up | yesterday's direction), from the training window only.
        after = {d: float(train_y[train_yesterday == d].mean()) if (train_yesterday == d).any() else base_rate for d in (0, 1)}
        persist_p.append(np.array([after[int(d)] for d in yesterday[split.test]]))
        persist_dir.append(yesterday[split.test])
        test_y.append(y[split.test])
    labels = np.concatenate(test_y)
    always_up = score(labels, np.concatenate(up_p), directions=np.ones(len(labels), dtype=int))
    persistence = score(labels, np.concatenate(persist_p), directions=np.concatenate(persist_dir))
    # AUC of the persistence rule itself (score 1 after an up day), not of its calibrated probability.
    if persistence["roc_auc"] is not None:
        auc = float(roc_auc_score(labels, np.concatenate(persist_dir)))
        persistence["roc_auc"], persistence["roc_auc_se"] = round(auc, 4), round(auc_standard_error(auc, labels), 4)
    return {"always_up": always_up, "yesterday_direction": persistence}
