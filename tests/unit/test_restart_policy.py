"""RestartPolicy, the `streams worker --processes N` supervisor's decision when a child
exits on its own: capped backoff per child, starting over after a healthy run; a child's
own error (exit 1) or too many deaths in the window stop the group. Times come from a
fake clock: no sleeps."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.clock import FakeClock
from streams.policy.restarts import (
    Restart,
    RestartLimits,
    RestartPolicy,
    StopGroup,
    describe_status,
)

KILLED = -signal.SIGKILL


def _die(policy: RestartPolicy, clock: FakeClock, index: int, *, ran_s: float) -> object:
    policy.started(index, clock.monotonic())
    clock.advance(ran_s)
    return policy.exited(index, KILLED, clock.monotonic())


def test_quick_deaths_back_off_doubling_to_the_cap() -> None:
    limits = RestartLimits(max_crashes=100, first_backoff_s=0.5, max_backoff_s=4.0)
    policy, clock = RestartPolicy(limits), FakeClock()
    waits = []
    for _ in range(6):
        decision = _die(policy, clock, 0, ran_s=1.0)
        assert isinstance(decision, Restart)
        waits.append(decision.after_s)
        clock.advance(decision.after_s)
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_child_that_ran_healthy_starts_over_at_the_first_wait() -> None:
    policy, clock = RestartPolicy(RestartLimits(healthy_after_s=30.0)), FakeClock()
    assert _die(policy, clock, 0, ran_s=1.0) == Restart(0.5)
    assert _die(policy, clock, 0, ran_s=1.0) == Restart(1.0)
    assert _die(policy, clock, 0, ran_s=31.0) == Restart(0.5)


def test_each_child_has_its_own_backoff() -> None:
    policy, clock = RestartPolicy(), FakeClock()
    assert _die(policy, clock, 0, ran_s=1.0) == Restart(0.5)
    assert _die(policy, clock, 0, ran_s=1.0) == Restart(1.0)
    assert _die(policy, clock, 1, ran_s=1.0) == Restart(0.5)


def test_five_deaths_within_60_s_across_the_group_stop_it() -> None:
    policy, clock = RestartPolicy(RestartLimits(max_crashes=5, window_s=60.0)), FakeClock()
    decisions = [_die(policy, clock, i % 2, ran_s=10.0) for i in range(5)]
    assert all(isinstance(d, Restart) for d in decisions[:4])
    stop = decisions[4]
    assert isinstance(stop, StopGroup)
    assert "died 5 times within 60 s" in stop.reason
    assert "worker process 0 killed by SIGKILL" in stop.reason


def test_deaths_spread_wider_than_the_window_keep_restarting() -> None:
    policy, clock = RestartPolicy(RestartLimits(max_crashes=5, window_s=60.0)), FakeClock()
    for _ in range(20):  # one death every 16 s: 5 of them span 64 s
        assert isinstance(_die(policy, clock, 0, ran_s=16.0), Restart)


def test_a_childs_own_error_stops_the_group_at_once() -> None:
    policy = RestartPolicy()
    policy.started(1, 0.0)
    decision = policy.exited(1, 1, 0.2)
    assert isinstance(decision, StopGroup)
    assert decision.reason.startswith("worker process 1 status 1 (its error is above)")


@pytest.mark.parametrize("status", [0, 2, 120, -signal.SIGSEGV, -signal.SIGTERM])
def test_any_other_unasked_exit_is_restarted(status: int) -> None:
    policy = RestartPolicy()
    policy.started(0, 0.0)
    assert isinstance(policy.exited(0, status, 40.0), Restart)


def test_statuses_read_as_people_say_them() -> None:
    assert describe_status(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_status(3) == "status 3"
    assert describe_status(-200) == "killed by signal 200"


def test_limits_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="max_crashes"):
        RestartLimits(max_crashes=0)
    with pytest.raises(ValueError, match="first_backoff_s"):
        RestartLimits(first_backoff_s=5.0, max_backoff_s=1.0)


@given(st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=40))
def test_waits_stay_within_first_and_cap(gaps: list[float]) -> None:
    limits = RestartLimits(max_crashes=1000)
    policy, clock = RestartPolicy(limits), FakeClock()
    for gap in gaps:
        decision = _die(policy, clock, 0, ran_s=gap)
        assert isinstance(decision, Restart)
        assert limits.first_backoff_s <= decision.after_s <= limits.max_backoff_s
