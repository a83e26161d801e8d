"""The intake: admission control for one workflow, as a Python API.

Owns the API, the fast local refusal, and the thread that serves Kafka for the intake;
what needs the ledger (reserve, decide again from the ledger's order, publish, wait for
the broker) runs in batches (streams.intake.group_commit, .admit_batch). Decides nothing
itself (streams.policy.admission does). A run counts
as accepted only once the broker has acknowledged its event; if the broker does not answer
in time the caller gets OutcomeUnknown (the event was sent: the run may exist, a retry with
the same idempotency key learns which) or BrokerUnavailable (nothing was sent), never a
false accept and never a false refusal.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry

from streams.clock import Clock, SystemClock
from streams.errors import AuthorizationFailed, BrokerUnavailable, StreamsError
from streams.events import TaskEventCodec
from streams.intake.admit_batch import BatchAdmitter, collapsed
from streams.intake.capacity import UNREADABLE_AFTER_S, CapacityFeed, StageCapacity, review_path
from streams.intake.config import IntakeConfig, intake_limits, load_intake_config
from streams.intake.degradation import degraded_verdict
from streams.intake.delay import DelayForwarder
from streams.intake.group_commit import GroupCommit
from streams.intake.handoff import KnownWaiters, LoopHandoff
from streams.intake.metrics import IntakeMetrics
from streams.intake.requests import (
    Decision,
    InvalidRequest,
    RunRequest,
    check_request,
    decision_of,
)
from streams.intake.resolver import UnknownOutcomes
from streams.intake.run_stage import find_run_stage
from streams.intake.run_status import RunStatus, run_status
from streams.intake.state import QueueCounts, RunStateView
from streams.intake.writer import IntakeWriter
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.lag_reader import LagReader
from streams.kafka.producer import RecordProducer
from streams.kafka.tail import TopicTail
from streams.policy.admission import (
    AdmissionDecision,
    AdmissionRequest,
    CapacitySnapshot,
    decide,
    saturation_point,
)
from streams.runtime.degradation import DegradationFeed, DegradationNow
from streams.runtime.degradation_metrics import DegradationMetrics
from streams.runtime.pressure_reports import ReportBoard
from streams.serde import PayloadSchema, SchemaStore, Serde
from streams.topology import Topology
from streams.types import Lane, TopicPartition

log = logging.getLogger(__name__)

DECISION_SCHEMA = "dev.streams.AdmissionDecisionRecord"
#: How long the idle I/O thread blocks on the producer (the delay path and the finished
#: topics are served at least this often).
IDLE_WAIT_S = 0.02


@dataclass(frozen=True, slots=True)
class CapacityReport:
    """What GET /capacity shows: the queue, the first stage, and the admission state."""

    queued_by_lane: dict[Lane, int]
    queued_by_tenant: dict[str, int]  # admitted runs, not yet finished
    undecided_by_tenant: dict[str, int]  # reservations still being decided (counted too)
    oldest_queued_age_s: dict[Lane, float]
    delayed: int
    first_stage: StageCapacity
    state: str
    why: str


class Intake:
    """Admission control for `topology`'s workflow.

    start() reads the run ledger to its end and starts the I/O thread; asubmit() is the
    async API (safe to call concurrently), submit() the blocking one. Several replicas may
    run against one cluster: they share bounds and duplicate collapse through the ledger
    (see streams.intake.state).
    """

    def __init__(
        self,
        topology: Topology,
        client: ClientConfig,
        *,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        replica_id: str | None = None,
        ack_timeout_s: float = 5.0,
        forward_delayed: bool = True,
        on_refused: Callable[[AuthorizationFailed], object] | None = None,
    ) -> None:
        self.topology = topology
        self.config: IntakeConfig = load_intake_config(topology)
        self.limits = intake_limits(self.config)
        self.replica_id = replica_id or uuid.uuid4().hex[:8]
        self.registry = registry or CollectorRegistry()
        self.metrics = IntakeMetrics(self.registry, topology.workflow)
        self._clock = clock or SystemClock()
        self._ack_timeout_s = ack_timeout_s
        self._entry = topology.stages[self.config.entry_stage]
        self._client = client
        #: Set once the cluster refused the credentials for good (README "Secured
        #: clusters"): the I/O thread has stopped, and every answer says so.
        self.refused: AuthorizationFailed | None = None
        self._on_refused = on_refused
        #: How long a run-status query may read stage topics to find a run's stage.
        self.find_stage_timeout_s = 5.0
        store = SchemaStore()
        self._events = TaskEventCodec(store)
        self._payload_schema = (
            PayloadSchema(self.config.payload_schema) if self.config.payload_schema else None
        )
        # message.timeout.ms = our ack timeout: after it the client gives the record up, so
        # a caller told "unavailable" is not followed by a late, silent accept.
        self._producer = RecordProducer(
            client.with_extra({"message.timeout.ms": int(ack_timeout_s * 1000), "linger.ms": 1})
        )
        self.view = RunStateView(
            client, topology, store, replica_id=self.replica_id,
            collapse_window_s=self.config.dedupe_window_s, clock=self._clock,
        )  # fmt: skip
        pressure_spec = topology.all_topics()[topology.pressure_topic]
        board = ReportBoard(TopicTail(client, topology.pressure_topic, pressure_spec.partitions))
        self._admin = Admin(client, timeout_s=5.0)
        self._cluster_id: str | None = None  # the cluster's when first read
        self.capacity_feed = CapacityFeed(
            LagReader(self._admin, self._clock), board, self._entry, self._clock,
            also_check=self._check_ledger_end,
            reviews=review_path(topology, client, self._entry.name),
        )  # fmt: skip
        self._forwarder = (
            DelayForwarder(client, topology, self._entry, self._clock) if forward_delayed else None
        )
        self._handoff = LoopHandoff()
        self._known_waiters = KnownWaiters(self._handoff)
        self._writer = IntakeWriter(
            self._producer, self.view, self._handoff, topology, self._entry, self._events,
            self.view.serde, Serde(store, DECISION_SCHEMA),
        )  # fmt: skip
        # The producer gives a record up after ack_timeout_s; a few seconds more and nothing
        # of a submission can still land, so what the broker holds then is the truth.
        self.unknowns = UnknownOutcomes(
            client, topology, self._entry, self.view, self._writer, self._clock,
            settle_after_s=ack_timeout_s + 3.0,
            stale_after_s=max(self.view.reservation_timeout_s, ack_timeout_s + 3.0),
        )  # fmt: skip
        self._admitter = BatchAdmitter(
            self.view, self._writer, self._verdict, self._wait_known, self.unknowns.add,
            replica_id=self.replica_id, dedupe_window_s=self.config.dedupe_window_s,
            ack_timeout_s=ack_timeout_s, unknown_retry_after_s=ack_timeout_s + 5.0,
        )  # fmt: skip
        # README "Degradation": the level every worker acts on, and its intake.lanes rules.
        self.degradation_feed = DegradationFeed(
            topology, client, self._clock, who=f"intake/{self.replica_id}",
            on_change=self._degradation_changed,
        )  # fmt: skip
        self._degradation_metrics = DegradationMetrics(
            self.registry, topology.workflow, self.degradation_feed.ladder
        )
        self._groups: dict[asyncio.AbstractEventLoop, GroupCommit] = {}
        self._groups_lock = threading.Lock()
        self._stop = threading.Event()
        self._io = threading.Thread(target=self._serve_io, name="intake-io", daemon=True)
        self._sync_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Intake:
        try:
            self.view.catch_up()
            self.capacity_feed.refresh()
            self._check_ledger_end()  # the cluster id to hold the broker to
            self.degradation_feed.start()
        except BaseException:
            self.close()
            raise
        self._io.start()
        self.capacity_feed.start()
        self.unknowns.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self.unknowns.close()
        self.degradation_feed.stop()
        if self._io.is_alive():
            self._io.join(60.0)
        self.capacity_feed.close()
        if self._io.is_alive():
            log.error("intake I/O thread did not stop; leaving its clients open")
            return
        self._producer.flush(5.0)
        self.view.close()
        if self._forwarder is not None:
            self._forwarder.close()
        if self._sync_loop is not None:
            self._sync_loop.call_soon_threadsafe(self._sync_loop.stop)

    # ------------------------------------------------------------------ the API
    def submit(self, request: RunRequest, timeout_s: float = 30.0) -> Decision:
        """Blocking form of asubmit, for code without an event loop."""
        loop = self._ensure_sync_loop()
        future: ThreadFuture[Decision] = asyncio.run_coroutine_threadsafe(
            self.asubmit(request), loop
        )
        return future.result(timeout_s)

    async def asubmit(self, request: RunRequest) -> Decision:
        started = time.monotonic()
        check_request(request, self.topology.lanes)
        self._check_payload(request.payload)
        if self.refused is not None:
            raise BrokerUnavailable(str(self.refused))
        problem = self.view.problem()
        if problem is not None:
            raise BrokerUnavailable(problem)
        now_ms = int(self._clock.now() * 1000)
        decision = await self._admit(request, now_ms)
        self._record(request, decision, now_ms, time.monotonic() - started)
        return decision

    def status(self, run_id: str, *, find_stage: bool = False) -> RunStatus | None:
        """Where the run is (queued, delayed until when, finished and how, or undecided),
        from this replica's ledger; None when the ledger does not know it (never
        submitted, refused, or finished longer ago than the collapse window).

        find_stage (blocking, for operators: reads the stages' input topics from the
        run's submission on, at most `find_stage_timeout_s`) also says which stage a
        queued run is in."""
        found = self.view.run(run_id)
        if found is None:
            return None
        status = run_status(found, int(self._clock.now() * 1000))
        if find_stage and status.state == "queued":
            status = replace(status, stage=self._find_stage(run_id, status.submitted_at_ms))
        return status

    def _find_stage(self, run_id: str, since_ms: int) -> str | None:
        return find_run_stage(
            self._client, self.topology, self._entry.name, run_id, since_ms,
            timeout_s=self.find_stage_timeout_s,
        )  # fmt: skip

    def health(self) -> tuple[bool, str]:
        """Whether this replica can decide truthfully now, and why not."""
        if self.refused is not None:
            return False, str(self.refused)
        if not self.capacity_feed.latest().readable:
            return False, (
                "the broker does not answer (capacity could not be read for "
                f"{UNREADABLE_AFTER_S:.0f} s)"
            )
        problem = self.view.problem()
        if problem is not None:
            return False, problem
        return True, "ok"

    def capacity(self) -> CapacityReport:
        now_ms = int(self._clock.now() * 1000)
        counts = self.view.counts(now_ms=now_ms)
        first = self.capacity_feed.latest()
        snapshot = self._snapshot(counts)
        point = saturation_point(snapshot, self.limits)
        queued = counts.total
        if queued >= self.limits.max_queued:
            state, why = "full", f"{queued} queued, hard bound {self.limits.max_queued}"
        elif queued >= point:
            cause = " (first stage paused by downstream pressure)" if first.pressure_paused else ""
            state, why = "saturated", f"{queued} queued >= saturation point {point:.0f}{cause}"
        else:
            state, why = "open", f"{queued} queued < saturation point {point:.0f}"
        undecided = self.view.undecided_by_tenant()
        admitted_by_tenant = {
            tenant: n - undecided.get(tenant, 0)
            for tenant, n in counts.by_tenant.items()
            if n - undecided.get(tenant, 0) > 0
        }
        return CapacityReport(
            queued_by_lane={lane: n for lane, n in counts.by_lane.items()},
            queued_by_tenant=admitted_by_tenant,
            undecided_by_tenant=undecided,
            oldest_queued_age_s={
                lane: max(0.0, (now_ms - ms) / 1000)
                for lane, ms in self.view.oldest_admitted_ms().items()
            },
            delayed=counts.delayed,
            first_stage=first,
            state=state,
            why=why,
        )

    # ------------------------------------------------------------------ deciding
    def _check_payload(self, payload: bytes) -> None:
        if self._payload_schema is None:
            return
        problem = self._payload_schema.problem_with_json(payload)
        if problem is not None:
            raise InvalidRequest(422, "payload", problem)

    def _snapshot(self, counts: QueueCounts) -> CapacitySnapshot:
        first = self.capacity_feed.latest()
        return CapacitySnapshot(
            queued_total=counts.total - counts.delayed,
            queued_by_tenant=counts.by_tenant,
            queued_by_lane=counts.by_lane,
            first_stage_lag=first.lag,
            drain_rate_per_s=first.drain_rate_per_s,
            p95_handler_s=first.p95_handler_s,
            downstream_paused=first.pressure_paused,
            delayed_total=counts.delayed,
            review_wait_s=first.review_wait_s,
            review_wait_unknown=first.review_wait_unknown,
        )

    def _verdict(self, request: RunRequest, counts: QueueCounts, now_ms: int) -> AdmissionDecision:
        verdict = decide(
            AdmissionRequest(request.tenant, request.lane, request.deadline_ms),
            self._snapshot(counts),
            self.limits,
            now_ms,
        )
        feed = self.degradation_feed
        return degraded_verdict(
            verdict, request.lane, feed.now().view, self.limits,
            min_dwell_s=feed.ladder.min_dwell_s,
        )  # fmt: skip

    def degradation(self) -> DegradationNow:
        """The degradation level this replica decides at (README "Degradation")."""
        return self.degradation_feed.now()

    def _degradation_changed(self, now: DegradationNow) -> None:
        self._degradation_metrics.set(now)

    async def _admit(self, request: RunRequest, now_ms: int) -> Decision:
        """Decide locally when the answer is no (conservative: the local view counts every
        reservation it knows of); otherwise reserve a place in the ledger and decide from
        exactly the entries before it (streams.intake.admit_batch), so replicas never
        overshoot a bound together."""
        key = request.idempotency_key
        if key is not None:
            since_ms = now_ms - int(self.config.dedupe_window_s * 1000)
            earlier = self.view.first_with_key(request.tenant, key, since_ms)
            if earlier is not None and earlier.phase != "reserved":
                return collapsed(earlier, request.lane)
        verdict = self._verdict(request, self.view.counts(now_ms=now_ms), now_ms)
        if verdict.outcome == "rejected":
            return decision_of(verdict, request.lane)
        return await self._group_commit().add(request, now_ms)

    def _group_commit(self) -> GroupCommit:
        loop = asyncio.get_running_loop()
        group = self._groups.get(loop)
        if group is None:
            with self._groups_lock:
                # Loops come and go (tests, the blocking API): forget the closed ones.
                self._groups = {k: g for k, g in self._groups.items() if not k.is_closed()}
                group = self._groups[loop] = GroupCommit(loop, self._admitter.run)
        return group

    async def _wait_known(self, offset: int) -> None:
        known = self._known_waiters.add(offset, asyncio.get_running_loop())
        try:
            await asyncio.wait_for(known, self._ack_timeout_s)
        except TimeoutError:
            raise BrokerUnavailable(
                f"the intake could not read the run ledger back within {self._ack_timeout_s:.0f} s"
            ) from None

    def _record(self, request: RunRequest, decision: Decision, now_ms: int, seconds: float) -> None:
        named = request.tenant in self.limits.tenant_max_queued
        tenant_class = request.tenant if named else "default"
        self.metrics.decided(request.lane, tenant_class, decision.outcome, decision.reason, seconds)
        level = self.degradation_feed.now().view.level
        self._degradation_metrics.decided(level, decision.outcome)
        self._writer.record_decision(
            {"tenant": request.tenant, "requested_lane": request.lane, "lane": decision.lane,
             "outcome": decision.outcome, "reason": decision.reason,
             "run_id": decision.run_id, "retry_after_s": decision.retry_after_s,
             "due_at": decision.due_at_ms, "forecast_wait_s": decision.forecast_wait_s,
             "decided_at": now_ms, "replica": self.replica_id,
             "degradation_level": level},
            request.tenant,
        )  # fmt: skip

    # ------------------------------------------------------------------ I/O thread
    def _serve_io(self) -> None:
        # Every client call below gives up the GIL and takes it back, which costs a busy
        # event loop a thread switch each time: what can wait a few ms is served less often.
        next_export = next_finished = next_forward = next_ledger = 0.0
        idle = False
        while not self._stop.is_set():
            try:
                # Idle (nothing served, nobody waiting on a read-back): block on the
                # producer, which wakes as soon as an acknowledgement arrives, instead of
                # spinning; busy: a short poll, so ledger reads are not held up.
                served = self._producer.poll(IDLE_WAIT_S if idle else 0.0005)
                now = time.monotonic()
                finished = now >= next_finished
                if finished:
                    next_finished = now + 0.02
                applied = self.view.poll(finished=finished)
                self._known_waiters.release(self.view.known_before)
                self._handoff.flush()
                if now >= next_export:
                    next_export = now + 0.5
                    self._export_metrics()
                if now >= next_ledger:
                    next_ledger = now + 0.5
                    self._keep_ledger_small()
                if self._forwarder is not None and now >= next_forward:
                    next_forward = now + 0.01
                    self._forwarder.step()
                idle = not served and not applied and not self._known_waiters.waiting()
            except AuthorizationFailed as exc:
                # Not one bad iteration: the cluster refuses the credentials for good, and
                # retrying logged a traceback per iteration forever. Stop serving and say
                # so once; the owner (`streams intake`) exits 1 with the same line.
                self.refused = exc
                log.error("intake stops: %s", exc)
                if self._on_refused is not None:
                    self._on_refused(exc)
                return
            except Exception:  # the I/O thread must outlive one bad iteration
                log.exception("intake I/O iteration failed")
                time.sleep(0.1)

    def _check_ledger_end(self) -> None:
        """A ledger whose end is below what was read went back (the broker lost data)."""
        ledger = TopicPartition(self.topology.runs_topic, 0)
        read_to = self.view.read_to()  # before the end is asked for: it can only grow
        try:
            cluster_id = self._admin.cluster_id()
            end = self._admin.end_offsets([ledger])[ledger]
        except StreamsError:
            return  # unreadable: the capacity reading says so already
        if self._cluster_id is None:
            self._cluster_id = cluster_id
        elif cluster_id is not None and cluster_id != self._cluster_id:
            self.view.cluster_changed(self._cluster_id, cluster_id)
        self.view.ledger_rewound(read_to, end)

    def _keep_ledger_small(self) -> None:
        """Record the ends of finished runs in the ledger, and tombstone those whose
        collapse window closed (so the compacted ledger holds only runs of the window)."""
        now_ms = int(self._clock.now() * 1000)
        for run in self.view.ends_to_record(now_ms):
            self._writer.record_end(run)
        for run_id in self.view.windows_closed(now_ms):
            self._writer.release(run_id)

    def _export_metrics(self) -> None:
        report = self.capacity()
        self.metrics.set_queue(
            report.queued_by_lane, report.oldest_queued_age_s, report.state != "open"
        )
        self.metrics.set_ledger(self.view.damaged_entries)

    def _ensure_sync_loop(self) -> asyncio.AbstractEventLoop:
        if self._sync_loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=_serve_until_stopped, args=(loop,), name="intake-sync", daemon=True
            ).start()
            self._sync_loop = loop
        return self._sync_loop


def _serve_until_stopped(loop: asyncio.AbstractEventLoop) -> None:
    """The blocking API's loop: runs until close() stops it, then closes it (an unclosed
    loop leaks its selector and self-pipe sockets)."""
    try:
        loop.run_forever()
    finally:
        loop.close()
