"""Stall detection from progress, not from the process being up (Burrow's STALL): a
partition that is assigned, not paused on purpose, has lag, and whose committed offset has
not moved for `stall_after_s` is stalled. Pure; times are injected.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.types import TopicPartition


@dataclass(slots=True)
class _Progress:
    committed: int | None
    since: float


class StallDetector:
    def __init__(self, stall_after_s: float = 30.0) -> None:
        if stall_after_s <= 0:
            raise ValueError("stall_after_s must be positive")
        self.stall_after_s = stall_after_s
        self._progress: dict[TopicPartition, _Progress] = {}

    def observe(
        self,
        tp: TopicPartition,
        *,
        committed: int | None,
        lag: int,
        paused_on_purpose: bool,
        now_mono: float,
    ) -> bool:
        """Record one reading; return whether the partition is stalled now."""
        seen = self._progress.get(tp)
        if seen is None or seen.committed != committed or lag == 0 or paused_on_purpose:
            # Progress, nothing to do, or a deliberate pause: the clock starts again.
            self._progress[tp] = _Progress(committed, now_mono)
            return False
        return now_mono - seen.since >= self.stall_after_s

    def forget(self, tp: TopicPartition) -> None:
        self._progress.pop(tp, None)
