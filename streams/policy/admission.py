"""Admission control: accept, delay, downgrade or reject one submitted run, from numbers.

Owns the admission rules and the retry-after and wait forecasts; must not do I/O, read a
clock, keep state, or detect duplicates (that needs the run-state log; see ``collapsed``).

``decide`` applies these rules in order; the first that matches decides:

1. Workflow bound: ``queued_total + delayed_total >= max_queued`` -> rejected
   "workflow_full". Delayed runs count because they join the queue later; this bound is
   never exceeded by one replica's decisions.
2. Tenant bound: the tenant's queued count >= its bound (``tenant_max_queued[tenant]``,
   else ``max_queued_per_tenant``) -> rejected "tenant_full".
3. Fair share: when saturated (``queued_total`` >= the saturation point: ``max_queued`` x
   ``saturation_ratio``, or x ``pressure_saturation_ratio`` while the first stage is paused
   by downstream pressure), a tenant at or above its weighted fair share of ``max_queued``
   among active tenants (queued > 0, plus the requester) -> rejected "fair_share".
4. Deadline: ``deadline_ms`` set and ``now_ms`` + forecast wait > ``deadline_ms`` ->
   ``deadline_action``: "reject" -> rejected "deadline_unmeetable" with no retry-after
   (retrying will not help); "downgrade" -> the run moves to the least urgent lane in
   ``limits.lanes`` and rule 5 applies to it in that lane (a deadline must not bypass that
   lane's saturation rule); a run already there is rejected. The forecast includes the
   review stages on the run's path (``review_wait_s``: pending ÷ the clear rate people
   achieve, streams.policy.review). A part not known yet (no drain rate measured, a
   review stage with no measured clear rate) counts as no wait: only known parts refuse
   a run, never a guess; with nothing known only a deadline already past fails.
5. Lane rule: when saturated for this tenant, the lane's ``on_saturation``: "accept" ->
   accepted "admitted"; "delay" -> delayed by the lane's ``delay_s``; "downgrade" -> to
   its ``downgrade_to`` lane (no second lane rule there); "reject" -> rejected. Reason
   "downstream_pressure" when only the lower pressure ratio makes it saturated, else
   "lane_saturated". "Saturated for this tenant" leaves out other tenants' queued runs
   above their fair share: rule 3 stops that excess from growing, and counting it would
   let one tenant's flood keep the queue at the saturation point, so that every other
   tenant's runs were delayed or rejected there (fair share would protect their place in
   the queue but not their lane).
6. Otherwise accepted "admitted".

Retry-after (rejections other than deadline ones): time for the queue, delayed runs
included, to drain below the saturation point at ``drain_rate_per_s``; for "tenant_full",
time for one of the tenant's runs to leave, its runs draining at their share of the queue.
Clamped to ``[retry_after_min_s, retry_after_max_s]``; the max while the rate is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from streams.types import LANES, Lane

AdmissionOutcome = Literal["accepted", "delayed", "downgraded", "rejected", "collapsed"]
ReasonCode = Literal[
    "admitted",
    "workflow_full",
    "tenant_full",
    "fair_share",
    "lane_saturated",
    "deadline_unmeetable",
    "downstream_pressure",
    "duplicate",
    "degraded",  # a degradation level's intake.lanes rule (streams.intake.degradation)
]
SaturationAction = Literal["accept", "delay", "downgrade", "reject"]
DeadlineAction = Literal["reject", "downgrade"]
SATURATION_ACTIONS: tuple[SaturationAction, ...] = ("accept", "delay", "downgrade", "reject")
DEADLINE_ACTIONS: tuple[DeadlineAction, ...] = ("reject", "downgrade")


@dataclass(frozen=True, slots=True)
class LanePolicy:
    """What a lane's new runs get while the queue is saturated."""

    on_saturation: SaturationAction
    delay_s: float = 30.0  # only for "delay"
    downgrade_to: Lane | None = None  # required for "downgrade", and only for it

    def __post_init__(self) -> None:
        if self.on_saturation not in SATURATION_ACTIONS:
            raise ValueError(f"on_saturation must be one of {SATURATION_ACTIONS}")
        if not (self.delay_s >= 0 and math.isfinite(self.delay_s)):
            raise ValueError(f"delay_s must be a finite number >= 0, got {self.delay_s}")
        if (self.on_saturation == "downgrade") != (self.downgrade_to is not None):
            raise ValueError("set downgrade_to exactly when on_saturation is 'downgrade'")


#: Saturated: urgent runs still enter, standard ones wait, background ones come back later.
DEFAULT_LANE_POLICIES: Mapping[Lane, LanePolicy] = MappingProxyType(
    {
        "urgent": LanePolicy("accept"),
        "standard": LanePolicy("delay"),
        "background": LanePolicy("reject"),
    }
)


def _default_lanes() -> Mapping[Lane, LanePolicy]:
    return DEFAULT_LANE_POLICIES


