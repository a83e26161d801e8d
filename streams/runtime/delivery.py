"""Delivery guarantees as two strategies behind one interface: when a decided record's
writes may leave, how offsets are committed, and what a rebalance or a failed commit costs.

Owns the commit protocol of each mode; must not decide outcomes or touch buffers beyond
reading their records' states. The worker calls the same methods whichever mode runs:

    accepted(work)        a record was consumed (in offset order per partition)
    ready(work)           `work` was decided: the records whose writes may be sent now
    commit(...)           commit what is complete; False: state was thrown away, rewind
    revoking(...)         partitions are being revoked; False: rewind what is kept
    lost(partitions)      partitions were lost; False: rewind what is kept
    forget(partitions)    the partitions are gone from this worker

At-least-once: writes leave at once, offsets are committed by the consumer.
Exactly-once: a stage's emits, dead letters and consumed offsets go to Kafka in one
transaction, committed every commit interval; writes leave each partition in offset order,
so a transaction never holds a write of a record whose offset it cannot commit. When a
transaction cannot be committed whole (a partition lost mid-transaction, a revoke whose
flush did not finish, an abortable commit error) it is aborted, and every partition the
worker keeps is rewound to its last committed offset (the worker re-reads and redoes it):
nothing of the aborted transaction is ever committed without its offsets. Exactly-once
covers Kafka writes and offsets only; handlers' side effects still need idempotency keys.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from streams.errors import AuthorizationFailed, ClientFailed, StreamsError
from streams.kafka.consumer import GroupConsumer
from streams.kafka.producer import RecordProducer
from streams.policy.offsets import OffsetTracker
from streams.runtime.buffers import DECIDED, RecordWork
from streams.types import TopicPartition

log = logging.getLogger(__name__)

#: How long a commit may wait for outstanding writes before trying again next interval
#: (the poll thread waits meanwhile: keep it well inside max.poll.interval.ms).
_FLUSH_WAIT_S = 5.0


class Delivery(Protocol):
    def accepted(self, work: RecordWork) -> None: ...

    def ready(self, work: RecordWork) -> Sequence[RecordWork]: ...

    def commit(
        self,
        consumer: GroupConsumer,
        offsets: OffsetTracker,
        idle: Mapping[TopicPartition, int],
        only: set[TopicPartition] | None = None,
    ) -> bool: ...

    def revoking(
        self,
        consumer: GroupConsumer,
        offsets: OffsetTracker,
        idle: Mapping[TopicPartition, int],
        revoked: set[TopicPartition],
    ) -> bool: ...

    def lost(self, partitions: Iterable[TopicPartition]) -> bool: ...

    def forget(self, partitions: Iterable[TopicPartition]) -> None: ...


class AtLeastOnce:
    """Writes leave as soon as a record is decided; the consumer commits contiguous
    settled offsets. A crash redoes what was not committed (duplicates, never loss)."""

    def __init__(self, on_commit: Callable[[], None] | None = None) -> None:
        self._on_commit = on_commit

    def accepted(self, work: RecordWork) -> None:
        pass

    def ready(self, work: RecordWork) -> Sequence[RecordWork]:
        return (work,)

    def commit(
        self,
        consumer: GroupConsumer,
        offsets: OffsetTracker,
        idle: Mapping[TopicPartition, int],
        only: set[TopicPartition] | None = None,
    ) -> bool:
        positions = {**offsets.committable(), **idle}
        if only is not None:
            positions = {tp: o for tp, o in positions.items() if tp in only}
        if positions and consumer.commit(positions):
            offsets.mark_committed(positions)
            if self._on_commit is not None:
                self._on_commit()
        return True

    def revoking(
        self,
        consumer: GroupConsumer,
        offsets: OffsetTracker,
        idle: Mapping[TopicPartition, int],
        revoked: set[TopicPartition],
    ) -> bool:
        # Commit what finished on the revoked partitions; the rest is redone by the new owner.
        return self.commit(consumer, offsets, idle, only=revoked)

    def lost(self, partitions: Iterable[TopicPartition]) -> bool:
        return True  # nothing may be committed for them; nothing else is affected

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        pass


class ExactlyOnce:
    """One open transaction at a time; see the module docstring."""

    def __init__(
        self, producer: RecordProducer, on_commit: Callable[[], None] | None = None
    ) -> None:
        self._producer = producer
        self._on_commit = on_commit
        # Records of each partition not yet released, in offset order.
        self._arrival: dict[TopicPartition, deque[RecordWork]] = {}
        producer.init_transactions()
        producer.begin_transaction()
        self.aborts = 0

    def accepted(self, work: RecordWork) -> None:
        tp = work.record.tp
        queue = self._arrival.get(tp)
        if queue is None:
            queue = self._arrival[tp] = deque()
        queue.append(work)

    def ready(self, work: RecordWork) -> Sequence[RecordWork]:
        queue = self._arrival.get(work.record.tp)
        released: list[RecordWork] = []
        while queue and queue[0].state == DECIDED:
            released.append(queue.popleft())
        return released

    def commit(
        self,
        consumer: GroupConsumer,
        offsets: OffsetTracker,
        idle: Mapping[TopicPartition, int],
        only: set[TopicPartition] | None = None,
    ) -> bool:
        """Commit the open transaction with every offset that is complete by now (a
        transaction covers every partition, so `only` does not narrow it)."""
        if self._producer.flush(_FLUSH_WAIT_S):
            return True  # not everything acknowledged yet: try again next interval
        committable = {**offsets.committable(), **idle}
        if not committable and not self._producer.sent_since_commit:
            return True
        try:
            if committable:
                self._producer.send_offsets(committable, consumer.consumer_group_metadata())
            self._producer.commit_transaction()
        except StreamsError as exc:
            if _fatal(exc):
                raise
            log.warning("transaction commit failed (%s): aborting and rewinding", exc)
            self._abort()
            return False
        offsets.mark_committed(committable)
        if self._on_commit is not None:
            self._on_commit()
        self._producer.begin_transaction()
        return True

    def revoking(
        self,
        consumer: GroupConsumer,
        offsets: OffsetTracker,
        idle: Mapping[TopicPartition, int],
        revoked: set[TopicPartition],
    ) -> bool:
        # Records of the revoked partitions still running or held are dropped unsent (their
        # partitions are no longer live); what was sent must be acknowledged and committed
        # with its offsets now, or it would stay in the open transaction and commit later
        # without them (duplicates downstream): abort instead.
        if self._producer.flush(_FLUSH_WAIT_S):
            log.warning("revoke before the transaction's writes were acknowledged: aborting")
            self._abort()
            return False
        return self.commit(consumer, offsets, idle)

    def lost(self, partitions: Iterable[TopicPartition]) -> bool:
        # The open transaction may hold writes of the lost partitions' records, whose
        # offsets can no longer be committed by us.
        log.warning("partitions lost mid-transaction: aborting and rewinding")
        self._abort()
        return False

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._arrival.pop(tp, None)

    def _abort(self) -> None:
        self.aborts += 1
        self._arrival.clear()  # the worker rewinds every partition: all is read again
        self._producer.abort_transaction()
        self._producer.begin_transaction()


def _fatal(exc: StreamsError) -> bool:
    """Errors no abort can mend: a fenced producer (another worker took our transactional
    id), a client in librdkafka's fatal state, refused credentials. The worker must stop."""
    return isinstance(exc, ClientFailed | AuthorizationFailed)
