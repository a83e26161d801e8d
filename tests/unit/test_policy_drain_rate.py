"""DrainRate: records/s a stage commits while it has work; expected wait behind a queue."""

from __future__ import annotations

import pytest

from streams.policy.drain_rate import DrainRate, expected_wait_s


def test_no_estimate_until_an_interval_with_work() -> None:
    rate: DrainRate[str] = DrainRate()
    assert rate.observe({"p0": 100}, lag=50, at=0.0) is None
    assert rate.observe({"p0": 140}, lag=30, at=1.0) == pytest.approx(40.0)


def test_intervals_that_began_idle_say_nothing_of_capacity() -> None:
    rate: DrainRate[str] = DrainRate()
    rate.observe({"p0": 0}, lag=0, at=0.0)
    assert rate.observe({"p0": 3}, lag=0, at=1.0) is None  # it only got 3 to do
    rate.observe({"p0": 3}, lag=200, at=2.0)  # began idle too
    assert rate.observe({"p0": 43}, lag=160, at=3.0) == pytest.approx(40.0)


def test_moves_toward_new_samples_by_half_per_half_life() -> None:
    rate: DrainRate[str] = DrainRate(half_life_s=1.0)
    rate.observe({"p0": 0}, lag=100, at=0.0)
    rate.observe({"p0": 40}, lag=100, at=1.0)  # 40/s
    assert rate.observe({"p0": 60}, lag=100, at=2.0) == pytest.approx(30.0)  # 20/s sample


def test_partitions_added_removed_or_reset_add_nothing() -> None:
    rate: DrainRate[str] = DrainRate(half_life_s=1e-9)  # each estimate is the last sample
    rate.observe({"p0": 100, "p1": 500}, lag=10, at=0.0)
    # p1 reset to 0, p2 new with 10_000: only p0's 20 count.
    assert rate.observe({"p0": 120, "p1": 0, "p2": 10_000}, lag=10, at=1.0) == pytest.approx(20)
    assert rate.observe({"p0": 130}, lag=10, at=2.0) == pytest.approx(10)


def test_expected_wait_is_the_queue_at_the_rate() -> None:
    assert expected_wait_s(80, 40.0) == pytest.approx(2.0)
    assert expected_wait_s(80, 0.0) is None
    assert expected_wait_s(80, None) is None
    assert expected_wait_s(-3, 40.0) == 0.0


def test_half_life_must_be_positive() -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        DrainRate(half_life_s=0)
