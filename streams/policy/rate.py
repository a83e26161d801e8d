"""Rate of a growing counter (e.g. a consumer group's summed committed offsets), smoothed.

Owns the smoothing and the restart on a counter reset; must not read a clock or a counter
itself: callers pass both, sampled whenever they happen to look.
"""

from __future__ import annotations

import math

#: Shorter intervals join the next one; clocks do not resolve less in any useful way.
MIN_INTERVAL_S = 1e-6


class RateEstimator:
    """Exponentially weighted rate, per second, of a counter sampled at irregular times.

    Each interval between two observations yields one rate, ``Δcount / Δt``; it is blended
    into the estimate with weight ``1 - 2 ** (-Δt / half_life_s)``, so an interval's
    influence depends on how long it lasted, not on how often the caller looked (a burst
    of quick samples does not swamp the history, and one long gap counts as much as the
    same span sampled finely).

    * ``rate_per_s()`` is None until two observations span more than 0 seconds.
    * An observation less than ``MIN_INTERVAL_S`` after the last one (or before it) is
      ignored: the counter is cumulative, so the next interval still sees that growth,
      and a rate over almost no time is noise (or infinite).
    * A counter lower than the last one (the group was reset or recreated) restarts the
      estimate from that observation: a rate across a reset means nothing.
    """

    __slots__ = ("_last_count", "_last_mono", "_rate", "half_life_s")

    def __init__(self, half_life_s: float = 10.0) -> None:
        if not (half_life_s > 0 and math.isfinite(half_life_s)):
            raise ValueError(f"half_life_s must be a positive number, got {half_life_s}")
        self.half_life_s = half_life_s
        self._last_count: int | None = None
        self._last_mono = 0.0
        self._rate: float | None = None

    def observe(self, count_total: int, now_mono: float) -> None:
        """Record the counter's value ``count_total`` as read at monotonic ``now_mono``."""
        if not math.isfinite(now_mono):
            raise ValueError(f"now_mono must be a finite number, got {now_mono}")
        if self._last_count is None or count_total < self._last_count:
            self._restart(count_total, now_mono)
            return
        elapsed = now_mono - self._last_mono
        if not elapsed >= MIN_INTERVAL_S:
            return
        interval_rate = (count_total - self._last_count) / elapsed
        if self._rate is None:
            self._rate = interval_rate
        else:
            weight = 1.0 - 2.0 ** (-elapsed / self.half_life_s)
            self._rate += weight * (interval_rate - self._rate)
        self._last_count = count_total
        self._last_mono = now_mono

    def rate_per_s(self) -> float | None:
        """Smoothed counts per second, or None before two observations span any time."""
        return self._rate

    def reset(self) -> None:
        """Forget everything, e.g. when the counter's meaning changes (new group)."""
        self._last_count = None
        self._last_mono = 0.0
        self._rate = None

    def _restart(self, count_total: int, now_mono: float) -> None:
        self._last_count = count_total
        self._last_mono = now_mono
        self._rate = None
