"""DeadLetterValve: trip on ratio over a window or on a consecutive run; bounded."""

from __future__ import annotations

import pytest

from streams.policy.dlq_valve import DeadLetterLimit, DeadLetterValve


def test_ratio_not_judged_before_min_records() -> None:
    valve = DeadLetterValve(DeadLetterLimit(max_ratio=0.5, window=100, min_records=20))
    for _ in range(19):
        valve.record(True)
    assert valve.tripped() is None


def test_ratio_over_window_trips_with_reason() -> None:
    limit = DeadLetterLimit(max_ratio=0.5, window=100, min_records=100, max_consecutive=None)
    valve = DeadLetterValve(limit)
    for i in range(100):
        valve.record(i >= 38)  # 62 dead letters
        assert (valve.tripped() is None) == (i < 99)
    assert valve.ratio() == pytest.approx(0.62)
    reason = valve.tripped()
    assert reason == "dead-letter ratio 0.62 over the last 100 records exceeds 0.50"


def test_ratio_equal_to_limit_does_not_trip() -> None:
    valve = DeadLetterValve(DeadLetterLimit(max_ratio=0.5, window=10, min_records=10))
    for i in range(10):
        valve.record(i % 2 == 0)
    assert valve.tripped() is None


def test_window_slides_old_outcomes_out() -> None:
    limit = DeadLetterLimit(max_ratio=0.5, window=10, min_records=10, max_consecutive=None)
    valve = DeadLetterValve(limit)
    for _ in range(5):
        valve.record(True)
    for _ in range(10):
        valve.record(False)
    assert valve.ratio() == 0.0
    assert len(valve._outcomes) == 10
    assert valve.tripped() is None


def test_consecutive_dead_letters_trip_before_min_records() -> None:
    valve = DeadLetterValve(DeadLetterLimit(window=100, min_records=100, max_consecutive=5))
    for _ in range(4):
        valve.record(True)
    valve.record(False)
    for _ in range(4):
        valve.record(True)
    assert valve.tripped() is None
    valve.record(True)
    assert valve.tripped() == "5 consecutive records dead-lettered, limit 5"


def test_trip_latches_until_reset() -> None:
    valve = DeadLetterValve(DeadLetterLimit(max_consecutive=3))
    for _ in range(3):
        valve.record(True)
    for _ in range(200):
        valve.record(False)
    assert valve.tripped() is not None
    valve.reset()
    assert valve.tripped() is None
    assert valve.ratio() is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_ratio": 1.5},
        {"window": 0},
        {"min_records": 0},
        {"window": 10, "min_records": 11},
        {"max_consecutive": 0},
    ],
)
def test_limit_rejects_invalid(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DeadLetterLimit(**kwargs)  # type: ignore[arg-type]
