"""The intake: admission control for one workflow, as a Python API.

Owns the order of a submission — validate, decide, reserve a place in the run ledger,
decide again from the ledger's order, publish, wait for the broker — and the thread that
serves Kafka for it. Decides nothing itself (streams.policy.admission does). A run counts
as accepted only once the broker has acknowledged its event and its ledger entry; if the
broker does not answer in time the caller gets BrokerUnavailable, never a false accept.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from streams.intake.delay import DUE_HEADER, DelayForwarder
from streams.intake.metrics import IntakeMetrics
from streams.intake.requests import Decision, InvalidRequest, RunRequest, check_request
from streams.intake.state import LedgerEntry, QueueCounts, RunStateView
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
from streams.runtime.pressure_reports import ReportBoard
from streams.serde import PayloadSchema, SchemaStore, Serde
from streams.topology import Topology
from streams.types import Lane

log = logging.getLogger(__name__)

DECISION_SCHEMA = "dev.streams.AdmissionDecisionRecord"


@dataclass(frozen=True, slots=True)
class CapacityReport:
    """What GET /capacity shows: the queue, the first stage, and the admission state."""

    queued_by_lane: dict[Lane, int]
    queued_by_tenant: dict[str, int]
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
        store = SchemaStore()
        self._events = TaskEventCodec(store)
        self._decision_serde = Serde(store, DECISION_SCHEMA)
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
            LagReader(Admin(client, timeout_s=5.0), self._clock), board, self._entry, self._clock
        )
        self._forwarder = (
            DelayForwarder(client, topology, self._entry, self._clock) if forward_delayed else None
        )
        self._ledger_waiters: list[tuple[int, Callable[[], None]]] = []
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
        self.capacity_feed.start()
        return self

    def close(self) -> None:
        self._stop.set()
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
        now_ms = int(self._clock.now() * 1000)
        decision = await self._admit(request, now_ms)
        self._record(request, decision, now_ms, time.monotonic() - started)
        return decision

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
        return CapacityReport(
            queued_by_lane={lane: n for lane, n in counts.by_lane.items()},
            queued_by_tenant=dict(counts.by_tenant),
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
        )

    def _verdict(self, request: RunRequest, counts: QueueCounts, now_ms: int) -> AdmissionDecision:
        return decide(
            AdmissionRequest(request.tenant, request.lane, request.deadline_ms),
            self._snapshot(counts),
            self.limits,
            now_ms,
        )

    async def _admit(self, request: RunRequest, now_ms: int) -> Decision:
        """Decide locally when the answer is no (conservative: the local view counts every
        reservation it knows of); otherwise reserve a place in the ledger and decide from
        exactly the entries before it, so replicas never overshoot a bound together."""
        since_ms = now_ms - int(self.config.dedupe_window_s * 1000)
        key = request.idempotency_key
        if key is not None:
            earlier = self.view.first_with_key(request.tenant, key, since_ms)
            if earlier is not None and earlier.phase != "reserved":
                return _collapsed(request, earlier)
        verdict = self._verdict(request, self.view.counts(now_ms=now_ms), now_ms)
        if verdict.outcome == "rejected":
            return _decision(request, verdict)
        run_id = uuid.uuid4().hex
        reservation = LedgerEntry(
            run_id, request.tenant, request.lane, "reserved", now_ms, key, self.replica_id, -1
        )
        self.view.note(reservation)
        try:
            offset = await self._append(reservation, request.deadline_ms, None)
            await self._read_back(offset)
            if key is not None:
                owner = await self._earlier_owner(request.tenant, key, since_ms, offset)
                if owner is not None:
                    self._release(run_id)
                    return _collapsed(request, owner)
            counts = self.view.counts(before_offset=offset, now_ms=now_ms)
            verdict = self._verdict(request, counts, now_ms)
            if verdict.outcome == "rejected":
                self._release(run_id)
                return _decision(request, verdict)
            delayed = verdict.outcome == "delayed"
            due_ms = now_ms + int((verdict.delay_s or 0.0) * 1000) if delayed else None
            admitted = replace(
                reservation, lane=verdict.lane, phase="delayed" if delayed else "queued"
            )
            await self._publish(request, run_id, verdict.lane, now_ms, due_ms)
            self.view.note(admitted)
            await self._append(admitted, request.deadline_ms, due_ms)
        except BaseException:
            self._release(run_id)
            raise
        return replace(_decision(request, verdict), run_id=run_id, due_at_ms=due_ms)

    async def _earlier_owner(
        self, tenant: str, key: str, since_ms: int, offset: int
    ) -> LedgerEntry | None:
        """The admitted run that owns the key ahead of our reservation, if any. An earlier
        reservation still undecided is waited for: it may yet be rejected."""
        deadline = time.monotonic() + self._ack_timeout_s
        while True:
            earlier = self.view.first_with_key(tenant, key, since_ms, before_offset=offset)
            if earlier is None or earlier.phase != "reserved":
                return earlier
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    "an earlier submission with this idempotency key is still undecided"
                )
            await asyncio.sleep(0.005)

    # ------------------------------------------------------------------ writing
    async def _append(self, entry: LedgerEntry, deadline_ms: int | None, due_ms: int | None) -> int:
        """Append an entry to the ledger; return its offset once the broker has it."""
        loop = asyncio.get_running_loop()
        placed: asyncio.Future[int] = loop.create_future()
        value = self.view.serde.encode(
            {"run_id": entry.run_id, "workflow": self.topology.workflow,
             "tenant": entry.tenant, "lane": entry.lane, "state": entry.phase,
             "idempotency_key": entry.idempotency_key, "admitted_at": entry.at_ms,
             "due_at": due_ms, "deadline": deadline_ms, "replica": entry.replica}
        )  # fmt: skip

        def on_placed(error: DeliveryError | None, _partition: int, offset: int) -> None:
            if error is not None:
                _resolve_error(loop, placed, BrokerUnavailable(f"ledger write failed: {error}"))
            else:
                _resolve(loop, placed, offset)

        self._producer.send(
            self.topology.runs_topic, value, key=entry.run_id.encode(), on_placed=on_placed
        )
        offset: int = await self._with_timeout(placed, "ledger entry")
        return offset

    async def _read_back(self, offset: int) -> None:
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[None] = loop.create_future()
        with self._waiters_lock:
            self._ledger_waiters.append((offset, lambda: _resolve(loop, seen, None)))
        await self._with_timeout(seen, "ledger read-back")

    def _release(self, run_id: str) -> None:
        """Give a reservation back: a tombstone, so every replica stops counting it."""
        self.view.forget(run_id)
        try:
            self._producer.send(self.topology.runs_topic, None, key=run_id.encode(), max_wait_s=0.0)
        except DeliveryError as exc:
            log.warning("reservation %s not released (it times out instead): %s", run_id, exc)

    async def _publish(
        self, request: RunRequest, run_id: str, lane: Lane, now_ms: int, due_ms: int | None
    ) -> None:
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
        loop = asyncio.get_running_loop()
        ack: asyncio.Future[None] = loop.create_future()
        self._producer.send(
            topic, self._events.encode(event), key=run_id.encode(), headers=headers,
            on_ack=_ack_into(loop, ack),
        )  # fmt: skip
        await self._with_timeout(ack, "publish")

    async def _with_timeout(self, future: asyncio.Future[Any], what: str) -> Any:
        try:
            return await asyncio.wait_for(future, self._ack_timeout_s)
        except TimeoutError:
            raise BrokerUnavailable(
                f"the broker did not acknowledge the {what} within {self._ack_timeout_s:.0f} s"
            ) from None

    def _record(self, request: RunRequest, decision: Decision, now_ms: int, seconds: float) -> None:
        named = request.tenant in self.limits.tenant_max_queued
        tenant_class = request.tenant if named else "default"
        self.metrics.decided(request.lane, tenant_class, decision.outcome, decision.reason, seconds)
        record = self._decision_serde.encode(
            {"workflow": self.topology.workflow, "tenant": request.tenant,
             "requested_lane": request.lane, "lane": decision.lane,
             "outcome": decision.outcome, "reason": decision.reason,
             "run_id": decision.run_id, "retry_after_s": decision.retry_after_s,
             "due_at": decision.due_at_ms, "forecast_wait_s": decision.forecast_wait_s,
             "decided_at": now_ms, "replica": self.replica_id}
        )  # fmt: skip
        # The audit trail must not fail a decision already made.
        try:
            self._producer.send(
                self.topology.decisions_topic, record, key=request.tenant.encode(), max_wait_s=0.0
            )
        except DeliveryError as exc:
            log.warning("decision record not queued: %s", exc)

    # ------------------------------------------------------------------ I/O thread
    def _serve_io(self) -> None:
        next_export = 0.0
        while not self._stop.is_set():
            try:
                served = self._producer.poll(0.0005)
                applied = self.view.poll()
                self._release_ledger_waiters()
                now = time.monotonic()
                if now >= next_export:
                    next_export = now + 0.5
                    self._export_queue()
                if self._forwarder is not None:
                    self._forwarder.step()
                if not served and not applied:
                    time.sleep(0.0005)
            except Exception:  # the I/O thread must outlive one bad iteration
                log.exception("intake I/O iteration failed")
                time.sleep(0.1)

    def _release_ledger_waiters(self) -> None:
        with self._waiters_lock:
            if not self._ledger_waiters:
                return
            ready: list[tuple[int, Callable[[], None]]] = []
            waiting: list[tuple[int, Callable[[], None]]] = []
            for waiter in self._ledger_waiters:
                (ready if self.view.read_past(waiter[0]) else waiting).append(waiter)
            self._ledger_waiters = waiting
        for _, release in ready:
            release()

    def _export_queue(self) -> None:
        report = self.capacity()
        self.metrics.set_queue(
            report.queued_by_lane, report.oldest_queued_age_s, report.state != "open"
        )

    def _ensure_sync_loop(self) -> asyncio.AbstractEventLoop:
        if self._sync_loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="intake-sync", daemon=True).start()
            self._sync_loop = loop
        return self._sync_loop


def _decision(request: RunRequest, verdict: AdmissionDecision) -> Decision:
    return Decision(
        verdict.outcome,
        verdict.reason,
        verdict.lane,
        request.lane,
        retry_after_s=verdict.retry_after_s,
        forecast_wait_s=verdict.forecast_wait_s,
    )


def _collapsed(request: RunRequest, owner: LedgerEntry) -> Decision:
    return Decision("collapsed", "duplicate", owner.lane, request.lane, run_id=owner.run_id)


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], value: Any) -> None:
    def settle() -> None:
        if not future.done():
            future.set_result(value)

    _call_soon(loop, settle)


def _resolve_error(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], error: BaseException
) -> None:
    def settle() -> None:
        if not future.done():
            future.set_exception(error)

    _call_soon(loop, settle)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    # A late broker ack may arrive after the caller's event loop has gone (its request
    # timed out and the server stopped): there is nobody left to tell.
    if not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # closed between the check and the call
            loop.call_soon_threadsafe(callback)


def _ack_into(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
) -> Callable[[DeliveryError | None], None]:
    def on_ack(error: DeliveryError | None) -> None:
        if error is None:
            _resolve(loop, future, None)
        else:
            _resolve_error(loop, future, BrokerUnavailable(f"not acknowledged: {error}"))

    return on_ack
