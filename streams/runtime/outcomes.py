"""The one place that decides and carries out a record's outcome: emitted, done or
dead-lettered; and that marks the record complete only when the broker has acknowledged
every write the outcome needed.

Owns encoding of emits and dead letters and the per-record acknowledgement count. A write
the broker refuses is fatal (the worker stops without committing past the record), since
neither the emit nor its dead letter can be proven.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from streams.errors import DeliveryError
from streams.events import DeadLetter, DeadLetterCodec, TaskEvent, TaskEventCodec
from streams.kafka.producer import RecordProducer
from streams.runtime.context import Emit
from streams.types import DeadLetterReason, Outcome, Record

OnComplete = Callable[[Record, Outcome, DeadLetterReason | None, object], None]


@dataclass(slots=True)
class _AwaitingAcks:
    record: Record
    outcome: Outcome
    reason: DeadLetterReason | None
    remaining: int
    token: object


class OutcomeRouter:
    """Sends a record's writes and calls on_complete(record, outcome, reason, token) once all
    are acknowledged (at once for an outcome with no writes); `token` is the caller's.
    Acks are served by the producer's poll(), on the poll thread. `failure` holds the first
    refused write.
    """

    def __init__(
        self,
        producer: RecordProducer,
        *,
        workflow: str,
        stage: str,
        dead_letter_topic: str,
        stage_of_topic: Callable[[str], str],
        on_complete: OnComplete,
        clock_ms: Callable[[], int],
    ) -> None:
        self._producer = producer
        self._workflow = workflow
        self._stage = stage
        self._dlq = dead_letter_topic
        self._stage_of_topic = stage_of_topic
        self._on_complete = on_complete
        self._now_ms = clock_ms
        self._events = TaskEventCodec()
        self._letters = DeadLetterCodec()
        self.failure: DeliveryError | None = None
        self.awaiting = 0
        #: Records sent to each stage so far; the pressure feed pairs it with lag readings.
        self.sent_by_stage: dict[str, int] = {}

    def emit(self, record: Record, emits: Sequence[Emit], token: object = None) -> None:
        if not emits:
            self._on_complete(record, "done", None, token)
            return
        now = self._now_ms()
        waiter = _AwaitingAcks(record, "emitted", None, len(emits), token)
        acked = partial(self._acked, waiter)
        self.awaiting += 1
        sent = self.sent_by_stage
        for emit in emits:
            stage = self._stage_of_topic(emit.topic)
            sent[stage] = sent.get(stage, 0) + 1
            event = emit.event
            self._producer.send(
                emit.topic,
                self._events.encode_for_stage(event, stage, now),
                key=event.run_id.encode(),
                headers=_trace_headers(event),
                on_ack=acked,
            )

    def dead_letter(
        self,
        record: Record,
        reason: DeadLetterReason,
        *,
        error: BaseException | None = None,
        attempts: int = 1,
        token: object = None,
    ) -> None:
        letter = DeadLetter.for_record(
            record,
            reason=reason,
            stage=self._stage,
            workflow=self._workflow,
            attempts=attempts,
            dead_at_ms=self._now_ms(),
            error=error,
        )
        waiter = _AwaitingAcks(record, "dead_lettered", reason, 1, token)
        self.awaiting += 1
        self._producer.send(
            self._dlq,
            self._letters.encode(letter),
            key=record.key,
            headers=(("streams.reason", reason.encode()),),
            on_ack=partial(self._acked, waiter),
        )

    def _acked(self, waiter: _AwaitingAcks, error: DeliveryError | None) -> None:
        if error is not None:
            if self.failure is None:
                self.failure = DeliveryError(
                    f"the broker refused a write for {waiter.record.topic}"
                    f"[{waiter.record.partition}]@{waiter.record.offset}: {error}"
                )
            return
        waiter.remaining -= 1
        if waiter.remaining == 0:
            self.awaiting -= 1
            self._on_complete(waiter.record, waiter.outcome, waiter.reason, waiter.token)


def _trace_headers(event: TaskEvent) -> tuple[tuple[str, bytes], ...]:
    if not event.trace_context:
        return ()  # the common case, without a generator per emit
    return tuple((f"trace.{k}", v.encode()) for k, v in event.trace_context.items())
