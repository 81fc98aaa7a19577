"""Walk-forward (time-ordered, expanding-window) splits for validating models on time series.

Each split trains on every sample before a cut-off and tests on the next block, with `gap`
samples dropped in between (the embargo). Why the embargo: a training row's *label* looks
`horizon` days ahead, so the last training rows' labels overlap the first test rows' prices.
With `gap >= horizon` no label used in training was known later than the first test day's
features, so the model never learns from the period it is scored on.

Pure: works on indices of a sequence that must be strictly increasing in time (dates are
checked, not trusted), so a caller that forgot to sort gets an error instead of a leak.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Split:
    """Index ranges into the time-ordered samples; `train` always ends before `test` starts."""

    train: range
    test: range


def walk_forward_splits(
    dates: Sequence[Any],
    *,
    n_splits: int,
    min_train: int,
    gap: int = 1,
) -> list[Split]:
    """Expanding-window splits over `dates` (strictly increasing; dates or any orderable).

    The samples after the first `min_train + gap` are cut into `n_splits` consecutive test
    blocks (the earlier blocks one shorter when the count does not divide evenly). Split k
    trains on `[0, start_k - gap)` and tests on its block. Raises ValueError when the dates
    are not strictly increasing or there are too few samples for the request.
    """
    _check_arguments(len(dates), n_splits, min_train, gap)
    _check_strictly_increasing(dates)
    first_test = min_train + gap
    block_sizes = _block_sizes(len(dates) - first_test, n_splits)
    splits = []
    start = first_test
    for size in block_sizes:
        splits.append(Split(train=range(0, start - gap), test=range(start, start + size)))
        start += size
    return splits


def assert_no_lookahead(dates: Sequence[Any], splits: Sequence[Split], gap: int) -> None:
    """Raise AssertionError if any split trains on a sample at or after its test window.

    Independent of how the splits were made: checks the dates themselves, so it guards the
    training script too (it calls this before fitting anything).
    """
    for number, split in enumerate(splits):
        if not split.train or not split.test:
            raise AssertionError(f"split {number} has an empty train or test window")
        last_train, first_test = split.train[-1], split.test[0]
        if first_test - last_train <= gap:
            raise AssertionError(f"split {number}: embargo of {gap} not respected")
        if max(dates[i] for i in split.train) >= min(dates[i] for i in split.test):
            raise AssertionError(f"split {number} trains on data dated in its test window")


def _check_arguments(n_samples: int, n_splits: int, min_train: int, gap: int) -> None:
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}")
    if min_train < 1:
        raise ValueError(f"min_train must be >= 1, got {min_train}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    needed = min_train + gap + n_splits
    if n_samples < needed:
        raise ValueError(
            f"{n_samples} samples are too few for {n_splits} splits with min_train={min_train} "
            f"and gap={gap} (need at least {needed})"
        )


def _check_strictly_increasing(dates: Sequence[Any]) -> None:
    for index in range(1, len(dates)):
        if not dates[index - 1] < dates[index]:
            raise ValueError(
                f"dates must be strictly increasing: position {index} ({dates[index]!r}) "
                f"does not follow {dates[index - 1]!r}"
            )


def _block_sizes(n_test_samples: int, n_splits: int) -> list[int]:
    base, extra = divmod(n_test_samples, n_splits)
    # The remainder goes to the last blocks: later blocks are the most recent, most relevant data.
    return [base + (1 if k >= n_splits - extra else 0) for k in range(n_splits)]
