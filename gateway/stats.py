"""Process-wide counters and rates shown on the status page and in /metrics.

Counters are monotonic for the life of the process (Prometheus counters); the loss counters that must survive a
restart (``dropped_full``, ``expired``, ``dropped_at_meter``) live in the queue's ``counters`` table instead.
Errors are counted by kind (``frame_crc``, ``serial_io``, ``mqtt_puback``, ...) — see docs/gateway.md.
"""

from __future__ import annotations

import threading
import time
from collections import Counter


class Rate:
    """Events per second averaged over the last ``window`` seconds, from one-second buckets."""

    __slots__ = ("_buckets", "_window")

    def __init__(self, window: int = 60) -> None:
        self._window = window
        self._buckets: dict[int, int] = {}

    def add(self, n: int, now: float) -> None:
        sec = int(now)
        self._buckets[sec] = self._buckets.get(sec, 0) + n
        if len(self._buckets) > self._window + 2:
            cutoff = sec - self._window
            for k in [k for k in self._buckets if k < cutoff]:
                del self._buckets[k]

    def per_second(self, now: float) -> float:
        sec = int(now)
        total = sum(v for k, v in self._buckets.items() if sec - self._window <= k < sec)
        return total / self._window


class Stats:
    """Thread-safe counters, error counts by kind and in/out rates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.counters: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._rates = {"in": Rate(), "out": Rate()}

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n
            if name == "readings_committed":
                self._rates["in"].add(n, time.time())
            elif name == "readings_published":
                self._rates["out"].add(n, time.time())

    def error(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.errors[kind] += n

    def snapshot(self) -> dict[str, object]:
        now = time.time()
        with self._lock:
            return {
                "counters": dict(self.counters),
                "errors": dict(self.errors),
                "rate_in": round(self._rates["in"].per_second(now), 3),
                "rate_out": round(self._rates["out"].per_second(now), 3),
                "uptime_s": round(now - self.started, 1),
            }
