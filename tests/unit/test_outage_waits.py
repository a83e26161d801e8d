"""OutageWaits: one line's worth of start and end per outage, whatever waits on it, on the
one backoff schedule (times are passed in: no clock, no sleeps)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.policy.outage_backoff import OutageBackoff
from streams.policy.outage_waits import OutageWaits


def test_the_first_failure_begins_the_outage_and_the_others_join_it() -> None:
    waits: OutageWaits[str] = OutageWaits(OutageBackoff(first_s=1.0, cap_s=4.0))
    assert waits.may_try(0.0) and waits.wait_s(0.0) == 0.0
    assert waits.failed("p0", 10.0) is True
    assert waits.failed("p1", 10.2) is False  # same outage, same round
    assert waits.failed("p0", 10.3) is False  # again before its round: no new outage
    assert len(waits) == 2 and "p0" in waits and "p2" not in waits
    assert waits.since == 10.0
    assert waits.retry_at == 11.0
    assert not waits.may_try(10.5)
    assert waits.wait_s(10.5) == 0.5


def test_failed_rounds_back_off_to_the_cap() -> None:
    waits: OutageWaits[str] = OutageWaits(OutageBackoff(first_s=1.0, cap_s=4.0))
    now = 0.0
    gaps = []
    for _ in range(5):
        waits.failed("p0", now)
        assert waits.retry_at is not None
        gaps.append(waits.retry_at - now)
        now = waits.retry_at
        assert waits.may_try(now)
    assert gaps == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_the_outage_ends_when_the_last_one_waiting_goes_through() -> None:
    waits: OutageWaits[str] = OutageWaits()
    waits.failed("p0", 5.0)
    waits.failed("p1", 5.0)
    assert waits.went_through("p0", 8.0) is None  # p1 still waits
    assert waits.went_through("never-waited", 8.0) is None
    assert waits.went_through("p1", 9.5) == 4.5
    assert len(waits) == 0 and waits.since is None and waits.retry_at is None
    assert waits.may_try(9.5)
    # The next outage starts over: a new start, the first backoff step again.
    assert waits.failed("p0", 20.0) is True
    assert waits.retry_at == 21.0


def test_going_through_outside_an_outage_says_nothing() -> None:
    waits: OutageWaits[str] = OutageWaits()
    assert waits.went_through("p0", 1.0) is None
    assert waits.since is None


def test_forgetting_the_last_one_ends_the_outage_without_a_word() -> None:
    waits: OutageWaits[str] = OutageWaits()
    waits.failed("p0", 1.0)
    waits.failed("p1", 1.0)
    waits.forget("p0")
    assert waits.since == 1.0 and not waits.may_try(1.5)
    waits.forget("p1")
    assert waits.since is None and waits.may_try(1.5)
    assert waits.went_through("p1", 2.0) is None  # forgotten: not an outage's end
    assert waits.failed("p1", 3.0) is True


@given(
    st.lists(
        st.tuples(st.sampled_from(["fail", "through", "forget"]), st.integers(0, 3)),
        max_size=40,
    )
)
def test_each_outage_begins_once_and_ends_once(steps: list[tuple[str, int]]) -> None:
    waits: OutageWaits[int] = OutageWaits()
    waiting: set[int] = set()
    began = ended = 0
    now = 0.0
    for action, key in steps:
        now += 0.25
        if action == "fail":
            began += waits.failed(key, now)
            waiting.add(key)
        elif action == "through":
            lasted = waits.went_through(key, now)
            if lasted is not None:
                ended += 1
                assert lasted >= 0
            waiting.discard(key)
        else:
            during = waits.since is not None
            waits.forget(key)
            waiting.discard(key)
            ended += during and waits.since is None  # ended without a word
        assert len(waits) == len(waiting)
        assert (waits.since is None) == (not waiting)  # an outage lasts while anything waits
        assert waits.may_try(now) or waiting
        assert began - ended in (0, 1)
