"""RateEstimator: time-weighted EWMA of a cumulative counter, restarted by a reset."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.policy.rate import RateEstimator


def test_no_rate_until_two_observations_span_time() -> None:
    rate = RateEstimator()
    assert rate.rate_per_s() is None
    rate.observe(100, 5.0)
    assert rate.rate_per_s() is None
    rate.observe(150, 5.0)  # same instant: no span yet
    assert rate.rate_per_s() is None
    rate.observe(200, 7.0)
    assert rate.rate_per_s() == pytest.approx(50.0)  # (200 - 100) / 2 s: nothing lost


def test_steady_counter_gives_its_rate_at_any_sampling() -> None:
    rate = RateEstimator(half_life_s=5.0)
    t, count = 0.0, 0
    for step in [0.1, 3.0, 0.5, 7.0, 0.01, 2.0]:
        t += step
        count = round(t * 40)
        rate.observe(count, t)
    assert rate.rate_per_s() == pytest.approx(40.0, rel=0.02)


def test_an_interval_weighs_by_its_duration_not_by_sample_count() -> None:
    # Rate 10/s for a long time, then 0/s for one half-life: the estimate halves,
    # whether that half-life was sampled once or a hundred times.
    coarse, fine = RateEstimator(half_life_s=10.0), RateEstimator(half_life_s=10.0)
    for estimator in (coarse, fine):
        for second in range(0, 101):
            estimator.observe(second * 10, float(second))
    coarse.observe(1000, 110.0)
    for i in range(1, 101):
        fine.observe(1000, 100.0 + i * 0.1)
    assert coarse.rate_per_s() == pytest.approx(5.0, rel=0.01)
    assert fine.rate_per_s() == pytest.approx(5.0, rel=0.01)


def test_counter_going_backwards_restarts_the_estimate() -> None:
    rate = RateEstimator()
    rate.observe(0, 0.0)
    rate.observe(1000, 1.0)
    assert rate.rate_per_s() == pytest.approx(1000.0)
    rate.observe(10, 2.0)  # group reset: offsets start over
    assert rate.rate_per_s() is None
    rate.observe(30, 4.0)
    assert rate.rate_per_s() == pytest.approx(10.0)  # nothing of the old 1000/s remains


def test_a_vanishing_interval_joins_the_next() -> None:
    rate = RateEstimator()
    rate.observe(0, 1.0)
    rate.observe(5, 1.0 + 1e-300)  # would be an infinite rate
    assert rate.rate_per_s() is None
    rate.observe(10, 2.0)
    assert rate.rate_per_s() == pytest.approx(10.0)


def test_time_going_backwards_is_ignored() -> None:
    rate = RateEstimator()
    rate.observe(0, 10.0)
    rate.observe(50, 9.0)
    assert rate.rate_per_s() is None
    rate.observe(100, 20.0)
    assert rate.rate_per_s() == pytest.approx(10.0)


def test_reset_forgets() -> None:
    rate = RateEstimator()
    rate.observe(0, 0.0)
    rate.observe(10, 1.0)
    rate.reset()
    assert rate.rate_per_s() is None
    rate.observe(5, 2.0)  # lower than before: no restart needed, but no rate yet either
    assert rate.rate_per_s() is None


@pytest.mark.parametrize("half_life", [0.0, -1.0, math.nan, math.inf])
def test_half_life_must_be_positive(half_life: float) -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        RateEstimator(half_life)


def test_non_finite_time_is_refused() -> None:
    with pytest.raises(ValueError, match="now_mono"):
        RateEstimator().observe(1, math.nan)


@given(
    st.lists(
        st.tuples(st.integers(0, 1000), st.one_of(st.just(0.0), st.floats(1e-3, 30.0))),
        min_size=1,
        max_size=100,
    )
)
def test_rate_stays_within_the_interval_rates_seen(steps: list[tuple[int, float]]) -> None:
    """An EWMA is a convex mix: never below the slowest nor above the fastest interval."""
    rate = RateEstimator(half_life_s=3.0)
    count, t = 0, 0.0
    rate.observe(count, t)
    seen: list[float] = []
    last_count, last_t = count, t  # growth at a repeated instant joins the next interval
    for increment, step in steps:
        count += increment
        t += step
        rate.observe(count, t)
        if t > last_t:
            seen.append((count - last_count) / (t - last_t))
            last_count, last_t = count, t
        estimate = rate.rate_per_s()
        if not seen:
            assert estimate is None
            continue
        assert estimate is not None
        assert min(seen) * (1 - 1e-9) - 1e-9 <= estimate <= max(seen) * (1 + 1e-9) + 1e-9
