"""Reads a whole topic from the beginning without a consumer group (for small compacted
topics such as pressure reports, which every reader needs in full)."""

from __future__ import annotations

import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streams.errors import BrokerUnavailable
from streams.kafka.client_config import ClientConfig
from streams.kafka.records import to_record
from streams.types import Record


class TopicTail:
    """fetch_wait_ms bounds how long the broker holds a fetch for new data: readers that
    wait on their own writes (idempotency claims) want it short."""

    def __init__(
        self, config: ClientConfig, topic: str, partitions: int, *, fetch_wait_ms: int = 100
    ) -> None:
        self.topic = topic
        self._partitions = partitions
        self._consumer = Consumer(
            {
                **config.base(),
                # librdkafka wants a group id, but this reader never joins or commits.
                "group.id": f"streams-tail-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": fetch_wait_ms,
            }
        )
        self._consumer.assign(
            [KafkaTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )

    def poll(self, max_records: int = 500, timeout_s: float = 0.0) -> list[Record]:
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        return [to_record(m) for m in messages if m.error() is None]

    def positions(self) -> dict[int, int]:
        """Next offset to read per partition (past control records; negative: none yet)."""
        parts = [KafkaTopicPartition(self.topic, p) for p in range(self._partitions)]
        return {p.partition: p.offset for p in self._consumer.position(parts)}

    def end_offsets(self, timeout_s: float = 10.0) -> dict[int, int]:
        """High watermarks; BrokerUnavailable while the broker cannot say (a topic created
        a moment ago answers NOT_LEADER until its leader is elected)."""
        ends: dict[int, int] = {}
        for p in range(self._partitions):
            try:
                _, high = self._consumer.get_watermark_offsets(
                    KafkaTopicPartition(self.topic, p), timeout=timeout_s
                )
            except KafkaException as exc:
                raise BrokerUnavailable(
                    f"end offsets of {self.topic}[{p}]: {exc.args[0].str()}"
                ) from exc
            ends[p] = high
        return ends

    def close(self) -> None:
        self._consumer.close()
