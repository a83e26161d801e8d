"""The intake: admission control for one workflow, as a Python API.

Owns the order of a submission — validate, read capacity, decide, claim the idempotency
key, publish, wait for the broker — and the thread that serves Kafka for it. Decides
nothing itself (streams.policy.admission does). A run counts as accepted only once the
broker has acknowledged its event and its run state; if the broker does not answer in
time the caller gets BrokerUnavailable, never a false accept.
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
from typing import Any

from prometheus_client import CollectorRegistry

from streams.clock import Clock, SystemClock
from streams.errors import BrokerUnavailable, DeliveryError
from streams.events import TaskEventCodec, new_task_event
from streams.intake.capacity import CapacityFeed, StageCapacity
from streams.intake.config import IntakeConfig, intake_limits, load_intake_config
from streams.intake.delay import DelayForwarder
from streams.intake.metrics import IntakeMetrics
from streams.intake.requests import Decision, InvalidRequest, RunRequest, check_request
from streams.intake.state import QueuedRun, RunStateView
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
)
from streams.runtime.pressure_reports import ReportBoard
from streams.serde import PayloadSchema, SchemaStore, Serde
from streams.topology import Topology
from streams.types import Lane

log = logging.getLogger(__name__)

DECISION_SCHEMA = "dev.streams.AdmissionDecisionRecord"
RUN_STATE_SCHEMA = "dev.streams.RunState"
CLAIM_SCHEMA = "dev.streams.IdempotencyClaim"
DUE_HEADER = "streams.due_ms"


@dataclass(frozen=True, slots=True)
class CapacityReport:
    """What GET /capacity shows: the queue, the first stage, and the admission state."""

    queued_by_lane: dict[str, int]
    queued_by_tenant: dict[str, int]
    oldest_queued_age_s: dict[str, float]
    delayed: int
    first_stage: StageCapacity
    state: str
    why: str


class Intake:
    """Admission control for `topology`'s workflow.

    start() reads the shared run state to its end and starts the I/O thread; asubmit() is
    the async API (safe to call concurrently from one event loop or several), submit() the
    blocking one. Several replicas may run against one cluster: they share bounds and
    duplicate collapse through Kafka (see streams.intake.state for the consistency bound).
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
    ) -> None:
        self.topology = topology
        self.config: IntakeConfig = load_intake_config(topology)
        self.limits = intake_limits(self.config)
        self.replica_id = replica_id or uuid.uuid4().hex[:8]
        self.registry = registry or CollectorRegistry()
        self.metrics = IntakeMetrics(self.registry, topology.workflow)
        self._client = client
        self._clock = clock or SystemClock()
        self._ack_timeout_s = ack_timeout_s
        self._entry = topology.stages[self.config.entry_stage]
        store = SchemaStore()
        self._events = TaskEventCodec(store)
        self._decision_serde = Serde(store, DECISION_SCHEMA)
        self._run_serde = Serde(store, RUN_STATE_SCHEMA)
        self._claim_serde = Serde(store, CLAIM_SCHEMA)
        self._payload_schema = (
            PayloadSchema(self.config.payload_schema) if self.config.payload_schema else None
        )
        # message.timeout.ms = our ack timeout: after it the client gives the record up, so
        # a caller told "unavailable" is not followed by a late, silent accept.
        self._producer = RecordProducer(
            client.with_extra({"message.timeout.ms": int(ack_timeout_s * 1000), "linger.ms": 1})
        )
        self.view = RunStateView(client, topology, store)
        pressure_spec = topology.all_topics()[topology.pressure_topic]
        board = ReportBoard(TopicTail(client, topology.pressure_topic, pressure_spec.partitions))
        self.capacity_feed = CapacityFeed(
            LagReader(Admin(client), self._clock), board, self._entry, self._clock
        )
        self._forwarder = (
            DelayForwarder(client, topology, self._entry, self._clock) if forward_delayed else None
        )
        self._claim_waiters: list[tuple[int, int, Callable[[], None]]] = []
        self._waiters_lock = threading.Lock()
        self._stop = threading.Event()
        self._io = threading.Thread(target=self._serve_io, name="intake-io", daemon=True)
        self._sync_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Intake:
        try:
            self.view.catch_up()
            self.capacity_feed.refresh()
        except BaseException:
            self.close()
            raise
        self._io.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._io.is_alive():
            self._io.join(5.0)
        self._producer.flush(5.0)
        self.view.close()
        self.capacity_feed.close()
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
        now_ms = int(self._clock.now() * 1000)
        snapshot = self._snapshot()
        verdict = decide(
            AdmissionRequest(request.tenant, request.lane, request.deadline_ms),
            snapshot,
            self.limits,
            now_ms,
        )
        decision = await self._carry_out(request, verdict, now_ms)
        self._record(request, decision, now_ms, time.monotonic() - started)
        return decision

    def capacity(self) -> CapacityReport:
        counts = self.view.counts()
        now_ms = int(self._clock.now() * 1000)
        first = self.capacity_feed.latest()
        snapshot = self._snapshot()
        point = self.limits.max_queued * (
            self.limits.pressure_saturation_ratio
            if first.pressure_paused
            else self.limits.saturation_ratio
        )
        if counts.total >= self.limits.max_queued:
            state, why = "full", f"{counts.total} queued, hard bound {self.limits.max_queued}"
        elif counts.total >= point:
            state = "saturated"
            cause = " (first stage paused by downstream pressure)" if first.pressure_paused else ""
            why = f"{counts.total} queued >= saturation point {point:.0f}{cause}"
        else:
            state, why = "open", f"{counts.total} queued < saturation point {point:.0f}"
        del snapshot
        return CapacityReport(
            queued_by_lane={lane: n for lane, n in counts.by_lane.items()},
            queued_by_tenant=dict(counts.by_tenant),
            oldest_queued_age_s={
                lane: max(0.0, (now_ms - ms) / 1000)
                for lane, ms in counts.oldest_admitted_ms.items()
            },
            delayed=counts.delayed,
            first_stage=first,
            state=state,
            why=why,
        )

    # ------------------------------------------------------------------ steps
    def _check_payload(self, payload: bytes) -> None:
        if self._payload_schema is None:
            return
        problem = self._payload_schema.problem_with_json(payload)
        if problem is not None:
            raise InvalidRequest(422, "payload", problem)

    def _snapshot(self) -> CapacitySnapshot:
        counts = self.view.counts()
        first = self.capacity_feed.latest()
        return CapacitySnapshot(
            queued_total=counts.total,
            queued_by_tenant=counts.by_tenant,
            queued_by_lane=counts.by_lane,
            first_stage_lag=first.lag,
            drain_rate_per_s=first.drain_rate_per_s,
            p95_handler_s=first.p95_handler_s,
            downstream_paused=first.pressure_paused,
        )

    async def _carry_out(
        self, request: RunRequest, verdict: AdmissionDecision, now_ms: int
    ) -> Decision:
        base = Decision(
            verdict.outcome,
            verdict.reason,
            verdict.lane,
            request.lane,
            forecast_wait_s=verdict.forecast_wait_s,
        )
        if verdict.outcome == "rejected":
            return replace(base, retry_after_s=verdict.retry_after_s)
        run_id = uuid.uuid4().hex
        delayed = verdict.outcome == "delayed"
        due_ms = now_ms + int((verdict.delay_s or 0.0) * 1000) if delayed else None
        # Reserve before waiting on the broker: concurrent requests on this replica see it.
        self.view.note_admitted(
            QueuedRun(run_id, request.tenant, verdict.lane, now_ms, delayed, self.replica_id)
        )
        try:
            if request.idempotency_key is not None:
                winner = await self._claim(request, run_id, verdict.lane, now_ms)
                if winner is not None:
                    self.view.forget(run_id)
                    winner_id, winner_lane = winner
                    return replace(
                        base, outcome="collapsed", reason="duplicate", lane=winner_lane,
                        run_id=winner_id,
                    )  # fmt: skip
            await self._publish(request, run_id, verdict.lane, now_ms, due_ms)
        except BaseException:
            self.view.forget(run_id)
            raise
        return replace(base, run_id=run_id, due_at_ms=due_ms)

    async def _claim(
        self, request: RunRequest, run_id: str, lane: str, now_ms: int
    ) -> tuple[str, Lane] | None:
        """Claim the key; return (run_id, lane) of an earlier claim that wins, else None."""
        claim_key = f"{request.tenant}/{request.idempotency_key}"
        since = now_ms - int(self.config.dedupe_window_s * 1000)
        earlier = self.view.first_claim(claim_key, since)
        if earlier is not None:
            return earlier.run_id, earlier.lane
        loop = asyncio.get_running_loop()
        placed: asyncio.Future[tuple[int, int]] = loop.create_future()
        value = self._claim_serde.encode(
            {"claim_key": claim_key, "run_id": run_id, "lane": lane,
             "claimed_at": now_ms, "replica": self.replica_id}
        )  # fmt: skip

        def on_placed(error: DeliveryError | None, partition: int, offset: int) -> None:
            if error is not None:
                _resolve_error(loop, placed, BrokerUnavailable(f"claim not acknowledged: {error}"))
            else:
                _resolve(loop, placed, (partition, offset))

        self._producer.send(
            self.topology.claims_topic, value, key=claim_key.encode(), on_placed=on_placed
        )
        partition, offset = await self._with_timeout(placed, "claim")
        read_back: asyncio.Future[None] = loop.create_future()
        with self._waiters_lock:
            self._claim_waiters.append((partition, offset, lambda: _resolve(loop, read_back, None)))
        await self._with_timeout(read_back, "claim read-back")
        first = self.view.first_claim(claim_key, since)
        if first is None or first.run_id == run_id:
            return None
        return first.run_id, first.lane

    async def _publish(
        self, request: RunRequest, run_id: str, lane: Lane, now_ms: int, due_ms: int | None
    ) -> None:
        loop = asyncio.get_running_loop()
        event = new_task_event(
            workflow=self.topology.workflow,
            stage=self._entry.name,
            tenant=request.tenant,
            lane=lane,
            payload=request.payload,
            now_ms=now_ms,
            priority=request.priority,
            idempotency_key=request.idempotency_key,
            deadline_ms=request.deadline_ms,
            trace_context=dict(request.trace_context),
            run_id=run_id,
        )
        headers: tuple[tuple[str, bytes], ...] = ()
        if due_ms is None:
            topic = self._entry.input_topics_by_lane[lane]
        else:
            topic, headers = self.topology.delayed_topic, ((DUE_HEADER, str(due_ms).encode()),)
        state = self._run_serde.encode(
            {"run_id": run_id, "workflow": self.topology.workflow, "tenant": request.tenant,
             "lane": lane, "state": "delayed" if due_ms else "queued",
             "idempotency_key": request.idempotency_key, "admitted_at": now_ms,
             "due_at": due_ms, "deadline": request.deadline_ms, "replica": self.replica_id}
        )  # fmt: skip
        acks = [loop.create_future() for _ in range(2)]
        for future, (target, value, hdrs) in zip(
            acks,
            [(topic, self._events.encode(event), headers), (self.topology.runs_topic, state, ())],
            strict=True,
        ):
            self._producer.send(
                target, value, key=run_id.encode(), headers=hdrs,
                on_ack=_ack_into(loop, future),
            )  # fmt: skip
        for future in acks:
            await self._with_timeout(future, "publish")

    async def _with_timeout(self, future: asyncio.Future[Any], what: str) -> Any:
        try:
            return await asyncio.wait_for(future, self._ack_timeout_s)
        except TimeoutError:
            raise BrokerUnavailable(
                f"the broker did not acknowledge the {what} within {self._ack_timeout_s:.0f} s"
            ) from None

    def _record(self, request: RunRequest, decision: Decision, now_ms: int, seconds: float) -> None:
        tenant_class = (
            request.tenant if request.tenant in self.limits.tenant_max_queued else "default"
        )
        self.metrics.decided(request.lane, tenant_class, decision.outcome, decision.reason, seconds)
        record = self._decision_serde.encode(
            {"workflow": self.topology.workflow, "tenant": request.tenant,
             "requested_lane": request.lane, "lane": decision.lane,
             "outcome": decision.outcome, "reason": decision.reason,
             "run_id": decision.run_id, "retry_after_s": decision.retry_after_s,
             "due_at": decision.due_at_ms, "forecast_wait_s": decision.forecast_wait_s,
             "decided_at": now_ms, "replica": self.replica_id}
        )  # fmt: skip
        # The audit trail must not fail a decision already made; a lost decision record is
        # logged by the producer's delivery report.
        try:
            self._producer.send(
                self.topology.decisions_topic, record, key=request.tenant.encode(), max_wait_s=0.0
            )
        except DeliveryError as exc:
            log.warning("decision record not queued: %s", exc)

    # ------------------------------------------------------------------ I/O thread
    def _serve_io(self) -> None:
        next_capacity = 0.0
        while not self._stop.is_set():
            try:
                served = self._producer.poll(0.001)
                applied = self.view.poll()
                self._release_claim_waiters()
                now = time.monotonic()
                if now >= next_capacity:
                    next_capacity = now + 0.5
                    self.capacity_feed.refresh()
                    self._export_queue()
                if self._forwarder is not None:
                    self._forwarder.step()
                if not served and not applied:
                    time.sleep(0.001)
            except Exception:  # the I/O thread must outlive one bad iteration
                log.exception("intake I/O iteration failed")
                time.sleep(0.1)

    def _release_claim_waiters(self) -> None:
        with self._waiters_lock:
            if not self._claim_waiters:
                return
            ready = [w for w in self._claim_waiters if self.view.claims_read_past(w[0], w[1])]
            self._claim_waiters = [w for w in self._claim_waiters if w not in ready]
        for _, _, release in ready:
            release()

    def _export_queue(self) -> None:
        counts = self.view.counts()
        now_ms = self._clock.now() * 1000
        ages = {
            lane: max(0.0, (now_ms - ms) / 1000) for lane, ms in counts.oldest_admitted_ms.items()
        }
        first = self.capacity_feed.latest()
        ratio = (
            self.limits.pressure_saturation_ratio
            if first.pressure_paused
            else self.limits.saturation_ratio
        )
        self.metrics.set_queue(counts.by_lane, ages, counts.total >= self.limits.max_queued * ratio)

    def _ensure_sync_loop(self) -> asyncio.AbstractEventLoop:
        if self._sync_loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="intake-sync", daemon=True).start()
            self._sync_loop = loop
        return self._sync_loop


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], value: Any) -> None:
    def settle() -> None:
        if not future.done():
            future.set_result(value)

    loop.call_soon_threadsafe(settle)


def _resolve_error(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], error: BaseException
) -> None:
    def settle() -> None:
        if not future.done():
            future.set_exception(error)

    loop.call_soon_threadsafe(settle)


def _ack_into(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
) -> Callable[[DeliveryError | None], None]:
    def on_ack(error: DeliveryError | None) -> None:
        if error is None:
            _resolve(loop, future, None)
        else:
            _resolve_error(loop, future, BrokerUnavailable(f"not acknowledged: {error}"))

    return on_ack
