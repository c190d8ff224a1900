"""Latency histograms that many processes can fill and one can merge.

Buckets grow by 1% from 1 µs, so a percentile is exact to within 1% while a
run of millions of deliveries takes a few kilobytes; the maximum is kept
exactly.
"""

from __future__ import annotations

import math
from typing import Any

_BASE_MS = 0.001
_GROWTH = math.log(1.01)


class Histogram:
    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.max_ms = 0.0
        self.min_ms = math.inf

    def add(self, value_ms: float) -> None:
        value_ms = max(value_ms, _BASE_MS)
        bucket = int(math.log(value_ms / _BASE_MS) / _GROWTH)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.count += 1
        if value_ms > self.max_ms:
            self.max_ms = value_ms
        if value_ms < self.min_ms:
            self.min_ms = value_ms

    def merge(self, other: Histogram) -> Histogram:
        for bucket, count in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count
        self.count += other.count
        self.max_ms = max(self.max_ms, other.max_ms)
        self.min_ms = min(self.min_ms, other.min_ms)
        return self

    def percentile(self, fraction: float) -> float | None:
        if not self.count:
            return None
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                # The bucket's upper edge, never above the exact maximum.
                return min(_BASE_MS * math.exp((bucket + 1) * _GROWTH), self.max_ms)
        return self.max_ms

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "p50_ms": _round(self.percentile(0.50)),
            "p90_ms": _round(self.percentile(0.90)),
            "p99_ms": _round(self.percentile(0.99)),
            "max_ms": _round(self.max_ms if self.count else None),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "count": self.count, "max_ms": self.max_ms, "min_ms": self.min_ms}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Histogram:
        histogram = cls()
        histogram.counts = {int(k): v for k, v in raw["counts"].items()}
        histogram.count = raw["count"]
        histogram.max_ms = raw["max_ms"]
        histogram.min_ms = raw["min_ms"]
        return histogram


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentile_of(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of a small list (a few dozen broadcast events)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
