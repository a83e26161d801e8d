"""AdaptiveLimit (AIMD on latency and errors): converges under a latency step, backs off on
errors, always within its bounds."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.policy.adaptive_limit import AdaptiveConfig, AdaptiveLimit

CONFIG = AdaptiveConfig(min_limit=1, max_limit=200, initial_limit=20)


def simulate(limit: AdaptiveLimit, capacity: int, base_s: float, samples: int) -> list[int]:
    """A tool that serves `capacity` calls at once in base_s; more queue, and wait longer."""
    seen = []
    for _ in range(samples):
        in_flight = limit.limit
        latency = base_s * max(1.0, in_flight / capacity)
        limit.record(latency, failed=False, in_flight=in_flight)
        if not limit.measuring:  # the short re-measuring drops are not the operating point
            seen.append(limit.limit)
    return seen


def test_converges_near_the_tools_capacity_and_follows_a_step_down() -> None:
    limit = AdaptiveLimit(CONFIG)
    seen = simulate(limit, capacity=40, base_s=0.05, samples=2000)
    tail = seen[-300:]
    assert min(tail) >= 40 and max(tail) <= 40 * CONFIG.latency_tolerance + 1
    seen = simulate(limit, capacity=10, base_s=0.05, samples=2000)
    tail = seen[-300:]
    assert min(tail) >= 10 and max(tail) <= 10 * CONFIG.latency_tolerance + 1


def test_a_slower_tool_without_queueing_does_not_pin_it_at_the_minimum() -> None:
    limit = AdaptiveLimit(CONFIG)
    simulate(limit, capacity=40, base_s=0.05, samples=1000)
    # Every call is now four times slower, whatever the concurrency: the baseline must
    # be re-measured, or the limit would sink to min_limit and stay there.
    seen = simulate(limit, capacity=40, base_s=0.2, samples=3000)
    assert min(seen[-300:]) >= 40


def test_backs_off_on_errors() -> None:
    limit = AdaptiveLimit(CONFIG)
    start = limit.limit
    for _ in range(5):
        limit.record(0.01, failed=True, in_flight=limit.limit)
    assert limit.limit <= math.floor(start * CONFIG.backoff_ratio**5) + 1
    for _ in range(100):
        limit.record(0.01, failed=True, in_flight=limit.limit)
    assert limit.limit == CONFIG.min_limit


def test_does_not_grow_while_underused() -> None:
    limit = AdaptiveLimit(CONFIG)
    for _ in range(100):
        limit.record(0.01, failed=False, in_flight=2)
    assert limit.limit == CONFIG.initial_limit


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=10.0),
            st.booleans(),
            st.integers(min_value=0, max_value=400),
        ),
        max_size=400,
    )
)
def test_stays_within_min_and_max(samples: list[tuple[float, bool, int]]) -> None:
    config = AdaptiveConfig(min_limit=3, max_limit=30, initial_limit=10)
    limit = AdaptiveLimit(config)
    for latency, failed, in_flight in samples:
        limit.record(latency, failed=failed, in_flight=in_flight)
        assert 3 <= limit.limit <= 30


def test_remeasures_the_baseline_at_min_limit_and_then_goes_back() -> None:
    config = AdaptiveConfig(
        min_limit=2, max_limit=100, initial_limit=10, remeasure_every=50, baseline_samples=5
    )
    limit = AdaptiveLimit(config)
    for _ in range(49):
        limit.record(0.1, failed=False, in_flight=limit.limit)
    before = limit.limit
    limit.record(0.1, failed=False, in_flight=limit.limit)
    assert limit.measuring and limit.limit == 2
    for _ in range(3):
        limit.record(0.5, failed=False, in_flight=20)  # started before the drop: not counted
    assert limit.measuring
    for _ in range(5):
        limit.record(0.3, failed=False, in_flight=2)
    assert not limit.measuring
    assert limit.baseline_s() == 0.3
    assert limit.limit == before + 1
