"""Pure parts of ml-model: outcomes from bars, live metrics, ensemble weights, the decision mapping;
and the prediction log on a real SQLite file."""

import math
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.bars import Bar
from services.domain.model_voting import (
    confidence_of,
    decision_to_probability,
    direction_of,
    ensemble_weights,
)
from services.ml_model.ml_prediction_log import PredictionLog, ResolvedVote, Vote, live_metrics, outcome_after


def _bar(day: int, adj_close: float) -> Bar:
    return Bar(date(2024, 3, day), adj_close, adj_close, adj_close, adj_close, adj_close, 1000)


BARS = [_bar(4, 10.0), _bar(5, 10.5), _bar(6, 10.5), _bar(8, 10.2)]  # the 7th is a gap (holiday)


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        (date(2024, 3, 4), "up"),  # 10.0 -> 10.5
        (date(2024, 3, 5), "down"),  # 10.5 -> 10.5: flat is "not up", as in training
        (date(2024, 3, 6), "down"),  # next bar is the 8th, across the gap
        (date(2024, 3, 7), "down"),  # as_of on the gap: base is the 6th's bar
        (date(2024, 3, 8), None),  # the next session's bar is not out yet
        (date(2024, 3, 1), None),  # before the history: no base bar
    ],
)
def test_outcome_after(as_of: date, expected: str | None) -> None:
    assert outcome_after(as_of, BARS) == expected


def test_live_metrics_known_answers() -> None:
    assert live_metrics([]) == {"resolved": 0, "accuracy": None, "brier": None}
    votes = [
        ResolvedVote(0.8, "up", "up"),
        ResolvedVote(0.6, "up", "down"),
        ResolvedVote(0.3, "down", "down"),
    ]
    # Brier: (0.2^2 + 0.6^2 + 0.3^2) / 3 = (0.04 + 0.36 + 0.09) / 3
    assert live_metrics(votes) == {"resolved": 3, "accuracy": round(2 / 3, 4), "brier": round(0.49 / 3, 4)}


@pytest.mark.parametrize(
    ("aucs", "weights", "equal"),
    [
        ([0.6, 0.55, 0.5], [2 / 3, 1 / 3, 0.0], False),  # skill 0.1 : 0.05 : 0
        ([0.45, 0.7], [0.0, 1.0], False),  # worse than chance gets no say
        ([0.5, 0.49, None], [1 / 3] * 3, True),  # nobody beat chance: equal, and said so
    ],
)
def test_ensemble_weights(aucs: list, weights: list[float], equal: bool) -> None:
    got, method = ensemble_weights(aucs)
    assert got == pytest.approx(weights)
    assert method.startswith("equal") is equal


def test_ensemble_needs_a_member() -> None:
    with pytest.raises(ValueError):
        ensemble_weights([])


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_decision_mapping_is_a_probability_symmetric_about_zero(d: float) -> None:
    p = decision_to_probability(d)
    assert 0.0 <= p <= 1.0
    assert p + decision_to_probability(-d) == pytest.approx(1.0)
    assert decision_to_probability(d + 1.0) >= p  # monotone: a larger margin is never less "up"
    if abs(d) > 1e-9:  # below that, 1/(1+e^-d) rounds to exactly 0.5
        assert (p > 0.5) == (d > 0)


@pytest.mark.parametrize(
    ("d", "p"),
    [
        (0.0, 0.5),
        (1.0, 1 / (1 + math.exp(-1))),
        (-1.0, 1 - 1 / (1 + math.exp(-1))),
        (800.0, 1.0),
        (-800.0, 0.0),
    ],
)
def test_decision_mapping_known_points(d: float, p: float) -> None:
    # ±800 would overflow a naive exp(-d): the stable form returns the limit.
    assert decision_to_probability(d) == pytest.approx(p)


@pytest.mark.parametrize(
    ("p", "direction", "confidence"), [(0.5, "down", 0.0), (0.75, "up", 0.5), (0.1, "down", 0.8)]
)
def test_direction_and_confidence(p: float, direction: str, confidence: float) -> None:
    assert direction_of(p) == direction
    assert confidence_of(p) == pytest.approx(confidence)


def test_log_counts_each_day_once_with_the_latest_vote(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "ml.db")
    day, other = date(2024, 3, 4), date(2024, 3, 5)
    log.record("r1", "2024-03-04T06:00:00+00:00", "CBA.AX", day, [Vote("rf", "v1", 0.4, "down")])
    log.record(
        "r2", "2024-03-04T07:00:00+00:00", "CBA.AX", day, [Vote("rf", "v1", 0.7, "up")]
    )  # later, same day
    log.record("r3", "2024-03-05T06:00:00+00:00", "CBA.AX", other, [Vote("rf", "v1", 0.6, "up")])
    log.record("r4", "2024-03-05T06:00:00+00:00", "WBC.AX", other, [Vote("rf", "v1", 0.6, "up")])
    assert log.pending() == {"CBA.AX": [day, other], "WBC.AX": [other]}
    assert log.pending(["WBC.AX"]) == {"WBC.AX": [other]}  # the symbols asked for only
    assert log.pending(["NAB.AX"]) == {} and log.pending([]) == {}
    assert log.resolve("CBA.AX", day, "up", "2024-03-05T06:00:00+00:00") == 2
    assert log.resolve("CBA.AX", day, "down", "2024-03-06T06:00:00+00:00") == 0  # already settled
    stats = log.live("CBA.AX")[("rf", "v1")]
    # Served 3, one day resolved (counted once, with the 0.7 "up" vote), one pending.
    assert stats == {
        "served": 3,
        "pending": 1,
        "days": 2,
        "resolved": 1,
        "accuracy": 1.0,
        "brier": round(0.09, 4),
    }
    with pytest.raises(ValueError):
        log.resolve("CBA.AX", other, "sideways", "x")
    log.close()
    reopened = PredictionLog(tmp_path / "ml.db")
    assert reopened.live("CBA.AX")[("rf", "v1")]["served"] == 3
    reopened.close()
