"""The intake's deadline forecast includes the review queues on a run's path (pure, fake
clock): a review stage's expected wait is (pending + 1) ÷ the clear rate people achieved,
at most max_wait_s; with no measured rate it is unknown, and an unknown part never
refuses a run (no false refusal)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.policy.admission import (
    AdmissionDecision,
    AdmissionLimits,
    AdmissionRequest,
    CapacitySnapshot,
    decide,
    forecast_wait_s,
)
from streams.policy.review import ReviewConfig, ReviewQueue, path_review_wait

NOW_MS = 1_700_000_000_000
LIMITS = AdmissionLimits(max_queued=100, max_queued_per_tenant=100)


def _snap(review_wait_s: float = 0.0, *, unknown: bool = False) -> CapacitySnapshot:
    return CapacitySnapshot(
        queued_total=10,
        queued_by_tenant={"a": 10},
        queued_by_lane={"standard": 10},
        first_stage_lag=10,
        drain_rate_per_s=10.0,
        p95_handler_s=1.0,
        downstream_paused=False,
        review_wait_s=review_wait_s,
        review_wait_unknown=unknown,
    )


def _decide(snapshot: CapacitySnapshot, deadline_in_s: float) -> AdmissionDecision:
    request = AdmissionRequest("a", "standard", NOW_MS + int(deadline_in_s * 1000))
    return decide(request, snapshot, LIMITS, NOW_MS)


def test_the_measured_clear_rate_is_over_the_time_people_have_had_work() -> None:
    queue = ReviewQueue(ReviewConfig(max_pending=100, rate_window_s=600))
    assert queue.measured_clear_rate_per_s(now=0) is None  # nothing decided: no rate yet
    for i in range(10):
        queue.admit(f"r{i}", now=0)
    assert queue.measured_clear_rate_per_s(now=5) is None
    for i in range(4):
        queue.decide(f"r{i}", "approve", now=5 * (i + 1))  # one per 5 s: 0.2/s
    # 4 decisions in the 20 s since the queue had work (not 4 / 600: the window is not
    # full yet, and an underestimate refuses runs that would make their deadline).
    assert queue.measured_clear_rate_per_s(now=20) == pytest.approx(0.2)
    assert queue.measured_clear_rate_per_s(now=2000) is None  # nobody decided lately


def test_expected_wait_is_pending_ahead_at_the_clear_rate_at_most_max_wait() -> None:
    queue = ReviewQueue(ReviewConfig(max_pending=100, max_wait_s=120, rate_window_s=600))
    for i in range(10):
        queue.admit(f"r{i}", now=0)
    assert queue.expected_wait_s(now=1) is None  # no rate measured: unknown, not max_wait_s
    for i in range(4):
        queue.decide(f"r{i}", "approve", now=5 * (i + 1))
    # 6 pending + this run at 0.2/s.
    assert queue.expected_wait_s(now=20) == pytest.approx(7 / 0.2)
    for i in range(10, 40):
        queue.admit(f"r{i}", now=20)
    assert queue.expected_wait_s(now=20) == 120  # then it times out: never longer


def test_the_path_wait_sums_a_chain_and_takes_the_fastest_branch() -> None:
    # a emits to rev1 or to b -> rev2: a run may take either, so it is sure of 30 s only.
    downstream = {"intake": ("a",), "a": ("rev1", "b"), "b": ("rev2",), "rev1": (), "rev2": ()}
    waits = {"rev1": 30.0, "rev2": 50.0}
    assert path_review_wait("intake", downstream, waits) == (30.0, False)
    chain = {"a": ("rev1",), "rev1": ("rev2",), "rev2": ()}
    assert path_review_wait("a", chain, waits) == (80.0, False)
    assert path_review_wait("a", chain, {"rev1": 30.0, "rev2": None}) == (30.0, True)
    assert path_review_wait("a", {"a": ()}, {}) == (0.0, False)  # no review stage


def test_a_slow_review_queue_refuses_a_short_deadline_at_the_door() -> None:
    slow = _snap(review_wait_s=35.0)  # 6 pending + 1 at 0.2 reviews/s
    assert forecast_wait_s(slow) == pytest.approx(10 / 10 + 1.0 + 35.0)
    short = _decide(slow, deadline_in_s=10)
    assert (short.outcome, short.reason) == ("rejected", "deadline_unmeetable")
    assert short.forecast_wait_s == pytest.approx(37.0)
    long = _decide(slow, deadline_in_s=120)
    assert (long.outcome, long.reason) == ("accepted", "admitted")
    # Without the review queue the same short deadline was met: the first stage is fast.
    assert _decide(_snap(), deadline_in_s=10).outcome == "accepted"


def test_an_unknown_review_wait_never_refuses_but_known_parts_still_do() -> None:
    unknown = _snap(review_wait_s=0.0, unknown=True)
    assert forecast_wait_s(unknown) is None
    decision = _decide(unknown, deadline_in_s=5)
    assert (decision.outcome, decision.reason) == ("accepted", "admitted")
    # A known part of the path alone misses the deadline: that refusal is true.
    known_part = _snap(review_wait_s=40.0, unknown=True)
    refused = _decide(known_part, deadline_in_s=10)
    assert (refused.outcome, refused.reason) == ("rejected", "deadline_unmeetable")


@given(
    pending=st.integers(0, 200),
    decisions=st.integers(1, 50),
    spacing=st.floats(0.1, 30.0),
)
def test_expected_wait_is_bounded_by_max_wait(pending: int, decisions: int, spacing: float) -> None:
    queue = ReviewQueue(ReviewConfig(max_pending=1000, max_wait_s=300, rate_window_s=600))
    for i in range(decisions + pending):
        queue.admit(f"r{i}", now=0)
    for i in range(decisions):
        queue.decide(f"r{i}", "approve", now=spacing * (i + 1))
    wait = queue.expected_wait_s(now=spacing * decisions)
    assert wait is not None and 0 < wait <= 300
