"""What the intake does at a degradation level: each lane's `intake.lanes` rule of the level
(README "Degradation") applied over the usual admission verdict.

Owns that rule; pure (no clock, no I/O): the intake passes the level it reads from its
DegradationFeed (streams.runtime.degradation) and the verdict streams.policy.admission gave.
"""

from __future__ import annotations

from streams.policy.admission import AdmissionDecision, AdmissionLimits
from streams.policy.degradation import LevelView
from streams.types import Lane


def degraded_verdict(
    verdict: AdmissionDecision,
    lane: Lane,
    view: LevelView,
    limits: AdmissionLimits,
    *,
    min_dwell_s: float,
) -> AdmissionDecision:
    """The verdict at level `view` for a run requested in `lane`:

    * `reject`: rejected, reason "degraded", retry-after the ladder's min_dwell_s (the
      soonest the level can end) within the intake's retry-after bounds;
    * `delay`: a run the usual rules would accept (or downgrade) is delayed by its lane's
      delay_s instead, reason "degraded";
    * `accept` or no rule: the usual verdict. A usual rejection (a full queue) always stands.
    """
    action = view.intake_lanes.get(lane)
    if action is None or action == "accept" or verdict.outcome == "rejected":
        return verdict
    if action == "reject":
        retry_after = min(max(min_dwell_s, limits.retry_after_min_s), limits.retry_after_max_s)
        return AdmissionDecision("rejected", "degraded", lane, retry_after_s=retry_after)
    if verdict.outcome == "delayed":
        return verdict
    policy = limits.lanes.get(lane)
    delay_s = policy.delay_s if policy is not None else 30.0
    return AdmissionDecision(
        "delayed", "degraded", lane, delay_s=delay_s, forecast_wait_s=verdict.forecast_wait_s
    )
