"""Reads a whole topic from the beginning without a consumer group (for small compacted
topics such as pressure reports, which every reader needs in full)."""

from __future__ import annotations

import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streams.kafka.client_config import ClientConfig
from streams.kafka.records import to_record
from streams.types import Record


class TopicTail:
    def __init__(self, config: ClientConfig, topic: str, partitions: int) -> None:
        self._consumer = Consumer(
            {
                **config.base(),
                # librdkafka wants a group id, but this reader never joins or commits.
                "group.id": f"streams-tail-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.assign(
            [KafkaTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )

    def poll(self, max_records: int = 500, timeout_s: float = 0.0) -> list[Record]:
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        return [to_record(m) for m in messages if m.error() is None]

    def close(self) -> None:
        self._consumer.close()
