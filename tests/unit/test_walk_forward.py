"""Walk-forward splits: expanding windows, embargo, and never training on the future."""

from datetime import date, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.walk_forward import Split, assert_no_lookahead, walk_forward_splits


def _days(n: int) -> list[date]:
    start = date(2020, 1, 1)
    return [start + timedelta(days=i) for i in range(n)]


@pytest.mark.parametrize(
    ("n", "n_splits", "min_train", "gap", "expected"),
    [
        # 10 samples, first test at 4+1=5, 5 test samples in 1 block.
        (10, 1, 4, 1, [Split(range(0, 4), range(5, 10))]),
        # Remainder goes to the later blocks: 5 test samples in 2 blocks -> 2, 3.
        (10, 2, 4, 1, [Split(range(0, 4), range(5, 7)), Split(range(0, 6), range(7, 10))]),
        # gap=0: test starts right after training ends (allowed for a same-day label).
        (6, 2, 2, 0, [Split(range(0, 2), range(2, 4)), Split(range(0, 4), range(4, 6))]),
        # Big embargo: 3 samples dropped before each block.
        (12, 2, 3, 3, [Split(range(0, 3), range(6, 9)), Split(range(0, 6), range(9, 12))]),
        # Exactly enough samples: one test sample per block.
        (5, 2, 2, 1, [Split(range(0, 2), range(3, 4)), Split(range(0, 3), range(4, 5))]),
    ],
)
def test_known_splits(n: int, n_splits: int, min_train: int, gap: int, expected: list[Split]) -> None:
    assert walk_forward_splits(_days(n), n_splits=n_splits, min_train=min_train, gap=gap) == expected


@pytest.mark.parametrize(
    ("dates", "kwargs", "message"),
    [
        (_days(4), {"n_splits": 2, "min_train": 2, "gap": 1}, "too few"),
        (_days(10), {"n_splits": 0, "min_train": 2}, "n_splits"),
        (_days(10), {"n_splits": 1, "min_train": 0}, "min_train"),
        (_days(10), {"n_splits": 1, "min_train": 2, "gap": -1}, "gap"),
        # Unsorted input would make "earlier index" mean nothing: refused, not silently used.
        (list(reversed(_days(10))), {"n_splits": 2, "min_train": 2}, "strictly increasing"),
        # A duplicated date (e.g. a doubled CSV row) is also refused.
        ([*_days(5), _days(5)[-1], *_days(12)[6:]], {"n_splits": 2, "min_train": 2}, "strictly"),
    ],
)
def test_bad_requests_are_refused(dates: list[date], kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        walk_forward_splits(dates, **kwargs)


@given(
    n=st.integers(min_value=3, max_value=400),
    n_splits=st.integers(min_value=1, max_value=12),
    min_train=st.integers(min_value=1, max_value=200),
    gap=st.integers(min_value=0, max_value=10),
)
def test_never_trains_on_the_future(n: int, n_splits: int, min_train: int, gap: int) -> None:
    dates = _days(n)
    try:
        splits = walk_forward_splits(dates, n_splits=n_splits, min_train=min_train, gap=gap)
    except ValueError:
        assert n < min_train + gap + n_splits
        return
    assert len(splits) == n_splits
    for split in splits:
        # Every training date is more than `gap` samples before every test date.
        assert max(dates[i] for i in split.train) < min(dates[i] for i in split.test)
        assert split.test.start - split.train.stop == gap
        assert split.train.start == 0  # expanding window
    # Test blocks are consecutive, disjoint and cover everything after the first cut.
    tested = [i for split in splits for i in split.test]
    assert tested == list(range(min_train + gap, n))
    # Each training window is longer than the previous one.
    assert all(a.train.stop < b.train.stop for a, b in pairwise(splits))
    assert_no_lookahead(dates, splits, gap)


@pytest.mark.parametrize(
    ("split", "message"),
    [
        (Split(range(0, 5), range(5, 8)), "embargo"),  # adjacent, but gap=1 demanded
        (Split(range(0, 9), range(5, 8)), "embargo"),  # overlapping windows
        (Split(range(0, 0), range(5, 8)), "empty"),
    ],
)
def test_lookahead_check_catches_bad_splits(split: Split, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        assert_no_lookahead(_days(10), [split], gap=1)


def test_lookahead_check_reads_the_dates_not_only_indices() -> None:
    # Indices look fine but the dates are out of order: the training data is later.
    dates = [*_days(10)[5:], *_days(10)[:5]]
    with pytest.raises(AssertionError, match="dated in its test window"):
        assert_no_lookahead(dates, [Split(range(0, 3), range(5, 8))], gap=1)
