from __future__ import annotations

import pytest

from streams.policy.stall import StallDetector
from streams.types import TopicPartition

TP = TopicPartition("t", 0)


def test_lag_without_progress_becomes_a_stall_after_the_threshold() -> None:
    detector = StallDetector(stall_after_s=10)
    assert not detector.observe(TP, committed=5, lag=3, paused_on_purpose=False, now_mono=0)
    assert not detector.observe(TP, committed=5, lag=3, paused_on_purpose=False, now_mono=9.9)
    assert detector.observe(TP, committed=5, lag=3, paused_on_purpose=False, now_mono=10)


def test_progress_resets_the_clock() -> None:
    detector = StallDetector(stall_after_s=10)
    detector.observe(TP, committed=5, lag=3, paused_on_purpose=False, now_mono=0)
    assert not detector.observe(TP, committed=6, lag=3, paused_on_purpose=False, now_mono=9)
    assert not detector.observe(TP, committed=6, lag=3, paused_on_purpose=False, now_mono=18)
    assert detector.observe(TP, committed=6, lag=3, paused_on_purpose=False, now_mono=19)


@pytest.mark.parametrize(("lag", "paused"), [(0, False), (3, True)])
def test_no_lag_or_a_deliberate_pause_is_not_a_stall(lag: int, paused: bool) -> None:
    detector = StallDetector(stall_after_s=1)
    for t in range(10):
        assert not detector.observe(TP, committed=5, lag=lag, paused_on_purpose=paused, now_mono=t)
