"""Which of a worker's partitions should be paused, and why, on every turn of its loop.

Owns the three reasons a stage stops fetching: a partition's local bound (with
hysteresis), pressure from downstream (or, for a background stage, from the foreground
stages it yields to), and lane priority. Marks reasons on the worker's PauseSet; the
worker applies that set to the consumer. No Kafka, no clock: callers pass readings and
times in, so every decision here is a function of its inputs. What it tells the log goes
through PauseLog (streams.runtime.pause_log): each change once, partitions aggregated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from streams.policy.downstream import DownstreamLimits, DownstreamPressure, PressureSignal
from streams.policy.lanes import lanes_to_pause
from streams.policy.local_bound import PartitionBound
from streams.runtime.partition_view import PartitionView
from streams.runtime.pause_log import PauseLog
from streams.runtime.pauses import PauseSet
from streams.runtime.pressure_feed import PressureSnapshot
from streams.topology import Stage, Topology
from streams.types import Lane, PauseReason, TopicPartition


class PauseControl:
    """Pause decisions for one stage's worker.

    ``stage_reason`` is the stage-wide reason this worker pauses for: ``downstream``, or
    ``yield_to_foreground`` for a background stage. ``stage_paused`` and ``last_reason``
    describe the latest stage-wide verdict (for reports and status); ``log`` says each
    change once (see streams.runtime.pause_log for the lines and their levels).
    """

    def __init__(
        self,
        topology: Topology,
        stage: Stage,
        pauses: PauseSet,
        *,
        log_summary_every_s: float = 60.0,
    ) -> None:
        self._topology = topology
        self._stage = stage
        self._pauses = pauses
        self._pressure = DownstreamPressure(_limits(stage))
        self._bounds: dict[TopicPartition, PartitionBound] = {}
        self.stage_reason: PauseReason = "yield_to_foreground" if stage.background else "downstream"
        # Until the first verdict, a stage with something to watch is paused: partitions
        # assigned in the worker's first poll would otherwise fetch before any reading
        # (missing readings fail safe to paused anyway).
        self.stage_paused = bool(stage.yields_to if stage.background else stage.downstream)
        self.last_reason = ""
        self.log = PauseLog(stage.name, self.stage_reason, summary_every_s=log_summary_every_s)

    def assign(self, tp: TopicPartition) -> None:
        self._bounds[tp] = PartitionBound(
            self._stage.partition_buffer, self._stage.partition_resume
        )
        # A stage-wide pause applies to new partitions at once, before any fetch.
        self._pauses.mark(tp, self.stage_reason, self.stage_paused)

    def forget(self, tp: TopicPartition) -> None:
        self._bounds.pop(tp, None)
        self.log.forget(tp)

    def update(
        self,
        buffers: Mapping[TopicPartition, PartitionView],
        in_flight: int,
        snapshot: PressureSnapshot,
        sent_by_stage: Mapping[str, int],
        now: float,
        now_mono: float,
    ) -> None:
        """Mark every reason for every assigned partition from the current readings."""
        stage, pauses, pause_log = self._stage, self._pauses, self.log
        for tp, buffer in buffers.items():
            bound = self._bounds[tp]
            was = "local_bound" in pauses.reasons(tp)
            fill = buffer.fill
            now_bound = bound.should_pause(fill, was)
            if now_bound != was:
                pauses.mark(tp, "local_bound", now_bound)
                mark = bound.high_water if now_bound else bound.low_water
                detail = f"fill {fill} {'>=' if now_bound else '<='} {mark}"
                pause_log.partition(tp, "local_bound", now_bound, detail, now_mono)
        signals = with_sent_since(snapshot, sent_by_stage)
        verdict = self._pressure.evaluate(signals, now, now_mono)
        self.stage_paused = verdict.paused
        # The urgent lane keeps flowing past the pause thresholds, up to a downstream
        # stage's hard bounds (its max_lag and max_queue_age_s): lower lanes yield first,
        # and downstream serves urgent first, so urgent work is not held behind a pause
        # meant for the bulk (pausing every lane starves the one that matters).
        hard_bound = self._hard_bound(signals, now) if verdict.paused else None
        urgent_paused = verdict.paused and (stage.background or hard_bound is not None)
        backlog: dict[Lane, int] = {}
        for buffer in buffers.values():
            backlog[buffer.lane] = backlog.get(buffer.lane, 0) + len(buffer.waiting)
        paused_lanes = lanes_to_pause(backlog, in_flight >= stage.concurrency, stage.lanes)
        has_urgent = False
        for tp, buffer in buffers.items():
            if buffer.lane == "urgent":
                has_urgent = True
                paused = urgent_paused
            else:
                paused = verdict.paused
            pauses.mark(tp, self.stage_reason, paused)
            lane_paused = buffer.lane in paused_lanes
            if lane_paused != ("lane" in pauses.reasons(tp)):
                pauses.mark(tp, "lane", lane_paused)
                detail = (
                    f"a higher lane has backlog, {in_flight} in flight"
                    if lane_paused
                    else "no higher lane waits at the concurrency cap"
                )
                pause_log.partition(tp, "lane", lane_paused, detail, now_mono)
        self.last_reason = ",".join(verdict.reasons) if verdict.paused else ""
        pause_log.stage_verdict(verdict.paused, verdict.reasons, signals, now, now_mono)
        if not stage.background and has_urgent:
            pause_log.urgent_lane(urgent_paused, hard_bound)
        pause_log.tick(now_mono)

    def _hard_bound(self, signals: Mapping[str, PressureSignal | None], now: float) -> str | None:
        """Why a downstream stage is at its own bounds, or cannot be read (fail safe);
        None if none is."""
        stale_after = self._stage.pressure.stale_after_s
        for name, signal in signals.items():
            if signal is None:
                return f"{name} has no reading"
            if now - signal.measured_at > stale_after:
                return f"{name} reading is {now - signal.measured_at:.0f} s old"
            downstream = self._topology.stages[name]
            if signal.lag >= downstream.max_lag:
                return f"{name} lag {signal.lag} >= its max_lag {downstream.max_lag}"
            if signal.oldest_age_s >= downstream.max_queue_age_s:
                return (
                    f"{name} oldest age {signal.oldest_age_s:.0f} s >= its max_queue_age_s "
                    f"{downstream.max_queue_age_s:g}"
                )
        return None


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
