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
    raw_headers = message.headers()
    if raw_headers:
        # Consumed messages carry a list of pairs; the dict form exists only for producing.
        pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
        headers = tuple((k, _header_bytes(v)) for k, v in pairs)
    else:
        headers = ()
    _, timestamp_ms = message.timestamp()
    key = message.key()
    value = message.value()
    # Built without Record.__new__'s checks (this runs once per consumed record): the
    # interned TopicPartition matches topic and partition by construction.
    return _new_record(
        Record,
        (
            topic,
            partition,
            offset,
            key.encode() if isinstance(key, str) else key,
            value.encode() if isinstance(value, str) else value,
            timestamp_ms,
            headers,
            _interned_tp(topic, partition),
        ),
    )


_new_record = tuple.__new__
_tps: dict[str, dict[int, TopicPartition]] = {}


def _interned_tp(topic: str, partition: int) -> TopicPartition:
    """One TopicPartition object per partition, so the poll loop's dict lookups by it
    compare by identity."""
    by_partition = _tps.get(topic)
    if by_partition is None:
        by_partition = _tps.setdefault(topic, {})
    tp = by_partition.get(partition)
    if tp is None:
        tp = by_partition.setdefault(partition, TopicPartition(topic, partition))
    return tp


def _header_bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value.encode() if isinstance(value, str) else value


def to_ours(partitions: Iterable[KafkaTopicPartition]) -> list[TopicPartition]:
    # Interned like records' partitions: the worker keys its buffers by these.
    return [_interned_tp(p.topic, p.partition) for p in partitions]


def to_theirs(
    partitions: Iterable[TopicPartition], offsets: dict[TopicPartition, int] | None = None
) -> list[KafkaTopicPartition]:
    if offsets is None:
        return [KafkaTopicPartition(tp.topic, tp.partition) for tp in partitions]
    return [KafkaTopicPartition(tp.topic, tp.partition, offsets[tp]) for tp in partitions]
