"""Everything the intake writes to Kafka: ledger entries, task events, tombstones and
decision records, with each acknowledgement counted into a Tally on the writer's event
loop. Owns the encodings and the topics; decides nothing.

Own ledger writes are reported to the ledger book as soon as the broker places them (on
the I/O thread), so the book knows those offsets without reading them back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from streams.errors import BrokerUnavailable, DeliveryError, StreamsError
from streams.events import TaskEventCodec, new_task_event
from streams.intake.delay import DUE_HEADER
from streams.intake.finished_runs import FINISHED, FinishedRun
from streams.intake.handoff import LoopHandoff
from streams.intake.ledger_book import LedgerBook, LedgerEntry
from streams.kafka.producer import PlacedCallback, RecordProducer
from streams.serde import Serde
from streams.topology import Stage, Topology
from streams.types import Lane

log = logging.getLogger(__name__)


class Tally:
    """The acknowledgements of a batch's writes, counted on its event loop. Writes are
    grouped by index (one submission's writes share one); `done` resolves once every
    expected acknowledgement is in, failures included."""

    __slots__ = ("acked", "done", "errors", "left", "offsets", "unsent")

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int, expected: int) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self.left = expected
        self.acked = [0] * size
        self.offsets = [-1] * size
        self.errors: list[BaseException | None] = [None] * size
        self.unsent = [False] * size  # failed before reaching the producer: never written
        if expected <= 0:
            self.done.set_result(None)

    def not_sent(self, index: int, error: BaseException) -> None:
        """A write that failed before it was handed to the producer (so it exists nowhere)."""
        self.unsent[index] = True
        self.settle((index, -1, error))

    def settle(self, result: tuple[int, int, BaseException | None]) -> None:
        index, offset, error = result
        if error is None:
            self.acked[index] += 1
            self.offsets[index] = offset
        elif self.errors[index] is None:
            self.errors[index] = error
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)

    async def wait(self, timeout_s: float) -> bool:
        """Wait for every acknowledgement up to timeout_s; False if some did not come."""
        if not self.done.done():
            # A plain timer, not asyncio.wait_for: that costs a future and callbacks more
            # per wait, and batches of one are common under light load.
            timer = self.done.get_loop().call_later(timeout_s, _give_up_waiting, self.done)
            try:
                await self.done
            finally:
                timer.cancel()
        return self.left <= 0


def _give_up_waiting(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


class IntakeWriter:
    def __init__(
        self,
        producer: RecordProducer,
        book: LedgerBook,
        handoff: LoopHandoff,
        topology: Topology,
        entry_stage: Stage,
        events: TaskEventCodec,
        ledger_serde: Serde,
        decision_serde: Serde,
    ) -> None:
        self._producer = producer
        self._book = book
        self._handoff = handoff
        self._workflow = topology.workflow
        self._runs_topic = topology.runs_topic
        self._decisions_topic = topology.decisions_topic
        self._delayed_topic = topology.delayed_topic
        self._stage_name = entry_stage.name
        self._lane_topics = dict(entry_stage.input_topics_by_lane)
        self._events = events
        self._ledger_serde = ledger_serde
        self._decision_serde = decision_serde

    def append(
        self,
        entry: LedgerEntry,
        deadline_ms: int | None,
        due_ms: int | None,
        tally: Tally,
        index: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Append an entry to the ledger; its offset is counted into tally[index]."""
        record = self._entry_record(entry, deadline_ms, due_ms)
        reservation_of = entry.run_id if entry.phase == "reserved" else None
        book, handoff, settle = self._book, self._handoff, tally.settle

        def on_placed(error: DeliveryError | None, _partition: int, offset: int) -> None:
            if error is None:
                book.placed(offset, reservation_of)
                handoff.post(loop, settle, (index, offset, None))
            else:
                failure = BrokerUnavailable(f"ledger write failed: {error}")
                handoff.post(loop, settle, (index, -1, failure))

        try:
            value = self._ledger_serde.encode(record)
        except StreamsError as exc:
            tally.not_sent(index, exc)
            return
        self._send(self._runs_topic, value, entry.run_id.encode(), (), on_placed, tally, index)

    def publish(
        self,
        run_id: str,
        tenant: str,
        lane: Lane,
        payload: bytes,
        now_ms: int,
        *,
        priority: int,
        idempotency_key: str | None,
        deadline_ms: int | None,
        trace_context: Mapping[str, str],
        due_ms: int | None,
        tally: Tally,
        index: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Publish the run's first task event: to its lane, or to the delayed topic when
        due later; the acknowledgement is counted into tally[index]."""
        event = new_task_event(
            workflow=self._workflow, stage=self._stage_name, tenant=tenant, lane=lane,
            payload=payload, now_ms=now_ms, priority=priority,
            idempotency_key=idempotency_key, deadline_ms=deadline_ms,
            trace_context=dict(trace_context), run_id=run_id,
        )  # fmt: skip
        headers: tuple[tuple[str, bytes], ...] = ()
        if due_ms is None:
            topic = self._lane_topics[lane]
        else:
            topic, headers = self._delayed_topic, ((DUE_HEADER, str(due_ms).encode()),)
        handoff, settle = self._handoff, tally.settle

        def on_placed(error: DeliveryError | None, _partition: int, offset: int) -> None:
            failure = None if error is None else BrokerUnavailable(f"not acknowledged: {error}")
            handoff.post(loop, settle, (index, offset, failure))

        try:
            value = self._events.encode(event, topic=topic)
        except StreamsError as exc:
            tally.not_sent(index, exc)
            return
        self._send(topic, value, run_id.encode(), headers, on_placed, tally, index)

    def rewrite(self, entry: LedgerEntry) -> None:
        """Write an entry again, not waited for: an admitted run whose own ledger write was
        not acknowledged (its event was), so every replica counts it."""
        record = self._entry_record(entry, entry.deadline_ms, entry.due_ms)
        self._send_unwaited(entry.run_id, self._ledger_serde.encode(record), "rewrite")

    def _entry_record(
        self, entry: LedgerEntry, deadline_ms: int | None, due_ms: int | None
    ) -> dict[str, object]:
        return {
            "run_id": entry.run_id, "workflow": self._workflow,
            "tenant": entry.tenant, "lane": entry.lane, "state": entry.phase,
            "idempotency_key": entry.idempotency_key, "admitted_at": entry.at_ms,
            "due_at": due_ms, "deadline": deadline_ms, "replica": entry.replica,
        }  # fmt: skip

    def record_end(self, run: FinishedRun) -> None:
        """Write a finished run's small ledger entry (it replaces the run's live one in
        compaction, and keeps its key collapsing for the window). Not waited for: a write
        that fails is learned again from the completion topics after a restart."""
        record = {
            "run_id": run.run_id, "workflow": self._workflow, "tenant": run.tenant,
            "lane": run.lane, "state": FINISHED, "idempotency_key": run.idempotency_key,
            "admitted_at": run.at_ms, "due_at": None, "deadline": run.deadline_ms,
            "replica": run.replica, "finished_at": run.finished_ms, "outcome": run.outcome,
            "reason": run.reason,
        }  # fmt: skip
        self._send_unwaited(run.run_id, self._ledger_serde.encode(record), "end of run")

    def release(self, run_id: str) -> None:
        """Give a reservation back: a tombstone, so every replica stops counting it."""
        self._book.forget(run_id)
        self._send_unwaited(run_id, None, "release")

    def _send_unwaited(self, run_id: str, value: bytes | None, what: str) -> None:
        """A ledger write nobody waits for; the book learns its offset when placed."""
        book = self._book

        def on_placed(error: DeliveryError | None, _partition: int, offset: int) -> None:
            if error is None:
                book.placed(offset)

        try:
            self._producer.send(self._runs_topic, value, key=run_id.encode(), on_placed=on_placed)
        except DeliveryError as exc:
            # A release times out instead; an end is learned again after a restart.
            log.warning("ledger %s of run %s not queued: %s", what, run_id, exc)

    def record_decision(self, record: Mapping[str, object], tenant: str) -> None:
        """The audit trail: one record per decision, not waited for."""
        value = self._decision_serde.encode({"workflow": self._workflow, **record})
        # The audit trail must not fail a decision already made.
        try:
            self._producer.send(self._decisions_topic, value, key=tenant.encode())
        except DeliveryError as exc:
            log.warning("decision record not queued: %s", exc)

    def _send(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        headers: tuple[tuple[str, bytes], ...],
        on_placed: PlacedCallback,
        tally: Tally,
        index: int,
    ) -> None:
        try:
            self._producer.send(topic, value, key=key, headers=headers, on_placed=on_placed)
        except DeliveryError as exc:  # never queued: count it as failed at once
            tally.not_sent(index, exc)
