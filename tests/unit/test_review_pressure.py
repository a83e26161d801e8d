"""A full review queue is pressure: a saturated review stage pauses the stage before it
(whatever its lag and age), with hysteresis: the stage before resumes only once the queue
has fallen below RESUME_BELOW_FILL of max_pending and stayed paused min_dwell_s, so it
does not pause and resume at every decision. The report board says how full a stage is."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.policy.downstream import DownstreamLimits, DownstreamPressure, PressureSignal
from streams.policy.review import RESUME_BELOW_FILL
from streams.runtime.pressure_reports import PressureReport, ReportBoard

DWELL_S = 1.0


def _limits() -> DownstreamLimits:
    return DownstreamLimits(
        pause_lag=500, resume_lag=250, pause_age_s=30, resume_age_s=10, min_dwell_s=DWELL_S
    )


def _signal(fill: float | None, at: float = 100.0) -> PressureSignal:
    return PressureSignal("approve", 3, 0.0, None, measured_at=at, review_fill=fill)


def _paused(pressure: DownstreamPressure, fill: float | None, t: float) -> bool:
    verdict = pressure.evaluate({"approve": _signal(fill, 100 + t)}, now=100 + t, now_mono=t)
    return verdict.paused


def test_a_saturated_review_stage_pauses_the_stage_before_it() -> None:
    pressure = DownstreamPressure(_limits())
    verdict = pressure.evaluate({"approve": _signal(1.0)}, now=100.0, now_mono=0.0)
    assert verdict.paused and verdict.reasons == ("approve.saturated",)
    assert not _paused(DownstreamPressure(_limits()), 0.9, 0.0)  # room left: no pressure


def test_it_resumes_below_the_resume_fill_once_the_dwell_passed() -> None:
    pressure = DownstreamPressure(_limits())
    assert _paused(pressure, 1.0, 0.0)
    assert _paused(pressure, 0.95, 5.0)  # one place free of 20: not yet
    assert _paused(pressure, RESUME_BELOW_FILL - 0.01, 0.5)  # below, within the dwell
    assert not _paused(pressure, RESUME_BELOW_FILL - 0.01, 5.5)
    assert not _paused(pressure, None, 6.0)  # no fresh report of a review worker: no pressure


def _changes(states: list[bool]) -> int:
    return sum(a != b for a, b in zip([False, *states], states, strict=False))


def test_a_decision_at_a_time_does_not_flap_the_stage_before() -> None:
    # max_pending 20, a decision every 0.3 s, the stage before refilling the freed place:
    # the queue swings between 20/20 and 19/20. Before, every reading changed the verdict
    # (20 changes in 6 s); now the stage before stays paused.
    pressure = DownstreamPressure(_limits())
    states = [_paused(pressure, 1.0 if i % 2 == 0 else 19 / 20, i * 0.3) for i in range(20)]
    assert _changes(states) == 1 and states[-1]
    # max_pending 3: a freed place is 2/3, below the resume fill; the dwell bounds it to
    # one pause/resume per DWELL_S (here 6 s: at most 6 cycles, not 10).
    pressure = DownstreamPressure(_limits())
    states = [_paused(pressure, 1.0 if i % 2 == 0 else 2 / 3, i * 0.3) for i in range(20)]
    assert _changes(states) <= 2 * 6 / DWELL_S


@given(
    st.lists(
        st.tuples(st.floats(0.0, 1.0), st.floats(0.01, 2.0)),  # (fill, time step)
        min_size=1,
        max_size=60,
    )
)
def test_review_saturation_never_flaps(readings: list[tuple[float, float]]) -> None:
    pressure = DownstreamPressure(_limits())
    t, paused, paused_at = 0.0, False, 0.0
    for fill, step in readings:
        t += step
        now = _paused(pressure, fill, t)
        if now and not paused:
            assert fill >= 1.0  # pauses only when full
            paused_at = t
        if paused and not now:
            assert fill < RESUME_BELOW_FILL  # resumes only well below full ...
            assert t - paused_at >= DWELL_S  # ... and after the dwell
        paused = now


class _NoTail:
    def poll(self, *_: Any) -> list[Any]:
        return []

    def close(self) -> None:
        pass


def test_the_board_says_how_full_a_stage_is_from_fresh_reports() -> None:
    board = ReportBoard(_NoTail())  # type: ignore[arg-type]
    full = PressureReport("approve", "w1", None, in_flight=3, reported_at=10.0, concurrency=3)
    board._latest[("approve", "w1")] = full
    board._latest[("approve", "w2")] = PressureReport(
        "approve", "w2", None, in_flight=1, reported_at=10.0, concurrency=4
    )
    assert board.fill("approve", now=11.0, fresh_within_s=5.0) == 1.0  # the fullest worker
    assert board.fill("approve", now=20.0, fresh_within_s=5.0) is None  # stale
    board._latest[("approve", "w1")] = PressureReport(
        "approve", "w1", None, in_flight=2, reported_at=10.0, concurrency=3
    )
    assert board.fill("approve", now=11.0, fresh_within_s=5.0) == 2 / 3
