"""The Kafka reads behind `streams dlq`, `streams escalations` and `streams tail` (through
streams.kafka only): the records a topic holds now, and records as they arrive.

Owns opening and closing those readers; must not decode or print (dead_letters and
records do).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from streams.errors import ConfigError
from streams.inspect.dead_letters import DeadLetterEntry, decode_entry
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.tail import TopicTail
from streams.types import Record

T = TypeVar("T")


def _partition_counts(config: ClientConfig, topics: Sequence[str]) -> dict[str, int]:
    admin = Admin(config, timeout_s=10.0)
    try:
        counts = admin.partition_counts()
    finally:
        admin.close()
    missing = [t for t in topics if not counts.get(t)]
    if missing:
        raise ConfigError(
            ", ".join(missing), "", "no such topic: create the workflow's topics with "
            "`streams topology apply TOPOLOGY`",
        )  # fmt: skip
    return {t: counts[t] for t in topics}


def dead_letters(
    config: ClientConfig, topic: str, *, since_ms: int | None, timeout_s: float = 30.0
) -> Iterator[DeadLetterEntry]:
    """Every dead letter the topic holds now (from ``since_ms`` when given), in partition
    order. Stops at what was there when it started, or after ``timeout_s``."""
    yield from entries(config, topic, decode_entry, since_ms=since_ms, timeout_s=timeout_s)


def entries(
    config: ClientConfig,
    topic: str,
    decode: Callable[[int, int, bytes], T],
    *,
    since_ms: int | None,
    timeout_s: float = 30.0,
) -> Iterator[T]:
    """Every record the topic holds now (from ``since_ms`` when given), as
    ``decode(partition, offset, value)``, in partition order; tombstones are left out.
    Stops at what was there when it started, or after ``timeout_s``."""
    partitions = _partition_counts(config, [topic])[topic]
    tail = TopicTail(config, topic, partitions, since_ms=since_ms)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = tail.poll(1000, 0.2)
            for record in records:
                if record.value is not None:
                    yield decode(record.partition, record.offset, record.value)
            if not records and tail.caught_up():
                return
    finally:
        tail.close()


def follow(
    config: ClientConfig,
    topics: Sequence[str],
    on_record: Callable[[Record], None],
    *,
    since_ms: int,
    stop: threading.Event,
    count: int | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Hand every record of ``topics`` from ``since_ms`` on to ``on_record`` until ``stop``
    is set or ``count`` records went by; returns how many did. ``on_ready`` is called once
    the readers are placed: nothing written after that is missed."""
    counts = _partition_counts(config, topics)
    tails = [TopicTail(config, t, counts[t], since_ms=since_ms) for t in topics]
    seen = 0
    try:
        if on_ready is not None:
            on_ready()
        while not stop.is_set() and (count is None or seen < count):
            idle = True
            for tail in tails:
                for record in tail.poll(500, 0.05 if len(tails) > 1 else 0.2):
                    idle = False
                    on_record(record)
                    seen += 1
                    if count is not None and seen >= count:
                        return seen
            if idle and len(tails) > 1:
                stop.wait(0.05)
    finally:
        for tail in tails:
            tail.close()
    return seen
