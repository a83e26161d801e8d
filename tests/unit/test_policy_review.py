"""Human review as a bounded resource (pure, fake clock): at most max_pending runs wait,
the oldest pending age and the measured clear rate are known, runs not decided within
max_wait_s get the stated outcome, and a full queue is pressure."""

from __future__ import annotations

import pytest

from streams.policy.review import ReviewConfig, ReviewQueue


def _queue(**kw: object) -> ReviewQueue:
    return ReviewQueue(ReviewConfig(**kw))  # type: ignore[arg-type]


def test_at_most_max_pending_runs_wait_and_a_full_queue_is_pressure() -> None:
    queue = _queue(max_pending=2, max_wait_s=60, on_timeout="decline")
    assert queue.admit("a", now=0) and queue.admit("b", now=1)
    assert queue.full
    assert not queue.admit("c", now=2)  # refused: the stage before must hold it
    assert queue.pending == 2
    assert queue.decide("a", "approve", now=3) == "approve"
    assert not queue.full and queue.admit("c", now=4)


def test_a_run_admitted_twice_is_one_pending_review() -> None:
    queue = _queue(max_pending=1)
    assert queue.admit("a", now=0)
    assert queue.admit("a", now=5)  # a redelivered record: already pending, not refused
    assert queue.pending == 1
    assert queue.oldest_age_s(now=10) == 10


def test_oldest_pending_age_on_a_fake_clock() -> None:
    queue = _queue(max_pending=5)
    assert queue.oldest_age_s(now=100) == 0.0
    queue.admit("a", now=10)
    queue.admit("b", now=20)
    assert queue.oldest_age_s(now=25) == 15
    queue.decide("a", "decline", now=26)
    assert queue.oldest_age_s(now=30) == 10


@pytest.mark.parametrize("outcome", ["decline", "escalate", "approve"])
def test_runs_past_max_wait_get_the_stated_outcome(outcome: str) -> None:
    queue = _queue(max_pending=5, max_wait_s=30, on_timeout=outcome)
    queue.admit("a", now=0)
    queue.admit("b", now=10)
    assert queue.expire(now=29.9) == []
    assert queue.expire(now=30) == [("a", outcome)]
    assert queue.expire(now=45) == [("b", outcome)]
    assert queue.pending == 0


def test_deciding_an_unknown_or_decided_run_is_refused() -> None:
    queue = _queue()
    queue.admit("a", now=0)
    assert queue.decide("a", "approve", now=1) == "approve"
    assert queue.decide("a", "decline", now=2) is None  # decided already: first one wins
    assert queue.decide("zzz", "approve", now=2) is None


def test_clear_rate_counts_decisions_over_the_window() -> None:
    queue = _queue(max_pending=100, rate_window_s=60)
    for i in range(30):
        queue.admit(f"r{i}", now=0)
    for i in range(30):
        queue.decide(f"r{i}", "approve", now=i)  # one a second
    assert queue.clear_rate_per_s(now=30) == pytest.approx(30 / 60)
    assert queue.clear_rate_per_s(now=200) == 0.0  # nobody decided lately
    # Timeouts are not people clearing the queue.
    queue.admit("late", now=200)
    queue.expire(now=10_000)
    assert queue.clear_rate_per_s(now=10_000) == 0.0


# The expected wait and its forecast use: tests/unit/test_review_forecast.py.


def test_config_checks_its_values() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        ReviewConfig(max_pending=0)
    with pytest.raises(ValueError, match="on_timeout"):
        ReviewConfig(on_timeout="maybe")  # type: ignore[arg-type]
