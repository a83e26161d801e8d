"""The intake at a degradation level: a lane's rule over the usual verdict."""

from __future__ import annotations

from streams.intake.degradation import degraded_verdict
from streams.policy.admission import AdmissionDecision, AdmissionLimits, LanePolicy
from streams.policy.degradation import FlagCondition, Ladder, LevelSpec

LADDER = Ladder(
    levels=(
        LevelSpec("normal"),
        LevelSpec(
            "lean",
            when=(FlagCondition("tool_open", "crm"),),
            intake_lanes={"background": "reject", "standard": "delay", "urgent": "accept"},
        ),
    ),
    min_dwell_s=20.0,
)
LIMITS = AdmissionLimits(
    max_queued=100,
    max_queued_per_tenant=100,
    lanes={
        "urgent": LanePolicy("accept"),
        "standard": LanePolicy("delay", delay_s=7.0),
        "background": LanePolicy("reject"),
    },
    retry_after_max_s=15.0,
)
ACCEPTED = AdmissionDecision("accepted", "admitted", "background")


def test_reject_at_a_level_names_the_reason_and_when_to_come_back() -> None:
    got = degraded_verdict(ACCEPTED, "background", LADDER.view(1), LIMITS, min_dwell_s=20.0)
    assert (got.outcome, got.reason, got.lane) == ("rejected", "degraded", "background")
    assert got.retry_after_s == 15.0  # min_dwell_s, within the retry-after bounds


def test_delay_at_a_level_uses_the_lanes_delay() -> None:
    accepted = AdmissionDecision("accepted", "admitted", "standard")
    got = degraded_verdict(accepted, "standard", LADDER.view(1), LIMITS, min_dwell_s=20.0)
    assert (got.outcome, got.reason, got.delay_s) == ("delayed", "degraded", 7.0)


def test_the_base_level_and_accept_leave_the_usual_verdict() -> None:
    assert (
        degraded_verdict(ACCEPTED, "background", LADDER.view(0), LIMITS, min_dwell_s=1) is ACCEPTED
    )
    urgent = AdmissionDecision("accepted", "admitted", "urgent")
    assert degraded_verdict(urgent, "urgent", LADDER.view(1), LIMITS, min_dwell_s=1) is urgent


def test_a_usual_rejection_stands() -> None:
    full = AdmissionDecision("rejected", "workflow_full", "standard", retry_after_s=3.0)
    assert degraded_verdict(full, "standard", LADDER.view(1), LIMITS, min_dwell_s=1) is full
