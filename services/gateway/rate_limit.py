"""A token bucket per client (pure: the caller passes the monotonic time), so one client polling
too fast is answered 429 while the others are served."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Bucket:
    tokens: float
    at: float


class RateLimiter:
    """`rate_per_s` requests a second per client on average, `burst` at once."""

    def __init__(self, rate_per_s: float, burst: int, max_clients: int = 10_000):
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self.buckets: dict[str, Bucket] = {}

    def allow(self, client: str, now: float) -> float:
        """0 when the request may go ahead (a token is taken), else the seconds until it could."""
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= self.max_clients:
                self._forget_idle(now)
            bucket = self.buckets[client] = Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_s

    def _forget_idle(self, now: float) -> None:
        """Drop the clients whose bucket has refilled (they lose nothing); if none has, the oldest
        half, so the table stays bounded whatever the number of addresses."""
        full_after_s = self.burst / self.rate_per_s
        idle = [c for c, b in self.buckets.items() if now - b.at >= full_after_s]
        if not idle:
            idle = sorted(self.buckets, key=lambda c: self.buckets[c].at)[: len(self.buckets) // 2]
        for client in idle:
            del self.buckets[client]
