"""LagReader against the real broker: exact offset lag, lag of stopped groups, time lag."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

import pytest

from streams.clock import FakeClock, SystemClock
from streams.errors import BrokerUnavailable
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.kafka.consumer import GroupConsumer
from streams.kafka.lag_reader import GroupLag, LagReader
from streams.kafka.producer import RecordProducer
from streams.types import TopicPartition

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def keys_for(partition: int, partitions: int, count: int) -> list[bytes]:
    """Keys librdkafka's default partitioner (consistent_random: CRC32 % n) sends to one
    partition, so a test can fill each partition without a partition argument."""
    keys: list[bytes] = []
    i = 0
    while len(keys) < count:
        key = f"key-{i}".encode()
        if zlib.crc32(key) % partitions == partition:
            keys.append(key)
        i += 1
    return keys


def produce(
    config: ClientConfig, topic: str, per_partition: dict[int, int], partitions: int
) -> None:
    producer = RecordProducer(config)
    failures: list[object] = []
    for partition, count in per_partition.items():
        for key in keys_for(partition, partitions, count):
            producer.send(topic, b"v", key=key, on_ack=lambda e: failures.append(e) if e else None)
    assert producer.flush(30.0) == 0
    assert failures == []


def commit_as_member(
    config: ClientConfig, group: str, topic: str, offsets: dict[TopicPartition, int]
) -> None:
    """Join the group, commit `offsets`, leave: afterwards the group has no live member."""
    assigned: list[TopicPartition] = []
    consumer = GroupConsumer(config, group, [topic], on_assign=assigned.extend)
    try:
        deadline = time.monotonic() + 30.0
        while not set(offsets) <= set(assigned):
            assert time.monotonic() < deadline, f"not assigned {list(offsets)} within 30 s"
            consumer.poll(max_records=1, timeout_s=0.2)  # records are discarded, not committed
        consumer.commit(offsets)
    finally:
        consumer.close()


def first_reading(reader: LagReader, group: str, topic: str) -> GroupLag:
    """Read until the new topic's partitions have leaders: right after creation the broker
    answers list_offsets with NOT_LEADER_OR_FOLLOWER, which LagReader reports as
    BrokerUnavailable (a periodic caller just skips that reading)."""
    deadline = time.monotonic() + 15.0
    while True:
        try:
            return reader.read(group, [topic])
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_group_without_member_or_commits_lags_by_every_record(
    admin: Admin,
    client_config: ClientConfig,
    make_topics: Callable[..., list[str]],
    unique: Callable[[str], str],
) -> None:
    (topic,) = make_topics(unique("lag-none"), partitions=2)
    produce(client_config, topic, {0: 4, 1: 6}, partitions=2)
    reading = LagReader(admin, SystemClock()).read(unique("group-none"), [topic])
    by_partition = {p.tp.partition: p for p in reading.partitions}
    assert reading.total_lag == 10
    assert {n: (p.end_offset, p.committed, p.lag) for n, p in by_partition.items()} == {
        0: (4, None, 4),
        1: (6, None, 6),
    }
    assert reading.by_topic()[topic].total_lag == 10
    # A first reading has no history to date the backlog with.
    assert reading.max_age_s == 0.0


def test_lag_is_end_minus_committed_and_grows_while_the_group_is_stopped(
    admin: Admin,
    client_config: ClientConfig,
    make_topics: Callable[..., list[str]],
    unique: Callable[[str], str],
) -> None:
    (topic,) = make_topics(unique("lag-commit"), partitions=2)
    group = unique("group-commit")
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    produce(client_config, topic, {0: 5, 1: 5}, partitions=2)
    commit_as_member(client_config, group, topic, {p0: 3})
    reader = LagReader(admin, SystemClock())

    reading = reader.read(group, [topic])
    lags = {p.tp: (p.end_offset, p.committed, p.lag) for p in reading.partitions}
    assert lags == {p0: (5, 3, 2), p1: (5, None, 5)}
    assert reading.total_lag == 7

    # Nobody consumes: every record produced now is lag, per partition, exactly.
    produce(client_config, topic, {0: 2, 1: 3}, partitions=2)
    reading = reader.read(group, [topic])
    lags = {p.tp: (p.end_offset, p.committed, p.lag) for p in reading.partitions}
    assert lags == {p0: (7, 3, 4), p1: (8, None, 8)}
    assert reading.total_lag == 12


def test_age_grows_while_unconsumed_and_is_zero_once_committed(
    admin: Admin,
    client_config: ClientConfig,
    make_topics: Callable[..., list[str]],
    unique: Callable[[str], str],
) -> None:
    (topic,) = make_topics(unique("lag-age"), partitions=2)
    group = unique("group-age")
    reader = LagReader(admin, SystemClock())
    interval_s = 0.5
    assert first_reading(reader, group, topic).max_age_s == 0.0  # empty topic, history at 0

    before_produce = time.time()
    produce(client_config, topic, {0: 3, 1: 3}, partitions=2)
    after_produce = time.time()
    ages = []
    for _ in range(4):
        time.sleep(interval_s)
        reading = reader.read(group, [topic])
        ages.append(reading.max_age_s)
    now = reading.measured_at
    assert ages == sorted(ages), f"age must not shrink while nothing is consumed: {ages}"
    # The records were appended between before_produce and after_produce; the history
    # dates them to within one read interval after that.
    assert now - after_produce - interval_s - 0.2 <= ages[-1] <= now - before_produce + 0.2
    assert ages[-1] > 1.0

    commit_as_member(
        client_config, group, topic, {TopicPartition(topic, 0): 3, TopicPartition(topic, 1): 3}
    )
    reading = reader.read(group, [topic])
    assert reading.total_lag == 0
    assert [p.oldest_age_s for p in reading.partitions] == [0.0, 0.0]


def test_new_topics_and_partitions_are_picked_up(
    admin: Admin,
    client_config: ClientConfig,
    make_topics: Callable[..., list[str]],
    unique: Callable[[str], str],
) -> None:
    clock = FakeClock()
    reader = LagReader(admin, clock, partitions_refresh_s=30.0)
    topic, group = unique("lag-grow"), unique("group-grow")
    assert reader.read(group, [topic]).partitions == ()  # not created yet

    make_topics(topic, partitions=1)
    produce(client_config, topic, {0: 2}, partitions=1)
    assert [p.lag for p in reader.read(group, [topic]).partitions] == [2]

    admin.apply([TopicWanted(topic, 2)])
    clock.advance(5.0)  # partition list still cached
    assert len(reader.read(group, [topic]).partitions) == 1
    # Past the refresh interval the list is re-read; the new partition may take a moment
    # to show in metadata and to get a leader, so re-read (each time past the interval).
    deadline = time.monotonic() + 15.0
    seen: list[int] = []
    while seen != [0, 1] and time.monotonic() < deadline:
        clock.advance(30.0)
        try:
            seen = [p.tp.partition for p in reader.read(group, [topic]).partitions]
        except BrokerUnavailable:
            time.sleep(0.1)
    assert seen == [0, 1]


def test_unreachable_cluster_raises_broker_unavailable() -> None:
    nowhere = Admin(ClientConfig(bootstrap_servers="127.0.0.1:1"), timeout_s=2.0)
    with pytest.raises(BrokerUnavailable):
        LagReader(nowhere, SystemClock()).read("any-group", ["any-topic"])
