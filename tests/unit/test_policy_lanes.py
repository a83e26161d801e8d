"""lanes_to_pause / next_lane: strict lane priority."""

from __future__ import annotations

import pytest

from streams.policy.lanes import lanes_to_pause, next_lane
from streams.types import LANES


def test_nothing_paused_below_capacity() -> None:
    assert lanes_to_pause({"urgent": 10, "standard": 10}, at_capacity=False, order=LANES) == (
        frozenset()
    )


def test_urgent_backlog_at_capacity_pauses_lower_lanes() -> None:
    paused = lanes_to_pause({"urgent": 1, "standard": 5}, at_capacity=True, order=LANES)
    assert paused == frozenset({"standard", "background"})


def test_standard_backlog_pauses_only_background() -> None:
    paused = lanes_to_pause({"urgent": 0, "standard": 3}, at_capacity=True, order=LANES)
    assert paused == frozenset({"background"})


def test_no_backlog_at_capacity_pauses_nothing() -> None:
    assert lanes_to_pause({"background": 0}, at_capacity=True, order=LANES) == frozenset()


def test_custom_order_is_respected() -> None:
    paused = lanes_to_pause({"standard": 1}, at_capacity=True, order=("standard", "urgent"))
    assert paused == frozenset({"urgent"})


def test_next_lane_is_strict_priority() -> None:
    assert next_lane({"background": 9, "standard": 4, "urgent": 1}, LANES) == "urgent"
    assert next_lane({"background": 9, "standard": 4, "urgent": 0}, LANES) == "standard"
    assert next_lane({"urgent": 0}, LANES) is None


def test_repeated_lane_in_order_rejected() -> None:
    with pytest.raises(ValueError):
        next_lane({}, ("urgent", "urgent"))
