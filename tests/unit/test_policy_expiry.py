"""expiry_reason / queue_age_s: deadline and queue-age expiry, clock skew clamped."""

from __future__ import annotations

import math

import pytest

from streams.clock import FakeClock
from streams.policy.expiry import expiry_reason, queue_age_s


def test_fresh_record_is_not_expired() -> None:
    clock = FakeClock()
    enqueued_ms = int(clock.now() * 1000)
    clock.advance(5.0)
    assert (
        expiry_reason(
            enqueued_ms=enqueued_ms, deadline_ms=None, max_queue_age_s=30.0, now=clock.now()
        )
        is None
    )


def test_queue_age_expiry_is_strictly_greater() -> None:
    clock = FakeClock()
    enqueued_ms = int(clock.now() * 1000)
    clock.advance(30.0)

    def reason() -> str | None:
        return expiry_reason(
            enqueued_ms=enqueued_ms, deadline_ms=None, max_queue_age_s=30.0, now=clock.now()
        )

    assert reason() is None
    clock.advance(0.01)
    assert reason() == "queue_age"


def test_deadline_reached_expires_even_when_young() -> None:
    clock = FakeClock()
    now_ms = int(clock.now() * 1000)
    assert (
        expiry_reason(enqueued_ms=now_ms, deadline_ms=now_ms, max_queue_age_s=30.0, now=clock.now())
        == "deadline"
    )
    assert (
        expiry_reason(
            enqueued_ms=now_ms, deadline_ms=now_ms + 1, max_queue_age_s=30.0, now=clock.now()
        )
        is None
    )


def test_deadline_wins_when_both_apply() -> None:
    clock = FakeClock()
    enqueued_ms = int(clock.now() * 1000)
    clock.advance(100.0)
    assert (
        expiry_reason(
            enqueued_ms=enqueued_ms,
            deadline_ms=enqueued_ms + 1000,
            max_queue_age_s=30.0,
            now=clock.now(),
        )
        == "deadline"
    )


def test_infinite_max_age_disables_age_check() -> None:
    assert expiry_reason(enqueued_ms=0, deadline_ms=None, max_queue_age_s=math.inf, now=1e9) is None


def test_queue_age_is_clamped_for_producer_clock_ahead() -> None:
    clock = FakeClock()
    future_ms = int(clock.now() * 1000) + 60_000
    assert queue_age_s(future_ms, clock.now()) == 0.0
    assert queue_age_s(int(clock.now() * 1000) - 2_500, clock.now()) == pytest.approx(2.5)


def test_negative_max_age_rejected() -> None:
    with pytest.raises(ValueError):
        expiry_reason(enqueued_ms=0, deadline_ms=None, max_queue_age_s=-1.0, now=0.0)
