"""EndOffsetHistory: time lag from (end offset, wall time) samples, exact cases and bounds."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.policy.time_lag import EndOffsetHistory, EndOffsetSample

T0 = 1_700_000_000.0


def history(*points: tuple[int, float], max_samples: int = 120) -> EndOffsetHistory:
    h = EndOffsetHistory(max_samples=max_samples)
    for end_offset, at in points:
        h.record(end_offset, T0 + at)
    return h


def test_fully_committed_has_no_age() -> None:
    h = history((0, 0.0), (10, 5.0))
    assert h.age_of(10, 10, T0 + 100.0) == 0.0
    assert h.age_of(12, 10, T0 + 100.0) == 0.0  # committed past the end (truncated log)


def test_single_record_between_samples_is_bounded_by_the_later_sample() -> None:
    # End 4 at t=0 (offset 4 absent), end 5 at t=10 (offset 4 present): appended by t=10.
    h = history((4, 0.0), (5, 10.0))
    assert h.age_of(4, 5, T0 + 25.0) == pytest.approx(15.0)


def test_interpolates_between_bracketing_samples() -> None:
    # Offsets 0..9 appended evenly over (0, 10]: offset c appears at t = c + 1.
    h = history((0, 0.0), (10, 10.0), (20, 20.0))
    now = T0 + 30.0
    assert h.age_of(0, 20, now) == pytest.approx(29.0)
    assert h.age_of(4, 20, now) == pytest.approx(25.0)
    assert h.age_of(9, 20, now) == pytest.approx(20.0)
    assert h.age_of(15, 20, now) == pytest.approx(14.0)


def test_flat_run_keeps_its_last_sample_so_new_records_are_not_aged_by_the_run() -> None:
    # End stays 10 from t=0 to t=50, then jumps to 11 at t=60: offset 10 arrived in (50, 60].
    h = history((10, 0.0), (10, 10.0), (10, 30.0), (10, 50.0), (11, 60.0))
    assert h.samples == (
        EndOffsetSample(10, T0),
        EndOffsetSample(10, T0 + 50.0),
        EndOffsetSample(11, T0 + 60.0),
    )
    assert h.age_of(10, 11, T0 + 70.0) == pytest.approx(10.0)


def test_history_shorter_than_backlog_gives_lower_bound_from_first_sample() -> None:
    h = history((100, 0.0), (110, 10.0))
    assert h.age_of(3, 110, T0 + 40.0) == pytest.approx(40.0)


def test_record_newer_than_last_sample_is_bounded_by_the_fresh_reading() -> None:
    # Last sample says end=10 at t=10; now the end is 11: offset 10 arrived in (10, now].
    h = history((0, 0.0), (10, 10.0))
    assert h.age_of(10, 11, T0 + 20.0) == pytest.approx(0.0)
    assert h.age_of(10, 12, T0 + 20.0) == pytest.approx(5.0)


def test_empty_history_reports_no_age() -> None:
    assert EndOffsetHistory().age_of(0, 5, T0) == 0.0


def test_nothing_committed_counts_from_offset_zero_when_starting_from_earliest() -> None:
    h = history((0, 0.0), (10, 10.0))
    assert h.age_of(None, 10, T0 + 20.0) == pytest.approx(19.0)
    assert h.age_of(None, 10, T0 + 20.0, from_earliest=False) == 0.0


def test_thinning_keeps_first_and_newest_sample() -> None:
    h = EndOffsetHistory(max_samples=5)
    for i in range(50):
        h.record(i, T0 + i)
    assert len(h) == 5
    assert h.samples[0] == EndOffsetSample(0, T0)
    assert h.samples[-1] == EndOffsetSample(49, T0 + 49)
    # A backlog older than a ring buffer of 5 would cover still shows its real age
    # (offset 0 appeared at t=1).
    assert h.age_of(0, 49, T0 + 60.0) == pytest.approx(59.0)


def test_thinning_keeps_recent_samples_dense_and_old_ones_sparse() -> None:
    h = EndOffsetHistory(max_samples=10)
    for i in range(1000):
        h.record(i, T0 + i)
    gaps = [b.at - a.at for a, b in itertools.pairwise(h.samples)]
    assert gaps[-1] == 1.0  # the newest reads keep full resolution
    assert gaps == sorted(gaps, reverse=True)  # spacing widens with age
    # An even producer makes interpolation exact even across the widest span.
    assert h.age_of(300, 999, T0 + 1000.0) == pytest.approx(1000.0 - 301.0)


def test_recreated_topic_resets_history() -> None:
    h = history((0, 0.0), (500, 10.0), (3, 20.0))
    assert h.samples == (EndOffsetSample(3, T0 + 20.0),)


def test_wall_clock_stepping_back_is_ignored() -> None:
    h = history((0, 10.0), (5, 5.0))
    assert h.samples == (EndOffsetSample(0, T0 + 10.0),)


@pytest.mark.parametrize("bad", [0, 1])
def test_rejects_too_small_bound(bad: int) -> None:
    with pytest.raises(ValueError):
        EndOffsetHistory(max_samples=bad)


def test_rejects_invalid_samples() -> None:
    with pytest.raises(ValueError):
        EndOffsetHistory().record(-1, T0)
    with pytest.raises(ValueError):
        EndOffsetHistory().record(1, float("nan"))


# Generated histories: a producer appends some records between reads spaced by some time.
steps = st.lists(
    st.tuples(st.integers(0, 50), st.floats(0.0, 30.0, allow_nan=False)), min_size=1, max_size=60
)


def build(step_list: list[tuple[int, float]], max_samples: int) -> tuple[EndOffsetHistory, float]:
    h = EndOffsetHistory(max_samples=max_samples)
    end, at = 0, T0
    for appended, gap in step_list:
        end += appended
        at += gap
        h.record(end, at)
    return h, at


@given(
    step_list=steps,
    max_samples=st.integers(2, 20),
    committed_fraction=st.floats(0.0, 1.0),
    wait=st.floats(0.0, 1000.0),
)
def test_age_is_within_zero_and_time_since_first_sample(
    step_list: list[tuple[int, float]], max_samples: int, committed_fraction: float, wait: float
) -> None:
    h, last_at = build(step_list, max_samples)
    end = h.samples[-1].end_offset
    committed = int(committed_fraction * end)
    now = last_at + wait
    age = h.age_of(committed, end, now)
    assert 0.0 <= age <= now - h.samples[0].at + 1e-6
    assert len(h) <= max_samples
    if committed >= end:
        assert age == 0.0


@given(step_list=steps, max_samples=st.integers(2, 20), wait=st.floats(0.0, 1000.0))
def test_older_unconsumed_records_are_never_younger(
    step_list: list[tuple[int, float]], max_samples: int, wait: float
) -> None:
    h, last_at = build(step_list, max_samples)
    end = h.samples[-1].end_offset
    now = last_at + wait
    ages = [h.age_of(committed, end, now) for committed in range(end + 1)]
    assert all(a >= b - 1e-6 for a, b in itertools.pairwise(ages))


@given(step_list=steps, max_samples=st.integers(2, 20), more=st.floats(0.0, 1000.0))
def test_age_never_shrinks_while_nothing_is_consumed(
    step_list: list[tuple[int, float]], max_samples: int, more: float
) -> None:
    h, last_at = build(step_list, max_samples)
    end = h.samples[-1].end_offset
    before = h.age_of(0, end, last_at)
    after = h.age_of(0, end, last_at + more)
    assert after >= before - 1e-6
