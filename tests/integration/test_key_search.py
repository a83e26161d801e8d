"""Reading back which keys the broker holds since a time (how the intake settles the
outcomes it could not see)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.kafka.key_search import find_keys
from streams.kafka.producer import RecordProducer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_keys_written_since_a_time_are_found_and_others_are_not(
    admin: Admin, client_config: ClientConfig, unique: Callable[[str], str]
) -> None:
    topics = [unique("ks-a"), unique("ks-b")]
    admin.apply(TopicWanted(t, 3, None, False) for t in topics)
    producer = RecordProducer(client_config)
    producer.send(topics[0], b"old", key=b"before")
    producer.flush(10)
    time.sleep(0.05)
    since_ms = int(time.time() * 1000)
    for i in range(200):
        producer.send(topics[i % 2], b"x", key=f"k{i}".encode())
    producer.flush(10)
    wanted = [b"k3", b"k150", b"before", b"never"]
    found = find_keys(client_config, [(t, 3) for t in topics], wanted, since_ms)
    assert found == {b"k3": [topics[1]], b"k150": [topics[0]]}
    assert find_keys(client_config, [(t, 3) for t in topics], [b"k3"], since_ms + 60_000) == {}
