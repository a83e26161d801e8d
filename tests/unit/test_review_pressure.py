"""A full review queue is pressure: a saturated review stage pauses the stage before it
(whatever its lag and age), and the report board says when a stage is saturated."""

from __future__ import annotations

from typing import Any

from streams.policy.downstream import DownstreamLimits, DownstreamPressure, PressureSignal
from streams.runtime.pressure_reports import PressureReport, ReportBoard


def _limits() -> DownstreamLimits:
    return DownstreamLimits(pause_lag=500, resume_lag=250, pause_age_s=30, resume_age_s=10)


def _signal(saturated: bool) -> PressureSignal:
    return PressureSignal("approve", 3, 0.0, None, measured_at=100.0, saturated=saturated)


def test_a_saturated_review_stage_pauses_the_stage_before_it() -> None:
    pressure = DownstreamPressure(_limits())
    verdict = pressure.evaluate({"approve": _signal(True)}, now=100.0, now_mono=0.0)
    assert verdict.paused and verdict.reasons == ("approve.saturated",)
    verdict = pressure.evaluate({"approve": _signal(False)}, now=100.5, now_mono=0.5)
    assert not verdict.paused  # a place freed: the stage before may send again


class _NoTail:
    def poll(self, *_: Any) -> list[Any]:
        return []

    def close(self) -> None:
        pass


def test_the_board_says_a_stage_is_saturated_from_fresh_reports() -> None:
    board = ReportBoard(_NoTail())  # type: ignore[arg-type]
    full = PressureReport("approve", "w1", None, in_flight=3, reported_at=10.0, concurrency=3)
    board._latest[("approve", "w1")] = full
    assert board.saturated("approve", now=11.0, fresh_within_s=5.0)
    assert not board.saturated("approve", now=20.0, fresh_within_s=5.0)  # stale
    board._latest[("approve", "w1")] = PressureReport(
        "approve", "w1", None, in_flight=2, reported_at=10.0, concurrency=3
    )
    assert not board.saturated("approve", now=11.0, fresh_within_s=5.0)
