"""Conversion between confluent-kafka's types and ours; nothing past streams.kafka sees theirs."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Message
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streams.types import Record, TopicPartition


def to_record(message: Message) -> Record:
    """Convert a consumed (error-free) message; only such messages carry topic and offset."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("a consumed message without topic, partition or offset")
    raw_headers = message.headers() or []
    # Consumed messages carry a list of pairs; the dict form exists only for producing.
    pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
    _, timestamp_ms = message.timestamp()
    key = message.key()
    value = message.value()
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.encode() if isinstance(key, str) else key,
        value=value.encode() if isinstance(value, str) else value,
        timestamp_ms=timestamp_ms,
        headers=tuple((k, _header_bytes(v)) for k, v in pairs),
    )


def _header_bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


def to_ours(partitions: Iterable[KafkaTopicPartition]) -> list[TopicPartition]:
    return [TopicPartition(p.topic, p.partition) for p in partitions]


def to_theirs(
    partitions: Iterable[TopicPartition], offsets: dict[TopicPartition, int] | None = None
) -> list[KafkaTopicPartition]:
    if offsets is None:
        return [KafkaTopicPartition(tp.topic, tp.partition) for tp in partitions]
    return [KafkaTopicPartition(tp.topic, tp.partition, offsets[tp]) for tp in partitions]