def _no_tenants() -> Mapping[str, int]:
    return MappingProxyType({})


def _no_weights() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Bounds and per-lane behaviour of one workflow's intake (see the module docstring)."""

    max_queued: int
    max_queued_per_tenant: int
    tenant_max_queued: Mapping[str, int] = field(default_factory=_no_tenants)
    tenant_weights: Mapping[str, float] = field(default_factory=_no_weights)  # default 1.0
    saturation_ratio: float = 0.8
    pressure_saturation_ratio: float = 0.5
    lanes: Mapping[Lane, LanePolicy] = field(default_factory=_default_lanes)
    retry_after_min_s: float = 1.0
    retry_after_max_s: float = 60.0
    deadline_action: DeadlineAction = "reject"

    def __post_init__(self) -> None:
        bounds = [self.max_queued, self.max_queued_per_tenant, *self.tenant_max_queued.values()]
        if min(bounds) <= 0:
            raise ValueError(f"queue bounds must be > 0, got {bounds}")
        if any(not (w > 0 and math.isfinite(w)) for w in self.tenant_weights.values()):
            raise ValueError("tenant weights must be finite numbers > 0")
        if not 0 < self.pressure_saturation_ratio <= self.saturation_ratio <= 1:
            raise ValueError("need 0 < pressure_saturation_ratio <= saturation_ratio <= 1")
        if not 0 < self.retry_after_min_s <= self.retry_after_max_s < math.inf:
            raise ValueError("need 0 < retry_after_min_s <= retry_after_max_s < inf")
        if self.deadline_action not in DEADLINE_ACTIONS:
            raise ValueError(f"deadline_action must be one of {DEADLINE_ACTIONS}")
        if not self.lanes or any(lane not in LANES for lane in self.lanes):
            raise ValueError(f"lanes must be a non-empty mapping over {LANES}")
        for lane, policy in self.lanes.items():
            target = policy.downgrade_to
            if target is not None and (
                target not in self.lanes or LANES.index(target) <= LANES.index(lane)
            ):
                raise ValueError(f"lane {lane!r} downgrades to {target!r}: not a lesser lane")

    def tenant_bound(self, tenant: str) -> int:
        return self.tenant_max_queued.get(tenant, self.max_queued_per_tenant)

    def weight(self, tenant: str) -> float:
        return self.tenant_weights.get(tenant, 1.0)


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    tenant: str
    lane: Lane
    deadline_ms: int | None  # wall-clock epoch milliseconds; None: no deadline


@dataclass(frozen=True, slots=True)
class CapacitySnapshot:
    """The workflow's load as the caller last measured it.

    ``queued_by_tenant`` should count a tenant's delayed runs too. A caller re-deciding a
    delayed run takes it out of ``delayed_total`` first, or it competes with itself.
    """

    queued_total: int
    queued_by_tenant: Mapping[str, int]
    queued_by_lane: Mapping[Lane, int]
    first_stage_lag: int
    drain_rate_per_s: float | None  # runs/s the first stage completes (RateEstimator)
    p95_handler_s: float | None
    downstream_paused: bool
    delayed_total: int = 0
    #: Expected wait at the review stages on the run's path (known part; see
    #: streams.policy.review.path_review_wait), and whether some of it is unknown.
    review_wait_s: float = 0.0
    review_wait_unknown: bool = False


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    outcome: AdmissionOutcome
    reason: ReasonCode
    lane: Lane  # where the run goes: the requested lane, or the one it was downgraded to
    delay_s: float | None = None
    retry_after_s: float | None = None
    forecast_wait_s: float | None = None


def forecast_wait_s(snapshot: CapacitySnapshot) -> float | None:
    """Forecast wait: lag / drain rate + p95 handler time + the review stages' expected
    wait; None while a part is unknown (no drain rate or clear rate measured yet)."""
    first = _first_stage_wait_s(snapshot)
    if first is None or snapshot.review_wait_unknown:
        return None
    return first + snapshot.review_wait_s


def _wait_at_least_s(snapshot: CapacitySnapshot) -> float:
    """The known parts of the forecast: a run waits at least this long."""
    return (_first_stage_wait_s(snapshot) or 0.0) + snapshot.review_wait_s


def _first_stage_wait_s(snapshot: CapacitySnapshot) -> float | None:
    p95 = snapshot.p95_handler_s or 0.0
    if snapshot.first_stage_lag <= 0:
        return p95
    rate = snapshot.drain_rate_per_s
    if rate is None or not rate > 0:
        return None
    return snapshot.first_stage_lag / rate + p95


def saturation_point(snapshot: CapacitySnapshot, limits: AdmissionLimits) -> float:
    """Queued runs from which the queue counts as saturated."""
    ratio = limits.pressure_saturation_ratio if snapshot.downstream_paused else None
    return limits.max_queued * (ratio or limits.saturation_ratio)


