"""Exactly-once commits: a stage's emits, dead letters and consumed offsets go to Kafka in
one transaction, committed every commit interval.

Owns the transaction cycle (begin, send offsets, commit, begin again). This covers Kafka
writes and offsets only; side effects of handlers (tool calls, HTTP writes) still need
idempotency keys.
"""

from __future__ import annotations

from streams.kafka.consumer import GroupConsumer
from streams.kafka.producer import RecordProducer
from streams.policy.offsets import OffsetTracker
from streams.types import TopicPartition


class TransactionalCommitter:
    def __init__(self, producer: RecordProducer) -> None:
        self._producer = producer
        producer.init_transactions()
        producer.begin_transaction()

    def commit(
        self,
        offsets: OffsetTracker,
        consumer: GroupConsumer,
        idle_positions: dict[TopicPartition, int] | None = None,
    ) -> None:
        """Commit the open transaction with every offset that is complete by now.

        The worker routes outcomes of each partition in offset order in this mode, so after
        the flush every write in the transaction belongs to a record whose offset is in it.
        """
        if self._producer.flush(30.0):
            return  # not everything acknowledged yet: try again next interval
        committable = {**offsets.committable(), **(idle_positions or {})}
        if not committable and not self._producer.sent_since_commit:
            return
        if committable:
            self._producer.send_offsets(committable, consumer.consumer_group_metadata())
        self._producer.commit_transaction()
        offsets.mark_committed(committable)
        self._producer.begin_transaction()
