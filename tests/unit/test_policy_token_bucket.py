"""TokenBucket: never more than rate * t + burst granted in any window of t seconds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.policy.token_bucket import TokenBucket


def test_starts_full_and_refills_at_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=10.0, burst=5.0, now=0.0)
    assert [bucket.try_take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.wait_s(0.0) == pytest.approx(0.1)
    assert not bucket.try_take(0.09)
    assert bucket.try_take(0.1)
    assert bucket.tokens(10.0) == 5.0  # never above the burst


def test_a_lower_rate_applies_from_now_and_caps_the_tokens() -> None:
    bucket = TokenBucket(rate_per_s=10.0, burst=10.0, now=0.0)
    bucket.set_rate(2.0, burst=1.0, now=0.0)
    assert bucket.tokens(0.0) == 1.0
    assert bucket.try_take(0.0)
    assert not bucket.try_take(0.4)
    assert bucket.try_take(0.5)


def test_rate_zero_grants_nothing_and_says_so() -> None:
    bucket = TokenBucket(rate_per_s=0.0, burst=1.0, now=0.0)
    assert bucket.try_take(0.0)
    assert not bucket.try_take(1000.0)
    assert bucket.wait_s(1000.0) == float("inf")


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(rate_per_s=-1.0, burst=1.0, now=0.0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(rate_per_s=1.0, burst=0.5, now=0.0)


@settings(max_examples=200)
@given(
    st.floats(min_value=0.5, max_value=100),
    st.floats(min_value=1, max_value=20),
    st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=300),
)
def test_never_more_than_rate_times_t_plus_burst_in_any_window(
    rate: float, burst: float, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate_per_s=rate, burst=burst, now=0.0)
    now = 0.0
    granted: list[float] = []
    for gap in gaps:
        now += gap
        while bucket.try_take(now):
            granted.append(now)
    for i, start in enumerate(granted):
        for j in range(i, len(granted)):
            window = granted[j] - start
            assert j - i + 1 <= rate * window + burst + 1e-9
