"""Consumer-group status in Burrow's model, judged from outside the group over a window of
(committed offset, log-end offset) samples per partition.

Owns the window of samples and the rules below; must not read offsets, clocks or reports
itself (the monitor passes the samples and whether any worker of the group is alive).

Rules for one partition, first match wins (Burrow's evaluator, adapted to what an outside
reader can see: Kafka's offset fetch says where a group is, not when it last committed, so
"no commits at all" is told apart from "commits that do not move" by whether a worker of
the stage still reports):

1. REWIND: the committed offset moved backwards between two samples (a reset or a replay).
2. OK: some sample in the window had no lag (the group caught up), or fewer than two
   samples exist to judge a trend while a worker lives (one look proves no stall).
3. STOP: lag, and the committed offset unchanged across the window (or never committed),
   and no worker of the stage is alive: nobody is consuming. One sample suffices: a
   monitor that has just started must not call a stage nobody consumes OK.
4. STALL: the same, with a live worker: it holds the partition and makes no progress
   (stuck, or paused on purpose: the monitor shows pause reasons beside the status).
5. WARN: the committed offset moves but the lag never fell and grew over the window.
6. OK otherwise.

A group's status is its worst partition's, or ERR when the stage's dead letters pass the
storm rate (a stage that fails everything "makes progress" by dead-lettering it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

GroupStatus = Literal["OK", "WARN", "REWIND", "STALL", "STOP", "ERR"]

#: Least to most severe; a group shows its most severe partition.
SEVERITY: tuple[GroupStatus, ...] = ("OK", "WARN", "REWIND", "STALL", "STOP", "ERR")

DEFAULT_WINDOW_S = 300.0
DEFAULT_MAX_SAMPLES = 64


@dataclass(frozen=True, slots=True)
class OffsetSample:
    """One reading of a partition: wall time, the group's committed offset (None: nothing
    committed yet, counted from offset 0) and the log-end offset."""

    at: float
    committed: int | None
    end_offset: int

    @property
    def lag(self) -> int:
        return max(0, self.end_offset - (self.committed or 0))


@dataclass(frozen=True, slots=True)
class Verdict:
    status: GroupStatus
    why: str


class PartitionWindow:
    """The samples of one partition from the last ``window_s`` seconds, at most
    ``max_samples`` of them: when full, every other interior sample goes, so the window
    keeps its span (oldest and newest) with coarser spacing. Not thread-safe."""

    __slots__ = ("_max_samples", "_samples", "_window_s")

    def __init__(
        self, window_s: float = DEFAULT_WINDOW_S, max_samples: int = DEFAULT_MAX_SAMPLES
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2 (oldest and newest), got {max_samples}")
        self._window_s = window_s
        self._max_samples = max_samples
        self._samples: list[OffsetSample] = []

    @property
    def samples(self) -> tuple[OffsetSample, ...]:
        return tuple(self._samples)

    def record(self, sample: OffsetSample) -> None:
        samples = self._samples
        if samples and sample.at < samples[-1].at:
            return  # the wall clock stepped back: keep the window ordered
        samples.append(sample)
        horizon = sample.at - self._window_s
        while len(samples) > 1 and samples[0].at < horizon:
            del samples[0]
        if len(samples) > self._max_samples:
            newest = samples[-1]
            del samples[1:-1:2]
            if samples[-1] is not newest:
                samples.append(newest)


def partition_status(samples: Sequence[OffsetSample], *, consumers_alive: bool) -> Verdict:
    """Judge one partition's window (oldest first) by the rules in the module docstring."""
    if not samples:
        return Verdict("OK", "no reading yet")
    rewind = _rewind(samples)
    if rewind is not None:
        return Verdict("REWIND", f"committed offset moved back from {rewind[0]} to {rewind[1]}")
    first, last = samples[0], samples[-1]
    if any(s.lag == 0 for s in samples):
        return Verdict("OK", "caught up within the window")
    unchanged = all(s.committed == first.committed for s in samples)
    if unchanged and not consumers_alive:
        never = first.committed is None
        since = "never committed" if never else f"committed {first.committed} unchanged"
        return Verdict("STOP", f"lag {last.lag}, {since}, no live worker")
    if len(samples) < 2:
        return Verdict("OK", "one reading: no trend yet")
    span = f"{last.at - first.at:.0f} s"
    if unchanged:
        return Verdict("STALL", f"lag {last.lag}, no commit progress for {span}")
    lags = [s.lag for s in samples]
    if last.lag > first.lag and all(b >= a for a, b in itertools.pairwise(lags)):
        return Verdict("WARN", f"lag growing {first.lag} -> {last.lag} over {span}")
    return Verdict("OK", "committing")


def group_status(
    partition_statuses: Iterable[GroupStatus],
    *,
    dead_letters_per_min: float,
    storm_per_min: float,
) -> GroupStatus:
    """The worst partition status, or ERR at or above ``storm_per_min`` dead letters."""
    if storm_per_min > 0 and dead_letters_per_min >= storm_per_min:
        return "ERR"
    return max(partition_statuses, key=SEVERITY.index, default="OK")


def _rewind(samples: Sequence[OffsetSample]) -> tuple[int, int] | None:
    previous: int | None = None
    for sample in samples:
        if sample.committed is None:
            continue
        if previous is not None and sample.committed < previous:
            return previous, sample.committed
        previous = sample.committed
    return None
