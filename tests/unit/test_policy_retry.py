"""Retry policy (pure, fake clock): full-jitter backoff bounds, tier selection, the
deadline cut-off, what retries and what never does, and budgets over a sliding window."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.errors import ToolSaturated, ToolTimeout, ToolUnavailable
from streams.policy.retry import (
    RetryBudget,
    RetryBudgetConfig,
    RetryPolicy,
    full_jitter_s,
    plan_retry,
    tier_for,
)
from streams.runtime.handler_runner import HandlerTimeout
from streams.signals import DeadLetter, Escalate, Retry

POLICY = RetryPolicy(
    max_attempts=4, base_s=1.0, cap_s=60.0, tiers_s=(5, 30, 300), on_exhausted="escalate"
)


@given(
    attempt=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.001, max_value=100),
    cap=st.floats(min_value=0.001, max_value=10_000),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_full_jitter_stays_within_zero_and_capped_exponential(
    attempt: int, base: float, cap: float, draw: float
) -> None:
    delay = full_jitter_s(attempt, base, cap, lambda: draw)
    assert 0 <= delay <= min(cap, base * 2.0 ** min(attempt, 1000))


def test_full_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(7)
    delays = [full_jitter_s(3, 1.0, 60.0, rng.random) for _ in range(2000)]
    assert min(delays) < 0.5 and max(delays) > 7.5  # uniform over [0, 8), not clustered


@pytest.mark.parametrize(
    ("delay", "tier"), [(0.0, 5), (0.2, 5), (5.0, 5), (5.01, 30), (30, 30), (31, 300), (999, 300)]
)
def test_a_delay_rounds_up_to_a_tier(delay: float, tier: int) -> None:
    assert tier_for(delay, (5, 30, 300)) == tier


def test_a_retryable_failure_gets_a_tier_and_a_due_time() -> None:
    plan = plan_retry(
        POLICY, ToolUnavailable("crm", None), "error", attempt=0, run_retries=0,
        now_ms=1_000, deadline_ms=None, draw=lambda: 0.5,
    )  # fmt: skip
    assert plan.action == "retry"
    assert plan.delay_s == pytest.approx(0.5)  # 0.5 * min(60, 1 * 2**0)
    assert plan.tier_s == 5
    assert plan.due_ms == 1_500


def test_retry_after_from_the_handler_overrides_the_computed_delay_within_the_cap() -> None:
    plan = plan_retry(
        POLICY, Retry(after_s=20), "error", attempt=0, run_retries=0,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert (plan.action, plan.delay_s, plan.tier_s) == ("retry", 20.0, 30)
    capped = plan_retry(
        POLICY, Retry(after_s=10_000), "error", attempt=0, run_retries=0,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert capped.delay_s == 60.0


def test_a_tools_retry_after_overrides_the_computed_delay() -> None:
    plan = plan_retry(
        POLICY, ToolUnavailable("crm", 12.0), "error", attempt=2, run_retries=0,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert (plan.delay_s, plan.tier_s) == (12.0, 30)


def test_a_retry_due_after_the_deadline_is_expired_at_once() -> None:
    plan = plan_retry(
        POLICY, Retry(after_s=10), "error", attempt=0, run_retries=0,
        now_ms=0, deadline_ms=9_999, draw=lambda: 0.0,
    )  # fmt: skip
    assert (plan.action, plan.reason) == ("dead_letter", "expired")
    inside = plan_retry(
        POLICY, Retry(after_s=10), "error", attempt=0, run_retries=0,
        now_ms=0, deadline_ms=10_000, draw=lambda: 0.0,
    )  # fmt: skip
    assert inside.action == "retry"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ToolUnavailable("crm", None), "error"),
        (ToolTimeout("crm", 1.0), "error"),
        (HandlerTimeout("slow"), "timeout"),
        (Retry(), "error"),
    ],
)
def test_tool_unavailable_timeouts_and_retry_signals_retry_by_default(
    error: BaseException, status: str
) -> None:
    plan = plan_retry(
        RetryPolicy(), error, status, attempt=0, run_retries=0,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert plan.action == "retry"


@pytest.mark.parametrize(
    "error", [ValueError("bad"), ToolSaturated("crm", 1.0, "slot"), DeadLetter("no")]
)
def test_other_errors_are_not_retried_by_default(error: BaseException) -> None:
    plan = plan_retry(
        RetryPolicy(), error, "error", attempt=0, run_retries=0,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert plan.action == "not_retried"


def test_retry_on_and_never_retry_match_any_class_name_in_the_errors_mro() -> None:
    policy = RetryPolicy(retry_on=("Exception",), never_retry=("DeadLetter", "KeyError"))
    retried = plan_retry(
        policy, ValueError("x"), "error", attempt=0, run_retries=0,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert retried.action == "retry"
    for never in (KeyError("k"), DeadLetter("d")):
        plan = plan_retry(
            policy, never, "error", attempt=0, run_retries=0,
            now_ms=0, deadline_ms=None, draw=lambda: 0.0,
        )  # fmt: skip
        assert plan.action == "not_retried"


def test_dead_letter_is_never_retried_even_if_listed() -> None:
    policy = RetryPolicy(retry_on=("DeadLetter",), never_retry=())
    plan = plan_retry(
        policy, DeadLetter("no"), "error", attempt=0, run_retries=0,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert plan.action == "not_retried"


def test_escalate_goes_to_people_at_once() -> None:
    plan = plan_retry(
        RetryPolicy(), Escalate("needs a human"), "error", attempt=0, run_retries=0,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert (plan.action, plan.reason) == ("escalate", "escalated")


def test_exhausted_attempts_follow_on_exhausted() -> None:
    # max_attempts 4: attempts 0..3 run; the failure of attempt 3 is the last.
    last = plan_retry(
        POLICY, ToolUnavailable("crm", None), "error", attempt=3, run_retries=3,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert (last.action, last.reason) == ("escalate", "retries_exhausted")
    to_dlq = RetryPolicy(max_attempts=2, on_exhausted="dead_letter")
    plan = plan_retry(
        to_dlq, ToolUnavailable("crm", None), "error", attempt=1, run_retries=1,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert (plan.action, plan.reason) == ("dead_letter", None)  # keeps the failure's reason


def test_the_run_budget_counts_retries_across_stages() -> None:
    policy = RetryPolicy(max_attempts=10, budget=RetryBudgetConfig(max_run_retries=2))
    plan = plan_retry(
        policy, Retry(), "error", attempt=0, run_retries=2,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert (plan.action, plan.reason) == ("dead_letter", "retry_budget_exhausted")


def test_budget_allows_the_floor_then_a_fraction_of_first_attempts() -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio=0.1, min_retries=3, window_s=60))
    now = 1000.0
    assert [budget.try_spend(now) for _ in range(4)] == [True, True, True, False]
    for _ in range(100):
        budget.first_attempt(now)
    # 100 first attempts allow 10 retries in the window; 3 are spent already.
    assert sum(budget.try_spend(now) for _ in range(20)) == 7
    assert budget.retries_in_window(now) == 10


def test_budget_window_slides_on_a_fake_clock() -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio=0.5, min_retries=0, window_s=10))
    for _ in range(10):
        budget.first_attempt(0.0)
    assert sum(budget.try_spend(1.0) for _ in range(10)) == 5
    # Old first attempts and retries leave the window: nothing is allowed without new work.
    assert not budget.try_spend(12.0)
    for _ in range(4):
        budget.first_attempt(12.0)
    assert sum(budget.try_spend(12.5) for _ in range(10)) == 2


@given(
    events=st.lists(
        st.tuples(st.booleans(), st.floats(min_value=0, max_value=3)), min_size=1, max_size=300
    )
)
def test_budget_never_exceeds_ratio_of_first_attempts_plus_floor(
    events: list[tuple[bool, float]],
) -> None:
    config = RetryBudgetConfig(ratio=0.2, min_retries=2, window_s=1000)
    budget = RetryBudget(config)
    now, firsts, retries = 0.0, 0, 0
    for is_first, step in events:
        now += step
        if is_first:
            budget.first_attempt(now)
            firsts += 1
        elif budget.try_spend(now):
            retries += 1
        # The whole run fits in one window, so the bound holds over all of it.
        assert retries <= max(config.min_retries, config.ratio * firsts)


def test_policy_checks_its_own_values() -> None:
    with pytest.raises(ValueError, match="tiers"):
        RetryPolicy(tiers_s=(30, 5))
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_a_retry_signal_retries_whatever_retry_on_lists_unless_never_retry_names_it() -> None:
    only_connection = RetryPolicy(retry_on=("ConnectionError",))
    plan = plan_retry(
        only_connection, Retry(after_s=1), "error", attempt=0, run_retries=0,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert plan.action == "retry"
    never = RetryPolicy(never_retry=("Retry",))
    plan = plan_retry(
        never, Retry(), "error", attempt=0, run_retries=0,
        now_ms=0, deadline_ms=None, draw=lambda: 0.0,
    )  # fmt: skip
    assert plan.action == "not_retried"
