"""A consumer-group member in our types: poll, pause/resume, commit, rebalance callbacks.

Owns the confluent Consumer; must not decide anything (what to pause or commit is decided by
the caller). Callbacks run on the polling thread, inside poll().
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streams.errors import BrokerUnavailable, StreamsError
from streams.kafka.client_config import ClientConfig, GroupProtocol, consumer_settings
from streams.kafka.records import to_ours, to_record, to_theirs
from streams.types import Record, TopicPartition

log = logging.getLogger(__name__)

RebalanceCallback = Callable[[list[TopicPartition]], None]

# Commit refusals that mean "the group is changing", not "the broker is gone": classic
# generations (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID) and KIP-848
# member epochs (STALE_MEMBER_EPOCH).
_REBALANCING = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.STALE_MEMBER_EPOCH,
    KafkaError.FENCED_MEMBER_EPOCH,
}


class GroupConsumer:
    """One member of a consumer group subscribed to `topics`.

    on_assign / on_revoke / on_lost are called from inside poll() with our TopicPartitions;
    with the cooperative and KIP-848 protocols they carry only the partitions that change.
    """

    def __init__(
        self,
        config: ClientConfig,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
        group_protocol: GroupProtocol = "classic",
        max_poll_interval_ms: int = 300_000,
    ) -> None:
        settings = consumer_settings(
            config,
            group_id,
            group_protocol=group_protocol,
            max_poll_interval_ms=max_poll_interval_ms,
        )
        settings["error_cb"] = _log_error  # type: ignore[assignment]
        self._consumer = Consumer(settings)
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self.group_id = group_id
        self._consumer.subscribe(
            list(topics), on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Fetch up to max_records; errors of single records are logged, fatal ones raised."""
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        records: list[Record] = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(to_record(message))
            elif error.fatal():
                raise StreamsError(f"consumer of group {self.group_id} failed: {error.str()}")
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer %s: %s", self.group_id, error.str())
        return records

    def assignment(self) -> list[TopicPartition]:
        return to_ours(self._consumer.assignment())

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        parts = to_theirs(partitions)
        if parts:
            self._consumer.pause(parts)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        parts = to_theirs(partitions)
        if parts:
            self._consumer.resume(parts)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(to_theirs([tp], {tp: offset})[0])

    def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit synchronously. False when the group is mid-rebalance and refused the
        commit (the caller keeps the offsets and commits them again later: partitions it
        loses are committed in the revoke callback); BrokerUnavailable on other failures."""
        if not offsets:
            return True
        try:
            self._consumer.commit(offsets=to_theirs(offsets, offsets), asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError._NO_OFFSET:
                return True
            if error.code() in _REBALANCING:
                log.info("commit for group %s deferred: %s", self.group_id, error.str())
                return False
            raise BrokerUnavailable(
                f"commit for group {self.group_id} failed: {error.str()}"
            ) from exc
        return True

    def committed(
        self, partitions: Iterable[TopicPartition], timeout_s: float = 10.0
    ) -> dict[TopicPartition, int]:
        result = self._consumer.committed(to_theirs(partitions), timeout=timeout_s)
        return {TopicPartition(p.topic, p.partition): p.offset for p in result}

    def positions(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Next offset the client will hand us per partition (past control records);
        partitions with no position yet are left out."""
        parts = to_theirs(partitions)
        if not parts:
            return {}
        return {
            TopicPartition(p.topic, p.partition): p.offset
            for p in self._consumer.position(parts)
            if p.offset >= 0
        }

    def consumer_group_metadata(self) -> object:
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        self._consumer.close()

    # confluent-kafka calls these with (consumer, partitions); rebalance callbacks of the
    # sync client cannot be coroutines (confluent-kafka-python #939).
    def _assigned(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        # Assign before the callback runs, so pause() inside it takes effect: the client's
        # automatic assignment happens after the callback and would leave the partitions
        # fetching (pause only acts on assigned partitions). Assigning here skips it.
        # Both protocols we configure are incremental (cooperative-sticky, KIP-848).
        consumer.incremental_assign(partitions)
        if self._on_assign:
            self._on_assign(to_ours(partitions))

    def _revoked(self, _consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        if self._on_revoke:
            self._on_revoke(to_ours(partitions))

    def _lost(self, _consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        if self._on_lost:
            self._on_lost(to_ours(partitions))


def _log_error(error: KafkaError) -> None:
    log.warning("kafka client error: %s", error.str())
