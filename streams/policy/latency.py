"""Rolling window of handler latencies and their quantiles.

Owns a bounded sample buffer; must not time anything itself (callers pass durations).
"""

from __future__ import annotations

import math
from collections import deque


class LatencyWindow:
    """The last ``max_samples`` latencies in seconds; older samples fall out.

    Quantiles use the nearest-rank method, so they are always an observed latency.
    Sorting on each query costs O(n log n) with n <= max_samples; callers query a few
    times per second at most, which keeps this cheaper than a streaming sketch's error.
    """

    __slots__ = ("_samples",)

    def __init__(self, max_samples: int = 1024) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self._samples: deque[float] = deque(maxlen=max_samples)

    @property
    def max_samples(self) -> int:
        maxlen = self._samples.maxlen
        assert maxlen is not None
        return maxlen

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, seconds: float) -> None:
        if not seconds >= 0 or math.isinf(seconds):
            raise ValueError(f"latency must be a finite number >= 0, got {seconds}")
        self._samples.append(seconds)

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0 <= q <= 1) of the window, or None when it is empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be within [0, 1], got {q}")
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        rank = max(1, math.ceil(q * len(ordered)))
        return ordered[rank - 1]

    def p95(self) -> float | None:
        return self.quantile(0.95)

    def clear(self) -> None:
        self._samples.clear()
