"""Burrow's status model over a window of (committed, end offset) samples: fake times only."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.clock import FakeClock
from streams.policy.group_status import (
    SEVERITY,
    OffsetSample,
    PartitionWindow,
    group_status,
    partition_status,
)


def window(*points: tuple[int | None, int], step_s: float = 5.0) -> list[OffsetSample]:
    return [
        OffsetSample(at=1_700_000_000.0 + i * step_s, committed=c, end_offset=e)
        for i, (c, e) in enumerate(points)
    ]


def test_any_zero_lag_in_the_window_is_ok() -> None:
    verdict = partition_status(window((5, 9), (9, 9), (9, 20)), consumers_alive=True)
    assert verdict.status == "OK"


def test_committing_and_catching_up_is_ok() -> None:
    assert partition_status(window((0, 50), (20, 60), (50, 70)), consumers_alive=True).status == (
        "OK"
    )


def test_lag_growing_while_committing_is_warn() -> None:
    verdict = partition_status(window((0, 10), (5, 20), (8, 40)), consumers_alive=True)
    assert verdict.status == "WARN"
    assert "growing" in verdict.why


def test_lag_without_commit_progress_while_a_worker_lives_is_stall() -> None:
    verdict = partition_status(window((4, 10), (4, 10), (4, 12)), consumers_alive=True)
    assert verdict.status == "STALL"
    assert "10 s" in verdict.why


def test_lag_without_commits_and_no_live_worker_is_stop() -> None:
    assert partition_status(window((4, 10), (4, 12)), consumers_alive=False).status == "STOP"
    # A group that never committed, with nobody consuming, is stopped from the first look.
    assert partition_status(window((None, 7)), consumers_alive=False).status == "STOP"


def test_a_committed_offset_moving_back_is_rewind() -> None:
    verdict = partition_status(window((40, 50), (10, 50), (12, 50)), consumers_alive=True)
    assert verdict.status == "REWIND"
    assert "40" in verdict.why and "10" in verdict.why


def test_one_sample_with_lag_is_not_judged_yet_while_a_worker_lives() -> None:
    assert partition_status(window((4, 10)), consumers_alive=True).status == "OK"
    assert partition_status([], consumers_alive=False).status == "OK"


def test_one_sample_with_lag_and_no_live_worker_is_already_stop() -> None:
    # A monitor that has just started must not call a stage nobody consumes OK.
    assert partition_status(window((4, 10)), consumers_alive=False).status == "STOP"


def test_window_keeps_only_recent_samples_and_a_bounded_count() -> None:
    clock = FakeClock()
    w = PartitionWindow(window_s=30.0, max_samples=4)
    for i in range(10):
        w.record(OffsetSample(clock.now(), committed=i, end_offset=20))
        clock.advance(10.0)
    kept = w.samples
    assert len(kept) <= 4
    assert kept[-1].committed == 9
    assert kept[-1].at - kept[0].at <= 30.0


def test_window_keeps_the_span_when_thinning() -> None:
    # 100 samples at 1 s within a 300 s window, max 10: oldest and newest stay.
    w = PartitionWindow(window_s=300.0, max_samples=10)
    for i in range(100):
        w.record(OffsetSample(float(i), committed=3, end_offset=9))
    assert len(w.samples) <= 10
    assert w.samples[0].at == 0.0 and w.samples[-1].at == 99.0
    assert partition_status(w.samples, consumers_alive=True).status == "STALL"


def test_group_status_is_the_worst_partition_and_err_on_a_dead_letter_storm() -> None:
    assert group_status(["OK", "WARN", "OK"], dead_letters_per_min=0, storm_per_min=60) == "WARN"
    assert group_status(["WARN", "STALL"], dead_letters_per_min=0, storm_per_min=60) == "STALL"
    assert group_status(["OK"], dead_letters_per_min=60, storm_per_min=60) == "ERR"
    assert group_status([], dead_letters_per_min=0, storm_per_min=60) == "OK"
    assert SEVERITY.index("ERR") == len(SEVERITY) - 1


def test_window_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        PartitionWindow(window_s=0)
    with pytest.raises(ValueError):
        PartitionWindow(window_s=10, max_samples=1)


# --- properties ------------------------------------------------------------------------

offsets = st.integers(min_value=0, max_value=1_000)
samples_strategy = st.lists(
    st.tuples(st.one_of(st.none(), offsets), offsets), min_size=1, max_size=12
).map(lambda pts: window(*[(c if c is None else min(c, e), e) for c, e in pts]))


@given(samples_strategy, st.floats(min_value=-1e6, max_value=1e6), st.booleans())
def test_status_does_not_depend_on_when_the_window_was(
    samples: list[OffsetSample], shift: float, alive: bool
) -> None:
    shifted = [OffsetSample(s.at + shift, s.committed, s.end_offset) for s in samples]
    assert partition_status(samples, consumers_alive=alive) == partition_status(
        shifted, consumers_alive=alive
    )


@given(samples_strategy, st.booleans())
def test_rewind_exactly_when_a_committed_offset_moves_back(
    samples: list[OffsetSample], alive: bool
) -> None:
    committed = [s.committed for s in samples if s.committed is not None]
    moved_back = any(b < a for a, b in itertools.pairwise(committed))
    assert (partition_status(samples, consumers_alive=alive).status == "REWIND") == moved_back


@given(samples_strategy, st.booleans())
def test_a_zero_lag_sample_without_rewind_is_ok(samples: list[OffsetSample], alive: bool) -> None:
    verdict = partition_status(samples, consumers_alive=alive)
    if any(s.lag == 0 for s in samples) and verdict.status != "REWIND":
        assert verdict.status == "OK"


@given(
    st.lists(st.integers(min_value=1, max_value=50), min_size=2, max_size=10),
    st.integers(min_value=1, max_value=500),
)
def test_committing_faster_than_arrivals_is_never_a_problem(steps: list[int], lag: int) -> None:
    # Every interval the group commits more than arrives: lag strictly falls, never zero.
    committed, end, points = 0, lag + sum(steps), []
    for step in steps:
        points.append((committed, end))
        committed += step
        end += step - 1
    verdict = partition_status(window(*points), consumers_alive=True)
    assert verdict.status == "OK"
