"""PartitionOffsets / OffsetTracker: commit only past contiguous completed work."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.policy.offsets import OffsetTracker, PartitionOffsets
from streams.types import TopicPartition

TP = TopicPartition("requests", 0)


@st.composite
def tracked_and_completion_order(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Strictly increasing offsets with random gaps, and a random completion order."""
    gaps = draw(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=60))
    start = draw(st.integers(min_value=0, max_value=1_000))
    offsets: list[int] = []
    current = start
    for gap in gaps:
        offsets.append(current)
        current += gap
    order = draw(st.permutations(offsets))
    return offsets, list(order)


@given(tracked_and_completion_order())
def test_committable_never_passes_unfinished_and_never_decreases(
    case: tuple[list[int], list[int]],
) -> None:
    offsets, order = case
    po = PartitionOffsets()
    for o in offsets:
        po.track(o)
    done: set[int] = set()
    previous: int | None = None
    for o in order:
        po.complete(o)
        done.add(o)
        position = po.committable()
        unfinished = [x for x in offsets if x not in done]
        if position is not None:
            assert all(x >= position for x in unfinished), "committed past unfinished work"
            if previous is not None:
                assert position >= previous, "commit position moved backwards"
            # every tracked offset below the position is finished
            assert all(x in done for x in offsets if x < position)
        previous = position if position is not None else previous
        assert po.pending() == len(unfinished)
    assert po.committable() == offsets[-1] + 1


@given(tracked_and_completion_order(), st.data())
def test_interleaved_tracking_and_completion(
    case: tuple[list[int], list[int]], data: st.DataObject
) -> None:
    offsets, _ = case
    po = PartitionOffsets()
    outstanding: list[int] = []
    previous = -1
    for o in offsets:
        po.track(o)
        outstanding.append(o)
        while outstanding:
            if not data.draw(st.booleans()):
                break
            done = outstanding.pop(data.draw(st.integers(0, len(outstanding) - 1)))
            po.complete(done)
            position = po.committable()
            if position is not None:
                assert position >= previous
                assert all(x >= position for x in outstanding)
                previous = position
    for o in outstanding:
        po.complete(o)
    assert po.committable() == offsets[-1] + 1
    assert po.pending() == 0


def test_nothing_committable_until_the_oldest_completes() -> None:
    po = PartitionOffsets()
    for o in (10, 11, 12):
        po.track(o)
    po.complete(12)
    po.complete(11)
    assert po.committable() is None
    po.complete(10)
    assert po.committable() == 13


def test_gaps_between_tracked_offsets_do_not_block() -> None:
    po = PartitionOffsets(start_offset=100)
    for o in (100, 103, 107):  # 101, 102, 104..106: compacted away / transaction markers
        po.track(o)
    po.complete(100)
    po.complete(103)
    assert po.committable() == 104
    po.complete(107)
    assert po.committable() == 108


def test_tracking_out_of_order_is_rejected() -> None:
    po = PartitionOffsets()
    po.track(5)
    with pytest.raises(ValueError, match="increasing"):
        po.track(5)
    with pytest.raises(ValueError, match="increasing"):
        po.track(3)


def test_tracking_below_start_offset_is_rejected() -> None:
    po = PartitionOffsets(start_offset=50)
    with pytest.raises(ValueError):
        po.track(49)


def test_complete_untracked_or_twice_is_rejected() -> None:
    po = PartitionOffsets()
    po.track(1)
    with pytest.raises(ValueError, match="never tracked"):
        po.complete(2)
    po.complete(1)
    with pytest.raises(ValueError, match="already completed"):
        po.complete(1)


def test_mark_committed_refuses_to_pass_unfinished_work() -> None:
    po = PartitionOffsets()
    po.track(1)
    po.track(2)
    po.complete(2)
    with pytest.raises(ValueError, match="has not completed"):
        po.mark_committed(3)


def test_mark_committed_ignores_a_late_older_acknowledgement() -> None:
    po = PartitionOffsets()
    for o in (1, 2):
        po.track(o)
        po.complete(o)
    po.mark_committed(3)
    po.mark_committed(2)
    assert po.committed == 3
    assert po.committable() == 3


def test_memory_is_bounded_by_outstanding_window() -> None:
    po = PartitionOffsets()
    for o in range(10_000):
        po.track(o)
        po.complete(o)
    assert po.held() == 0
    assert po.pending() == 0
    assert po.committable() == 10_000


def test_tracker_reports_only_partitions_that_moved() -> None:
    other = TopicPartition("requests", 1)
    tracker = OffsetTracker()
    tracker.assign(TP)
    tracker.assign(other, start_offset=40)
    tracker.track(TP, 0)
    tracker.track(other, 40)
    tracker.complete(TP, 0)
    assert tracker.committable() == {TP: 1}
    tracker.mark_committed({TP: 1})
    assert tracker.committable() == {}
    tracker.complete(other, 40)
    assert tracker.committable() == {other: 41}


def test_tracker_start_offset_alone_is_not_committable() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP, start_offset=7)
    assert tracker.committable() == {}


def test_tracker_revoke_returns_uncommitted_position_and_ignores_late_completions() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    tracker.track(TP, 0)
    tracker.track(TP, 1)
    tracker.complete(TP, 0)
    assert tracker.revoke(TP) == 1
    assert tracker.complete(TP, 1) is False
    assert tracker.committable() == {}
    tracker.mark_committed({TP: 2})  # late acknowledgement: no error, no state
    assert TP not in tracker.assigned()


def test_tracker_revoke_of_committed_partition_returns_none() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    tracker.track(TP, 0)
    tracker.complete(TP, 0)
    tracker.mark_committed({TP: 1})
    assert tracker.revoke(TP) is None


def test_tracker_reassign_starts_fresh() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    tracker.track(TP, 5)
    tracker.assign(TP, start_offset=3)
    tracker.track(TP, 3)  # redelivered from the committed position
    assert tracker.pending(TP) == 1


def test_tracker_track_unassigned_raises() -> None:
    with pytest.raises(KeyError):
        OffsetTracker().track(TP, 0)


def test_idle_partition_commits_the_position_past_undelivered_offsets() -> None:
    # Transaction markers take offsets that are never delivered: position 11 after record 9.
    tp = TopicPartition("t", 0)
    tracker = OffsetTracker()
    tracker.assign(tp)
    tracker.track(tp, 9)
    assert tracker.idle_positions({tp: 11}) == {}  # record 9 unfinished: never past it
    tracker.complete(tp, 9)
    assert tracker.committable() == {tp: 10}
    assert tracker.idle_positions({tp: 11}) == {tp: 11}
    tracker.mark_committed({tp: 11})
    assert tracker.idle_positions({tp: 11}) == {}  # nothing new
    tracker.track(tp, 11)
    assert tracker.idle_positions({tp: 12}) == {}
