"""DownstreamPressure: per-stage, per-metric hysteresis; stale/missing signals."""

from __future__ import annotations

import pytest

from streams.clock import FakeClock
from streams.policy.downstream import DownstreamLimits, DownstreamPressure, PressureSignal

LIMITS = DownstreamLimits(
    pause_lag=500,
    resume_lag=100,
    pause_age_s=30.0,
    resume_age_s=10.0,
    pause_p95_s=2.0,
    resume_p95_s=1.0,
    min_dwell_s=1.0,
    stale_after_s=5.0,
)


def signal(
    clock: FakeClock,
    *,
    lag: int = 0,
    age: float = 0.0,
    p95: float | None = 0.1,
    stage: str = "retrieve",
    measured_at: float | None = None,
) -> PressureSignal:
    return PressureSignal(
        stage=stage,
        lag=lag,
        oldest_age_s=age,
        p95_latency_s=p95,
        measured_at=clock.now() if measured_at is None else measured_at,
    )


def test_healthy_signal_does_not_pause() -> None:
    clock = FakeClock()
    verdict = DownstreamPressure(LIMITS).evaluate(
        {"retrieve": signal(clock)}, clock.now(), clock.monotonic()
    )
    assert verdict.paused is False
    assert verdict.reasons == ()


def test_lag_over_threshold_pauses_with_reason() -> None:
    clock = FakeClock()
    verdict = DownstreamPressure(LIMITS).evaluate(
        {"retrieve": signal(clock, lag=812)}, clock.now(), clock.monotonic()
    )
    assert verdict.paused is True
    assert verdict.reasons == ("retrieve.lag=812>=500",)


def test_each_metric_and_stage_reports_separately() -> None:
    clock = FakeClock()
    verdict = DownstreamPressure(LIMITS).evaluate(
        {
            "retrieve": signal(clock, age=31.5),
            "generate": signal(clock, stage="generate", p95=2.5),
        },
        clock.now(),
        clock.monotonic(),
    )
    assert verdict.reasons == ("retrieve.age_s=31.5>=30", "generate.p95_s=2.5>=2")


def test_resume_needs_value_below_resume_and_dwell() -> None:
    clock = FakeClock()
    pressure = DownstreamPressure(LIMITS)
    assert pressure.evaluate({"retrieve": signal(clock, lag=600)}, clock.now(), clock.monotonic())
    clock.advance(2.0)
    held = pressure.evaluate({"retrieve": signal(clock, lag=300)}, clock.now(), clock.monotonic())
    assert held.paused is True
    assert held.reasons == ("retrieve.lag=300 not below resume 100",)
    resumed = pressure.evaluate({"retrieve": signal(clock, lag=99)}, clock.now(), clock.monotonic())
    assert resumed.paused is False


@pytest.mark.parametrize("which", ["missing", "stale"])
def test_unknown_signal_pauses_when_fail_safe(which: str) -> None:
    clock = FakeClock()
    pressure = DownstreamPressure(LIMITS)
    sig = None if which == "missing" else signal(clock, measured_at=clock.now() - 5.01)
    verdict = pressure.evaluate({"retrieve": sig}, clock.now(), clock.monotonic())
    assert verdict.paused is True
    assert verdict.reasons == (f"retrieve.{which}",)


def test_signal_exactly_at_stale_limit_is_fresh() -> None:
    clock = FakeClock()
    verdict = DownstreamPressure(LIMITS).evaluate(
        {"retrieve": signal(clock, measured_at=clock.now() - 5.0)}, clock.now(), clock.monotonic()
    )
    assert verdict.paused is False


def test_unknown_signal_holds_last_state_with_hold() -> None:
    clock = FakeClock()
    hold = DownstreamLimits(
        pause_lag=500, resume_lag=100, pause_age_s=30.0, resume_age_s=10.0, on_stale="hold"
    )
    healthy = DownstreamPressure(hold)
    healthy.evaluate({"retrieve": signal(clock)}, clock.now(), clock.monotonic())
    clock.advance(60.0)
    assert healthy.evaluate({"retrieve": None}, clock.now(), clock.monotonic()).paused is False

    busy = DownstreamPressure(hold)
    busy.evaluate({"retrieve": signal(clock, lag=900)}, clock.now(), clock.monotonic())
    clock.advance(60.0)
    verdict = busy.evaluate(
        {"retrieve": signal(clock, measured_at=clock.now() - 30.0)}, clock.now(), clock.monotonic()
    )
    assert verdict.paused is True
    assert verdict.reasons == ("retrieve.stale",)


