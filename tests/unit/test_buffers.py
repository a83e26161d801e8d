"""PartitionBuffer accounting and take_ready's choice (lanes, per-key order)."""

from __future__ import annotations

from streams.runtime.buffers import PartitionBuffer, Pending, take_ready
from streams.types import Record, TopicPartition

TP = TopicPartition("wf.plan.standard", 0)


def _pending(offset: int, key: bytes | None) -> Pending:
    return Pending(Record(TP.topic, TP.partition, offset, key, b"", 0), None)


def test_fill_counts_waiting_and_running_not_outcomes_awaiting_acks() -> None:
    buffer = PartitionBuffer(TP, "standard", 10)
    for offset in range(4):
        buffer.waiting.append(_pending(offset, f"k{offset}".encode()))
    chosen = take_ready([buffer], ("standard",), set(), 3)
    assert len(chosen) == 3
    assert (buffer.fill, buffer.unsettled) == (4, 4)  # 1 waiting + 3 running
    buffer.running -= 2  # two handlers finished; their emits await the broker
    assert (buffer.fill, buffer.unsettled) == (2, 4)
    buffer.decided[7] = lambda: None  # exactly-once: an outcome held for offset order
    assert buffer.fill == 3


def test_a_key_waits_behind_its_own_earlier_record_only() -> None:
    buffer = PartitionBuffer(TP, "standard", 10)
    for offset, key in enumerate([b"a", b"a", b"b"]):
        buffer.waiting.append(_pending(offset, key))
    busy: set[bytes] = set()
    first = take_ready([buffer], ("standard",), busy, 10)
    assert [p.record.offset for _, p in first] == [0, 2]  # the second "a" waits
    busy.discard(b"a")
    assert [p.record.offset for _, p in take_ready([buffer], ("standard",), busy, 10)] == [1]
