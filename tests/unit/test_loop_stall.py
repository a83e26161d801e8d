"""LoopStallGate: one line when a loop stops turning, one when it turns again."""

from __future__ import annotations

import pytest

from streams.policy.loop_stall import LoopStallGate, LoopVerdict


def test_a_loop_that_keeps_turning_is_never_stalled() -> None:
    gate = LoopStallGate(after_s=2.0)
    assert all(gate.observe(last_turn=t - 0.1, now=t) is None for t in range(1, 50))


def test_a_stall_is_said_once_and_its_end_with_how_long_it_lasted() -> None:
    gate = LoopStallGate(after_s=2.0)
    assert gate.observe(last_turn=10.0, now=11.5) is None
    assert gate.observe(last_turn=10.0, now=12.0) == LoopVerdict("stalled", 2.0)
    assert gate.observe(last_turn=10.0, now=12.5) is None  # still stuck: said already
    assert gate.observe(last_turn=10.0, now=13.0) is None
    turned = gate.observe(last_turn=13.4, now=13.5)
    assert turned is not None and turned.what == "turned"
    assert turned.stuck_s == pytest.approx(3.4)
    assert gate.observe(last_turn=13.9, now=14.0) is None
    again = gate.observe(last_turn=13.9, now=16.0)
    assert again is not None and again.what == "stalled"
    assert again.stuck_s == pytest.approx(2.1)


def test_the_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError, match="after_s"):
        LoopStallGate(after_s=0)
