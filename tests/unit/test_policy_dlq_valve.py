"""DeadLetterValve: trip on ratio over a window or on a consecutive run, judged in the
order records started; a warning state below the trip point; bounded."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    assert valve.status().judged == 10
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


def test_a_burst_whose_timeouts_finish_last_is_judged_in_start_order_and_does_not_trip() -> None:
    valve = DeadLetterValve(DeadLetterLimit())  # ratio 0.5 over 100, 50 consecutive
    started = [valve.start() for _ in range(200)]  # 200 handlers start together
    timed_out = set(random.Random(9).sample(started, 60))  # 30 %, spread over the burst
    for ticket in started:  # the 140 that succeed finish first ...
        if ticket not in timed_out:
            valve.record(False, started=ticket)
    for ticket in sorted(timed_out):  # ... the 60 timeouts together at the end
        valve.record(True, started=ticket)
    assert valve.tripped() is None
    assert valve.status().judged == 100  # every outcome judged, the window holds 100


def test_the_same_burst_judged_in_completion_order_trips() -> None:
    # What the valve did before start order: the 60 timeouts read as 60 in a row.
    valve = DeadLetterValve(DeadLetterLimit())
    for _ in range(140):
        valve.record(False)
    for _ in range(60):
        valve.record(True)
    assert valve.tripped() is not None


def test_sixty_consecutive_failures_in_start_order_trip_whatever_order_they_finish() -> None:
    valve = DeadLetterValve(DeadLetterLimit(max_ratio=1.0, max_consecutive=60))
    ok = [valve.start() for _ in range(100)]
    failing = [valve.start() for _ in range(60)]
    for ticket in ok:
        valve.record(False, started=ticket)
    for ticket in reversed(failing):
        valve.record(True, started=ticket)
    assert valve.tripped() == "60 consecutive records dead-lettered, limit 60"


def test_an_outcome_that_never_comes_blocks_judging_only_until_abandoned() -> None:
    valve = DeadLetterValve(DeadLetterLimit(max_consecutive=5))
    lost = valve.start()  # its partition is revoked: no outcome will come
    for _ in range(10):
        valve.record(True, started=valve.start())
    assert valve.tripped() is None  # waiting for `lost`, which started first
    assert valve.status().waiting == 10
    valve.abandon(lost)
    assert valve.tripped() == "5 consecutive records dead-lettered, limit 5"
    assert valve.status().waiting == 0
    assert valve.status().judged == 10


def test_outcomes_waiting_behind_a_missing_one_are_bounded() -> None:
    valve = DeadLetterValve(DeadLetterLimit(max_consecutive=50, max_waiting=100))
    valve.start()  # never recorded nor abandoned (a worker bug): judging must go on
    for _ in range(101):
        valve.record(True, started=valve.start())
    assert valve.status().waiting <= 100
    assert valve.tripped() is not None


def test_a_sustained_30_percent_warns_and_does_not_trip() -> None:
    valve = DeadLetterValve(DeadLetterLimit())  # warn_ratio 0.1, max_ratio 0.5
    states = []
    for i in range(1000):
        valve.record(i % 10 < 3)  # 30 % dead letters, never 50 in a row
        states.append(valve.state)
    assert valve.tripped() is None
    assert valve.state == "warning"
    assert states.index("warning") == 19  # from the first judged window (min_records)
    assert states[19:] == ["warning"] * 981  # held, not flapping
    assert valve.status().reason == (
        "dead-letter ratio 0.30 over the last 100 records (warning since it rose above "
        "0.10; the valve trips above 0.50)"
    )


def test_the_warning_clears_at_half_its_level() -> None:
    valve = DeadLetterValve(DeadLetterLimit(window=100, min_records=100, max_consecutive=None))
    for i in range(100):
        valve.record(i < 20)  # 20 %
    assert valve.status().state == "warning"
    for _ in range(14):
        valve.record(False)  # the oldest dead letters slide out: 6 % > 5 %
    assert valve.status().state == "warning"
    valve.record(False)  # 5 %: at half the warning level
    assert valve.status().state == "ok"
    assert valve.status().reason is None


def test_the_state_says_tripped_once_tripped() -> None:
    valve = DeadLetterValve(DeadLetterLimit(max_consecutive=3))
    for _ in range(3):
        valve.record(True)
    assert valve.state == "tripped"
    assert valve.status().reason == valve.tripped()


@pytest.mark.parametrize("kwargs", [{"warn_ratio": -0.1}, {"warn_ratio": 1.1}, {"max_waiting": -1}])
def test_new_limit_fields_reject_invalid(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DeadLetterLimit(**kwargs)  # type: ignore[arg-type]


@given(
    st.lists(st.booleans(), min_size=1, max_size=300),
    st.randoms(use_true_random=False),
)
def test_the_verdict_does_not_depend_on_the_order_outcomes_finish(
    dead: list[bool], rng: random.Random
) -> None:
    limit = DeadLetterLimit(max_ratio=0.5, window=50, min_records=10, max_consecutive=8)
    in_order = DeadLetterValve(limit)
    for outcome in dead:
        in_order.record(outcome)
    shuffled = DeadLetterValve(limit)
    tickets = [(shuffled.start(), outcome) for outcome in dead]
    rng.shuffle(tickets)
    for ticket, outcome in tickets:
        shuffled.record(outcome, started=ticket)
    assert (shuffled.tripped() is None) == (in_order.tripped() is None)
    assert shuffled.status().judged == in_order.status().judged
    assert shuffled.ratio() == in_order.ratio()
