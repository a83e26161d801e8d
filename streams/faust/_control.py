"""The control loop of a governed faust stage: reads pressure (streams' PressureFeed, on a
thread of its own), takes the pause verdict (streams' PauseControl: the same thresholds,
hysteresis and urgent-lane rule as a stage worker), applies it to faust's consumer, and
publishes the stage's pressure report and gauges (streams' Reporter).

Owns the stage's desired-pause set and what was last applied to faust's consumer; must not
run user code or block the event loop (Kafka round trips happen on the feed's thread, and
opening and closing on a worker thread).

Faust keeps its own active-partition set and changes it behind our back: a rebalance keeps
or drops pauses, and a partition whose stream buffer drains is made active again even if
it was paused (faust's Consumer.on_buffer_drop). So the wanted pauses are re-applied on
every round and after every record, and only partitions this loop paused are resumed by
it: faust's own buffer-full pauses stay faust's.

Faust's pause alone drops records: Consumer.getmany checks each record of a fetched batch
against the live active set while it hands the batch over, and drops those of a partition
paused meanwhile, after the fetch position passed them; faust then commits past the gap
(faust-streaming #88 was the same drop for a buffer-full partition; its fix, PR #89, hands
on the records of Consumer._buffered_partitions). Seeking back on resume, the earlier fix,
missed a partition whose first record the gate still held (nothing to seek back to; seen:
982 to 1000 records of a batch of 1000 lost to the pause before the first downstream
reading) and could race a batch still being handed over. So a partition this loop pauses
is also marked buffered in faust's consumer: faust stops fetching it and hands on what it
already fetched, which the gate holds until the resume (GovernedStage._hold). Nothing is
dropped, so nothing is sought back or read twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from faust.types import TP
from faust.types.transports import ConsumerT
from prometheus_client import CollectorRegistry

from streams.clock import Clock
from streams.errors import StreamsError
from streams.faust._options import FaustOptions
from streams.faust._partitions import FaustPartition
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.lag_reader import LagReader
from streams.kafka.producer import RecordProducer
from streams.kafka.tail import TopicTail
from streams.metrics import WorkerMetrics, serve_metrics
from streams.policy.dlq_valve import DeadLetterValve
from streams.policy.latency import LatencyWindow
from streams.policy.stall import StallDetector
from streams.runtime.pause_control import PauseControl
from streams.runtime.pauses import PauseSet
from streams.runtime.pressure_feed import PressureFeed, PressureSnapshot, Watched
from streams.runtime.pressure_reports import ReportBoard
from streams.runtime.worker_report import Reporter
from streams.topology import Stage, Topology
from streams.types import TopicPartition

log = logging.getLogger(__name__)


class FaustControl:
    """Call ``open()`` (blocking: on a worker thread) once, ``round()`` every
    control_interval_s and ``apply()`` whenever faust may have changed its active set,
    all but open and close on the event loop; ``close()`` at the end."""

    def __init__(
        self,
        topology: Topology,
        stage: Stage,
        *,
        worker_id: str,
        client: ClientConfig,
        options: FaustOptions,
        clock: Clock,
        registry: CollectorRegistry,
        consumer: Callable[[], ConsumerT],
        sent_by_stage: Mapping[str, int],
        concurrency: Callable[[], int],
        buffer_bound: int,
    ) -> None:
        self._topology = topology
        self._stage = stage
        self._client = client
        self._options = options
        self._clock = clock
        self._registry = registry
        self._consumer = consumer
        self._sent_by_stage = sent_by_stage
        self._concurrency = concurrency
        self._buffer_bound = buffer_bound
        self.metrics = WorkerMetrics(registry, stage=stage.name, workflow=topology.workflow)
        self.latency = LatencyWindow()
        self.pauses = PauseSet()
        self.partitions: dict[TopicPartition, FaustPartition] = {}
        self.in_flight = 0
        self._pause_control = PauseControl(topology, stage, self.pauses)
        self._stalls = StallDetector(options.stall_after_s)
        self._reporter = Reporter(
            stage=stage.name,
            worker_id=worker_id,
            pressure_topic=topology.pressure_topic,
            metrics=self.metrics,
            stalls=self._stalls,
            pauses=self.pauses,
            latency=self.latency,
            # Refusals here are policy (expiry) or bad bytes; the valve only shows its state.
            valve=DeadLetterValve(stage.dead_letter_limit),
        )
        self._applied: set[TopicPartition] = set()
        self._feed: PressureFeed | None = None
        self._producer: RecordProducer | None = None
        self._next_report = 0.0
        self.metrics_port: int | None = None

    # ----------------------------------------------------------------- lifecycle
    def open(self) -> None:
        stage, topology, client = self._stage, self._topology, self._client
        self._producer = RecordProducer(client)
        names = stage.yields_to if stage.background else stage.downstream
        watched = [
            Watched(
                name,
                topology.stages[name].consumer_group,
                topology.stages[name].input_topics,
                review=topology.stages[name].review is not None,
            )
            for name in names
        ]
        pressure_partitions = topology.all_topics()[topology.pressure_topic].partitions
        self._feed = PressureFeed(
            LagReader(Admin(client, timeout_s=5.0), self._clock),
            self._clock,
            watched,
            Watched(stage.name, stage.consumer_group, stage.input_topics),
            ReportBoard(TopicTail(client, topology.pressure_topic, pressure_partitions)),
            refresh_s=self._options.pressure_refresh_s,
            report_fresh_s=stage.pressure.stale_after_s,
            sent_by_stage=self._sent_by_stage,
        )
        self._feed.start()
        if self._options.metrics_port is not None:
            self.metrics_port = serve_metrics(
                self._registry, self._options.metrics_port, addr=self._options.metrics_host
            )
        log.info("faust stage %s governed by streams (%s)", stage.name, ", ".join(names) or "-")

    def close(self) -> None:
        if self._feed is not None:
            self._feed.stop()
        if self._producer is not None:
            self._producer.flush(5.0)

    # ----------------------------------------------------------------- partitions
    def assigned(self, assignment: set[TopicPartition]) -> None:
        """Faust's full assignment after a rebalance: ours are the stage's input topics."""
        lanes = self._stage.input_topics_by_lane
        lane_of_topic = {topic: lane for lane, topic in lanes.items()}
        ours = {tp for tp in assignment if tp.topic in lane_of_topic}
        self.revoked(set(self.partitions) - ours)
        for tp in ours - set(self.partitions):
            self.partitions[tp] = FaustPartition(lane_of_topic[tp.topic], self._buffer_bound)
            self._pause_control.assign(tp)  # a stage-wide pause holds new partitions at once
            self.metrics.set_paused(tp, None)  # its series exist from the start, at 0
            self.metrics.count_rebalance("assign")
        self.apply()
        log.info(
            "stage %s assigned %d input partitions, %d held paused",
            self._stage.name, len(ours), len(self._applied),
        )  # fmt: skip

    def revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions & set(self.partitions):
            del self.partitions[tp]
            self._pause_control.forget(tp)
            self._stalls.forget(tp)
            self.metrics.forget_partition(tp)
            self.metrics.count_rebalance("revoke")
        self.pauses.forget(partitions)
        # Not ours any more: what faust hands on of them is faust's own business again.
        _buffered_partitions(self._consumer()).difference_update(
            TP(tp.topic, tp.partition) for tp in partitions & self._applied
        )
        self._applied -= partitions

    def holds(self, tp: TopicPartition) -> bool:
        """Whether records of `tp` must wait before the agent (it is ours and paused)."""
        return tp in self.partitions and self.pauses.is_paused(tp)

    def partition(self, tp: TopicPartition) -> FaustPartition | None:
        return self.partitions.get(tp)

    # ----------------------------------------------------------------- the loop
    def round(self) -> None:
        now, now_mono = self._clock.now(), self._clock.monotonic()
        feed = self._feed
        snapshot = feed.snapshot() if feed is not None else PressureSnapshot()
        self._pause_control.update(
            self.partitions, self.in_flight, snapshot, self._sent_by_stage, now, now_mono
        )
        self.apply()
        producer = self._producer
        if producer is None:
            return
        producer.poll(0)
        if now_mono >= self._next_report:
            self._next_report = now_mono + self._options.report_interval_s
            self.metrics.set_in_flight(self.in_flight)
            self.metrics.set_concurrency_limit(self._concurrency())
            self._reporter.report(
                producer,
                self.partitions,
                snapshot,
                in_flight=self.in_flight,
                stage_paused=self._pause_control.stage_paused,
                now=now,
                now_mono=now_mono,
            )

    def apply(self) -> None:
        """Make faust's consumer pause what we want paused, handing on what it fetched of
        them (see the module doc); resume only what we paused."""
        want = {tp for tp in self.partitions if self.pauses.is_paused(tp)}
        to_resume = self._applied - want
        consumer = self._consumer()
        handed_on = _buffered_partitions(consumer)
        if want:
            paused = {TP(tp.topic, tp.partition) for tp in want}
            consumer.pause_partitions(paused)
            # In the same step: no batch can be handed over between the two.
            handed_on.update(paused)
        if to_resume:
            resumed = {TP(tp.topic, tp.partition) for tp in to_resume}
            consumer.resume_partitions(resumed)
            handed_on.difference_update(resumed)  # active again: getmany passes them
        for tp in want - self._applied:
            self.pauses.pause_events += 1
            self.metrics.set_paused(tp, min(self.pauses.reasons(tp)))
        for tp in to_resume:
            self.pauses.resume_events += 1
            self.metrics.set_paused(tp, None)
        self._applied = want

    @property
    def stage_paused(self) -> bool:
        return self._pause_control.stage_paused

    @property
    def last_reason(self) -> str:
        return self._pause_control.last_reason


def _buffered_partitions(consumer: ConsumerT) -> set[TP]:
    """Faust's Consumer._buffered_partitions, itself (getmany reads it as it hands a batch
    over; faust replaces the set on a restart, so it is looked up every time). ConsumerT
    does not declare it; without it a pause would drop records, so no faust runs without."""
    buffered = getattr(consumer, "_buffered_partitions", None)
    if not isinstance(buffered, set):
        raise StreamsError(
            f"faust's consumer ({type(consumer).__name__}) has no _buffered_partitions set, "
            "which streams.faust needs to pause partitions without dropping fetched records; "
            "pin faust-streaming to a release that has it (0.15.3 does)"
        )
    return buffered
