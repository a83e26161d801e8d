"""Adaptive concurrency for one tool: AIMD on latency and errors (Netflix concurrency-limits'
AIMDLimit, with a drop also meaning "latency over tolerance * the baseline latency").

Owns the limit and its baseline; must not read a clock or count calls in flight (callers
pass each call's latency, whether it failed, and how many were in flight). Not thread-safe.

    a failed or timed-out call, or one slower than latency_tolerance * baseline:
        limit * backoff_ratio (multiplicative decrease), never below min_limit
    any other call, while at least half the limit is in use:
        limit + 1 (additive increase), never above max_limit

The baseline is the least latency seen at low concurrency: every `remeasure_every` calls
the limit drops to min_limit for `baseline_samples` calls and their least latency becomes
the baseline (Envoy's gradient controller re-measures its minimum the same way). Measured
at the operating point instead, queueing would creep into the baseline and the limit with
it; never re-measured, a tool that turns slower for every call would pin the limit at its
minimum for good.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AdaptiveConfig:
    """Netflix AIMD's numbers: start 20, max 200, * 0.9 on a drop."""

    min_limit: int = 1
    max_limit: int = 200
    initial_limit: int = 20
    backoff_ratio: float = 0.9
    latency_tolerance: float = 2.0
    remeasure_every: int = 1000
    baseline_samples: int = 20

    def __post_init__(self) -> None:
        if not 1 <= self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError(
                "need 1 <= min_limit <= initial_limit <= max_limit, got "
                f"{self.min_limit}, {self.initial_limit}, {self.max_limit}"
            )
        if not 0 < self.backoff_ratio < 1:
            raise ValueError(f"backoff_ratio must be in (0, 1), got {self.backoff_ratio}")
        if not self.latency_tolerance > 1:
            raise ValueError(f"latency_tolerance must be above 1, got {self.latency_tolerance}")
        if not 1 <= self.baseline_samples <= self.remeasure_every:
            raise ValueError("need 1 <= baseline_samples <= remeasure_every")


class AdaptiveLimit:
    __slots__ = (
        "_baseline",
        "_measure_left",
        "_measured_min",
        "_resume_value",
        "_since_measure",
        "_value",
        "config",
    )

    def __init__(self, config: AdaptiveConfig) -> None:
        self.config = config
        self._value = float(config.initial_limit)
        self._baseline = math.inf  # until the first measurement: the least latency seen
        self._since_measure = 0
        self._measure_left = 0
        self._measured_min = math.inf
        self._resume_value = self._value

    @property
    def limit(self) -> int:
        return int(self._value)

    @property
    def measuring(self) -> bool:
        """Whether the limit is down at min_limit to re-measure the baseline."""
        return self._measure_left > 0

    def baseline_s(self) -> float | None:
        return None if math.isinf(self._baseline) else self._baseline

    def record(self, latency_s: float, *, failed: bool, in_flight: int) -> None:
        config = self.config
        usable = latency_s >= 0 and math.isfinite(latency_s)
        if self._measure_left:
            if failed:
                self._resume_value = max(
                    config.min_limit, self._resume_value * config.backoff_ratio
                )
            # Calls started before the drop still carry the old queueing: not a baseline.
            if usable and in_flight <= config.min_limit:
                self._measured_min = min(self._measured_min, latency_s)
                self._measure_left -= 1
                if not self._measure_left:
                    self._baseline = self._measured_min
                    self._value = self._resume_value
            return
        if usable:
            self._baseline = min(self._baseline, latency_s)
        slow = usable and latency_s > self._baseline * config.latency_tolerance
        if failed or slow:
            self._value = max(float(config.min_limit), self._value * config.backoff_ratio)
        elif in_flight * 2 >= self._value:
            self._value = min(float(config.max_limit), self._value + 1.0)
        self._since_measure += 1
        if self._since_measure >= config.remeasure_every:
            self._since_measure = 0
            self._resume_value = self._value
            self._measured_min = math.inf
            self._measure_left = config.baseline_samples
            self._value = float(config.min_limit)