def fair_shares(
    tenant: str, snapshot: CapacitySnapshot, limits: AdmissionLimits
) -> dict[str, float]:
    """Weighted share of ``max_queued`` of every active tenant, as ``tenant`` sees it."""
    active = sorted({t for t, n in snapshot.queued_by_tenant.items() if n > 0} | {tenant})
    total_weight = math.fsum(limits.weight(t) for t in active)
    return {t: limits.max_queued * limits.weight(t) / total_weight for t in active}


def collapsed(existing_run_lane: Lane) -> AdmissionDecision:
    """The decision for a duplicate of a run already admitted (found in the run-state log)."""
    return AdmissionDecision("collapsed", "duplicate", existing_run_lane)


def decide(
    request: AdmissionRequest, snapshot: CapacitySnapshot, limits: AdmissionLimits, now_ms: int
) -> AdmissionDecision:
    """Apply the module docstring's rules to one run. Raises ValueError for a lane that
    ``limits.lanes`` does not know (the intake must refuse those before asking)."""
    lane = request.lane
    if lane not in limits.lanes:
        raise ValueError(f"lane {lane!r} is not one of {tuple(limits.lanes)}")
    forecast = forecast_wait_s(snapshot)
    point = saturation_point(snapshot, limits)

    def reject(reason: ReasonCode, retry_after: float | None) -> AdmissionDecision:
        return AdmissionDecision("rejected", reason, lane, None, retry_after, forecast)

    if snapshot.queued_total + snapshot.delayed_total >= limits.max_queued:
        return reject("workflow_full", _queue_retry_after(snapshot, limits, point))
    tenant_queued = snapshot.queued_by_tenant.get(request.tenant, 0)
    bound = limits.tenant_bound(request.tenant)
    if tenant_queued >= bound:
        return reject("tenant_full", _tenant_retry_after(tenant_queued, bound, snapshot, limits))
    # Below the saturation point fair shares decide nothing (rule 3 needs saturation, and
    # rule 5's load is at most queued_total): skip their O(tenants) cost.
    saturated = snapshot.queued_total >= point
    shares = fair_shares(request.tenant, snapshot, limits) if saturated else {}
    if saturated and tenant_queued >= shares[request.tenant]:
        return reject("fair_share", _queue_retry_after(snapshot, limits, point))

    deadline_hit = request.deadline_ms is not None and (
        now_ms + _wait_at_least_s(snapshot) * 1000.0 > request.deadline_ms
    )
    if deadline_hit:
        cheapest = max(limits.lanes, key=LANES.index)
        if limits.deadline_action == "reject" or lane == cheapest:
            return reject("deadline_unmeetable", None)
        lane = cheapest

    others_excess = math.fsum(
        max(0.0, snapshot.queued_by_tenant.get(t, 0) - share)
        for t, share in shares.items()
        if t != request.tenant
    )  # 0.0 when not saturated: no shares computed
    load = snapshot.queued_total - others_excess
    policy = limits.lanes[lane]
    if load < point or policy.on_saturation == "accept":
        outcome: AdmissionOutcome = "downgraded" if deadline_hit else "accepted"
        reason: ReasonCode = "deadline_unmeetable" if deadline_hit else "admitted"
        return AdmissionDecision(outcome, reason, lane, forecast_wait_s=forecast)
    by_pressure = load < limits.max_queued * limits.saturation_ratio
    reason = "downstream_pressure" if by_pressure else "lane_saturated"
    if policy.on_saturation == "delay":
        return AdmissionDecision("delayed", reason, lane, policy.delay_s, None, forecast)
    if policy.on_saturation == "downgrade" and policy.downgrade_to is not None:
        return AdmissionDecision("downgraded", reason, policy.downgrade_to, None, None, forecast)
    return reject(reason, _queue_retry_after(snapshot, limits, point))


def _queue_retry_after(snapshot: CapacitySnapshot, limits: AdmissionLimits, point: float) -> float:
    backlog = snapshot.queued_total + snapshot.delayed_total - point
    return _clamped(backlog, snapshot.drain_rate_per_s, limits)


def _tenant_retry_after(
    tenant_queued: int, bound: int, snapshot: CapacitySnapshot, limits: AdmissionLimits
) -> float:
    rate = snapshot.drain_rate_per_s
    if rate is not None:
        # The tenant's runs sit spread through one FIFO queue: they leave at its share.
        rate *= tenant_queued / max(snapshot.queued_total, tenant_queued, 1)
    return _clamped(tenant_queued - bound + 1, rate, limits)


def _clamped(backlog: float, rate: float | None, limits: AdmissionLimits) -> float:
    if rate is None or not rate > 0:
        return limits.retry_after_max_s
    seconds = backlog / rate
    if math.isnan(seconds):
        return limits.retry_after_max_s
    return min(max(seconds, limits.retry_after_min_s), limits.retry_after_max_s)
