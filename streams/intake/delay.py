"""The delay path: admitted runs told to come back later wait on the workflow's delayed
topic and enter the first stage when due.

Owns forwarding due records in offset order per partition, what happens when a forward is
refused, and committing only what the broker has acknowledged. Runs on the intake's I/O
thread (step() never sleeps: retries wait in a schedule; but with a schema registry, the
first decode of a schema id and the first encode for a topic ask it, bounded by the
client's timeouts, streams.registry.client); intake replicas share the work through one
consumer group.

A refused forward (a record too large for the first stage's topic, a topic that is gone,
an outage longer than the client's own retries, a schema the registry refuses) is tried
`forward_attempts` times in all, with capped exponential backoff; then the record is
dead-lettered "forward_failed" with its raw bytes, keyed by run id (so the intake counts
the run as finished), and its offset completes: one bad record never stops the
partition's commits. A dead letter the broker refuses is retried until it is acknowledged
(capped backoff): a delayed record is never dropped, and its offset never completes
without a proven outcome.

A schema registry outage is not bad input. A delayed record that cannot be decoded or
encoded for want of the registry (RegistryUnavailable: the Confluent wire format needs a
schema id this process has not seen yet) is neither tried nor dead-lettered: it waits at
the head of its partition, holding the records behind it (their offsets do not complete),
and all such waits try again on one capped backoff (streams.policy.outage_backoff, 1 s
doubling to 30 s); one line is logged when the outage begins and one when the registry
answers. A dead letter whose encoding needs the registry waits the same way. Bytes that are
no task event are still dead-lettered "decode_error" at once, with their raw bytes.

The broker refuses a whole batch when it is over the topic's `max.message.bytes`, so a
record that fits is refused with an oversized neighbour (librdkafka does not split the
batch, as the Java client does). Retries and dead letters therefore go through a second
producer that sends every record in a batch of its own: a record is dead-lettered only
for its own failures.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from dataclasses import dataclass, field
from functools import partial

from streams.clock import Clock
from streams.errors import DeliveryError, SerdeError
from streams.events import DeadLetterCodec, DeadLetterRecord, TaskEventCodec
from streams.kafka.client_config import ClientConfig
from streams.kafka.consumer import GroupConsumer
from streams.kafka.producer import ProducerQueueFull, RecordProducer
from streams.policy.offsets import OffsetTracker, PartitionOffsets
from streams.policy.outage_waits import OutageWaits
from streams.registry import RegistryUnavailable
from streams.topology import Stage, Topology
from streams.types import DeadLetterReason, Record, TopicPartition

log = logging.getLogger(__name__)

DUE_HEADER = "streams.due_ms"
#: Records held per partition while they wait; the partition pauses beyond it.
HOLD_PER_PARTITION = 1000
#: What dead letters from the delay path name as the stage that gave up on the record.
DELAY_STAGE = "intake-delay"
#: The longest wait between two tries of one write.
MAX_BACKOFF_S = 30.0
#: How long a write that found the producer's queue full waits before it tries again.
_QUEUE_FULL_WAIT_S = 0.05


@dataclass(slots=True)
class _Partition:
    """One assigned partition of the delayed topic; `live` turns False when it is revoked
    or lost (acks and retries of its records are then ignored: the next owner redoes them
    from the last commit). `held`: its due head, waiting for the schema registry (the
    records in `waiting` come after it)."""

    tp: TopicPartition
    offsets: PartitionOffsets
    waiting: deque[Record] = field(default_factory=deque)
    paused: bool = False
    live: bool = True
    held: _Write | None = None


@dataclass(slots=True, eq=False)  # one write is one key of the registry's waits
class _Write:
    """One delayed record's outcome in progress: its forward, then (`dead_letter` set) its
    dead letter. `forwards` counts forward tries, `letters` dead-letter tries."""

    part: _Partition
    record: Record
    forwards: int = 0
    letters: int = 0
    dead_letter: DeadLetterReason | None = None
    error: BaseException | None = None


class DelayForwarder:
    """step() on the intake's I/O thread, close() once when the intake stops."""

    def __init__(
        self,
        client: ClientConfig,
        topology: Topology,
        entry: Stage,
        clock: Clock,
        *,
        forward_attempts: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        if forward_attempts < 1:
            raise ValueError(f"forward_attempts must be at least 1, got {forward_attempts}")
        if backoff_s <= 0:
            raise ValueError(f"backoff_s must be above 0, got {backoff_s}")
        self._entry = entry
        self._clock = clock
        self._attempts = forward_attempts
        self._backoff_s = backoff_s
        self._codec = TaskEventCodec()
        self._letters = DeadLetterCodec()
        self._workflow = topology.workflow
        self._producer = RecordProducer(client)
        self._client = client
        self._alone: RecordProducer | None = None  # one record per batch; made when needed
        self._offsets = OffsetTracker()
        self._parts: dict[TopicPartition, _Partition] = {}
        # Writes to try again, soonest first: (monotonic due time, tie-breaker, write).
        self._retries: list[tuple[float, int, _Write]] = []
        self._order = itertools.count()
        self._dead_letter_topic = topology.dead_letter_topic
        self._consumer = GroupConsumer(
            client,
            f"{topology.workflow}.intake-delay",
            [topology.delayed_topic],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )
        self._next_commit = 0.0
        self._registry: OutageWaits[_Write] = OutageWaits()

    @property
    def retrying(self) -> int:
        """Writes waiting for another try (forwards and dead letters)."""
        return len(self._retries)

    @property
    def waiting_for_registry(self) -> int:
        """Delayed records whose forward or dead letter waits for the schema registry."""
        return len(self._registry)

    def step(self) -> None:
        """One non-blocking round: fetch, forward what is due, try again what is due for
        another try, commit what is acknowledged."""
        for record in self._consumer.poll(200, 0.0):
            part = self._parts.get(record.tp)
            if part is None:
                continue
            part.offsets.track(record.offset)
            part.waiting.append(record)
        now = self._clock.now()
        for part in self._parts.values():
            self._forward_due(part, now)
            self._hold(part)
        self._retry_due(now)
        self._producer.poll(0)
        if self._alone is not None:
            self._alone.poll(0)
        if self._clock.monotonic() >= self._next_commit:
            self._next_commit = self._clock.monotonic() + 0.5
            self._commit()

    # ------------------------------------------------------------------ writes
    def _forward_due(self, part: _Partition, now: float) -> None:
        """Forward the partition's due records in offset order; one that waits for the
        registry holds those after it."""
        write = part.held
        if write is not None:
            if not self._registry.may_try(self._clock.monotonic()):
                return
            part.held = None
        queue = part.waiting
        while write is not None or (queue and _due_ms(queue[0]) <= now * 1000):
            if write is None:
                write = _Write(part, queue.popleft())
            try:
                self._forward(write, now)
            except RegistryUnavailable as exc:
                self._registry_down(write, exc)
                part.held = write
                return
            write = None

    def _forward(self, write: _Write, now: float) -> None:
        """Send the record on (or its dead letter). Raises RegistryUnavailable, having sent
        nothing and counted no try, when decoding or encoding it needs the registry."""
        record = write.record
        if record.value is None:
            write.part.offsets.complete(record.offset)
            return
        try:
            event = self._codec.decode(record.value)
        except RegistryUnavailable:
            raise
        except SerdeError as exc:
            # Written by the intake, so this is damage, not bad input; keep the bytes.
            write.dead_letter, write.error = "decode_error", exc
            self._send_dead_letter(write)
            return
        event = event.with_stage(self._entry.name, int(now * 1000))
        topic = self._entry.input_topics_by_lane.get(event.lane)
        if topic is None:  # no try can succeed (the topology changed since it was delayed)
            write.dead_letter = "forward_failed"
            write.error = DeliveryError(
                f"stage {self._entry.name} takes no lane {event.lane!r} (it takes "
                f"{', '.join(self._entry.lanes)})"
            )
            self._send_dead_letter(write)
            return
        try:
            value = self._codec.encode(event, topic=topic)
        except RegistryUnavailable:
            raise
        except SerdeError as exc:  # the registry said no (an incompatible schema): refused
            self._registry_through(write)
            write.forwards += 1
            self._acked(write, DeliveryError(f"cannot encode the run for {topic}: {exc}"))
            return
        self._registry_through(write)
        write.forwards += 1
        self._send(write, topic, value, ())

    def _send_dead_letter(self, write: _Write) -> None:
        reason = write.dead_letter
        assert reason is not None
        letter = DeadLetterRecord.for_record(
            write.record,
            reason=reason,
            stage=DELAY_STAGE,
            workflow=self._workflow,
            attempts=write.forwards,
            dead_at_ms=int(self._clock.now() * 1000),
            error=write.error,
        )
        try:
            value = self._letters.encode(letter, topic=self._dead_letter_topic)
        except RegistryUnavailable as exc:
            self._try_again(write, self._registry_down(write, exc))
            return
        except SerdeError as exc:  # the registry refused: as if the broker had refused it
            self._registry_through(write)
            write.letters += 1
            self._acked(write, DeliveryError(f"cannot encode the dead letter: {exc}"))
            return
        self._registry_through(write)
        write.letters += 1
        self._send(write, self._dead_letter_topic, value, (("streams.reason", reason.encode()),))

    def _registry_down(self, write: _Write, error: RegistryUnavailable) -> float:
        """`write` waits for the registry; returns in how many seconds it may try again."""
        mono = self._clock.monotonic()
        began = self._registry.failed(write, mono)
        retry_in = self._registry.wait_s(mono)
        if began:
            log.warning(
                "delayed runs wait for the schema registry (held, not dead-lettered): %s; "
                "trying again in %.1f s (up to every %g s)",
                error, retry_in, self._registry.backoff.cap_s,
            )  # fmt: skip
        return retry_in

    def _registry_through(self, write: _Write) -> None:
        lasted = self._registry.went_through(write, self._clock.monotonic())
        if lasted is not None:
            log.warning(
                "the schema registry answered after %.1f s: delayed runs held for it go on",
                lasted,
            )

    def _send(
        self, write: _Write, topic: str, value: bytes, headers: tuple[tuple[str, bytes], ...]
    ) -> None:
        # A first forward goes with the others; a retry or a dead letter goes alone.
        producer = self._producer if write.forwards == 1 and write.dead_letter is None else None
        if producer is None:
            producer = self._alone
            if producer is None:
                producer = self._alone = RecordProducer(
                    self._client.with_extra({"batch.num.messages": 1})
                )
        try:
            producer.send(
                topic, value, key=write.record.key, headers=headers,
                on_ack=partial(self._acked, write),
            )  # fmt: skip
        except ProducerQueueFull:
            # No room yet: not the record's fault, so no try is counted.
            if write.dead_letter is None:
                write.forwards -= 1
            else:
                write.letters -= 1
            self._try_again(write, _QUEUE_FULL_WAIT_S)
        except DeliveryError as exc:  # refused at once: as if the broker had refused it
            self._acked(write, exc)

    def _acked(self, write: _Write, error: DeliveryError | None) -> None:
        if not write.part.live:
            return  # revoked meanwhile: the next owner forwards it again
        record = write.record
        if error is None:
            write.part.offsets.complete(record.offset)
            return
        if write.dead_letter is None:
            if write.forwards < self._attempts:
                self._try_again(write, self._backoff(write.forwards))
                return
            log.warning(
                "delayed run %r not forwarded after %d tries (%s): dead-lettering it",
                record.key, write.forwards, error,
            )  # fmt: skip
            write.dead_letter, write.error = "forward_failed", error
            self._send_dead_letter(write)
            return
        if write.letters % 10 == 1:  # the 1st, 11th, ... refusal: not a line per try
            log.error(
                "dead letter of delayed run %r refused %d times (%s); trying again",
                record.key, write.letters, error,
            )  # fmt: skip
        self._try_again(write, self._backoff(write.letters))

    def _backoff(self, tries: int) -> float:
        return min(MAX_BACKOFF_S, self._backoff_s * 2.0 ** max(0, tries - 1))

    def _try_again(self, write: _Write, after_s: float) -> None:
        due = self._clock.monotonic() + after_s
        heapq.heappush(self._retries, (due, next(self._order), write))

    def _retry_due(self, now: float) -> None:
        retries = self._retries
        mono = self._clock.monotonic()
        # Only what was due before this round: a write refused again at once is due later.
        while retries and retries[0][0] <= mono:
            _, _, write = heapq.heappop(retries)
            if not write.part.live:
                self._registry.forget(write)
                continue
            if write in self._registry and not self._registry.may_try(mono):
                # Another write met the registry down this round: wait for the next one.
                self._try_again(write, self._registry.wait_s(mono))
                continue
            if write.dead_letter is not None:
                self._send_dead_letter(write)
                continue
            try:
                self._forward(write, now)
            except RegistryUnavailable as exc:
                self._try_again(write, self._registry_down(write, exc))

    # ------------------------------------------------------------------ partitions
    def _hold(self, part: _Partition) -> None:
        held = len(part.waiting)
        if held >= HOLD_PER_PARTITION and not part.paused:
            self._consumer.pause([part.tp])
            part.paused = True
        elif held <= HOLD_PER_PARTITION // 2 and part.paused:
            self._consumer.resume([part.tp])
            part.paused = False

    def _commit(self) -> None:
        offsets = self._offsets.committable()
        if offsets and self._consumer.commit(offsets):
            self._offsets.mark_committed(offsets)

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._parts[tp] = _Partition(tp, self._offsets.assign(tp))

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._flush()
        committable = {tp: o for tp, o in self._offsets.committable().items() if tp in partitions}
        if committable:
            self._consumer.commit(committable)
        self._lost(partitions)

    def _lost(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            part = self._parts.pop(tp, None)
            if part is not None:
                part.live = False
                if part.held is not None:
                    self._registry.forget(part.held)
            self._offsets.revoke(tp)

    def _flush(self) -> None:
        self._producer.flush(5.0)
        if self._alone is not None:
            self._alone.flush(5.0)

    def close(self) -> None:
        self._flush()
        self._commit()
        self._consumer.close()


def _due_ms(record: Record) -> int:
    for key, value in record.headers:
        if key == DUE_HEADER:
            try:
                return int(value)
            except ValueError:
                break
    return 0  # no due time: forward at once rather than hold it forever
