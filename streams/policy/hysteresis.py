"""Pause/resume hysteresis with a minimum dwell time: one signal in, a paused flag out.

Owns the no-flapping rule; must not read a clock (callers pass monotonic time) or act.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Pause at ``pause_at`` or above; resume below ``resume_below`` once paused at least
    ``min_dwell_s`` seconds (pausing drops librdkafka's prefetch, arroyo #340)."""

    pause_at: float
    resume_below: float
    min_dwell_s: float = 1.0

    def __post_init__(self) -> None:
        if math.isnan(self.pause_at) or math.isnan(self.resume_below):
            raise ValueError("pause_at and resume_below must be numbers, not NaN")
        if not self.resume_below < self.pause_at:
            raise ValueError(
                f"resume_below ({self.resume_below}) must be lower than pause_at "
                f"({self.pause_at}), or the gate would flap"
            )
        if not self.min_dwell_s >= 0:
            raise ValueError(f"min_dwell_s must be >= 0, got {self.min_dwell_s}")


class HysteresisGate:
    """Turns a stream of readings into a paused flag that cannot flap.

    Rules, applied on each ``update``:
      * ``value >= pause_at``                      -> pause, at once
      * paused and ``value < resume_below``        -> resume, once paused ``min_dwell_s``
      * values in ``[resume_below, pause_at)``     -> keep the current state
      * ``None`` or NaN (no reading this round)    -> keep the current state; deciding
        what a *missing* signal means is the caller's job (see downstream.py)
    Pausing never waits: the pause threshold protects a bound (a downstream stage's lag,
    a buffer), and a late pause breaks it. Resuming waits for the dwell, so every resume
    comes at least ``min_dwell_s`` after its pause and there is at most one pause/resume
    cycle per ``min_dwell_s`` (pausing drops librdkafka's prefetch, arroyo #340).
    """

    __slots__ = ("_changed_at", "_paused", "pause_events", "resume_events", "thresholds")

    def __init__(self, thresholds: Thresholds, *, paused: bool = False) -> None:
        self.thresholds = thresholds
        self._paused = paused
        self._changed_at: float | None = None
        self.pause_events = 0
        self.resume_events = 0

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def changed_at(self) -> float | None:
        """Monotonic time of the last transition, None before the first."""
        return self._changed_at

    def update(self, value: float | None, now_mono: float) -> bool:
        """Feed one reading taken at ``now_mono``; returns whether to be paused."""
        if value is None or math.isnan(value):
            return self._paused
        t = self.thresholds
        if self._paused:
            wants_change = value < t.resume_below and self._dwell_elapsed(now_mono)
        else:
            wants_change = value >= t.pause_at
        if wants_change:
            self._paused = not self._paused
            self._changed_at = now_mono
            if self._paused:
                self.pause_events += 1
            else:
                self.resume_events += 1
        return self._paused

    def _dwell_elapsed(self, now_mono: float) -> bool:
        if self._changed_at is None:
            return True
        return now_mono - self._changed_at >= self.thresholds.min_dwell_s
