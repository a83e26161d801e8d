"""HysteresisGate: pause high at once, resume low after min_dwell_s paused."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.clock import FakeClock
from streams.policy.hysteresis import HysteresisGate, Thresholds

LIMITS = Thresholds(pause_at=100.0, resume_below=50.0, min_dwell_s=2.0)

readings = st.lists(
    st.tuples(
        st.one_of(st.none(), st.floats(min_value=0, max_value=200, allow_nan=False)),
        st.floats(min_value=0, max_value=3.0),  # time step before the reading
    ),
    max_size=200,
)


@given(readings)
def test_pauses_at_once_and_resumes_only_after_the_dwell(
    steps: list[tuple[float | None, float]],
) -> None:
    clock = FakeClock()
    gate = HysteresisGate(LIMITS)
    paused_at: float | None = None
    resumes: list[float] = []
    state = gate.paused
    for value, step in steps:
        clock.advance(step)
        paused = gate.update(value, clock.monotonic())
        if value is not None and value >= LIMITS.pause_at:
            assert paused  # a reading over the threshold is never let through
        if paused and not state:
            paused_at = clock.monotonic()
        if state and not paused:
            assert paused_at is not None
            assert clock.monotonic() - paused_at >= LIMITS.min_dwell_s
            resumes.append(clock.monotonic())
        state = paused
    # No flapping: resumes are at least one dwell apart.
    for earlier, later in itertools.pairwise(resumes):
        assert later - earlier >= LIMITS.min_dwell_s
    assert gate.resume_events == len(resumes)


@given(
    st.booleans(),
    st.lists(
        st.tuples(
            st.floats(min_value=50.0, max_value=100.0, exclude_max=True),
            st.floats(min_value=0, max_value=10.0),
        ),
        max_size=100,
    ),
)
def test_values_between_thresholds_never_change_state(
    start_paused: bool, steps: list[tuple[float, float]]
) -> None:
    clock = FakeClock()
    gate = HysteresisGate(LIMITS, paused=start_paused)
    for value, step in steps:
        clock.advance(step)
        assert gate.update(value, clock.monotonic()) is start_paused
    assert gate.pause_events == gate.resume_events == 0


def test_pauses_at_threshold_and_resumes_below_after_dwell() -> None:
    clock = FakeClock()
    gate = HysteresisGate(LIMITS)
    assert gate.update(99.9, clock.monotonic()) is False
    assert gate.update(100.0, clock.monotonic()) is True  # first pause is immediate
    clock.advance(1.0)
    assert gate.update(10.0, clock.monotonic()) is True  # dwell not over
    clock.advance(1.0)
    assert gate.update(50.0, clock.monotonic()) is True  # not *below* resume_below
    assert gate.update(49.0, clock.monotonic()) is False
    assert (gate.pause_events, gate.resume_events) == (1, 1)


def test_repause_after_a_resume_is_immediate() -> None:
    clock = FakeClock()
    gate = HysteresisGate(LIMITS)
    gate.update(150.0, clock.monotonic())
    clock.advance(2.0)
    assert gate.update(0.0, clock.monotonic()) is False
    clock.advance(0.5)
    assert gate.update(500.0, clock.monotonic()) is True  # the bound comes first
    clock.advance(1.0)
    assert gate.update(0.0, clock.monotonic()) is True  # but resuming waits again
    clock.advance(1.0)
    assert gate.update(0.0, clock.monotonic()) is False
    assert (gate.pause_events, gate.resume_events) == (2, 2)


def test_missing_value_keeps_state() -> None:
    clock = FakeClock()
    gate = HysteresisGate(LIMITS)
    gate.update(150.0, clock.monotonic())
    clock.advance(10.0)
    assert gate.update(None, clock.monotonic()) is True
    assert gate.update(float("nan"), clock.monotonic()) is True
    assert gate.resume_events == 0


@pytest.mark.parametrize(
    ("pause_at", "resume_below", "dwell"),
    [(10.0, 10.0, 1.0), (10.0, 20.0, 1.0), (10.0, 5.0, -1.0), (float("nan"), 5.0, 1.0)],
)
def test_thresholds_reject_invalid(pause_at: float, resume_below: float, dwell: float) -> None:
    with pytest.raises(ValueError):
        Thresholds(pause_at=pause_at, resume_below=resume_below, min_dwell_s=dwell)
