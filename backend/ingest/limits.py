"""Per-gateway and per-token budgets: messages per second and new meters per hour.

Why token buckets: a gateway that replays a day of backlog after an outage sends in bursts, a misbehaving one
sends forever. A bucket of ``burst`` tokens refilled at ``rate`` per second lets the first through and stops
the second after its burst, in O(1) memory per key and without any timer. The clock is passed in, so the
buckets are plain values that tests drive without sleeping.

What happens beyond a budget is the caller's decision: MQTT ingest drops a batch that carries a receipt id
without a receipt (the gateway re-sends it later, so a bursting honest gateway loses nothing while a flooding
one costs one bucket check per message) and keeps, but counts, a batch of a gateway without receipts, which
would lose it — the broker also delivers a whole backlog at once after a backend outage, far above any rate a
gateway sends at; the HTTP ingest answers 429 with Retry-After; a meter beyond the new-device budget is
refused and dead-lettered like any unprovisioned one.

Keys are gateways (bounded by the broker's users) or API users (bounded by the accounts store); the table is
still capped, dropping the least recently used key, so no input can grow it without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

MAX_KEYS: Final = 100_000

K = TypeVar("K")


@dataclass(slots=True)
class Bucket:
    tokens: float
    updated: float


class Budget(Generic[K]):
    """One token bucket per key: ``burst`` tokens at most, refilled at ``rate`` tokens per second."""

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[K, Bucket] = OrderedDict()

    def _bucket(self, key: K, now: float) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(self.burst, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        return bucket

    def take(self, key: K, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens when there are enough; False (nothing spent) otherwise."""
        if self.rate <= 0:
            return True  # 0 disables the limit
        bucket = self._bucket(key, now)
        if bucket.tokens < cost:
            return False
        bucket.tokens -= cost
        return True

    def available(self, key: K, now: float) -> int:
        """Whole tokens left now (unbounded → a large number)."""
        if self.rate <= 0:
            return MAX_KEYS
        return int(self._bucket(key, now).tokens)

    def retry_after(self, key: K, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are available again."""
        if self.rate <= 0:
            return 0.0
        missing = cost - self._bucket(key, now).tokens
        return max(0.0, missing / self.rate)
