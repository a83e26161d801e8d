"""Time lag: how old is a group's oldest unconsumed record, from end-offset history alone.

Owns the per-partition (end offset, wall time) history and the age estimate; must not read
offsets or clocks itself (callers pass both in), so it is pure and testable without sleeps.

The method is kafka-lag-exporter's: sample each partition's log-end offset over time, then
place the committed offset into that table. A sample ``(end, t)`` says "every offset below
``end`` existed at ``t``", so the record at offset ``c`` was appended after the last sample
with ``end <= c`` and no later than the first sample with ``end > c``. Between those two
samples we interpolate linearly (records are assumed to arrive at an even rate). Reading a
record's timestamp instead would need a consumer and a fetch per partition; this needs only
the two offset reads a lag monitor does anyway, and it works for groups with no live member.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EndOffsetSample:
    """The partition's log-end offset as observed at wall-clock time ``at``."""

    end_offset: int
    at: float


class EndOffsetHistory:
    """Bounded (end offset, wall time) samples of one partition, oldest first.

    ``record`` is called by one poller (the lag reader) at its own interval. A run of reads
    with an unchanged end offset keeps only its first and last sample: the first bounds
    when those records were appended, the last bounds when the next record was not yet
    there. That replaces periodic re-sampling and costs no extra memory.

    When ``max_samples`` is reached the history is thinned, not truncated: the interior
    sample whose removal widens an interpolation span least, relative to that span's age,
    is dropped. The first sample is never dropped, so a consumer stuck for hours keeps
    showing hours (with coarser interpolation), where a plain ring buffer would cap the
    age at its own time span.

    The age is exact to the sample spacing only while the history reaches back to the
    oldest unconsumed record. If it does not (the reader started after that record was
    appended), ``age_of`` returns ``now - first sample time``: a lower bound, which grows
    correctly from then on. A restarted monitor therefore under-reports old backlogs until
    its history covers them.
    """

    __slots__ = ("_max_samples", "_samples")

    def __init__(self, max_samples: int = 120) -> None:
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2 (first and newest), got {max_samples}")
        self._max_samples = max_samples
        self._samples: list[EndOffsetSample] = []

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def samples(self) -> tuple[EndOffsetSample, ...]:
        return tuple(self._samples)

    def record(self, end_offset: int, at: float) -> None:
        """Add one observation of the partition's log-end offset at wall time ``at``."""
        if end_offset < 0:
            raise ValueError(f"end_offset must be >= 0, got {end_offset}")
        if not math.isfinite(at):
            raise ValueError(f"sample time must be finite, got {at}")
        samples = self._samples
        if not samples:
            samples.append(EndOffsetSample(end_offset, at))
            return
        last = samples[-1]
        if at < last.at:
            # The wall clock stepped back (NTP): keep times ordered, wait for it to catch up.
            return
        if end_offset < last.end_offset:
            # The end offset never shrinks on a live partition: the topic was deleted and
            # recreated. The old history describes another log; start over.
            samples.clear()
            samples.append(EndOffsetSample(end_offset, at))
            return
        flat_run = (
            end_offset == last.end_offset
            and len(samples) >= 2
            and samples[-2].end_offset == end_offset
        )
        if flat_run:
            samples[-1] = EndOffsetSample(end_offset, at)  # move the run's last sample
            return
        samples.append(EndOffsetSample(end_offset, at))
        if len(samples) > self._max_samples:
            self._thin()

    def age_of(
        self,
        committed: int | None,
        end_offset: int,
        now: float,
        *,
        from_earliest: bool = True,
    ) -> float:
        """Seconds since the record at ``committed`` (the oldest unconsumed) was appended.

        ``committed`` None means the group has committed nothing: it starts at offset 0
        when ``from_earliest`` (auto.offset.reset=earliest), else at the end (no age).
        Returns 0.0 when nothing is unconsumed, never a negative value, and never more
        than ``now`` minus the first sample's time.
        """
        if committed is None:
            if not from_earliest:
                return 0.0
            committed = 0
        if committed >= end_offset:
            return 0.0
        previous: EndOffsetSample | None = None
        for sample in self._samples:
            if sample.end_offset > committed:
                return _age(now, _appended_at(committed, previous, sample))
            previous = sample
        # The record arrived after the newest sample: the caller's fresh reading is the
        # sample that bounds it.
        if previous is not None and now >= previous.at:
            return _age(now, _appended_at(committed, previous, EndOffsetSample(end_offset, now)))
        return 0.0

    def _thin(self) -> None:
        samples = self._samples
        newest = samples[-1].at

        # Merging i's neighbours widens one interpolation span; what matters is that span
        # relative to how old it is (an age of hours may be off by minutes, one of seconds
        # may not), so spacing ends up roughly geometric: fine near now, coarse far back.
        def cost(i: int) -> float:
            span = samples[i + 1].at - samples[i - 1].at
            return span / max(newest - samples[i - 1].at, 1e-9)

        del samples[min(range(1, len(samples) - 1), key=cost)]


def _appended_at(
    committed: int, previous: EndOffsetSample | None, first_after: EndOffsetSample
) -> float:
    """Estimated wall time at which offset ``committed`` was appended."""
    if previous is None:
        # History starts after the record existed: the first sample is all we know.
        return first_after.at
    span = first_after.end_offset - previous.end_offset
    # Offset c exists once the end offset reaches c + 1; with one record between the two
    # samples this gives first_after.at, the "appended no later than" bound itself.
    fraction = (committed + 1 - previous.end_offset) / span
    return previous.at + fraction * (first_after.at - previous.at)


def _age(now: float, appended_at: float) -> float:
    return max(0.0, now - appended_at)
