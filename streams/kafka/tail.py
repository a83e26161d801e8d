"""Reads a whole topic from the beginning without a consumer group (for small compacted
topics such as pressure reports, which every reader needs in full).

Owns its confluent Consumer; must not join a group or commit. No KafkaException leaves:
poll returns [] on transient errors, other calls raise the mapped StreamsError
(BrokerUnavailable when the broker cannot say right now).
"""

from __future__ import annotations

import contextlib
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streams.kafka import client_logs
from streams.kafka.client_config import ClientConfig
from streams.kafka.errors import classify, kafka_errors, to_streams_error
from streams.kafka.records import to_record
from streams.types import Record


class TopicTail:
    """fetch_wait_ms bounds how long the broker holds a fetch for new data: readers that
    wait on their own writes (idempotency claims) want it short. ``since_ms`` starts each
    partition at its first record timestamped at or after it (the end when there is none)
    instead of the beginning: readers of recent history (a monitor's last minutes of dead
    letters) need not read a long topic whole."""

    def __init__(
        self,
        config: ClientConfig,
        topic: str,
        partitions: int,
        *,
        fetch_wait_ms: int = 100,
        since_ms: int | None = None,
    ) -> None:
        self.topic = topic
        self._partitions = partitions
        self._hooks = client_logs.hooks(config.cluster_key)
        settings = {
            **config.base(),
            # librdkafka wants a group id, but this reader never joins or commits.
            "group.id": f"streams-tail-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": fetch_wait_ms,
            **self._hooks.settings(),
        }
        with kafka_errors(f"reading {topic}"):
            self._consumer = Consumer(settings)
            starts = [KafkaTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
            if since_ms is not None:
                asked = [KafkaTopicPartition(topic, p, since_ms) for p in range(partitions)]
                starts = [
                    KafkaTopicPartition(topic, found.partition, found.offset)
                    if found.offset >= 0
                    # No record that recent: start at the end as it is now, a concrete
                    # offset (OFFSET_END would resolve at the first fetch and skip what
                    # arrives before it).
                    else KafkaTopicPartition(
                        topic,
                        found.partition,
                        self._consumer.get_watermark_offsets(
                            KafkaTopicPartition(topic, found.partition), timeout=10.0
                        )[1],
                    )
                    for found in self._consumer.offsets_for_times(asked, timeout=10.0)
                ]
            self._consumer.assign(starts)
        # Where each partition started (OFFSET_BEGINNING is negative), for caught_up: a
        # reader that starts at the end has nothing old to catch up on.
        self._starts = {tp.partition: tp.offset for tp in starts}

    def poll(self, max_records: int = 500, timeout_s: float = 0.0) -> list[Record]:
        """Records that arrived; [] while the broker is away (transient errors are logged
        through the client-log gate); raises only for fatal errors."""
        try:
            messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        except KafkaException as exc:
            self._unless_fatal(exc.args[0] if exc.args else None, exc)
            return []
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(to_record(message))
            else:
                self._unless_fatal(error, None)
        return records

    def positions(self) -> dict[int, int]:
        """Next offset to read per partition (past control records; negative: none yet)."""
        parts = [KafkaTopicPartition(self.topic, p) for p in range(self._partitions)]
        with kafka_errors(f"positions in {self.topic}"):
            return {p.partition: p.offset for p in self._consumer.position(parts)}

    def end_offsets(self, timeout_s: float = 10.0) -> dict[int, int]:
        """High watermarks; BrokerUnavailable while the broker cannot say (a topic created
        a moment ago answers NOT_LEADER until its leader is elected)."""
        ends: dict[int, int] = {}
        for p in range(self._partitions):
            with kafka_errors(f"end offsets of {self.topic}[{p}]"):
                _, high = self._consumer.get_watermark_offsets(
                    KafkaTopicPartition(self.topic, p), timeout=timeout_s
                )
            ends[p] = high
        return ends

    def caught_up(self, timeout_s: float = 10.0) -> bool:
        """Whether this reader has read every record the topic held when it asked: each
        partition is empty, started at its end, or is read up to its high watermark.
        BrokerUnavailable while the broker cannot say."""
        positions = self.positions()
        for p in range(self._partitions):
            with kafka_errors(f"end offsets of {self.topic}[{p}]"):
                low, high = self._consumer.get_watermark_offsets(
                    KafkaTopicPartition(self.topic, p), timeout=timeout_s
                )
            start = self._starts.get(p, OFFSET_BEGINNING)
            if low >= high or start >= high:
                continue
            if positions.get(p, -1) < high:
                return False
        return True

    def close(self) -> None:
        """Close the reader; a broker that is down on the way out is no error."""
        with contextlib.suppress(KafkaException):
            self._consumer.close()

    def _unless_fatal(self, error: object, cause: BaseException | None) -> None:
        if isinstance(error, KafkaError) and classify(error) != "fatal":
            if error.code() != KafkaError._PARTITION_EOF:
                self._hooks.note(f"reading {self.topic}", error)
            return
        if isinstance(error, KafkaError):
            raise to_streams_error(error, f"reading {self.topic}") from cause
        raise to_streams_error(KafkaException(error), f"reading {self.topic}") from cause
