"""What a stage worker tells the world about itself: its status for live views, its
periodic pressure report and per-partition gauges, stalls, and the dead-letter valve's
warnings.

Owns the shape of WorkerStatus / PartitionStatus and the once-a-second reporting round;
must not decide pauses or outcomes (it reads them) nor run on any thread but the poll
thread, except the status readers, which are safe from any thread.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from streams.errors import ProducerQueueFull
from streams.kafka.producer import RecordProducer
from streams.metrics import WorkerMetrics
from streams.policy.dlq_valve import DeadLetterValve, ValveState
from streams.policy.expiry import queue_age_s
from streams.policy.latency import LatencyWindow
from streams.policy.stall import StallDetector
from streams.runtime.buffers import PartitionBuffer
from streams.runtime.partition_view import PartitionView
from streams.runtime.pauses import PauseSet
from streams.runtime.pressure_feed import PressureSnapshot
from streams.runtime.pressure_reports import (
    PausedPartition,
    PressureReport,
    ToolHealth,
    publish_report,
)
from streams.types import Lane, PauseReason, TopicPartition

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    stage: str
    in_flight: int
    concurrency: int
    assigned: int
    paused_by_reason: dict[str, int]
    lag_by_lane: dict[Lane, int]
    age_by_lane: dict[Lane, float]
    last_pause_reason: str
    #: Handler calls past their timeout that are still running (threads that hang).
    stuck_handlers: int = 0
    #: Why dispatch holds new work, if it does: "producer" (queue full), "stuck_handlers" or
    #: "tool_unavailable" (a breaker the stage needs is open).
    holding: str | None = None


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    lane: Lane
    waiting: int
    in_flight: int  # taken for dispatch, not yet settled
    fill: int  # what the partition bound limits: waiting + running + decided
    bound: int
    paused_by: frozenset[PauseReason]


def partition_statuses(
    buffers: Mapping[TopicPartition, PartitionBuffer], pauses: PauseSet
) -> dict[TopicPartition, PartitionStatus]:
    return {
        tp: PartitionStatus(
            lane=buffer.lane,
            waiting=len(buffer.waiting),
            in_flight=buffer.in_flight,
            fill=buffer.fill,
            bound=buffer.bound,
            paused_by=pauses.reasons(tp),
        )
        for tp, buffer in list(buffers.items())
    }


def lag_by_lane(
    snapshot: PressureSnapshot | None, lane_of_topic: Mapping[str, Lane]
) -> dict[Lane, int]:
    lag: dict[Lane, int] = {}
    own = snapshot.own if snapshot is not None else None
    for part in own.partitions if own is not None else ():
        lane = lane_of_topic.get(part.tp.topic)
        if lane is not None:
            lag[lane] = lag.get(lane, 0) + part.lag
    return lag


def queue_ages(
    buffers: Mapping[TopicPartition, PartitionView],
    snapshot: PressureSnapshot | None,
    lane_of_topic: Mapping[str, Lane],
    now: float,
) -> dict[Lane, float]:
    """Oldest queued age per lane: the older of what waits in the worker's buffers and what
    waits unconsumed in Kafka (the lag's time estimate). A sample taken mid-rebalance may
    miss a partition."""
    ages: dict[Lane, float] = {}
    try:
        for buffer in list(buffers.values()):
            oldest = buffer.oldest_enqueued_ms()
            if oldest is not None:
                ages[buffer.lane] = max(ages.get(buffer.lane, 0.0), queue_age_s(oldest, now))
        own = snapshot.own if snapshot is not None else None
        for part in own.partitions if own is not None else ():
            lane = lane_of_topic.get(part.tp.topic)
            if lane is not None and part.lag > 0:
                ages[lane] = max(ages.get(lane, 0.0), part.oldest_age_s)
    except (RuntimeError, IndexError):
        pass  # the poll thread changed the buffers under us: the next sample sees them
    return ages


class Reporter:
    """The worker's once-a-second round: publish its pressure report, refresh partition
    gauges, flag stalled partitions, export downstream readings and the valve's state."""

    def __init__(
        self,
        *,
        stage: str,
        worker_id: str,
        pressure_topic: str,
        metrics: WorkerMetrics,
        stalls: StallDetector,
        pauses: PauseSet,
        latency: LatencyWindow,
        valve: DeadLetterValve,
        concurrency: int | None = None,
    ) -> None:
        self._stage = stage
        self._concurrency = concurrency
        self._worker_id = worker_id
        self._topic = pressure_topic
        self._metrics = metrics
        self._stalls = stalls
        self._pauses = pauses
        self._latency = latency
        self._valve = valve
        self._valve_state: ValveState = valve.state
        metrics.set_dead_letter_valve(self._valve_state, None)

    def report(
        self,
        producer: RecordProducer,
        buffers: Mapping[TopicPartition, PartitionView],
        snapshot: PressureSnapshot,
        *,
        in_flight: int,
        stage_paused: bool,
        now: float,
        now_mono: float,
        tools: tuple[ToolHealth, ...] = (),
    ) -> list[TopicPartition]:
        """One round; returns the partitions stalled now."""
        self._watch_valve()
        report = PressureReport(
            stage=self._stage,
            worker=self._worker_id,
            p95_latency_s=self._latency.p95(),
            in_flight=in_flight,
            reported_at=now,
            pressure_paused=stage_paused,
            concurrency=self._concurrency,
            paused=tuple(
                PausedPartition(tp.topic, tp.partition, tuple(sorted(reasons)))
                for tp in list(buffers)
                if (reasons := self._pauses.reasons(tp))
            ),
            tools=tools,
        )
        # A report is a sample: with the producer queue full, the next one goes out.
        with contextlib.suppress(ProducerQueueFull):
            publish_report(producer, self._topic, report)
        own = snapshot.own
        lag_by_tp = {p.tp: p for p in own.partitions} if own is not None else {}
        metrics = self._metrics
        stalled: list[TopicPartition] = []
        for tp, buffer in buffers.items():
            oldest = buffer.oldest_enqueued_ms()
            age = queue_age_s(oldest, now) if oldest is not None else 0.0
            lag = lag_by_tp.get(tp)
            metrics.set_partition_state(
                tp, buffer.lane, len(buffer.waiting), buffer.bound, age, lag.lag if lag else 0
            )
            if lag is not None and self._stalls.observe(
                tp,
                committed=lag.committed,
                lag=lag.lag,
                # A full local buffer is a symptom (a stuck handler), not a choice.
                paused_on_purpose=bool(self._pauses.reasons(tp) - {"local_bound"}),
                now_mono=now_mono,
            ):
                metrics.set_stalled(tp, True)
                stalled.append(tp)
                log.warning(
                    "partition %s stalled: lag %d, no commit progress for %.0f s",
                    tp, lag.lag, self._stalls.stall_after_s,
                )  # fmt: skip
            else:
                metrics.set_stalled(tp, False)
        for name, signal in snapshot.signals.items():
            if signal is not None:
                metrics.set_downstream(name, signal.lag, signal.oldest_age_s)
        return stalled

    def _watch_valve(self) -> None:
        """Say once when the dead-letter ratio enters or leaves the warning band (below the
        trip point, records keep going to the dead letters: someone should look)."""
        valve = self._valve
        state = valve.state
        if state != self._valve_state:
            if state == "warning":
                log.warning(
                    "stage %s: %s; records keep going to the dead-letter topic",
                    self._stage, valve.status().reason,
                )  # fmt: skip
            elif state == "ok":
                log.info("stage %s: dead-letter ratio back to normal", self._stage)
            self._valve_state = state
        self._metrics.set_dead_letter_valve(state, valve.ratio())
