"""A stage's drain rate: records its consumer group commits per second while it has work,
estimated from successive lag readings; and the wait its queue means for a record that
arrives now (Little's law: queued records ÷ drain rate).

Owns the estimate; must not read Kafka (the pressure feed passes each reading's committed
offsets). Pure, so fake-clock tests drive it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)  # a partition


@dataclass(slots=True)
class DrainRate(Generic[K]):
    """Exponentially weighted records/s over intervals in which the stage had work.

    An interval that began with no lag says how fast work arrived, not how fast the stage
    can drain it, so it is left out. Offsets are compared per partition, over the
    partitions both readings have: a partition added, removed or reset (its committed
    offset went back) contributes nothing to that interval instead of a bogus jump.
    """

    half_life_s: float = 5.0
    _last: Mapping[K, int] | None = None
    _last_at: float = 0.0
    _last_lag: int = 0
    _rate: float | None = None

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0, got {self.half_life_s}")

    @property
    def per_s(self) -> float | None:
        """The estimate; None until an interval with work has been seen."""
        return self._rate

    def observe(self, committed: Mapping[K, int], lag: int, at: float) -> float | None:
        """One reading: committed offset per partition, total lag, wall-clock seconds."""
        last, last_at, last_lag = self._last, self._last_at, self._last_lag
        self._last, self._last_at, self._last_lag = dict(committed), at, lag
        elapsed = at - last_at
        if last is None or elapsed <= 0 or last_lag <= 0:
            return self._rate
        moved = sum(
            offset - last[tp]
            for tp, offset in committed.items()
            if tp in last and offset >= last[tp]
        )
        sample = moved / elapsed
        if self._rate is None:
            self._rate = sample
        else:
            weight = 1.0 - 0.5 ** (elapsed / self.half_life_s)
            self._rate += weight * (sample - self._rate)
        return self._rate


def expected_wait_s(lag: int, drain_per_s: float | None) -> float | None:
    """Seconds a record arriving now waits behind `lag` records at the drain rate; None
    when the rate is unknown or zero (a stage that does not drain: no estimate)."""
    if drain_per_s is None or drain_per_s <= 0:
        return None
    return max(0, lag) / drain_per_s
