"""The record lifecycle in a partition (waiting → running → decided → sent → settled), its
counts, and take_ready's choice (lanes, per-key order)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.runtime.buffers import LifecycleError, PartitionBuffer, RecordWork, take_ready
from streams.types import Record, TopicPartition

TP = TopicPartition("wf.plan.standard", 0)


def _accept(buffer: PartitionBuffer, offset: int, key: bytes | None) -> RecordWork:
    return buffer.accept(Record(TP.topic, TP.partition, offset, key, b"", 0), None)


def test_counts_follow_each_record_through_its_life() -> None:
    buffer = PartitionBuffer(TP, "standard", 10)
    works = [_accept(buffer, offset, f"k{offset}".encode()) for offset in range(4)]
    chosen = take_ready([buffer], ("standard",), set(), 3)
    assert chosen == works[:3]
    assert (buffer.fill, buffer.in_flight, buffer.unsettled) == (4, 3, 4)  # 1 waiting, 3 running
    assert buffer.decide(works[0]) and buffer.decide(works[1])
    assert (buffer.fill, buffer.in_flight) == (4, 3)  # decided still counts: not sent yet
    buffer.release(works[0])
    buffer.release(works[1])
    # Sent and awaiting the broker: no longer what the bound limits, still unsettled.
    assert (buffer.fill, buffer.in_flight, buffer.unsettled) == (2, 3, 4)
    assert buffer.settle(works[1])
    assert buffer.offsets.committable() is None  # offset 0 is not settled yet
    assert buffer.settle(works[0])
    assert buffer.offsets.committable() == 2
    assert (buffer.fill, buffer.in_flight, buffer.unsettled) == (2, 1, 2)


def test_a_transition_out_of_order_is_refused() -> None:
    buffer = PartitionBuffer(TP, "standard", 10)
    work = _accept(buffer, 0, None)
    with pytest.raises(LifecycleError, match="is waiting, expected running"):
        buffer.decide(work)
    take_ready([buffer], ("standard",), set(), 1)
    with pytest.raises(LifecycleError, match="is running, expected sent"):
        buffer.settle(work)
    buffer.decide(work)
    with pytest.raises(LifecycleError, match="is decided, expected running"):
        buffer.decide(work)  # decided twice: two outcomes for one record


def test_a_closed_partition_refuses_later_transitions_and_returns_what_never_started() -> None:
    buffer = PartitionBuffer(TP, "standard", 10)
    running = _accept(buffer, 0, b"a")
    sent = _accept(buffer, 1, b"b")
    waiting = _accept(buffer, 2, b"c")
    take_ready([buffer], ("standard",), set(), 2)
    buffer.decide(sent)
    buffer.release(sent)
    assert list(buffer.close()) == [waiting]
    assert not buffer.decide(running)  # its handler finished after the revoke: dropped
    assert not buffer.settle(sent)  # its ack came after the revoke: not counted
    assert buffer.offsets.committable() is None


def test_a_key_waits_behind_its_own_earlier_record_only() -> None:
    buffer = PartitionBuffer(TP, "standard", 10)
    for offset, key in enumerate([b"a", b"a", b"b"]):
        _accept(buffer, offset, key)
    busy: set[bytes] = set()
    first = take_ready([buffer], ("standard",), busy, 10)
    assert [w.record.offset for w in first] == [0, 2]  # the second "a" waits
    busy.discard(b"a")
    assert [w.record.offset for w in take_ready([buffer], ("standard",), busy, 10)] == [1]


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=80))
def test_counts_stay_consistent_and_commits_never_pass_an_unsettled_record(
    steps: list[int],
) -> None:
    buffer = PartitionBuffer(TP, "standard", 1000)
    next_offset = 0
    running: list[RecordWork] = []
    decided: list[RecordWork] = []
    sent: list[RecordWork] = []
    settled: set[int] = set()
    for step in steps:
        if step == 0:
            _accept(buffer, next_offset, None)
            next_offset += 1
        elif step == 1:
            running.extend(take_ready([buffer], ("standard",), set(), 2))
        elif step == 2 and running:
            work = running.pop(len(running) // 2)  # finish out of order
            buffer.decide(work)
            decided.append(work)
        elif step == 3 and (decided or sent):
            if decided:
                work = decided.pop(0)
                buffer.release(work)
                sent.append(work)
            else:
                work = sent.pop()
                buffer.settle(work)
                settled.add(work.record.offset)
        assert buffer.running == len(running)
        assert buffer.decided == len(decided)
        assert buffer.sent == len(sent)
        assert buffer.unsettled == next_offset - len(settled)
        position = buffer.offsets.committable()
        if position is not None:
            assert all(offset in settled for offset in range(position))
