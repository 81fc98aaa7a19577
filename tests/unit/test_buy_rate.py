"""Buy-rate window and the alert that fires exactly once per crossing."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.buy_rate import BuyRateConfig, BuyRateState, buy_rate, current_rate, record, replay


@pytest.mark.parametrize(
    ("signals", "rate"),
    [
        ([], None),  # no predictions: no rate, not 0%
        (["BUY"], 1.0),
        (["BUY", "HOLD", "SELL", "BUY"], 0.5),
        (["HOLD", "SELL"], 0.0),
    ],
)
def test_buy_rate(signals, rate):
    assert buy_rate(signals) == rate


def feed(signals: str, config: BuyRateConfig, state: BuyRateState | None = None):
    """Record 'B'/'H'/'S' letters; return the final state and (index, direction) of each crossing."""
    state = state or BuyRateState()
    crossings = []
    for i, letter in enumerate(signals):
        state, crossing = record(state, {"B": "BUY", "H": "HOLD", "S": "SELL"}[letter], config)
        if crossing:
            crossings.append((i, crossing.direction))
    return state, crossings


SMALL = BuyRateConfig(window_size=10, threshold=0.7, min_samples=4)

CROSSING_TABLE = [
    # (signals, crossings as (index, direction), why)
    ("BBB", [], "under min_samples: 100% BUY of three says nothing yet"),
    ("BBBB", [(3, "above")], "the window becomes meaningful already above: that is the crossing"),
    ("HHHHBBBBBB", [], "6/10 = 60%: under"),
    ("HHHBBBBBBB", [], "7/10 is exactly 70%: the alert is for *above* the threshold"),
    ("HHHBBBBBBBB", [(10, "above")], "the window slides: the last ten are HHBBBBBBBB = 80%"),
    ("HHHHHHHBBBBBBBB", [(14, "above")], "index 13 is exactly 70%, index 14 is 80%"),
    ("BBBBBBBBBB", [(3, "above")], "fires once, then stays quiet while above"),
    ("BBBBHHH", [(3, "above"), (5, "below")], "4/6 = 66.7% drops back under"),
    ("BBBBHHBBBB", [(3, "above"), (5, "below"), (6, "above")], "5/7 = 71.4%: a second episode fires again"),
]


@pytest.mark.parametrize(("signals", "expected", "why"), CROSSING_TABLE)
def test_crossings(signals, expected, why):
    assert feed(signals, SMALL)[1] == expected, why


def test_default_config_matches_the_issue():
    cfg = BuyRateConfig()
    assert cfg.threshold == 0.70


def test_rate_is_none_until_min_samples():
    state, _ = feed("BBB", SMALL)
    assert current_rate(state, SMALL) is None
    state, _ = feed("H", SMALL, state)
    assert current_rate(state, SMALL) == 0.75


def test_window_keeps_only_the_most_recent():
    state, _ = feed("B" * 10 + "H" * 10, SMALL)
    assert state.signals == ("HOLD",) * 10
    assert current_rate(state, SMALL) == 0.0


def test_replay_restores_alerting_without_reporting_old_crossings():
    state = replay(["BUY"] * 8, SMALL)
    assert state.alerting
    # Restarted while above: the next BUY must not fire a second alert for the same episode.
    assert record(state, "BUY", SMALL)[1] is None


def test_crossing_carries_rate_threshold_and_window():
    _, crossing = record(replay(["BUY"] * 3, SMALL), "BUY", SMALL)
    assert crossing is not None
    assert crossing.as_dict() == {"direction": "above", "rate": 1.0, "threshold": 0.7, "window": 4}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_size": 0}, "window_size"),
        ({"window_size": 5, "min_samples": 6}, "min_samples"),
        ({"min_samples": 0}, "min_samples"),
        ({"threshold": 1.0}, "threshold"),  # a rate can never be above 100%: the alert could never fire
        ({"threshold": -0.1}, "threshold"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BuyRateConfig(**kwargs)


@given(
    st.lists(st.sampled_from(["BUY", "HOLD", "SELL"]), max_size=80), st.integers(1, 12), st.floats(0.0, 0.99)
)
def test_crossings_alternate_and_match_the_rate(signals, window, threshold):
    cfg = BuyRateConfig(window_size=window, threshold=threshold, min_samples=min(3, window))
    state = BuyRateState()
    directions = []
    for signal in signals:
        state, crossing = record(state, signal, cfg)
        rate = current_rate(state, cfg)
        assert state.alerting == (rate is not None and rate > threshold)
        if crossing:
            directions.append(crossing.direction)
    # Exactly one alert per episode: above and below strictly alternate, starting with above.
    assert directions == ["above", "below"] * (len(directions) // 2) + ["above"] * (len(directions) % 2)
