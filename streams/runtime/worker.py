"""The stage worker: one consumer-group member running one stage's handler.

Owns the poll loop and wires the rest: buffers and dispatch, the handler runner, the
outcome router, offsets, pauses, pressure and metrics. The poll loop never runs user code
and keeps polling while partitions are paused; decisions come from streams.policy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import cast

from prometheus_client import CollectorRegistry

from streams.clock import Clock, SystemClock
from streams.errors import DeadLetterLimitExceeded, SerdeError, StreamsError
from streams.events import TaskEventCodec
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.consumer import GroupConsumer
from streams.kafka.lag_reader import LagReader
from streams.kafka.producer import RecordProducer
from streams.kafka.tail import TopicTail
from streams.metrics import WorkerMetrics, serve_metrics
from streams.policy.dlq_valve import DeadLetterLimit as ValveLimit
from streams.policy.dlq_valve import DeadLetterValve
from streams.policy.expiry import expiry_reason, queue_age_s
from streams.policy.latency import LatencyWindow
from streams.policy.offsets import OffsetTracker
from streams.policy.stall import StallDetector
from streams.runtime.buffers import PartitionBuffer, Pending, take_ready
from streams.runtime.context import HandlerContext
from streams.runtime.handler_runner import Completion, Handler, HandlerRunner, Job
from streams.runtime.options import WorkerOptions
from streams.runtime.outcomes import OutcomeRouter
from streams.runtime.pause_control import PauseControl
from streams.runtime.pauses import PauseSet
from streams.runtime.pressure_feed import PressureFeed, Watched
from streams.runtime.pressure_reports import PressureReport, ReportBoard, publish_report
from streams.runtime.transactions import TransactionalCommitter
from streams.topology import Stage, Topology
from streams.types import DeadLetterReason, Lane, Outcome, PauseReason, Record, TopicPartition

log = logging.getLogger(__name__)


class StageWorker:
    """Runs `stage` of `topology` until stop() or a fatal error.

    run() blocks on the calling thread (which becomes the poll thread) and raises the fatal
    error, if any, after closing cleanly. stop() may be called from any thread or a signal
    handler: fetching stops, in-flight work drains for up to shutdown_grace_s, offsets are
    committed and the consumer leaves the group.
    """

    def __init__(
        self,
        topology: Topology,
        stage: str,
        client: ClientConfig,
        *,
        options: WorkerOptions | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        handler: Handler | None = None,
    ) -> None:
        self.topology = topology
        self.stage: Stage = topology.stages[stage]
        self.options = options or WorkerOptions()
        self._client = client
        self._clock = clock or SystemClock()
        self.registry = registry or CollectorRegistry()
        self._handler: Handler = handler or self.stage.resolve_handler()
        self._stopping = threading.Event()
        self._lane_of_topic: dict[str, Lane] = {
            t: lane for lane, t in self.stage.input_topics_by_lane.items()
        }
        self._stage_of_topic = _stage_of_topic_map(topology)
        self._routes: Mapping[Lane, tuple[str, ...]] = MappingProxyType(dict(self.stage.routes))
        self._buffers: dict[TopicPartition, PartitionBuffer] = {}
        self._busy_keys: set[bytes] = set()
        self._in_flight = 0  # submitted to the runner, not yet completed
        self._prefetch = _prefetch(self.stage.concurrency)
        self._rr = 0
        self._offsets = OffsetTracker()
        self._codec = TaskEventCodec()
        self._latency = LatencyWindow()
        self._stalls = StallDetector(self.options.stall_after_s)
        limit = self.stage.dead_letter_limit
        self._valve = DeadLetterValve(
            ValveLimit(limit.max_ratio, limit.window, limit.min_records, limit.max_consecutive)
        )
        self.metrics = WorkerMetrics(self.registry, stage=stage, workflow=topology.workflow)
        self.pauses = PauseSet(on_change=self._pause_changed)
        self._pause_control = PauseControl(topology, self.stage, self.pauses)
        self.metrics_port: int | None = None
        self.ready = threading.Event()
        self._eos = self.stage.delivery == "exactly_once"
        self._next_commit = 0.0
        self._next_report = 0.0

    # ----------------------------------------------------------------- lifecycle
    def stop(self) -> None:
        self._stopping.set()

    def status(self) -> WorkerStatus:
        """A point-in-time picture for live views; safe to call from another thread."""
        lag: dict[Lane, int] = {}
        own = self._feed.snapshot().own if hasattr(self, "_feed") else None
        for part in own.partitions if own is not None else ():
            lane = self._lane_of_topic.get(part.tp.topic)
            if lane is not None:
                lag[lane] = lag.get(lane, 0) + part.lag
        paused: dict[str, int] = {}
        for tp in list(self._buffers):
            for reason in self.pauses.reasons(tp):
                paused[reason] = paused.get(reason, 0) + 1
        return WorkerStatus(
            stage=self.stage.name,
            in_flight=self._in_flight,
            concurrency=self.stage.concurrency,
            assigned=len(self._buffers),
            paused_by_reason=paused,
            lag_by_lane=lag,
            age_by_lane=self.queue_ages(),
            last_pause_reason=self._pause_control.last_reason,
        )

    def queue_ages(self) -> dict[Lane, float]:
        """Oldest queued age per lane at this stage: the older of what waits in the worker's
        buffers and what waits unconsumed in Kafka (the lag's time estimate). Safe to call
        from another thread (a sample taken mid-rebalance may miss a partition)."""
        now = self._clock.now()
        ages: dict[Lane, float] = {}
        try:
            for buffer in list(self._buffers.values()):
                oldest = buffer.oldest_enqueued_ms()
                if oldest is not None:
                    ages[buffer.lane] = max(ages.get(buffer.lane, 0.0), queue_age_s(oldest, now))
            own = self._feed.snapshot().own
            for part in own.partitions if own is not None else ():
                lane = self._lane_of_topic.get(part.tp.topic)
                if lane is not None and part.lag > 0:
                    ages[lane] = max(ages.get(lane, 0.0), part.oldest_age_s)
        except (RuntimeError, IndexError):
            pass  # the poll thread changed the buffers under us: the next sample sees them
        return ages

    def run(self) -> None:
        self._open()
        try:
            while not self._stopping.is_set():
                self._iterate()
            self._shutdown()
        finally:
            self._close()

    def _open(self) -> None:
        options = self.options
        stage = self.stage
        transactional_id = f"{stage.consumer_group}-{options.worker_id}" if self._eos else None
        self._producer = RecordProducer(self._client, transactional_id=transactional_id)
        self._router = OutcomeRouter(
            self._producer,
            workflow=self.topology.workflow,
            stage=stage.name,
            dead_letter_topic=self.topology.dead_letter_topic,
            stage_of_topic=self._stage_of_topic.__getitem__,
            on_complete=self._completed,
            clock_ms=lambda: int(self._clock.now() * 1000),
        )
        self._txn = TransactionalCommitter(self._producer) if self._eos else None
        self._runner = HandlerRunner(
            self._handler,
            max_threads=min(options.handler_threads, stage.concurrency),
            max_running=stage.concurrency,
        )
        admin = Admin(self._client, timeout_s=5.0)  # a stale reading beats a stuck feed
        watched_names = stage.yields_to if stage.background else stage.downstream
        watched = [
            Watched(n, self.topology.stages[n].consumer_group, self.topology.stages[n].input_topics)
            for n in watched_names
        ]
        own = Watched(stage.name, stage.consumer_group, stage.input_topics)
        pressure_spec = self.topology.all_topics()[self.topology.pressure_topic]
        board = ReportBoard(
            TopicTail(self._client, self.topology.pressure_topic, pressure_spec.partitions)
        )
        self._feed = PressureFeed(
            LagReader(admin, self._clock),
            self._clock,
            watched,
            own,
            board,
            refresh_s=options.pressure_refresh_s,
            report_fresh_s=stage.pressure.stale_after_s,
            sent_by_stage=self._router.sent_by_stage,
        )
        self._feed.start()
        self._consumer = GroupConsumer(
            self._client,
            stage.consumer_group,
            stage.input_topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
            group_protocol=options.group_protocol,
            max_poll_interval_ms=options.max_poll_interval_ms,
        )
        if options.metrics_port is not None:
            self.metrics_port = serve_metrics(self.registry, options.metrics_port)
        self.metrics.set_concurrency_limit(stage.concurrency)
        log.info(
            "stage %s worker %s consuming %s (%s)",
            stage.name,
            options.worker_id,
            ", ".join(stage.input_topics),
            stage.delivery,
        )

    def _close(self) -> None:
        for closer in (self._runner.close, self._feed.stop, self._consumer.close):
            try:
                closer()
            except Exception:  # close everything even if one part fails
                log.exception("while closing")
        self._producer.flush(10.0)

    # ----------------------------------------------------------------- the loop
    def _iterate(self) -> None:
        # Block only when there is nothing to do: with work buffered, in flight or awaiting
        # acks, a long wait for new records only delays what is already here.
        busy = self._in_flight or self._router.awaiting or self._any_waiting()
        timeout = self.options.busy_poll_s if busy else self.options.idle_poll_s
        for record in self._consumer.poll(self._fetch_room(), timeout):
            self._accept(record)
        self.ready.set()
        self._finish(self._runner.drain())
        self._dispatch()
        self._producer.poll(0)
        self._check_fatal()
        now_mono = self._clock.monotonic()
        self._update_pauses(now_mono)
        if now_mono >= self._next_commit:
            self._next_commit = now_mono + self.options.commit_interval_s
            self._commit()
        if now_mono >= self._next_report:
            self._next_report = now_mono + self.options.report_interval_s
            self._report(now_mono)

    def _any_waiting(self) -> bool:
        return any(buffer.waiting for buffer in self._buffers.values())

    def _fetch_room(self) -> int:
        """How many records one poll may take. One poll may bring them all from one
        partition, so the room is half the least free space among partitions still
        fetching: one stuck partition cannot take the others' room, and a healthy one is
        not filled to its bound by a single poll (which would pause it, and a pause drops
        the client's prefetched records for it: at a bound of 100 that cut throughput
        tenfold, measured). Never below a quarter of the smallest bound, or a nearly full
        partition would throttle every poll to a record or two. So a partition's fill stays
        within its bound plus a quarter (the overshoot the local-bound pause allows)."""
        room = self.options.poll_batch
        floor = self.options.poll_batch
        for tp, buffer in self._buffers.items():
            floor = min(floor, max(1, buffer.bound // 4))
            if not self.pauses.is_paused(tp):
                room = min(room, (buffer.bound - buffer.fill) // 2)
        return max(floor, room)

    def _accept(self, record: Record) -> None:
        buffer = self._buffers.get(record.tp)
        if buffer is None:
            return  # revoked between fetch and now: the new owner reads it again
        self._offsets.track(record.tp, record.offset)
        if self._eos:
            buffer.arrival.append(record.offset)
        try:
            if record.value is None:
                raise SerdeError("record has no value (a tombstone is not a task event)")
            buffer.waiting.append(Pending(record, self._codec.decode(record.value)))
        except SerdeError as exc:
            self.metrics.count_decode_error()
            buffer.waiting.append(Pending(record, None, exc))

    def _dispatch(self) -> None:
        if self._stopping.is_set():
            return
        if self._router.awaiting >= self.options.max_unacknowledged:
            # The broker is behind on acks: hold new work here (buffers fill, partitions
            # pause on their bounds) rather than queue ever more outcomes in the producer.
            return
        # A few more than the cap wait in the runner, which starts them the moment a call
        # ends; the runner keeps the cap (at most `concurrency` handler calls at once).
        room = self.stage.concurrency + self._prefetch - self._in_flight
        chosen = take_ready(
            list(self._buffers.values()), self.stage.lanes, self._busy_keys, room, self._rr
        )
        self._rr += 1
        if not chosen:
            return
        now = self._clock.now()
        now_ms = int(now * 1000)
        stage = self.stage
        jobs: list[Job] = []
        for buffer, pending in chosen:
            record, event = pending.record, pending.event
            if event is None:
                self._dead_letter_unhandled(buffer, record, "decode_error", pending.decode_error)
                continue
            expired = expiry_reason(
                enqueued_ms=event.enqueued_at_ms,
                deadline_ms=event.deadline_ms,
                max_queue_age_s=stage.max_queue_age_s,
                now=now,
            )
            if expired is not None:
                # No handler ever runs on expired work: it goes to the dead letters.
                self._dead_letter_unhandled(
                    buffer, record, "expired", _Expired(expired), event.attempt
                )
                continue
            ctx = HandlerContext(
                stage.name, buffer.lane, record, event.deadline_ms, now_ms, self._routes
            )
            jobs.append(Job((buffer, pending), event, ctx, stage.handler_timeout_s))
        self._in_flight += len(jobs)
        self.metrics.set_in_flight(self._in_flight)
        self._runner.submit(jobs)

    def _dead_letter_unhandled(
        self,
        buffer: PartitionBuffer,
        record: Record,
        reason: DeadLetterReason,
        error: Exception | None,
        attempts: int = 1,
    ) -> None:
        """Dead-letter a record taken for dispatch that no handler will run on."""
        self._release_key(record)
        buffer.running -= 1
        self._route(
            buffer,
            record,
            partial(
                self._router.dead_letter,
                record,
                reason,
                error=error,
                attempts=attempts,
                token=buffer,
            ),
        )

    def _finish(self, completions: list[Completion]) -> None:
        for done in completions:
            self._in_flight -= 1
            buffer, pending = cast(tuple[PartitionBuffer, Pending], done.job.token)
            record = pending.record
            self._release_key(record)
            self._latency.add(done.duration_s)
            self.metrics.observe_handler(done.duration_s)
            if self._buffers.get(record.tp) is not buffer:
                continue  # partition revoked meanwhile: abandoned, the new owner redoes it
            buffer.running -= 1
            if done.status == "ok":
                if not self._eos:  # the common case, without building a callable per record
                    self._router.emit(record, done.job.ctx.emits, buffer)
                    continue
                action = partial(self._router.emit, record, done.job.ctx.emits, token=buffer)
            else:
                reason: DeadLetterReason = (
                    "timeout" if done.status == "timeout" else "handler_error"
                )
                action = partial(
                    self._router.dead_letter,
                    record,
                    reason,
                    error=done.error,
                    attempts=done.job.event.attempt + 1,
                    token=buffer,
                )
            self._route(buffer, record, action)
        if completions:
            self.metrics.set_in_flight(self._in_flight)

    def _route(self, buffer: PartitionBuffer, record: Record, action: Callable[[], None]) -> None:
        """Carry out a decided outcome: at once, or in exactly-once mode in offset order, so a
        transaction never holds writes of a record whose offset it cannot commit."""
        if not self._eos:
            action()
            return
        buffer.decided[record.offset] = action
        while buffer.arrival and buffer.arrival[0] in buffer.decided:
            buffer.decided.pop(buffer.arrival.popleft())()

    def _completed(
        self, record: Record, outcome: Outcome, reason: DeadLetterReason | None, token: object
    ) -> None:
        """The broker acknowledged every write of this record's outcome."""
        buffer = token
        if not isinstance(buffer, PartitionBuffer) or self._buffers.get(record.tp) is not buffer:
            return
        buffer.in_flight -= 1
        self._offsets.complete(record.tp, record.offset)
        self.metrics.record_outcome(outcome, dead_letter_reason=reason)
        if reason != "expired":
            # Expiry is a policy working as meant, and after a pause it comes in long runs:
            # the safety valve watches failures (undecodable, errors, timeouts) only.
            self._valve.record(outcome == "dead_lettered")
        # The record's Kafka timestamp is when it entered this stage's queue.
        self.metrics.observe_age_at_completion(self._clock.now() - record.timestamp_ms / 1000)

    def _release_key(self, record: Record) -> None:
        if record.key is not None:
            self._busy_keys.discard(record.key)

    def _check_fatal(self) -> None:
        if self._router.failure is not None:
            raise self._router.failure
        tripped = self._valve.tripped()
        if tripped is not None:
            raise DeadLetterLimitExceeded(
                f"stage {self.stage.name}: {tripped}; stopping instead of dead-lettering "
                "everything (fix the cause, then restart the worker)"
            )

    # ----------------------------------------------------------------- commits
    def _commit(self, only: set[TopicPartition] | None = None) -> None:
        if self._txn is not None:
            self._txn.commit(self._offsets, self._consumer, self._idle_positions())
            return
        offsets = {**self._offsets.committable(), **self._idle_positions()}
        if only is not None:
            offsets = {tp: o for tp, o in offsets.items() if tp in only}
        if offsets and self._consumer.commit(offsets):
            self._offsets.mark_committed(offsets)
            self.metrics.count_commit()

    def _idle_positions(self) -> dict[TopicPartition, int]:
        idle = [tp for tp, buffer in self._buffers.items() if buffer.unsettled == 0]
        return self._offsets.idle_positions(self._consumer.positions(idle)) if idle else {}

    # ----------------------------------------------------------------- pressure
    def _update_pauses(self, now_mono: float) -> None:
        self._pause_control.update(
            self._buffers,
            self._in_flight,
            self._feed.snapshot(),
            self._router.sent_by_stage,
            self._clock.now(),
            now_mono,
        )
        self.pauses.reconcile(self._consumer, self._buffers.keys())

    def _pause_changed(self, tp: TopicPartition, reason: PauseReason | None, paused: bool) -> None:
        self.metrics.set_paused(tp, reason if paused else None)

    def _report(self, now_mono: float) -> None:
        now = self._clock.now()
        report = PressureReport(
            stage=self.stage.name,
            worker=self.options.worker_id,
            p95_latency_s=self._latency.p95(),
            in_flight=self._in_flight,
            reported_at=now,
            pressure_paused=self._pause_control.stage_paused,
        )
        publish_report(self._producer, self.topology.pressure_topic, report)
        self.pauses.reapply(self._consumer, self._buffers.keys())
        own = self._feed.snapshot().own
        lag_by_tp = {p.tp: p for p in own.partitions} if own is not None else {}
        stalled = 0
        for tp, buffer in self._buffers.items():
            oldest = buffer.oldest_enqueued_ms()
            age = queue_age_s(oldest, now) if oldest is not None else 0.0
            lag = lag_by_tp.get(tp)
            self.metrics.set_partition_state(
                tp, buffer.lane, len(buffer.waiting), buffer.bound, age, lag.lag if lag else 0
            )
            if lag is not None and self._stalls.observe(
                tp,
                committed=lag.committed,
                lag=lag.lag,
                # A full local buffer is a symptom (a stuck handler), not a choice.
                paused_on_purpose=bool(self.pauses.reasons(tp) - {"local_bound"}),
                now_mono=now_mono,
            ):
                stalled += 1
                self.metrics.set_stalled(tp, True)
                log.warning(
                    "partition %s stalled: lag %d, no commit progress for %.0f s",
                    tp, lag.lag, self._stalls.stall_after_s,
                )  # fmt: skip
            else:
                self.metrics.set_stalled(tp, False)
        for name, signal in self._feed.snapshot().signals.items():
            if signal is not None:
                self.metrics.set_downstream(name, signal.lag, signal.oldest_age_s)

    # ----------------------------------------------------------------- rebalance
    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        self.metrics.count_rebalance("assign")
        for tp in partitions:
            lane = self._lane_of_topic[tp.topic]
            self._buffers[tp] = PartitionBuffer(tp, lane, self.stage.partition_buffer)
            self._offsets.assign(tp)
            self._pause_control.assign(tp)
        self.pauses.reapply(self._consumer, self._buffers.keys())
        log.info("assigned %s", ", ".join(map(str, partitions)))

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.metrics.count_rebalance("revoke")
        revoked = set(partitions) & set(self._buffers)
        deadline = time.monotonic() + self.options.revoke_budget_s
        # Finish what is in flight on the revoked partitions (bounded), then commit it.
        while time.monotonic() < deadline and any(self._buffers[tp].in_flight for tp in revoked):
            self._finish(self._runner.drain())
            self._producer.poll(0.01)
            self._check_fatal()
        self._commit(only=revoked)
        self._drop(revoked)
        self.pauses.reapply(self._consumer, self._buffers.keys())
        log.info("revoked %s", ", ".join(map(str, partitions)))

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        self.metrics.count_rebalance("lost")
        # Lost partitions belong to someone else already: nothing may be committed for them.
        self._drop(set(partitions) & set(self._buffers))
        self.pauses.reapply(self._consumer, self._buffers.keys())
        log.warning("lost %s", ", ".join(map(str, partitions)))

    def _drop(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            buffer = self._buffers.pop(tp)
            for pending in buffer.waiting:
                self._release_key(pending.record)
            self._pause_control.forget(tp)
            self._offsets.revoke(tp)
            self._stalls.forget(tp)
            self.metrics.forget_partition(tp)
        self.pauses.forget(partitions)

    # ----------------------------------------------------------------- shutdown
    def _shutdown(self) -> None:
        """Stop fetching, drain in-flight work up to the grace period, commit."""
        log.info("stage %s draining %d in-flight records", self.stage.name, self._in_flight)
        self._consumer.pause(self._buffers.keys())
        deadline = time.monotonic() + self.options.shutdown_grace_s
        while time.monotonic() < deadline and (self._in_flight or self._router.awaiting):
            self._finish(self._runner.drain())
            self._producer.poll(0.01)
            self._consumer.poll(1, 0.0)  # stay in the group; paused, so nothing arrives
            self._check_fatal()
        self._producer.flush(10.0)
        self._commit()
        log.info("stage %s stopped", self.stage.name)


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


class _Expired(StreamsError):
    def __init__(self, which: str) -> None:
        super().__init__(
            "deadline passed" if which == "deadline" else "queue age over max_queue_age_s"
        )


def _prefetch(concurrency: int) -> int:
    """How many dispatched calls may wait in the runner for a free slot: a tenth of the
    cap (at least 1, at most 256), so lane priority is bent for at most that many."""
    return max(1, min(256, concurrency // 10))


def _stage_of_topic_map(topology: Topology) -> dict[str, str]:
    mapping = {topology.completed_topic: "completed"}
    for stage in topology.stages.values():
        for topic in stage.input_topics:
            mapping.setdefault(topic, stage.name)
    return mapping
