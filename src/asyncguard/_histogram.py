"""A sparse log-scale histogram of durations: bounded size, mergeable, good for p95.

Bucket ``i`` holds durations in ``(upper(i - 1), upper(i)]`` milliseconds with
``upper(i) = 0.01 * 2 ** (i / 4)``: each bucket is about 19 % wide, and 0.01 ms to 10 minutes
fit in about 105 buckets, so a site's histogram never grows with traffic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

_BASE_MS = 0.01
_STEPS_PER_DOUBLING = 4


def bucket(ms: float) -> int:
    """The index of the bucket that holds ``ms`` milliseconds."""
    if ms <= _BASE_MS:
        return 0
    # the small slack keeps a rounded bound (JSON) in its own bucket
    return math.ceil(math.log2(ms / _BASE_MS) * _STEPS_PER_DOUBLING - 1e-4)


def upper(index: int) -> float:
    """The upper bound of bucket ``index``, in milliseconds (rounded for JSON)."""
    return float(f"{_BASE_MS * 2 ** (index / _STEPS_PER_DOUBLING):.6g}")


class Histogram:
    """Counts per bucket; ``add`` is O(1), ``percentile`` O(buckets)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def add(self, ms: float, n: int = 1) -> None:
        index = bucket(ms)
        self.counts[index] = self.counts.get(index, 0) + n

    def merge_pairs(self, pairs: Iterable[Iterable[float]]) -> None:
        """Add a serialized histogram (``[[upper_ms, n], ...]``)."""
        for pair in pairs:
            upper_ms, n = pair
            self.add(float(upper_ms), int(n))

    def pairs(self) -> list[list[float]]:
        """``[[upper_ms, n], ...]`` in ascending order, the JSON form."""
        return [[upper(i), self.counts[i]] for i in sorted(self.counts)]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile(self, q: float, at_most: float | None = None) -> float | None:
        """The upper bound of the bucket holding the ``q``-quantile (0 < q <= 1), or ``None``;
        capped at ``at_most`` (the largest value seen: a bucket bound may lie above it)."""
        value = self._percentile(q)
        if value is None or at_most is None:
            return value
        return min(value, at_most)

    def _percentile(self, q: float) -> float | None:
        total = self.total
        if not total:
            return None
        rank = math.ceil(q * total)
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return upper(index)
        return upper(max(self.counts))  # pragma: no cover - rank <= total always stops above
