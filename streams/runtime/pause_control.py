"""Which of a worker's partitions should be paused, and why, on every turn of its loop.

Owns the three reasons a stage stops fetching: a partition's local bound (with
hysteresis), pressure from downstream (or, for a background stage, from the foreground
stages it yields to), and lane priority. Marks reasons on the worker's PauseSet; the
worker applies that set to the consumer. No Kafka, no clock: callers pass readings and
times in, so every decision here is a function of its inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from streams.policy.downstream import DownstreamLimits, DownstreamPressure, PressureSignal
from streams.policy.lanes import lanes_to_pause
from streams.policy.local_bound import PartitionBound
from streams.runtime.buffers import PartitionBuffer
from streams.runtime.pauses import PauseSet
from streams.runtime.pressure_feed import PressureSnapshot
from streams.topology import Stage, Topology
from streams.types import Lane, PauseReason, TopicPartition

log = logging.getLogger(__name__)


class PauseControl:
    """Pause decisions for one stage's worker.

    ``stage_reason`` is the stage-wide reason this worker pauses for: ``downstream``, or
    ``yield_to_foreground`` for a background stage. ``stage_paused`` and ``last_reason``
    describe the latest stage-wide verdict (for reports and status).
    """

    def __init__(self, topology: Topology, stage: Stage, pauses: PauseSet) -> None:
        self._topology = topology
        self._stage = stage
        self._pauses = pauses
        self._pressure = DownstreamPressure(_limits(stage))
        self._bounds: dict[TopicPartition, PartitionBound] = {}
        self.stage_reason: PauseReason = "yield_to_foreground" if stage.background else "downstream"
        self.stage_paused = False
        self.last_reason = ""

    def assign(self, tp: TopicPartition) -> None:
        self._bounds[tp] = PartitionBound(
            self._stage.partition_buffer, self._stage.partition_resume
        )
        # A stage-wide pause applies to new partitions at once, before any fetch.
        self._pauses.mark(tp, self.stage_reason, self.stage_paused)

    def forget(self, tp: TopicPartition) -> None:
        self._bounds.pop(tp, None)

    def update(
        self,
        buffers: Mapping[TopicPartition, PartitionBuffer],
        in_flight: int,
        snapshot: PressureSnapshot,
        sent_by_stage: Mapping[str, int],
        now: float,
        now_mono: float,
    ) -> None:
        """Mark every reason for every assigned partition from the current readings."""
        stage, pauses = self._stage, self._pauses
        for tp, buffer in buffers.items():
            paused = "local_bound" in pauses.reasons(tp)
            pauses.mark(tp, "local_bound", self._bounds[tp].should_pause(buffer.fill, paused))
        signals = with_sent_since(snapshot, sent_by_stage)
        verdict = self._pressure.evaluate(signals, now, now_mono)
        self.stage_paused = verdict.paused
        # The urgent lane keeps flowing past the pause thresholds, up to a downstream
        # stage's hard bounds (its max_lag and max_queue_age_s): lower lanes yield first,
        # and downstream serves urgent first, so urgent work is not held behind a pause
        # meant for the bulk (pausing every lane starves the one that matters).
        urgent_paused = verdict.paused and (stage.background or self._at_hard_bound(signals, now))
        backlog: dict[Lane, int] = {}
        for buffer in buffers.values():
            backlog[buffer.lane] = backlog.get(buffer.lane, 0) + len(buffer.waiting)
        paused_lanes = lanes_to_pause(backlog, in_flight >= stage.concurrency, stage.lanes)
        for tp, buffer in buffers.items():
            paused = urgent_paused if buffer.lane == "urgent" else verdict.paused
            pauses.mark(tp, self.stage_reason, paused)
            pauses.mark(tp, "lane", buffer.lane in paused_lanes)
        reason = ",".join(verdict.reasons)
        if verdict.paused and reason and reason != self.last_reason:
            self.last_reason = reason
            log.info("stage %s paused by pressure: %s", stage.name, reason)
        elif not verdict.paused:
            self.last_reason = ""

    def _at_hard_bound(self, signals: Mapping[str, PressureSignal | None], now: float) -> bool:
        """Whether a downstream stage is at its own bounds, or cannot be read (fail safe)."""
        stale_after = self._stage.pressure.stale_after_s
        for name, signal in signals.items():
            if signal is None or now - signal.measured_at > stale_after:
                return True
            downstream = self._topology.stages[name]
            if (
                signal.lag >= downstream.max_lag
                or signal.oldest_age_s >= downstream.max_queue_age_s
            ):
                return True
        return False


def with_sent_since(
    snapshot: PressureSnapshot, sent_by_stage: Mapping[str, int]
) -> dict[str, PressureSignal | None]:
    """Readings plus what this worker sent each stage since the reading began."""
    return {
        name: signal
        if signal is None
        else replace(
            signal,
            lag=signal.lag + sent_by_stage.get(name, 0) - snapshot.sent_marks.get(name, 0),
        )
        for name, signal in snapshot.signals.items()
    }


def _limits(stage: Stage) -> DownstreamLimits:
    p = stage.pressure
    return DownstreamLimits(
        pause_lag=p.lag.pause,
        resume_lag=p.lag.resume,
        pause_age_s=p.oldest_age_s.pause,
        resume_age_s=p.oldest_age_s.resume,
        pause_p95_s=p.p95_latency_s.pause if p.p95_latency_s else None,
        resume_p95_s=p.p95_latency_s.resume if p.p95_latency_s else None,
        min_dwell_s=p.min_dwell_s,
        stale_after_s=p.stale_after_s,
        on_stale=p.on_stale,
    )
