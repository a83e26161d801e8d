"""A consumer-group member in our types: poll, pause/resume, commit, rebalance callbacks.

Owns the confluent Consumer; must not decide anything (what to pause or commit is decided by
the caller). Callbacks run on the polling thread, inside poll(). No KafkaException leaves:
transient errors defer (commit returns False, poll returns what it has), fatal ones raise
the StreamsError that streams.kafka.errors maps them to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streams.errors import ClientFailed
from streams.kafka import client_logs
from streams.kafka.client_config import ClientConfig, GroupProtocol, consumer_settings
from streams.kafka.errors import Backoff, classify, kafka_errors, to_streams_error
from streams.kafka.records import to_ours, to_record, to_theirs
from streams.types import Record, TopicPartition

log = logging.getLogger(__name__)

RebalanceCallback = Callable[[list[TopicPartition]], None]

#: After a transient commit failure, commits wait this long, doubling up to the cap.
COMMIT_BACKOFF_S = 0.5
COMMIT_BACKOFF_CAP_S = 10.0

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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        settings: dict[str, object] = {
            **consumer_settings(
                config,
                group_id,
                group_protocol=group_protocol,
                max_poll_interval_ms=max_poll_interval_ms,
            )
        }
        self._hooks = client_logs.hooks(config.cluster_key)
        settings.update(self._hooks.settings())
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self.group_id = group_id
        self._clock = clock
        self._commit_backoff = Backoff(initial_s=COMMIT_BACKOFF_S, cap_s=COMMIT_BACKOFF_CAP_S)
        # True while confluent runs our rebalance callbacks (inside consume/close): a commit
        # for revoked partitions is the last chance, never skipped for the backoff.
        self._in_client_call = False
        with kafka_errors(f"consumer of group {group_id}"):
            self._consumer = Consumer(settings)
            self._consumer.subscribe(
                list(topics), on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
            )

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Fetch up to max_records. Never raises for transient errors (broker down,
        metadata refreshing: logged through the client-log gate, [] or what arrived is
        returned); raises the mapped StreamsError only for fatal ones."""
        self._in_client_call = True
        try:
            messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        except KafkaException as exc:
            self._raise_if_fatal(exc.args[0] if exc.args else None, exc)
            return []
        finally:
            self._in_client_call = False
        self._hooks.raise_if_refused(f"consumer of group {self.group_id}")
        records: list[Record] = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(to_record(message))
            elif error.code() != KafkaError._PARTITION_EOF:
                self._raise_if_fatal(error, None)
        return records

    def assignment(self) -> list[TopicPartition]:
        with kafka_errors(f"assignment of group {self.group_id}"):
            return to_ours(self._consumer.assignment())

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        parts = to_theirs(partitions)
        if parts:
            with kafka_errors(f"pausing partitions of group {self.group_id}"):
                self._consumer.pause(parts)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        parts = to_theirs(partitions)
        if parts:
            with kafka_errors(f"resuming partitions of group {self.group_id}"):
                self._consumer.resume(parts)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        with kafka_errors(f"seeking {tp.topic}[{tp.partition}] to {offset}"):
            self._consumer.seek(to_theirs([tp], {tp: offset})[0])

    def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit synchronously. True when committed; False when deferred: the group is
        mid-rebalance, or any transient error (coordinator lost or loading, broker down,
        timed out). The caller keeps the offsets and commits them again next interval;
        partitions it loses are committed in the revoke callback.

        After a transient failure, calls within the backoff (0.5 s doubling to 10 s, reset
        on success) and calls while every broker is known down return False at once
        without asking the broker: a synchronous commit with no coordinator blocks ~10 s.
        A commit from inside a rebalance callback is always attempted. Raises the mapped
        StreamsError (AuthorizationFailed, ClientFailed ...) only for fatal errors.
        """
        if not offsets:
            return True
        now = self._clock()
        if not self._in_client_call and (
            not self._commit_backoff.ready(now) or self._hooks.all_brokers_down
        ):
            return False
        try:
            self._consumer.commit(offsets=to_theirs(offsets, offsets), asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError._NO_OFFSET:
                self._commit_backoff.succeeded()
                return True
            self._raise_if_fatal(error, exc)
            if isinstance(error, KafkaError) and error.code() in _REBALANCING:
                log.info("commit for group %s deferred: %s", self.group_id, error.str())
            else:
                self._commit_backoff.failed(self._clock())
                self._note_transient(error, "commit deferred")
            return False
        self._commit_backoff.succeeded()
        return True

    def committed(
        self, partitions: Iterable[TopicPartition], timeout_s: float = 10.0
    ) -> dict[TopicPartition, int]:
        """Committed offsets; on a transient error, {} (nothing known), never a raise."""
        try:
            result = self._consumer.committed(to_theirs(partitions), timeout=timeout_s)
        except KafkaException as exc:
            self._raise_if_fatal(exc.args[0] if exc.args else None, exc)
            return {}
        return {TopicPartition(p.topic, p.partition): p.offset for p in result}

    def positions(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Next offset the client will hand us per partition (past control records);
        partitions with no position yet, or none readable now, are left out."""
        parts = to_theirs(partitions)
        if not parts:
            return {}
        try:
            positions = self._consumer.position(parts)
        except KafkaException as exc:
            self._raise_if_fatal(exc.args[0] if exc.args else None, exc)
            return {}
        return {TopicPartition(p.topic, p.partition): p.offset for p in positions if p.offset >= 0}

    def consumer_group_metadata(self) -> object:
        with kafka_errors(f"group metadata of {self.group_id}"):
            return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        """Leave the group (the revoke callback runs inside); transient errors on the way
        out are logged, not raised: the process is stopping either way."""
        self._in_client_call = True
        try:
            self._consumer.close()
        except KafkaException as exc:
            self._raise_if_fatal(exc.args[0] if exc.args else None, exc)
        finally:
            self._in_client_call = False

    def _raise_if_fatal(self, error: object, cause: BaseException | None) -> None:
        if not isinstance(error, KafkaError):
            raise ClientFailed(f"consumer of group {self.group_id}: {error}") from cause
        if classify(error) == "fatal":
            raise to_streams_error(error, f"consumer of group {self.group_id}") from cause
        self._note_transient(error, "consumer")

    def _note_transient(self, error: object, what: str) -> None:
        if isinstance(error, KafkaError):
            self._hooks.note(f"{what} of group {self.group_id}", error)

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
