"""The exactly-once strategy's abort path against the real broker: writes made before a
loss never become visible to read_committed readers, and the next transaction commits
only what came after."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from streams.kafka.client_config import ClientConfig
from streams.kafka.consumer import GroupConsumer
from streams.kafka.producer import RecordProducer
from streams.policy.offsets import OffsetTracker
from streams.runtime.delivery import ExactlyOnce
from streams.testing import read_records
from streams.types import TopicPartition

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _consumer(client_config: ClientConfig, topic: str) -> GroupConsumer:
    return GroupConsumer(client_config, f"g-{uuid.uuid4().hex[:8]}", [topic])


def test_writes_made_before_a_loss_never_become_visible(
    client_config: ClientConfig, make_topics: Callable[..., list[str]]
) -> None:
    out, source = make_topics(f"eos-out-{uuid.uuid4().hex[:8]}", f"eos-in-{uuid.uuid4().hex[:8]}")
    producer = RecordProducer(client_config, transactional_id=f"t-{uuid.uuid4().hex[:8]}")
    strategy = ExactlyOnce(producer)
    consumer = _consumer(client_config, source)
    try:
        for i in range(3):
            producer.send(out, f"before-{i}".encode())
        # Partitions lost mid-transaction: their records' offsets can no longer be
        # committed by this worker, so nothing written since the last commit may be.
        assert strategy.lost([TopicPartition(source, 0)]) is False  # the worker rewinds
        assert strategy.aborts == 1
        for i in range(2):
            producer.send(out, f"after-{i}".encode())
        assert strategy.commit(consumer, OffsetTracker(), {})
        seen = read_records(client_config, out, 1, expect=5, timeout_s=8)
        assert sorted(r.value for r in seen if r.value is not None) == [b"after-0", b"after-1"]
    finally:
        consumer.close()
        producer.flush(5)
