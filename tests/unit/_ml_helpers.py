"""Deterministic daily bars for the ml-model and feature tests (seeded random walks)."""

import math
import random
from datetime import date, timedelta

from services.domain.bars import Bar


def weekdays(start: date, n: int) -> list[date]:
    days = []
    d = start
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    return days


def random_walk_bars(n: int, seed: int, start: date = date(2019, 1, 1), price: float = 50.0) -> list[Bar]:
    """A geometric random walk with a little drift, on weekdays, with plausible OHLC and volume."""
    rng = random.Random(seed)
    bars = []
    for d in weekdays(start, n):
        previous = price
        price *= math.exp(rng.gauss(0.0003, 0.012))
        high = max(previous, price) * (1 + abs(rng.gauss(0, 0.004)))
        low = min(previous, price) * (1 - abs(rng.gauss(0, 0.004)))
        volume = int(1_000_000 * math.exp(rng.gauss(0, 0.3)))
        bars.append(Bar(d, previous, high, low, price, price * 0.8, volume))
    return bars
