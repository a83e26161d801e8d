"""The fleet-wide share rule: a worker's share of a tool is its share of the stage's
partitions; the shares of a fleet never add up to more than the tool's ceilings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.policy.tool_share import ToolCeilings, process_limits, stage_share


def test_share_is_assigned_over_total_partitions() -> None:
    assert stage_share(assigned=3, total=6) == 0.5
    assert stage_share(assigned=0, total=6) == 0.0
    assert stage_share(assigned=9, total=6) == 1.0  # a stale total never lifts it above all


def test_limits_follow_the_share_and_a_tool_used_by_two_stages_splits_between_them() -> None:
    ceilings = ToolCeilings(rate_per_s=20.0, burst=10.0, concurrency=8, stages_using=2)
    limits = process_limits(ceilings, {"plan": 0.5})
    assert limits.rate_per_s == pytest.approx(5.0)
    assert limits.burst == pytest.approx(2.5)
    assert limits.concurrency == 2
    both = process_limits(ceilings, {"plan": 1.0, "act": 1.0})
    assert both.rate_per_s == pytest.approx(20.0)
    assert both.concurrency == 8


def test_no_partitions_no_calls_but_a_small_share_still_gets_one_slot() -> None:
    ceilings = ToolCeilings(rate_per_s=20.0, burst=2.0, concurrency=4, stages_using=1)
    idle = process_limits(ceilings, {"plan": 0.0})
    assert idle.rate_per_s == 0.0 and idle.concurrency == 0
    small = process_limits(ceilings, {"plan": 1 / 12})
    assert small.concurrency == 1  # floor would be 0: the worker could never call
    assert small.burst == 1.0  # a bucket below one token could never grant one


def test_unlimited_stays_unlimited() -> None:
    ceilings = ToolCeilings(rate_per_s=None, burst=None, concurrency=None, stages_using=1)
    limits = process_limits(ceilings, {"plan": 0.25})
    assert limits.rate_per_s is None and limits.concurrency is None


@given(st.integers(min_value=1, max_value=64), st.integers(min_value=1, max_value=16), st.data())
def test_a_fleets_shares_never_exceed_the_ceiling(
    partitions: int, workers: int, data: st.DataObject
) -> None:
    # Any split of the partitions among the workers (some may hold none).
    owner = [data.draw(st.integers(0, workers - 1)) for _ in range(partitions)]
    ceilings = ToolCeilings(rate_per_s=20.0, burst=5.0, concurrency=16, stages_using=1)
    rates = 0.0
    slots = 0
    holding = 0
    for w in range(workers):
        share = stage_share(owner.count(w), partitions)
        limits = process_limits(ceilings, {"s": share})
        assert limits.rate_per_s is not None and limits.concurrency is not None
        rates += limits.rate_per_s
        slots += limits.concurrency
        holding += share > 0
    assert rates <= 20.0 + 1e-9
    # Each worker holding partitions gets at least one slot: the documented worst case.
    assert slots <= 16 + holding
    if all(owner.count(w) * 16 >= partitions for w in range(workers) if w in owner):
        assert slots <= 16  # no share below one slot: the ceiling holds exactly
