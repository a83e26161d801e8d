"""PartitionBound: pause at high water, stay paused until low water."""

from __future__ import annotations

import pytest

from streams.policy.local_bound import PartitionBound


def test_pauses_at_high_water() -> None:
    bound = PartitionBound(high_water=100, low_water=40)
    assert bound.should_pause(99, paused=False) is False
    assert bound.should_pause(100, paused=False) is True


def test_stays_paused_until_low_water() -> None:
    bound = PartitionBound(high_water=100, low_water=40)
    assert bound.should_pause(99, paused=True) is True
    assert bound.should_pause(41, paused=True) is True
    assert bound.should_pause(40, paused=True) is False


def test_low_water_defaults_to_half() -> None:
    assert PartitionBound(high_water=101).low_water == 50


def test_low_water_zero_means_drain_fully() -> None:
    bound = PartitionBound(high_water=1, low_water=0)
    assert bound.should_pause(1, paused=False) is True
    assert bound.should_pause(1, paused=True) is True
    assert bound.should_pause(0, paused=True) is False


@pytest.mark.parametrize(("high", "low"), [(0, None), (10, 10), (10, 11), (10, -1)])
def test_rejects_invalid_watermarks(high: int, low: int | None) -> None:
    with pytest.raises(ValueError):
        PartitionBound(high_water=high, low_water=low)


def test_rejects_negative_fill() -> None:
    with pytest.raises(ValueError):
        PartitionBound(high_water=10).should_pause(-1, paused=False)
