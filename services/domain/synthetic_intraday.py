"""A seeded 1-minute path for one synthetic day that agrees exactly with that day's daily bar.

Pure and deterministic: the path is a function of (symbol, date, daily bar, minutes) only,
seeded through SHA-256 (Python's hash() is salted per process), so every start of every
process serves the same minutes.

Agreement with the daily bar, exactly (==, not approximately): the first minute opens at the
day's open, the last closes at the day's close, the highest high is the day's high, the lowest
low the day's low, and the minute volumes (integers) add up to the day's volume. Every minute
has low <= open, close <= high, and each minute opens where the previous one closed.

How: a Brownian bridge from the open to the close, one step a minute; then a monotone
piecewise-linear stretch of the part above max(open, close) so the path's peak lands on the
high, and of the part below min(open, close) so its trough lands on the low. Stretching keeps
the path's shape (no clipped plateaus). Where the high equals max(open, close) the path may not
rise above it, so its excursions there are reflected back down (and both ways, folded, when
neither extreme leaves room). Small wicks are added to each minute, kept inside [low, high],
and the minute with the highest (lowest) price takes the day's high (low) exactly, which also
covers a bridge that never left [min(open, close), max(open, close)].
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise

from services.domain.bars import Bar
from services.domain.intraday import PRICE_DECIMALS, IntradayBar, session_day
from services.domain.price_history import stable_seed

# Spread of the bridge's steps relative to the day's range: ~2 ranges over a whole session
# before stretching, so the stretch rescales real excursions rather than creating them.
_STEP_SCALE = 0.5
_WICK_SCALE = 0.3  # of a step's spread: minute wicks are small next to the day's moves
_VOLUME_NOISE = 0.35  # lognormal spread of one minute's volume around the profile


def synthetic_intraday_bars(
    symbol: str, daily_bar: Bar, session_minutes: Sequence[datetime]
) -> list[IntradayBar]:
    """The 1m bars of `daily_bar`'s day for `symbol`, one per start in `session_minutes`."""
    _check_daily_bar(daily_bar)
    n = len(session_minutes)
    if n == 0:
        raise ValueError("session_minutes is empty: a day needs at least one minute")
    wrong_day = [m for m in session_minutes if session_day(m) != daily_bar.date]
    if wrong_day:
        raise ValueError(f"minute {wrong_day[0].isoformat()} is not on the daily bar's day {daily_bar.date}")
    rng = random.Random(stable_seed(f"intraday:{symbol}:{daily_bar.date.isoformat()}"))
    o, h, lo, c = daily_bar.open, daily_bar.high, daily_bar.low, daily_bar.close
    step = _STEP_SCALE * (h - lo) / math.sqrt(n)
    path = _shape_to_range(_bridge(o, c, n, step, rng), o, c, h, lo)
    # Rounded like the daily bars, kept in range, and the two ends exact.
    points = [_clamp(round(p, PRICE_DECIMALS), lo, h) for p in path]
    points[0], points[-1] = o, c
    highs, lows = _wicks(points, h, lo, step * _WICK_SCALE, rng)
    volumes = _split_volume(daily_bar.volume, n, rng)
    return [
        IntradayBar(start, points[i], highs[i], lows[i], points[i + 1], volumes[i])
        for i, start in enumerate(session_minutes)
    ]


def _check_daily_bar(bar: Bar) -> None:
    o, h, lo, c = bar.open, bar.high, bar.low, bar.close
    if not (0 < lo <= min(o, c) and max(o, c) <= h) or not all(map(math.isfinite, (o, h, lo, c))):
        raise ValueError(f"inconsistent daily bar for {bar.date}: O={o} H={h} L={lo} C={c}")
    if bar.volume < 0:
        raise ValueError(f"negative daily volume for {bar.date}: {bar.volume}")


def _bridge(start: float, end: float, n: int, step: float, rng: random.Random) -> list[float]:
    """n + 1 points from `start` to `end`: a random walk with its drift removed (a bridge)."""
    walk = [0.0]
    for _ in range(n):
        walk.append(walk[-1] + rng.gauss(0.0, 1.0) * step)
    return [start + (end - start) * k / n + walk[k] - walk[-1] * k / n for k in range(n + 1)]


def _shape_to_range(path: list[float], o: float, c: float, h: float, lo: float) -> list[float]:
    """Stretch (or reflect, or fold) the bridge so its extremes are the day's high and low."""
    top, bottom = max(o, c), min(o, c)
    room_up, room_down = h > top, lo < bottom
    if not room_up and not room_down:
        return [_fold(p, bottom, top) for p in path]
    if not room_up:
        path = [2 * top - p if p > top else p for p in path]
    if not room_down:
        path = [2 * bottom - p if p < bottom else p for p in path]
    peak, trough = max(path), min(path)
    if room_up and peak > top:
        path = [top + (p - top) * (h - top) / (peak - top) if p > top else p for p in path]
    if room_down and trough < bottom:
        path = [bottom - (bottom - p) * (bottom - lo) / (bottom - trough) if p < bottom else p for p in path]
    return path


def _fold(x: float, low: float, high: float) -> float:
    """Reflect x into [low, high] as many times as it takes (a triangle wave)."""
    width = high - low
    if width <= 0:
        return low
    y = (x - low) % (2 * width)
    return low + (y if y <= width else 2 * width - y)


def _clamp(x: float, low: float, high: float) -> float:
    return min(max(x, low), high)


def _wicks(
    points: list[float], h: float, lo: float, wick: float, rng: random.Random
) -> tuple[list[float], list[float]]:
    """Each minute's high and low around its open/close, inside [lo, h]; the extremes exact."""
    highs, lows = [], []
    for first, last in pairwise(points):
        up, down = max(first, last), min(first, last)
        # max/min with the body again: rounding an off-grid body price could cut into it.
        highs.append(min(h, max(up, round(up + abs(rng.gauss(0.0, wick)), PRICE_DECIMALS))))
        lows.append(max(lo, min(down, round(down - abs(rng.gauss(0.0, wick)), PRICE_DECIMALS))))
    # The minute nearest each extreme takes it exactly (floating-point stretching lands within
    # an ulp; a bridge that never left the body range lands nowhere near).
    highs[max(range(len(highs)), key=highs.__getitem__)] = h
    lows[min(range(len(lows)), key=lows.__getitem__)] = lo
    return highs, lows


def _split_volume(total: int, n: int, rng: random.Random) -> list[int]:
    """`total` shares over n minutes, busier at the open and the close, summing exactly."""
    weights = []
    for i in range(n):
        t = i / (n - 1) if n > 1 else 0.5
        u_shape = 0.5 + 2.5 * (2 * t - 1) ** 2  # ASX volume is heaviest after 10:00 and before 16:00
        # Integer weights keep the split exact for any volume (floats lose shares past 2**53).
        weights.append(max(1, round(u_shape * math.exp(rng.gauss(0.0, _VOLUME_NOISE)) * 1_000_000)))
    whole = sum(weights)
    volumes = [total * w // whole for w in weights]
    # Largest remainders get the shares that flooring left over (ties to the earlier minute).
    by_remainder = sorted(range(n), key=lambda i: (-(total * weights[i] % whole), i))
    for i in by_remainder[: total - sum(volumes)]:
        volumes[i] += 1
    return volumes
