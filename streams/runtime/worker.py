"""The stage worker: one consumer-group member running one stage's handler.

Owns the poll loop and wires the rest: record lifecycles (buffers), dispatch, the handler
runner, outcome classification and routing, the delivery strategy (commits), pauses,
pressure and metrics. The poll loop never runs user code and keeps polling while
partitions are paused or the producer is full; decisions come from streams.policy.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry

from streams.clock import Clock, SystemClock
from streams.errors import (
    ConfigError,
    DeadLetterLimitExceeded,
    SerdeError,
    StreamsError,
)
from streams.events import TaskEventCodec
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.consumer import GroupConsumer
from streams.kafka.lag_reader import LagReader
from streams.kafka.producer import RecordProducer
from streams.kafka.tail import TopicTail
from streams.metrics import ToolMetrics, WorkerMetrics, serve_metrics
from streams.policy.dispatch_cap import dispatch_cap
from streams.policy.dlq_valve import DeadLetterValve
from streams.policy.expiry import expiry_reason
from streams.policy.latency import LatencyWindow
from streams.policy.offsets import OffsetTracker
from streams.policy.outcome import dead_letter_reason
from streams.policy.stall import StallDetector
from streams.policy.tool_share import stage_share
from streams.registry import RegistryUnavailable
from streams.runtime.buffers import PartitionBuffer, RecordWork, take_ready
from streams.runtime.context import Emit, HandlerContext
from streams.runtime.decode_holds import DecodeHolds
from streams.runtime.degradation import DegradationFeed, DegradationNow, ladder_of
from streams.runtime.degradation_act import StageDegradation, force_tools_open
from streams.runtime.degradation_metrics import DegradationMetrics
from streams.runtime.delivery import AtLeastOnce, Delivery, ExactlyOnce
from streams.runtime.emitter import Emitter, completion_topic
from streams.runtime.error_log import HandlerErrorLog
from streams.runtime.handler_runner import Completion, Handler, HandlerRunner, Job
from streams.runtime.loop_watch import Beat, LoopWatch
from streams.runtime.options import WorkerOptions
from streams.runtime.outcomes import OutcomeRouter
from streams.runtime.pause_control import PauseControl
from streams.runtime.pauses import PauseSet
from streams.runtime.pressure_feed import PressureFeed, PressureSnapshot, Watched
from streams.runtime.pressure_reports import ReportBoard, ToolHealth
from streams.runtime.retries import Retrier
from streams.runtime.retry_forwarder import RetryForwarder
from streams.runtime.retry_metrics import RetryMetrics
from streams.runtime.tool_health import ToolPauses
from streams.runtime.tools import LATENCY_BUCKETS_S, ToolBox, ToolRegistry
from streams.runtime.traced import traced_handler
from streams.runtime.worker_report import (
    PartitionStatus,
    Reporter,
    WorkerStatus,
    lag_by_lane,
    partition_statuses,
    queue_ages,
)
from streams.topology import Stage, Topology
from streams.tracing import configured_tracing
from streams.types import DeadLetterReason, Lane, PauseReason, Record, TopicPartition

log = logging.getLogger(__name__)


class StageWorker:
    """Runs `stage` of `topology` until stop() or a fatal error.

    run() blocks on the calling thread (which becomes the poll thread) and raises the fatal
    error, if any, after closing cleanly (also when opening fails half way: whatever was
    started is stopped). stop() may be called from any thread or a signal handler:
    fetching stops, in-flight work drains for up to shutdown_grace_s, offsets are
    committed and the consumer leaves the group.

    Exactly-once stages need a stable `options.worker_id`: it names the transactional
    producer, so a restarted worker fences its crashed predecessor's open transaction.
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
        tools: ToolRegistry | None = None,
    ) -> None:
        self.topology = topology
        self.stage: Stage = topology.stages[stage]
        self.options = options or WorkerOptions()
        self._exactly_once = self.stage.delivery == "exactly_once"
        if self._exactly_once and self.options.worker_id is None:
            raise ConfigError(
                topology.source,
                f"stages.{stage}.delivery",
                "exactly_once needs a stable worker id: start the worker with --worker-id "
                "(it names the transactional producer that fences a crashed predecessor)",
            )
        self.worker_id = self.options.worker_id or uuid.uuid4().hex[:8]
        self._client = client
        self._clock = clock or SystemClock()
        self.registry = registry or CollectorRegistry()
        # Traced (README "Tracing"): each call a span; off, the handler is left as it is.
        self._handler: Handler = traced_handler(
            handler if handler is not None else self.stage.resolve_handler(),
            configured_tracing(),
            workflow=topology.workflow,
            timeout_s=self.stage.handler_timeout_s,
        )
        self._stopping = threading.Event()
        self._lane_of_topic: dict[str, Lane] = {
            t: lane for lane, t in self.stage.input_topics_by_lane.items()
        }
        self._stage_of_topic = _stage_of_topic_map(topology)
        self._buffers: dict[TopicPartition, PartitionBuffer] = {}
        self._busy_keys: set[bytes] = set()
        self._in_flight = 0  # submitted to the runner, not yet completed
        self._prefetch = _prefetch(self.stage.concurrency)
        self._rr = 0
        self._offsets = OffsetTracker()
        self._codec = TaskEventCodec()
        self._latency = LatencyWindow()
        self._stalls = StallDetector(self.options.stall_after_s)
        #: Stalled partitions resumed in the client, and when (see _unstick).
        self._resumed_at: dict[TopicPartition, float] = {}
        self._valve = DeadLetterValve(self.stage.dead_letter_limit)
        self._errors = HandlerErrorLog(self._clock)
        self.metrics = WorkerMetrics(self.registry, stage=stage, workflow=topology.workflow)
        # Retries (README "Retries and escalations"): failures the stage's policy retries go
        # to a tier topic; the forwarder (opened with the consumer) brings them back.
        self._retrier: Retrier | None = None
        self._retry_metrics: RetryMetrics | None = None
        self._forwarder: RetryForwarder | None = None
        if self.stage.retry is not None:
            self._retry_metrics = RetryMetrics(
                self.registry, workflow=topology.workflow, stage=stage
            )
            self._retrier = Retrier(
                topology, self.stage, self.stage.retry, self._codec, self._retry_metrics,
                now_ms=self._now_ms,
            )  # fmt: skip
        self.pauses = PauseSet(on_change=self._pause_changed)
        self._reporter = Reporter(
            stage=stage,
            worker_id=self.worker_id,
            pressure_topic=topology.pressure_topic,
            metrics=self.metrics,
            stalls=self._stalls,
            pauses=self.pauses,
            latency=self._latency,
            valve=self._valve,
            concurrency=self.stage.concurrency,
        )
        self._pause_control = PauseControl(topology, self.stage, self.pauses)
        # README "Schema registry": a record the registry is needed for, while it is down,
        # holds its partition (paused, rewound to it) instead of being dead-lettered.
        self._decode_holds = DecodeHolds(
            stage, self.pauses, lambda tp, offset: self._consumer.seek(tp, offset),
            self._pause_control.log,
        )  # fmt: skip
        # README "Degradation" / "Operator controls": the level, manual pauses, tools forced open.
        self._degradation = StageDegradation(topology, self.stage)
        self._degradation_metrics = DegradationMetrics(
            self.registry, topology.workflow, ladder_of(topology)
        )
        self._degradation_feed: DegradationFeed | None = None
        # Tools are shared by every worker of the workflow in this process (README "Tools").
        self._tools: ToolBox | None = None
        self._tool_pauses: ToolPauses | None = None
        if self.stage.tools:
            registry_of_tools = tools or ToolRegistry.for_process(topology)
            self._tools = ToolBox(registry_of_tools, self.stage, self.worker_id)
            self._tool_pauses = ToolPauses(self._tools)
            ToolMetrics(self.registry, topology.workflow, self._tools.readings, LATENCY_BUCKETS_S)
        self._emitter = Emitter(
            topology,
            self.stage,
            self._codec,
            self._now_ms,
            allow_lane_promotion=self.stage.allow_lane_promotion,
        )
        self.metrics_port: int | None = None
        self.ready = threading.Event()
        self._next_commit = 0.0
        self._next_report = 0.0
        self._holding: str | None = None  # why dispatch holds (logged once per change)
        self._closers: list[Callable[[], None]] = []
        # The poll loop's turns; registered with the process's LoopWatch once it runs.
        self._beat = Beat("(not watched)", 0, 1.0)

    # ----------------------------------------------------------------- lifecycle
    def stop(self) -> None:
        self._stopping.set()

    def status(self) -> WorkerStatus:
        """A point-in-time picture for live views; safe to call from another thread."""
        paused: dict[str, int] = {}
        for tp in list(self._buffers):
            for reason in self.pauses.reasons(tp):
                paused[reason] = paused.get(reason, 0) + 1
        runner = getattr(self, "_runner", None)
        return WorkerStatus(
            stage=self.stage.name,
            in_flight=self._in_flight,
            concurrency=self.stage.concurrency,
            assigned=len(self._buffers),
            paused_by_reason=paused,
            lag_by_lane=lag_by_lane(self._snapshot(), self._lane_of_topic),
            age_by_lane=self.queue_ages(),
            last_pause_reason=self._pause_control.last_reason,
            stuck_handlers=runner.stuck if runner is not None else 0,
            holding=self._holding,
        )

    def partitions(self) -> dict[TopicPartition, PartitionStatus]:
        """Each assigned partition's lane, fill and pause reasons; safe from another thread
        (a sample taken mid-rebalance may miss a partition)."""
        return partition_statuses(self._buffers, self.pauses)

    def queue_ages(self) -> dict[Lane, float]:
        """Oldest queued age per lane at this stage, in the buffers or still in Kafka; safe
        to call from another thread."""
        return queue_ages(self._buffers, self._snapshot(), self._lane_of_topic, self._clock.now())

    def degradation(self) -> DegradationNow:
        """The level this worker acts on, and the operators' pauses and forced tools;
        safe to call from another thread."""
        feed = self._degradation_feed
        return feed.now() if feed is not None else DegradationNow(ladder_of(self.topology).view(0))

    def _snapshot(self) -> PressureSnapshot | None:
        feed = getattr(self, "_feed", None)  # None until the worker has opened
        return feed.snapshot() if feed is not None else None

    def run(self) -> None:
        try:
            self._open()
            self._watch_loops()
            while not self._stopping.is_set():
                self._iterate()
            self._shutdown()
        finally:
            self._close()

    def _watch_loops(self) -> None:
        """Have this poll loop and the handlers' event loop logged when they stop turning."""
        if not self.options.loop_stall_s > 0:
            return
        watch, after_s = LoopWatch.shared(), self.options.loop_stall_s
        who = f"stage {self.stage.name} worker {self.worker_id}"
        self._beat = watch.watch(f"{who}: the poll loop", threading.get_ident(), after_s)
        self._closers.append(lambda: watch.unwatch(self._beat))
        beat = self._runner.watch_loop(watch, f"{who}: the handlers' event loop", after_s)
        if beat is not None:
            self._closers.append(lambda: watch.unwatch(beat))

    def _open(self) -> None:
        # Each part registers its closer as soon as it exists, so a failure half way
        # (a metrics port in use, an unreachable cluster) leaves nothing running.
        options = self.options
        stage = self.stage
        transactional_id = (
            f"{stage.consumer_group}-{self.worker_id}" if self._exactly_once else None
        )
        self._producer = RecordProducer(self._client, transactional_id=transactional_id)
        self._closers.append(self._flush_producer)
        self._router = OutcomeRouter(
            self._producer,
            workflow=self.topology.workflow,
            stage=stage.name,
            dead_letter_topic=self.topology.dead_letter_topic,
            stage_of_topic=self._stage_of_topic.__getitem__,
            completed_topic=completion_topic(self.topology, stage),
            on_settled=self._settled,
            clock_ms=self._now_ms,
            level_of=lambda: self.degradation().view.level,
        )
        self._delivery: Delivery = (
            ExactlyOnce(self._producer, on_commit=self.metrics.count_commit)
            if self._exactly_once
            else AtLeastOnce(on_commit=self.metrics.count_commit)
        )
        self._runner: HandlerRunner[RecordWork] = HandlerRunner(
            self._handler,
            max_threads=min(options.handler_threads, stage.concurrency),
            max_running=stage.concurrency,
            start_check=self._expired_at_start,
        )
        self._closers.append(self._runner.close)
        admin = Admin(self._client, timeout_s=5.0)  # a stale reading beats a stuck feed
        watched_names = stage.yields_to if stage.background else stage.downstream
        watched = [
            Watched(
                n,
                self.topology.stages[n].consumer_group,
                self.topology.stages[n].input_topics,
                review=self.topology.stages[n].review is not None,  # README "Human review"
            )
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
        self._closers.append(self._feed.stop)
        # Before the consumer: a restarted worker knows the operators' pauses before it fetches.
        self._degradation_feed = DegradationFeed(
            self.topology, self._client, self._clock, who=f"worker {stage.name}/{self.worker_id}",
            report_fresh_s=stage.pressure.stale_after_s, on_change=self._degradation_changed,
        )  # fmt: skip
        self._closers.append(self._degradation_feed.stop)
        self._degradation_feed.start()
        self._degradation_changed(self._degradation_feed.now())
        if self._tools is not None:
            self._closers.append(lambda: self._tools.set_share(0.0) if self._tools else None)
        if options.metrics_port is not None:
            self.metrics_port = serve_metrics(
                self.registry, options.metrics_port, addr=options.metrics_host
            )
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
        self._closers.append(self._consumer.close)
        if self._retry_metrics is not None:
            self._forwarder = RetryForwarder(
                self._client, self.topology, stage, self._clock, self._retry_metrics,
                room=self._retry_room, commit_interval_s=options.commit_interval_s,
                group_protocol=options.group_protocol,
                max_poll_interval_ms=options.max_poll_interval_ms,
            )  # fmt: skip
            self._closers.append(self._forwarder.close)
        self.metrics.set_concurrency_limit(stage.concurrency)
        log.info(
            "stage %s worker %s consuming %s (%s)",
            stage.name,
            self.worker_id,
            ", ".join(stage.input_topics),
            stage.delivery,
        )

    def _flush_producer(self) -> None:
        self._producer.flush(10.0)

    def _close(self) -> None:
        self._errors.flush(force=True)
        # Reverse order of opening: the consumer leaves first, the producer flushes last.
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:  # close everything even if one part fails
                log.exception("while closing")

    # ----------------------------------------------------------------- the loop
    def _iterate(self) -> None:
        self._beat.last = time.monotonic()
        # Block only when there is nothing to do: with work buffered, in flight or awaiting
        # acks, a long wait for new records only delays what is already here.
        busy = self._in_flight or self._router.unacknowledged or self._any_waiting()
        timeout = self.options.busy_poll_s if busy else self.options.idle_poll_s
        for record in self._consumer.poll(self._fetch_room(), timeout):
            self._accept(record)
        self.ready.set()
        self._finish(self._runner.drain())
        self._router.retry_backlog()
        self._dispatch()
        if self._forwarder is not None:
            self._forwarder.step()
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
        holds = self._decode_holds
        if holds.partitions and not holds.admits(record):
            return  # its partition is held on the registry: read again from the held record
        try:
            if record.value is None:
                raise SerdeError("record has no value (a tombstone is not a task event)")
            work = buffer.accept(record, self._codec.decode(record.value))
        except RegistryUnavailable as exc:
            holds.hold(record, exc, self._clock.monotonic())
            return
        except SerdeError as exc:
            self.metrics.count_decode_error()
            work = buffer.accept(record, None, exc)
        self._delivery.accepted(work)

    def _dispatch(self) -> None:
        if self._stopping.is_set():
            return
        runner = self._runner
        capacity = runner.capacity
        if (
            self._router.backlogged
            or self._router.unacknowledged >= self.options.max_unacknowledged
        ):
            # The producer queue is full or the broker is behind on acks: hold new work
            # here (buffers fill, partitions pause on their bounds) and keep polling.
            self._hold("producer")
            return
        if capacity == 0:
            # Every handler thread is stuck in a call past its timeout: taking records now
            # would only time them out unstarted. Hold until a thread comes back.
            self._hold("stuck_handlers")
            return
        tools = self._tool_pauses
        tool_room = tools.dispatch_room(self._in_flight) if tools is not None else None
        if tool_room is not None and tool_room <= 0:
            # A tool this stage needs is unavailable: records wait here rather than start
            # only to fail (they still expire at their queue age).
            self._hold("tool_unavailable")
            return
        self._hold(None)
        # A few more than the cap wait in the runner, which starts them the moment a call
        # ends; the runner keeps the cap (at most `concurrency` handler calls at once).
        cap = dispatch_cap(self.stage.concurrency, capacity, runner.batching)
        room = cap + self._prefetch - self._in_flight
        if tool_room is not None:
            room = min(room, tool_room)
        chosen = take_ready(
            list(self._buffers.values()), self.stage.lanes, self._busy_keys, room, self._rr
        )
        self._rr += 1
        if not chosen:
            return
        now = self._clock.now()
        now_ms = int(now * 1000)
        stage = self.stage
        timeout_s = stage.handler_timeout_s
        max_age_s = stage.max_queue_age_s
        emitter = self._emitter
        valve = self._valve
        level = self.degradation()
        jobs: list[Job[RecordWork]] = []
        for work in chosen:
            work.seq = valve.start()  # the valve judges outcomes in start order
            event = work.event
            if event is None:
                self._dead_letter_unstarted(work, "decode_error", work.decode_error)
                continue
            expired = self._expired(event.enqueued_at_ms, event.deadline_ms, now)
            if expired is not None:
                # No handler ever runs on expired work: it goes to the dead letters.
                self._dead_letter_unstarted(work, "expired", expired)
                continue
            work.expires_at = min(
                event.enqueued_at_ms / 1000 + max_age_s,
                math.inf if event.deadline_ms is None else event.deadline_ms / 1000,
            )
            owner = work.owner
            assert owner is not None  # set by PartitionBuffer.accept
            review_topic = self._degradation.review_topic(work.record, owner.lane, level)
            if review_topic is not None:
                # The level requires review here: the record goes to the review stage first
                # and comes back with its decision (README "Degradation").
                self._release_key(work.record)
                record = work.record
                self._decide(work, emits=[Emit(review_topic, record.value or b"",
                                               record.key or b"", record.headers)])  # fmt: skip
                continue
            ctx = HandlerContext(
                stage.name, owner.lane, work.record, event.deadline_ms, now_ms, emitter,
                tools=self._tools, degradation=level.view,
            )  # fmt: skip
            jobs.append(Job(work, event, ctx, timeout_s))
        if jobs:
            self._degradation_metrics.call_started(stage.name, level.view.level, len(jobs))
        self._in_flight += len(jobs)
        self.metrics.set_in_flight(self._in_flight)
        runner.submit(jobs)

    def _hold(self, reason: str | None) -> None:
        if reason == self._holding:
            return
        if reason == "stuck_handlers":
            log.warning(
                "stage %s: all %d handler threads are stuck in calls past their timeout of "
                "%g s; not taking new records until one returns",
                self.stage.name, self._runner.stuck, self.stage.handler_timeout_s,
            )  # fmt: skip
        elif self._holding == "stuck_handlers":
            log.warning("stage %s: handler threads returned; taking new records", self.stage.name)
        # A full producer queue comes and goes many times a second under load: it shows in
        # status().holding, not as a log line per change.
        self._holding = reason

    def _expired(self, enqueued_ms: int, deadline_ms: int | None, now: float) -> _Expired | None:
        which = expiry_reason(
            enqueued_ms=enqueued_ms,
            deadline_ms=deadline_ms,
            max_queue_age_s=self.stage.max_queue_age_s,
            now=now,
        )
        return None if which is None else _Expired(which)

    def _expired_at_start(self, job: Job[RecordWork]) -> BaseException | None:
        """The runner's last check before a handler starts (on the starting thread): a
        call that waited for a free slot may have expired meanwhile (invariant 3)."""
        now = self._clock.now()
        if now < job.token.expires_at:
            return None  # the common case, without the full check
        event = job.event
        return self._expired(event.enqueued_at_ms, event.deadline_ms, now)

    def _dead_letter_unstarted(
        self, work: RecordWork, reason: DeadLetterReason, error: Exception | None
    ) -> None:
        """Dead-letter a record taken for dispatch that no handler will run on."""
        self._release_key(work.record)
        self._decide(work, reason=reason, error=error)

    def _finish(self, completions: list[Completion[RecordWork]]) -> None:
        errors = self._errors
        for done in completions:
            self._in_flight -= 1
            work = done.job.token
            self._release_key(work.record)
            if done.status != "refused":
                self._latency.add(done.duration_s)
                self.metrics.observe_handler(done.duration_s)
            ctx = done.job.ctx
            retrier = self._retrier
            if retrier is not None and done.status != "refused":
                retrier.attempted(done.job.event)
            reason = dead_letter_reason(done.status, done.error, ctx.emit_error is not None)
            if reason is None:
                self._decide(work, emits=ctx.emits)
                continue
            error = ctx.emit_error if reason == "emit_error" else done.error
            ran = done.status != "refused"
            if ran:
                errors.record(self.stage.name, reason, error)
            attempts = done.job.event.attempt + 1 if ran else 0
            if retrier is not None and ran:
                routed = retrier.route(work.record, done.job.event, done.status, error, reason)
                if routed.emits:  # its retry or escalation is the record's outcome
                    self._decide(work, emits=list(routed.emits))
                    continue
                reason = routed.reason or reason
            self._decide(work, reason=reason, error=error, attempts=attempts)
        if completions:
            self.metrics.set_in_flight(self._in_flight)

    def _decide(
        self,
        work: RecordWork,
        *,
        emits: list[Emit] | tuple[()] = (),
        reason: DeadLetterReason | None = None,
        error: BaseException | None = None,
        attempts: int = 0,
    ) -> None:
        owner = work.owner
        assert owner is not None  # every record the worker holds was accepted by a buffer
        if not owner.decide(work, emits, reason, error, attempts):
            # Partition revoked meanwhile: abandoned, the new owner redoes it.
            self._valve.abandon(work.seq)
            return
        router = self._router
        for ready in self._delivery.ready(work):
            owner = ready.owner
            assert owner is not None
            owner.release(ready)
            router.send(ready)

    def _settled(self, work: RecordWork) -> None:
        """The broker acknowledged every write of this record's outcome."""
        owner = work.owner
        if owner is None or not owner.settle(work):
            self._valve.abandon(work.seq)  # not ours any more: never judged
            return
        reason = work.reason
        if reason is None:
            self.metrics.record_outcome("emitted" if work.emits else "done")
            self._valve.record(False, started=work.seq)
        else:
            self.metrics.record_outcome("dead_lettered", dead_letter_reason=reason)
            if reason in _POLICY_REFUSALS:
                # Expiry and a tool's refusals are policies working as meant, and after a
                # pause they come in long runs: the safety valve watches failures only.
                self._valve.abandon(work.seq)
            else:
                self._valve.record(True, started=work.seq)
        # The record's Kafka timestamp is when it entered this stage's queue.
        self.metrics.observe_age_at_completion(self._clock.now() - work.record.timestamp_ms / 1000)

    def _release_key(self, record: Record) -> None:
        if record.key is not None:
            self._busy_keys.discard(record.key)

    def _check_fatal(self) -> None:
        if self._router.failure is not None:
            raise self._router.failure
        if self._forwarder is not None and self._forwarder.failure is not None:
            raise self._forwarder.failure
        tripped = self._valve.tripped()
        if tripped is not None:
            raise DeadLetterLimitExceeded(
                f"stage {self.stage.name}: {tripped}; stopping instead of dead-lettering "
                "everything (fix the cause, then restart the worker)"
            )

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)

    # ----------------------------------------------------------------- commits
    def _commit(self, only: set[TopicPartition] | None = None) -> None:
        if not self._delivery.commit(self._consumer, self._offsets, self._idle_positions(), only):
            self._rewind(set(self._buffers))

    def _idle_positions(self) -> dict[TopicPartition, int]:
        idle = [tp for tp, buffer in self._buffers.items() if buffer.unsettled == 0]
        return self._offsets.idle_positions(self._consumer.positions(idle)) if idle else {}

    def _rewind(self, partitions: set[TopicPartition]) -> None:
        """Throw away every record of `partitions` and read them again from their last
        committed offsets (after an aborted transaction: its writes are gone)."""
        if not partitions:
            return
        known: dict[TopicPartition, int] = {}
        unknown: list[TopicPartition] = []
        for tp in partitions:
            committed = self._buffers[tp].offsets.committed
            if committed is None:
                unknown.append(tp)
            else:
                known[tp] = committed
        if unknown:
            read = self._consumer.committed(unknown)
            missing = set(unknown) - set(read)
            if missing:
                # Guessing would redo committed work (or skip uncommitted work): stop, and a
                # restart resumes from the committed offsets.
                raise StreamsError(
                    f"stage {self.stage.name}: cannot rewind {len(missing)} partitions after "
                    "an aborted transaction: their committed offsets are unreadable now; "
                    "restart the worker"
                )
            known.update(read)
        for tp in partitions:
            old = self._buffers[tp]
            for work in old.close():
                self._release_key(work.record)
            offset = known.get(tp, -1)
            start = offset if offset >= 0 else None
            self._buffers[tp] = PartitionBuffer(
                tp, old.lane, old.bound, self._offsets.assign(tp, start)
            )
            # No committed offset yet: from the beginning, as auto.offset.reset says.
            self._consumer.seek(tp, offset if offset >= 0 else _OFFSET_BEGINNING)
        self._router.discard_backlog()
        self._delivery.forget(partitions)
        self.pauses.reapply(self._consumer, self._buffers.keys())
        log.warning(
            "stage %s rewound %d partitions to their last commit", self.stage.name, len(partitions)
        )

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
        if self._tool_pauses is not None:
            self._tool_pauses.update(
                self.pauses,
                self._buffers.keys(),
                waiting_records=sum(len(b.waiting) for b in self._buffers.values()),
            )
        self._degradation.mark(self.pauses, self._buffers.keys(), self.degradation())
        self._decode_holds.update(self._buffers.keys(), now_mono)
        self.pauses.reconcile(self._consumer, self._buffers.keys())

    def _degradation_changed(self, now: DegradationNow) -> None:
        # On the feed's thread: plain attribute writes and thread-safe metrics only.
        force_tools_open(self._tools, now)
        self._degradation_metrics.set(now)

    @property
    def retry_forwarder_holding(self) -> str | None:
        """Why the retry forwarder holds due retries now (stage_bound, not_due), if it does."""
        return self._forwarder.holding if self._forwarder is not None else None

    def _retry_room(self) -> int:
        """How many due retries may re-enter the stage's input now (invariant 7): none
        while any input partition here is paused, the stage is held by pressure, or its
        level or an operator pauses it (also when this worker holds none of its input),
        else what is left below max_lag of the last own-lag reading (unknown or stale:
        none), counting forwards of the last second as not yet in that reading."""
        if (
            self._pause_control.stage_paused
            or any(self._degradation.pausing(self.degradation()))
            or any(map(self.pauses.is_paused, self._buffers))
        ):
            return 0
        snapshot = self._snapshot()
        own = snapshot.own if snapshot is not None else None
        if own is None or self._clock.now() - own.measured_at > self.stage.pressure.stale_after_s:
            return 0
        forwarder = self._forwarder
        since = own.measured_at - 1.0
        recent = sum(1 for t in forwarder.sent_at if t >= since) if forwarder is not None else 0
        return self.stage.max_lag - own.total_lag - recent

    def _update_tool_share(self) -> None:
        """This worker's share of the stage's partitions, for its tools' fleet-wide
        ceilings: after every rebalance (a revoke once its calls are finished) and each
        report round (the partition count may have grown). See streams.policy.tool_share."""
        if self._tools is None:
            return
        snapshot = self._snapshot()
        own = snapshot.own if snapshot is not None else None
        total = len(own.partitions) if own is not None and own.partitions else 0
        if total == 0:  # not read yet: the topology's count
            total = self.stage.topic_spec.partitions * len(self.stage.input_topics)
        self._tools.set_share(stage_share(len(self._buffers), total))

    def _pause_changed(self, tp: TopicPartition, reason: PauseReason | None, paused: bool) -> None:
        self.metrics.set_paused(tp, reason if paused else None)

    def _report(self, now_mono: float) -> None:
        self._errors.flush()
        stalled = self._reporter.report(
            self._producer,
            self._buffers,
            self._feed.snapshot(),
            in_flight=self._in_flight,
            stage_paused=self._pause_control.stage_paused,
            now=self._clock.now(),
            now_mono=now_mono,
            tools=self._tool_health(),
        )
        self.pauses.reapply(self._consumer, self._buffers.keys())
        self._unstick(stalled, now_mono)
        self._update_tool_share()

    def _unstick(self, stalled: list[TopicPartition], now_mono: float) -> None:
        """Resume, in the client, stalled partitions this worker does not pause and holds
        nothing of: librdkafka can keep a partition paused that the worker resumed
        (librdkafka #5591; the demo once had a partition never fetched while unpaused
        here), and nothing else would ever fetch it again. Said once per stall; tried again
        every stall_after_s while it lasts."""
        still = set(stalled)
        self._resumed_at = {tp: t for tp, t in self._resumed_at.items() if tp in still}
        for tp in stalled:
            buffer = self._buffers.get(tp)
            if buffer is None or buffer.waiting or buffer.in_flight or self.pauses.is_paused(tp):
                continue
            last = self._resumed_at.get(tp)
            if last is not None and now_mono - last < self.options.stall_after_s:
                continue
            if last is None:
                log.warning(
                    "partition %s stalled with nothing buffered or running and no pause of "
                    "this worker's: resuming it in the client (librdkafka can keep a pause)",
                    tp,
                )
            self._resumed_at[tp] = now_mono
            self._consumer.resume([tp])

    def _tool_health(self) -> tuple[ToolHealth, ...]:
        if self._tools is None:
            return ()
        return tuple(
            ToolHealth(r.name, r.breaker, r.in_flight, r.waiting, r.concurrency_limit)
            for r in self._tools.readings()
        )

    # ----------------------------------------------------------------- rebalance
    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        self.metrics.count_rebalance("assign")
        for tp in partitions:
            lane = self._lane_of_topic[tp.topic]
            self._buffers[tp] = PartitionBuffer(
                tp, lane, self.stage.partition_buffer, self._offsets.assign(tp)
            )
            self._pause_control.assign(tp)
            if self._tool_pauses is not None:
                self._tool_pauses.assign(self.pauses, tp)
        self._degradation.mark(self.pauses, partitions, self.degradation())
        self.pauses.reapply(self._consumer, self._buffers.keys(), fresh=partitions)
        self._update_tool_share()
        # Report on the next round: the new partitions' age and lag series (and the pressure
        # report the monitor reads) must not wait a whole interval; a fast worker may have
        # drained them before then.
        self._next_report = 0.0
        log.info("assigned %s", ", ".join(map(str, partitions)))

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.metrics.count_rebalance("revoke")
        revoked = set(partitions) & set(self._buffers)
        deadline = time.monotonic() + self.options.revoke_budget_s
        # Finish what is in flight on the revoked partitions (bounded), then commit it.
        while time.monotonic() < deadline and self._in_flight_on(revoked):
            self._finish(self._runner.drain())
            self._router.retry_backlog()
            self._producer.poll(0.01)
            self._check_fatal()
        kept = self._delivery.revoking(
            self._consumer, self._offsets, self._idle_positions(), revoked
        )
        self._drop(revoked)
        if not kept:
            self._rewind(set(self._buffers))
        self.pauses.reapply(self._consumer, self._buffers.keys())
        self._update_tool_share()  # only now: the revoked partitions' calls are done
        log.info("revoked %s", ", ".join(map(str, partitions)))

    def _in_flight_on(self, partitions: Iterable[TopicPartition]) -> bool:
        return any(self._buffers[tp].in_flight for tp in partitions)

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        self.metrics.count_rebalance("lost")
        # Lost partitions belong to someone else already: nothing may be committed for them.
        lost = set(partitions) & set(self._buffers)
        self._drop(lost)
        if not self._delivery.lost(lost):
            self._rewind(set(self._buffers))
        self.pauses.reapply(self._consumer, self._buffers.keys())
        self._update_tool_share()
        log.warning("lost %s", ", ".join(map(str, partitions)))

    def _drop(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            buffer = self._buffers.pop(tp)
            for work in buffer.close():
                self._release_key(work.record)
            self._pause_control.forget(tp)
            self._offsets.revoke(tp)
            self._stalls.forget(tp)
            self.metrics.forget_partition(tp)
        self._delivery.forget(partitions)
        self._router.discard_backlog()
        self.pauses.forget(partitions)
        self._decode_holds.forget(partitions)

    # ----------------------------------------------------------------- shutdown
    def _shutdown(self) -> None:
        """Stop fetching, drain in-flight work up to the grace period, commit."""
        log.info("stage %s draining %d in-flight records", self.stage.name, self._in_flight)
        self._consumer.pause(self._buffers.keys())
        deadline = time.monotonic() + self.options.shutdown_grace_s
        while time.monotonic() < deadline and (self._in_flight or self._router.unacknowledged):
            self._beat.last = time.monotonic()  # this loop is the poll loop now
            self._finish(self._runner.drain())
            self._router.retry_backlog()
            self._producer.poll(0.01)
            self._consumer.poll(1, 0.0)  # stay in the group; paused, so nothing arrives
            self._check_fatal()
        self._producer.flush(10.0)
        self._commit()
        log.info("stage %s stopped", self.stage.name)


class _Expired(StreamsError):
    def __init__(self, which: str) -> None:
        super().__init__(
            "deadline passed" if which == "deadline" else "queue age over max_queue_age_s"
        )


#: Dead letters the valve does not judge: the worker's own policies refused the work.
_POLICY_REFUSALS: frozenset[DeadLetterReason] = frozenset(
    {"expired", "tool_unavailable", "tool_saturated"}
)
_OFFSET_BEGINNING = -2  # librdkafka's logical offset for "the start of the partition"


def _prefetch(concurrency: int) -> int:
    """How many dispatched calls may wait in the runner for a free slot: a tenth of the
    cap (at least 1, at most 256), so lane priority is bent for at most that many."""
    return max(1, min(256, concurrency // 10))


def _stage_of_topic_map(topology: Topology) -> dict[str, str]:
    mapping = {topology.completed_topic: "completed"}
    # Retries and escalations are outcomes of this stage, not sends to another stage.
    for topic in topology.retry_topics.values():
        mapping[topic] = "retry"
    mapping[topology.escalations_topic] = "escalations"
    for stage in topology.stages.values():
        for topic in stage.input_topics:
            mapping.setdefault(topic, stage.name)
    return mapping
