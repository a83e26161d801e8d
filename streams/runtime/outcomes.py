"""Carries out decided outcomes: sends a record's emits, its dead letter or the completion
of its run, and settles the record once the broker has acknowledged every write
(invariant 1).

Owns encoding of dead letters, the per-record acknowledgement count and the writes the
producer could not take yet. A full producer queue is backpressure, never a crash: the
writes wait here in order, `backlogged` tells the worker to stop dispatching, and
`retry_backlog()` hands them over as the queue drains. A write the broker refuses for good
is fatal (the worker stops without committing past the record: neither the emit nor its
dead letter can be proven), unless the record's partition is no longer ours.

A record handled without emits on the run's main path ended its run here (see
streams.policy.run_end): it is written to the workflow's completed topic (the consumed
bytes, keyed by run id, with a FINISHED_AT_HEADER naming this stage), so the intake learns
the run is over. It settles once that write is acknowledged, like any other outcome.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from functools import partial

from streams.errors import DeliveryError
from streams.events import DeadLetterCodec, DeadLetterRecord
from streams.kafka.producer import ClientError, ClientMessage, ProducerQueueFull, RecordProducer
from streams.runtime.buffers import RecordWork
from streams.runtime.context import Emit

OnSettled = Callable[[RecordWork], None]

#: Header of a completion the worker wrote for a run that ended at a stage without emits.
FINISHED_AT_HEADER = "streams.finished_at_stage"


#: On every dead letter a worker writes: the workflow's degradation level at the time.
DEGRADATION_LEVEL_HEADER = "streams.degradation.level"


class OutcomeRouter:
    """send(work) for a decided record; on_settled(work) is called once all its writes are
    acknowledged (at once for an outcome with no writes), or when a write of a record
    whose partition is no longer ours fails (its owner then refuses to settle it). Acks
    are served by the producer's poll(), on the poll thread. `failure` holds the first
    refused write.

    `completed_topic`: where a run that ends at this stage without emits is written (the
    workflow's completed topic for a stage on the main path), None where records handled
    without emits write nothing (background stages)."""

    def __init__(
        self,
        producer: RecordProducer,
        *,
        workflow: str,
        stage: str,
        dead_letter_topic: str,
        completed_topic: str | None,
        stage_of_topic: Callable[[str], str],
        on_settled: OnSettled,
        clock_ms: Callable[[], int],
        level_of: Callable[[], str] | None = None,
    ) -> None:
        self._producer = producer
        self._workflow = workflow
        self._stage = stage
        self._dlq = dead_letter_topic
        self._completed = completed_topic
        self._finished_at = ((FINISHED_AT_HEADER, stage.encode()),)
        self._stage_of_topic = stage_of_topic
        self._on_settled = on_settled
        self._now_ms = clock_ms
        #: The degradation level now (README "Degradation"): a dead letter's header says it.
        self._level_of = level_of
        self._letters = DeadLetterCodec()
        # Writes the producer had no room for, in order: (record, writes, acks awaited).
        self._backlog: deque[tuple[RecordWork, deque[Emit], list[int]]] = deque()
        self.failure: DeliveryError | None = None
        #: Writes handed over or waiting here, not yet acknowledged (messages, not records:
        #: a record fanned out to three stages counts three).
        self.unacknowledged = 0
        #: Records sent to each stage so far; the pressure feed pairs it with lag readings.
        self.sent_by_stage: dict[str, int] = {}

    @property
    def backlogged(self) -> bool:
        """Whether writes wait for room in the producer queue (dispatch should hold)."""
        return bool(self._backlog)

    def send(self, work: RecordWork) -> None:
        writes = self._writes(work)
        if not writes:
            self._on_settled(work)
            return
        count = len(writes)
        self.unacknowledged += count
        remaining = [count]
        if self._backlog:  # keep order behind what already waits
            self._backlog.append((work, deque(writes), remaining))
            return
        # The common case, once per record: straight to the producer, no queue built, one
        # report callback shared by the record's writes.
        reported = partial(self._reported, work, remaining)
        send = self._producer.send
        for i, emit in enumerate(writes):
            try:
                send(
                    emit.topic, emit.value, key=emit.key or None, headers=emit.headers,
                    on_report=reported,
                )  # fmt: skip
            except ProducerQueueFull:
                self._backlog.append((work, deque(writes[i:]), remaining))
                return

    def retry_backlog(self) -> None:
        """Hand waiting writes to the producer, oldest first, while it has room."""
        while self._backlog:
            work, queue, remaining = self._backlog[0]
            if not self._hand_over(work, queue, remaining):
                return
            self._backlog.popleft()

    def _writes(self, work: RecordWork) -> Sequence[Emit]:
        if work.reason is None:
            emits = work.emits
            if not emits:  # the one branch the common case (emits) pays for this
                return self._completion(work)
            sent = self.sent_by_stage
            for emit in emits:
                stage = self._stage_of_topic(emit.topic)
                sent[stage] = sent.get(stage, 0) + 1
            return emits
        letter = DeadLetterRecord.for_record(
            work.record,
            reason=work.reason,
            stage=self._stage,
            workflow=self._workflow,
            attempts=work.attempts,
            dead_at_ms=self._now_ms(),
            error=work.error,
        )
        headers: tuple[tuple[str, bytes], ...] = (("streams.reason", work.reason.encode()),)
        if self._level_of is not None:
            headers = (*headers, (DEGRADATION_LEVEL_HEADER, self._level_of().encode()))
        value = self._letters.encode(letter, topic=self._dlq)
        return [Emit(self._dlq, value, work.record.key or b"", headers)]

    def _completion(self, work: RecordWork) -> Sequence[Emit]:
        """The run ended here without emits: one record on the completed topic, or nothing
        off the main path."""
        if self._completed is None:
            return ()
        record = work.record
        key = record.key
        if key is None and work.event is not None:
            key = work.event.run_id.encode()
        headers = (*record.headers, *self._finished_at)
        return [Emit(self._completed, record.value or b"", key or b"", headers)]

    def _hand_over(self, work: RecordWork, queue: deque[Emit], remaining: list[int]) -> bool:
        """Produce queued writes; False (and the rest kept in `queue`) when the queue is full."""
        while queue:
            emit = queue[0]
            try:
                self._producer.send(
                    emit.topic,
                    emit.value,
                    key=emit.key or None,
                    headers=emit.headers,
                    on_report=partial(self._reported, work, remaining),
                )
            except ProducerQueueFull:
                return False
            queue.popleft()
        return True

    def _reported(
        self,
        work: RecordWork,
        remaining: list[int],
        error: ClientError | None,
        message: ClientMessage,
    ) -> None:
        """The client's delivery report for one of the record's writes, called by the client
        itself (once per write on the per-record path: no wrapper in between)."""
        if error is None:
            self.unacknowledged -= 1
            remaining[0] -= 1
            if remaining[0] == 0:
                self._on_settled(work)
            return
        self._refused(work, message.topic() or "?", self._producer.delivery_error(error))

    def _refused(self, work: RecordWork, topic: str, error: DeliveryError) -> None:
        self.unacknowledged -= 1
        if work.owner is not None and not work.owner.live:
            # Not ours any more (revoked, or an aborted transaction): redone by whoever
            # reads it next; the owner refuses to settle it.
            self._on_settled(work)
            return
        if self.failure is None:
            record = work.record
            # A topic the topology names but nobody created (a retry tier added later):
            # librdkafka gives up on it after topic.metadata.propagation.max.ms.
            hint = (
                f"; does {topic} exist? `streams topology apply TOPOLOGY` creates it"
                if "UNKNOWN_TOPIC" in str(error)
                else ""
            )
            self.failure = DeliveryError(
                f"the broker refused a write to {topic} for {record.topic}"
                f"[{record.partition}]@{record.offset}: {error}{hint}"
            )

    def discard_backlog(self) -> None:
        """Forget waiting writes (their records' partitions are gone: an aborted
        transaction or a rebalance; the records are redone from the last commit)."""
        kept: deque[tuple[RecordWork, deque[Emit], list[int]]] = deque()
        for item in self._backlog:
            work, queue, _ = item
            if work.owner is not None and work.owner.live:
                kept.append(item)
            else:
                self.unacknowledged -= len(queue)
        self._backlog = kept
