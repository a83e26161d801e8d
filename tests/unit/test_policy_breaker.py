"""CircuitBreaker: resilience4j's state machine over a sliding count window, fake clock."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.policy.breaker import BreakerConfig, CircuitBreaker, Permit, Verdict

CONFIG = BreakerConfig(
    failure_ratio=0.5,
    slow_call_ratio=0.8,
    slow_call_s=1.0,
    window=10,
    minimum_calls=4,
    open_s=5.0,
    half_open_probes=3,
)


def feed(
    breaker: CircuitBreaker, verdicts: list[Verdict], now: float, duration_s: float = 0.1
) -> None:
    for verdict in verdicts:
        permit = breaker.try_acquire(now)
        assert permit is not None
        breaker.record(permit, verdict, duration_s, now)


def test_opens_once_the_failure_ratio_reaches_the_threshold_with_enough_calls() -> None:
    breaker = CircuitBreaker(CONFIG)
    feed(breaker, ["failure", "failure", "failure"], 0.0)
    assert breaker.state(0.0) == "closed"  # 3 calls: under minimum_calls
    feed(breaker, ["success"], 0.0)
    assert breaker.state(0.0) == "open"  # 3 failures of 4 calls >= 0.5


def test_stays_closed_under_the_threshold() -> None:
    breaker = CircuitBreaker(CONFIG)
    feed(breaker, ["failure", "success", "success", "success"] * 5, 0.0)
    assert breaker.state(0.0) == "closed"
    assert breaker.window_failure_ratio() == 0.2  # the last 10 calls hold 2 failures


def test_fourth_call_opens() -> None:
    breaker = CircuitBreaker(CONFIG)
    feed(breaker, ["failure", "failure", "success", "failure"], 0.0)
    assert breaker.state(0.0) == "open"
    assert breaker.try_acquire(0.0) is None


def test_ignored_outcomes_count_neither_way() -> None:
    breaker = CircuitBreaker(CONFIG)
    ignored: list[Verdict] = ["ignored"] * 20
    feed(breaker, [*ignored, "failure", "success", "success", "success"], 0.0)
    assert breaker.state(0.0) == "closed"
    assert breaker.window_calls() == 4
    feed(breaker, ["ignored"] * 5, 0.0)
    assert breaker.window_calls() == 4


def test_slow_calls_open_it_too() -> None:
    breaker = CircuitBreaker(CONFIG)
    feed(breaker, ["success"] * 4, 0.0, duration_s=2.0)
    assert breaker.state(0.0) == "open"


def test_open_turns_half_open_after_open_s_and_admits_n_probes() -> None:
    breaker = CircuitBreaker(CONFIG)
    feed(breaker, ["failure"] * 4, 0.0)
    assert breaker.state(4.9) == "open"
    assert breaker.state(5.0) == "half_open"
    assert [breaker.try_acquire(5.0) is not None for _ in range(5)] == [True] * 3 + [False] * 2


def test_half_open_closes_after_good_probes_and_reopens_after_bad_ones() -> None:
    breaker = CircuitBreaker(CONFIG)
    feed(breaker, ["failure"] * 4, 0.0)
    feed(breaker, ["success", "success", "failure"], 5.0)
    assert breaker.state(5.0) == "closed"
    assert breaker.window_calls() == 0  # a fresh window after closing
    feed(breaker, ["failure"] * 4, 6.0)
    feed(breaker, ["failure", "success", "failure"], 11.0)
    assert breaker.state(11.0) == "open"
    assert breaker.state(15.9) == "open"  # open_s counts from the re-opening
    assert breaker.state(16.0) == "half_open"


def test_an_unused_probe_permit_goes_back() -> None:
    breaker = CircuitBreaker(CONFIG)
    feed(breaker, ["failure"] * 4, 0.0)
    permits = [breaker.try_acquire(5.0) for _ in range(3)]
    assert None not in permits and breaker.try_acquire(5.0) is None
    first = permits[0]
    assert first is not None
    breaker.release(first)  # that call was never made (no slot in time)
    again = breaker.try_acquire(5.0)
    assert again is not None
    breaker.record(again, "ignored", 0.1, 5.0)  # a 404: says nothing of the tool's health
    assert breaker.try_acquire(5.0) is not None


def test_a_call_from_before_the_opening_neither_takes_nor_frees_a_probe() -> None:
    breaker = CircuitBreaker(CONFIG)
    early = breaker.try_acquire(0.0)  # admitted while closed, still running
    assert early is not None
    feed(breaker, ["failure"] * 4, 0.0)
    probes = [breaker.try_acquire(5.0) for _ in range(3)]
    assert None not in probes
    breaker.release(early)  # not a probe: must not hand out a fourth
    breaker.record(early, "success", 0.1, 5.0)  # describes the past: no probe verdict
    assert breaker.try_acquire(5.0) is None
    for permit in probes:
        assert permit is not None
        breaker.record(permit, "success", 0.1, 5.0)
    assert breaker.state(5.0) == "closed"


def test_transitions_are_reported() -> None:
    seen: list[tuple[str, str]] = []
    breaker = CircuitBreaker(CONFIG, on_transition=lambda old, new: seen.append((old, new)))
    feed(breaker, ["failure"] * 4, 0.0)
    breaker.state(5.0)
    feed(breaker, ["success"] * 3, 5.0)
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="minimum_calls"):
        BreakerConfig(window=5, minimum_calls=6)
    with pytest.raises(ValueError, match="failure_ratio"):
        BreakerConfig(failure_ratio=0.0)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(min_value=0, max_value=3)),
        st.tuples(st.sampled_from(["failure", "success", "ignored", "slow"]), st.just(0.0)),
        st.tuples(st.just("acquire_only"), st.just(0.0)),
        st.tuples(st.just("release"), st.just(0.0)),
    ),
    max_size=300,
)


@settings(max_examples=300)
@given(ops)
def test_never_closed_over_threshold_and_half_open_admits_at_most_n(
    steps: list[tuple[str, float]],
) -> None:
    breaker = CircuitBreaker(CONFIG)
    now = 0.0
    # The test's own model of the window: outcomes recorded since the breaker last closed.
    shadow: deque[tuple[bool, bool]] = deque(maxlen=CONFIG.window)
    # Permits held (not yet recorded or released), each with the half-open period (the
    # test's own count) it was granted in, 0 if granted while closed.
    held: list[tuple[Permit, int]] = []
    period = 0
    probes_out = 0  # probes of this period granted and not handed back
    state = breaker.state(now)

    def granted_in() -> int:
        return period if breaker.state(now) == "half_open" else 0

    def hand_back(granted: int) -> None:
        nonlocal probes_out
        if granted and granted == period and state == "half_open":
            probes_out -= 1

    for op, arg in steps:
        if op == "advance":
            now += arg
        elif op == "acquire_only":
            when = granted_in()
            permit = breaker.try_acquire(now)
            if permit is not None:
                held.append((permit, when))
                probes_out += when > 0
        elif op == "release":
            if held:
                permit, when = held.pop(0)
                breaker.release(permit)
                hand_back(when)
        else:
            was = breaker.state(now)
            when = granted_in()
            permit = breaker.try_acquire(now)
            if permit is not None:
                probes_out += when > 0
                verdict: Verdict = "success" if op == "slow" else op  # type: ignore[assignment]
                duration = 2.0 if op == "slow" else 0.1
                breaker.record(permit, verdict, duration, now)
                if verdict == "ignored":
                    hand_back(when)
                if was == "closed" and verdict != "ignored":
                    shadow.append((verdict == "failure", duration >= CONFIG.slow_call_s))
        new_state = breaker.state(now)
        if new_state != state:
            if new_state == "closed":
                shadow.clear()
            if new_state == "half_open":
                period += 1
                probes_out = 0
            state = new_state
        if state == "closed" and len(shadow) >= CONFIG.minimum_calls:
            failures = sum(f for f, _ in shadow) / len(shadow)
            slow = sum(s for _, s in shadow) / len(shadow)
            assert failures < CONFIG.failure_ratio
            assert slow < CONFIG.slow_call_ratio
        if state == "half_open":
            assert probes_out <= CONFIG.half_open_probes
