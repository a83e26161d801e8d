"""Finds which of a set of keys were written to some topics since a time: how the intake
learns the truth about a submission whose writes were never acknowledged (streams.intake.
resolver), by reading back what the broker holds.

Owns one short-lived consumer per search (no group, no commits); must not decide anything
from what it finds. Records are matched by key only (never decoded), from the first offset
whose timestamp is at or after `since_ms` (the broker's time index: no earlier offset holds
a later timestamp) to each partition's end when the search started. Producers stamp
CreateTime when a record is produced, so a record written late, after retries, still
carries the time it was sent: topics must keep the default CreateTime timestamps.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streams.errors import BrokerUnavailable
from streams.kafka import client_logs
from streams.kafka.client_config import ClientConfig
from streams.kafka.errors import kafka_errors


def find_keys(
    config: ClientConfig,
    topics: Iterable[tuple[str, int]],
    keys: Iterable[bytes],
    since_ms: int,
    *,
    timeout_s: float = 30.0,
    all_matches: bool = False,
) -> dict[bytes, list[str]]:
    """Which of `keys` appear in `topics` ((name, partition count) pairs) at or after
    since_ms: key -> the topics holding it (the first found only, unless all_matches).
    Raises BrokerUnavailable when the broker cannot answer in time (the caller tries
    again later: an incomplete search must never be taken for "not written")."""
    wanted = set(keys)
    if not wanted:
        return {}
    deadline = time.monotonic() + timeout_s
    hooks = client_logs.hooks(config.cluster_key)
    settings = {
        **config.base(),
        "group.id": f"streams-key-search-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "isolation.level": "read_uncommitted",  # what was written, committed or not
        **hooks.settings(),
    }
    with kafka_errors("searching for keys"):
        consumer = Consumer(settings)
    try:
        return _search(consumer, list(topics), wanted, since_ms, deadline, all_matches)
    except KafkaException as exc:
        raise BrokerUnavailable(f"searching for unacknowledged writes: {exc}") from exc
    finally:
        with contextlib.suppress(KafkaException):  # a broker gone on the way out
            consumer.close()


def _search(
    consumer: Consumer,
    topics: list[tuple[str, int]],
    wanted: set[bytes],
    since_ms: int,
    deadline: float,
    all_matches: bool,
) -> dict[bytes, list[str]]:
    parts = [KafkaTopicPartition(t, p, since_ms) for t, n in topics for p in range(n)]
    starts = consumer.offsets_for_times(parts, timeout=_left(deadline))
    ends: dict[tuple[str, int], int] = {}
    assign: list[KafkaTopicPartition] = []
    for tp in starts:
        if tp.error is not None:
            raise BrokerUnavailable(f"offsets of {tp.topic}[{tp.partition}]: {tp.error}")
        _, high = consumer.get_watermark_offsets(
            KafkaTopicPartition(tp.topic, tp.partition), timeout=_left(deadline)
        )
        start = tp.offset if tp.offset >= 0 else high  # -1: nothing at or after since_ms
        if start < high:
            ends[(tp.topic, tp.partition)] = high
            assign.append(KafkaTopicPartition(tp.topic, tp.partition, start))
    found: dict[bytes, list[str]] = {}
    if not assign:
        return found
    consumer.assign(assign)
    while ends:
        if time.monotonic() >= deadline:
            raise BrokerUnavailable("searching for unacknowledged writes timed out")
        for message in consumer.consume(num_messages=1000, timeout=0.2):
            if message.error() is not None:
                continue  # transient; an unread partition keeps the search going
            where = (message.topic() or "", message.partition() or 0)
            key = message.key()
            if key in wanted:
                holding = found.setdefault(key, [])
                if not holding or (all_matches and where[0] not in holding):
                    holding.append(where[0])
            end = ends.get(where)
            if end is not None and (message.offset() or 0) + 1 >= end:
                del ends[where]
        # Past the last record (transaction markers): the position says the rest is read.
        for tp in consumer.position([KafkaTopicPartition(t, p) for t, p in ends]):
            if tp.offset >= ends.get((tp.topic, tp.partition), 0):
                ends.pop((tp.topic, tp.partition), None)
    return found


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())