def test_stale_then_fresh_resumes_after_dwell() -> None:
    clock = FakeClock()
    pressure = DownstreamPressure(LIMITS)
    assert pressure.evaluate({"retrieve": None}, clock.now(), clock.monotonic()).paused
    clock.advance(0.5)
    fresh = {"retrieve": signal(clock)}
    assert pressure.evaluate(fresh, clock.now(), clock.monotonic()).paused  # dwell
    clock.advance(0.5)
    fresh = {"retrieve": signal(clock)}
    assert not pressure.evaluate(fresh, clock.now(), clock.monotonic()).paused


def test_unmeasured_p95_reads_as_no_latency_pressure() -> None:
    clock = FakeClock()
    pressure = DownstreamPressure(LIMITS)
    assert pressure.evaluate({"retrieve": signal(clock, p95=3.0)}, clock.now(), clock.monotonic())
    clock.advance(5.0)
    verdict = pressure.evaluate(
        {"retrieve": signal(clock, p95=None)}, clock.now(), clock.monotonic()
    )
    assert not verdict.paused  # an idle stage must not hold its upstream paused forever
    assert pressure.gate("retrieve", "p95_s").resume_events == 1


def test_p95_ignored_when_not_configured() -> None:
    clock = FakeClock()
    limits = DownstreamLimits(pause_lag=500, resume_lag=100, pause_age_s=30.0, resume_age_s=10.0)
    verdict = DownstreamPressure(limits).evaluate(
        {"retrieve": signal(clock, p95=99.0)}, clock.now(), clock.monotonic()
    )
    assert verdict.paused is False


def test_dropped_stage_forgets_its_gates() -> None:
    clock = FakeClock()
    pressure = DownstreamPressure(LIMITS)
    pressure.evaluate({"retrieve": signal(clock, lag=900)}, clock.now(), clock.monotonic())
    verdict = pressure.evaluate(
        {"generate": signal(clock, stage="generate")}, clock.now(), clock.monotonic()
    )
    assert verdict.paused is False


@pytest.mark.parametrize(
    "overrides",
    [
        {"resume_lag": 500},
        {"resume_age_s": 40.0},
        {"pause_p95_s": 2.0},
        {"stale_after_s": 0.0},
        {"on_stale": "ignore"},
    ],
)
def test_limits_reject_invalid(overrides: dict[str, object]) -> None:
    base: dict[str, object] = {
        "pause_lag": 500,
        "resume_lag": 100,
        "pause_age_s": 30.0,
        "resume_age_s": 10.0,
    }
    with pytest.raises(ValueError):
        DownstreamLimits(**{**base, **overrides})  # type: ignore[arg-type]


def _draining(clock: FakeClock, *, lag: int, age: float, drain: float | None) -> PressureSignal:
    return PressureSignal(
        stage="retrieve", lag=lag, oldest_age_s=age, p95_latency_s=0.1,
        measured_at=clock.now(), drain_per_s=drain,
    )  # fmt: skip


def test_a_draining_stage_whose_burst_aged_resumes_before_it_runs_dry() -> None:
    """After a burst every queued record is as old as the head: with the head's age alone
    the stage before stays paused until the queue is empty. The wait the queue means at
    the measured drain rate (50 records at 40/s: 1.25 s) is under resume, so it resumes."""
    clock = FakeClock()
    pressure = DownstreamPressure(LIMITS)
    paused = pressure.evaluate(
        {"retrieve": _draining(clock, lag=600, age=35.0, drain=40.0)}, clock.now(),
        clock.monotonic(),
    )  # fmt: skip
    assert paused.paused
    clock.advance(5.0)
    verdict = pressure.evaluate(
        {"retrieve": _draining(clock, lag=50, age=14.0, drain=40.0)}, clock.now(),
        clock.monotonic(),
    )  # fmt: skip
    assert verdict.paused is False, verdict.reasons


def test_a_stage_that_does_not_drain_keeps_the_head_age() -> None:
    """A stuck stage (nothing committed: rate 0) or one not measured yet keeps pausing the
    stage before on its oldest record's age, however short its queue."""
    for drain in (0.0, None):
        clock = FakeClock()
        pressure = DownstreamPressure(LIMITS)
        verdict = pressure.evaluate(
            {"retrieve": _draining(clock, lag=5, age=35.0, drain=drain)}, clock.now(),
            clock.monotonic(),
        )  # fmt: skip
        assert verdict.paused, drain
        assert verdict.reasons == ("retrieve.age_s=35>=30",)


def test_a_long_queue_at_its_drain_rate_pauses_on_age_before_its_head_is_old() -> None:
    """The wait is the smaller of the two: a queue whose head is young pauses on lag, not
    age (the age gate never reads more than the head's age)."""
    clock = FakeClock()
    verdict = DownstreamPressure(LIMITS).evaluate(
        {"retrieve": _draining(clock, lag=400, age=2.0, drain=10.0)}, clock.now(),
        clock.monotonic(),
    )  # fmt: skip
    assert verdict.paused is False
