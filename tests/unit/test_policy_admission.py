"""Admission policy: one test per rule, properties of the bounds, and a tenant flood."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.policy.admission import (
    AdmissionDecision,
    AdmissionLimits,
    AdmissionRequest,
    CapacitySnapshot,
    LanePolicy,
    SaturationAction,
    collapsed,
    decide,
    fair_shares,
    forecast_wait_s,
    saturation_point,
)
from streams.types import LANES, Lane

NOW_MS = 1_700_000_000_000
LIMITS = AdmissionLimits(max_queued=100, max_queued_per_tenant=100)  # point 80, pressure 50


def snap(
    by_tenant: Mapping[str, int] | None = None,
    *,
    total: int | None = None,
    rate: float | None = 10.0,
    lag: int | None = None,
    p95: float | None = 2.0,
    paused: bool = False,
    delayed: int = 0,
) -> CapacitySnapshot:
    by_tenant = dict(by_tenant or {})
    queued = sum(by_tenant.values()) if total is None else total
    return CapacitySnapshot(
        queued_total=queued,
        queued_by_tenant=by_tenant,
        queued_by_lane={"standard": queued},
        first_stage_lag=queued if lag is None else lag,
        drain_rate_per_s=rate,
        p95_handler_s=p95,
        downstream_paused=paused,
        delayed_total=delayed,
    )


def ask(
    snapshot: CapacitySnapshot,
    tenant: str = "b",
    lane: Lane = "standard",
    deadline_ms: int | None = None,
    limits: AdmissionLimits = LIMITS,
) -> AdmissionDecision:
    return decide(AdmissionRequest(tenant, lane, deadline_ms), snapshot, limits, NOW_MS)


def limits(**changes: Any) -> AdmissionLimits:
    base: dict[str, Any] = {"max_queued": 100, "max_queued_per_tenant": 100}
    return AdmissionLimits(**{**base, **changes})


# --------------------------------------------------------------------------- rules


def test_rule_1_workflow_bound_counts_delayed_runs() -> None:
    full = ask(snap({"a": 100}), tenant="a")
    assert (full.outcome, full.reason) == ("rejected", "workflow_full")
    assert full.retry_after_s == pytest.approx(2.0)  # (100 - 80) runs / 10 per s
    with_delayed = ask(snap({"a": 10}, delayed=90), tenant="b", lane="urgent")
    assert (with_delayed.outcome, with_delayed.reason) == ("rejected", "workflow_full")
    assert ask(snap({"a": 10}, delayed=89), lane="urgent").outcome == "accepted"


def test_rule_2_tenant_bound_default_and_override() -> None:
    bounds = limits(max_queued_per_tenant=10, tenant_max_queued={"big": 30})
    at_default = ask(snap({"a": 10}), tenant="a", limits=bounds)
    assert (at_default.outcome, at_default.reason) == ("rejected", "tenant_full")
    assert ask(snap({"big": 10}), tenant="big", limits=bounds).outcome == "accepted"
    at_override = ask(snap({"big": 30}), tenant="big", limits=bounds)
    assert at_override.reason == "tenant_full"


def test_tenant_retry_after_is_when_one_of_its_runs_leaves() -> None:
    bounds = limits(max_queued_per_tenant=10)
    # Queue of 40 draining 10/s; the tenant holds 10 of them, so its runs leave 2.5/s.
    decision = ask(snap({"a": 10, "b": 30}), tenant="a", limits=bounds)
    assert decision.retry_after_s == 1.0  # 1 / 2.5 s, clamped up to the min
    bounds = limits(max_queued_per_tenant=10, retry_after_min_s=0.1)
    decision = ask(snap({"a": 10, "b": 30}), tenant="a", limits=bounds)
    assert decision.retry_after_s == pytest.approx(0.4)


def test_rule_3_fair_share_when_saturated() -> None:
    # Saturated (80 >= 80); shares among a, b: 50 each.
    over = ask(snap({"a": 75, "b": 5}), tenant="a", lane="urgent")
    assert (over.outcome, over.reason) == ("rejected", "fair_share")
    assert over.retry_after_s == pytest.approx(1.0)  # (80 - 80) / 10, clamped to the min
    assert ask(snap({"a": 75, "b": 5}), tenant="b", lane="urgent").outcome == "accepted"
    # Not saturated: a may use idle room beyond its share.
    assert ask(snap({"a": 75, "b": 4}), tenant="a").outcome == "accepted"


def test_fair_share_is_weighted_and_counts_the_requester_as_active() -> None:
    weighted = limits(tenant_weights={"a": 3.0})
    shares = fair_shares("b", snap({"a": 80}), weighted)
    assert shares == pytest.approx({"a": 75.0, "b": 25.0})
    # Alone, "a" is the only active tenant: its share is everything.
    assert ask(snap({"a": 80}), tenant="a", lane="urgent", limits=weighted).outcome == "accepted"
    assert ask(snap({"a": 80, "b": 1}), "a", "urgent", limits=weighted).reason == "fair_share"
    # With a weight of 3, "a" holding 70 of 80 is within its 75.
    assert ask(snap({"a": 70, "b": 10}), tenant="a", lane="urgent", limits=weighted).outcome == (
        "accepted"
    )


def test_rule_4_deadline_reject_has_no_retry_after() -> None:
    # Forecast: 50 lag / 10 per s + 2 s p95 = 7 s.
    late = ask(snap({"a": 50}), deadline_ms=NOW_MS + 6_000)
    assert (late.outcome, late.reason, late.retry_after_s) == (
        "rejected",
        "deadline_unmeetable",
        None,
    )
    assert late.forecast_wait_s == pytest.approx(7.0)
    assert ask(snap({"a": 50}), deadline_ms=NOW_MS + 7_000).outcome == "accepted"


def test_deadline_with_unknown_forecast_fails_only_when_already_past() -> None:
    unknown = snap({"a": 50}, rate=None)
    assert ask(unknown, deadline_ms=NOW_MS + 1).outcome == "accepted"
    assert ask(unknown, deadline_ms=NOW_MS - 1).reason == "deadline_unmeetable"


def test_deadline_downgrade_goes_to_the_cheapest_lane_and_obeys_its_rule() -> None:
    downgrading = limits(deadline_action="downgrade")
    moved = ask(snap({"a": 50}), deadline_ms=NOW_MS, limits=downgrading)
    assert (moved.outcome, moved.reason, moved.lane) == (
        "downgraded",
        "deadline_unmeetable",
        "background",
    )
    already = ask(snap({"a": 50}), lane="background", deadline_ms=NOW_MS, limits=downgrading)
    assert (already.outcome, already.reason) == ("rejected", "deadline_unmeetable")
    # Saturated: a deadline must not smuggle a run past background's "reject".
    saturated = ask(snap({"a": 40, "b": 40}), deadline_ms=NOW_MS, limits=downgrading)
    assert (saturated.outcome, saturated.reason, saturated.lane) == (
        "rejected",
        "lane_saturated",
        "background",
    )
    # The cheapest lane is the cheapest the workflow has, not always "background".
    two_lanes = limits(
        deadline_action="downgrade",
        lanes={"urgent": LanePolicy("accept"), "standard": LanePolicy("delay")},
    )
    assert ask(snap({"a": 50}), "b", "urgent", NOW_MS, two_lanes).lane == "standard"


def test_rule_5_lane_actions_when_saturated() -> None:
    lanes = {
        "urgent": LanePolicy("accept"),
        "standard": LanePolicy("downgrade", downgrade_to="background"),
        "background": LanePolicy("delay", delay_s=12.0),
    }
    policy = limits(lanes=lanes)
    full = snap({"a": 40, "b": 40})
    urgent = ask(full, lane="urgent", limits=policy)
    assert (urgent.outcome, urgent.reason, urgent.lane) == ("accepted", "admitted", "urgent")
    standard = ask(full, lane="standard", limits=policy)
    assert (standard.outcome, standard.reason, standard.lane) == (
        "downgraded",
        "lane_saturated",
        "background",
    )
    background = ask(full, lane="background", limits=policy)
    assert (background.outcome, background.delay_s) == ("delayed", 12.0)
    rejected = ask(full, lane="background")  # default policy: background rejects
    assert (rejected.outcome, rejected.reason) == ("rejected", "lane_saturated")
    assert rejected.retry_after_s == pytest.approx(1.0)
    delayed = ask(full)  # default policy: standard delays 30 s
    assert (delayed.outcome, delayed.delay_s) == ("delayed", 30.0)


def test_downstream_pressure_saturates_earlier_and_says_so() -> None:
    queue = {"a": 30, "b": 30}  # 60: under 80, over the pressure point 50
    assert ask(snap(queue)).outcome == "accepted"
    paused = ask(snap(queue, paused=True))
    assert (paused.outcome, paused.reason) == ("delayed", "downstream_pressure")
    both = ask(snap({"a": 40, "b": 40}, paused=True))
    assert both.reason == "lane_saturated"  # saturated even without the pressure


def test_rule_6_admitted_below_saturation() -> None:
    decision = ask(snap({"a": 10}), lane="background")
    assert decision == AdmissionDecision("accepted", "admitted", "background", None, None, 3.0)


def test_others_excess_over_their_share_does_not_saturate_a_fair_tenant() -> None:
    # a holds 78 (28 over its share of 50), b holds 2: 80 queued, saturated by a's flood.
    flooded = snap({"a": 78, "b": 2})
    assert ask(flooded, tenant="a", lane="urgent").reason == "fair_share"
    assert ask(flooded, tenant="b").outcome == "accepted"  # 80 - 28 = 52 < 80
    # All within their shares: genuinely saturated, the lane rule applies to everyone.
    assert ask(snap({"a": 40, "b": 40}), tenant="b").outcome == "delayed"


def test_retry_after_is_the_max_without_a_drain_rate() -> None:
    for rate in (None, 0.0):
        decision = ask(snap({"a": 100}, rate=rate), tenant="a")
        assert decision.retry_after_s == LIMITS.retry_after_max_s


def test_retry_after_counts_delayed_runs_and_is_clamped() -> None:
    slow = snap({"a": 90}, rate=0.5, delayed=10)
    assert ask(slow, tenant="a").retry_after_s == 40.0  # (100 - 80) / 0.5
    slower = snap({"a": 90}, rate=0.1, delayed=10)
    assert ask(slower, tenant="a").retry_after_s == 60.0


def test_forecast_wait() -> None:
    assert forecast_wait_s(snap({"a": 30}, rate=10.0, p95=2.0)) == pytest.approx(5.0)
    assert forecast_wait_s(snap({"a": 30}, rate=None)) is None
    assert forecast_wait_s(snap({"a": 30}, rate=0.0)) is None
    assert forecast_wait_s(snap({}, rate=None, p95=2.0)) == 2.0
    assert forecast_wait_s(snap({}, rate=None, p95=None)) == 0.0


def test_saturation_point_uses_the_pressure_ratio_while_paused() -> None:
    assert saturation_point(snap({}), LIMITS) == 80.0
    assert saturation_point(snap({}, paused=True), LIMITS) == 50.0


def test_collapsed_keeps_the_existing_runs_lane() -> None:
    assert collapsed("urgent") == AdmissionDecision("collapsed", "duplicate", "urgent")


def test_unknown_lane_is_a_caller_error() -> None:
    two_lanes = limits(lanes={"standard": LanePolicy("delay")})
    with pytest.raises(ValueError, match="urgent"):
        ask(snap({}), lane="urgent", limits=two_lanes)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"max_queued": 0}, "bounds"),
        ({"tenant_max_queued": {"a": -1}}, "bounds"),
        ({"tenant_weights": {"a": 0.0}}, "weights"),
        ({"saturation_ratio": 1.5}, "ratio"),
        ({"pressure_saturation_ratio": 0.9}, "ratio"),
        ({"retry_after_min_s": 0.0}, "retry_after"),
        ({"retry_after_min_s": 5.0, "retry_after_max_s": 4.0}, "retry_after"),
        ({"lanes": {}}, "lanes"),
        ({"lanes": {"standard": LanePolicy("downgrade", downgrade_to="urgent")}}, "downgrades"),
        ({"lanes": {"urgent": LanePolicy("downgrade", downgrade_to="standard")}}, "downgrades"),
    ],
)
def test_limits_refuse_nonsense(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        limits(**changes)


def test_lane_policy_needs_downgrade_to_exactly_with_downgrade() -> None:
    with pytest.raises(ValueError, match="downgrade_to"):
        LanePolicy("downgrade")
    with pytest.raises(ValueError, match="downgrade_to"):
        LanePolicy("delay", downgrade_to="background")
    with pytest.raises(ValueError, match="delay_s"):
        LanePolicy("delay", delay_s=-1.0)


# --------------------------------------------------------------------------- properties

TENANTS = ("a", "b", "c", "d")


@st.composite
def admission_limits(draw: st.DrawFn) -> AdmissionLimits:
    max_queued = draw(st.integers(1, 200))
    saturation = draw(st.floats(0.05, 1.0))
    lanes = draw(st.lists(st.sampled_from(LANES), min_size=1, unique=True))
    lanes.sort(key=LANES.index)
    policies: dict[Lane, LanePolicy] = {}
    for i, lane in enumerate(lanes):
        actions: list[SaturationAction] = ["accept", "delay", "reject"]
        if i < len(lanes) - 1:
            actions.append("downgrade")
        action = draw(st.sampled_from(actions))
        target = draw(st.sampled_from(lanes[i + 1 :])) if action == "downgrade" else None
        policies[lane] = LanePolicy(action, draw(st.floats(0, 100)), target)
    retry_min = draw(st.floats(0.01, 10.0))
    return AdmissionLimits(
        max_queued=max_queued,
        max_queued_per_tenant=draw(st.integers(1, 200)),
        tenant_max_queued=draw(st.dictionaries(st.sampled_from(TENANTS), st.integers(1, 200))),
        tenant_weights=draw(st.dictionaries(st.sampled_from(TENANTS), st.floats(0.1, 10.0))),
        saturation_ratio=saturation,
        pressure_saturation_ratio=draw(st.floats(0.01, 1.0)) * saturation,
        lanes=policies,
        retry_after_min_s=retry_min,
        retry_after_max_s=retry_min + draw(st.floats(0.0, 100.0)),
        deadline_action=draw(st.sampled_from(["reject", "downgrade"])),
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[AdmissionRequest, CapacitySnapshot, AdmissionLimits]:
    bounds = draw(admission_limits())
    by_tenant = draw(st.dictionaries(st.sampled_from(TENANTS), st.integers(0, 250)))
    queued = sum(by_tenant.values()) + draw(st.integers(0, 20))  # + tenants not listed
    snapshot = CapacitySnapshot(
        queued_total=queued,
        queued_by_tenant=by_tenant,
        queued_by_lane={},
        first_stage_lag=draw(st.integers(0, 300)),
        drain_rate_per_s=draw(st.one_of(st.none(), st.floats(0.0, 1000.0))),
        p95_handler_s=draw(st.one_of(st.none(), st.floats(0.0, 60.0))),
        downstream_paused=draw(st.booleans()),
        delayed_total=draw(st.integers(0, 50)),
    )
    request = AdmissionRequest(
        tenant=draw(st.sampled_from(TENANTS)),
        lane=draw(st.sampled_from(list(bounds.lanes))),
        deadline_ms=draw(st.one_of(st.none(), st.integers(NOW_MS - 10_000, NOW_MS + 100_000))),
    )
    return request, snapshot, bounds


ADMITTING = ("accepted", "delayed", "downgraded")


@given(cases())
def test_property_never_admits_at_the_workflow_bound(
    case: tuple[AdmissionRequest, CapacitySnapshot, AdmissionLimits],
) -> None:
    request, snapshot, bounds = case
    decision = decide(request, snapshot, bounds, NOW_MS)
    if snapshot.queued_total + snapshot.delayed_total >= bounds.max_queued:
        assert decision.outcome not in ADMITTING


@given(cases())
def test_property_never_admits_a_tenant_at_its_bound(
    case: tuple[AdmissionRequest, CapacitySnapshot, AdmissionLimits],
) -> None:
    request, snapshot, bounds = case
    decision = decide(request, snapshot, bounds, NOW_MS)
    if snapshot.queued_by_tenant.get(request.tenant, 0) >= bounds.tenant_bound(request.tenant):
        assert decision.outcome not in ADMITTING


@given(cases())
def test_property_a_tenant_below_its_share_is_never_rejected_for_fair_share(
    case: tuple[AdmissionRequest, CapacitySnapshot, AdmissionLimits],
) -> None:
    request, snapshot, bounds = case
    decision = decide(request, snapshot, bounds, NOW_MS)
    share = fair_shares(request.tenant, snapshot, bounds)[request.tenant]
    if snapshot.queued_by_tenant.get(request.tenant, 0) < share:
        assert decision.reason != "fair_share"


@given(cases())
def test_property_retry_after_is_within_bounds_and_only_on_rejections(
    case: tuple[AdmissionRequest, CapacitySnapshot, AdmissionLimits],
) -> None:
    request, snapshot, bounds = case
    decision = decide(request, snapshot, bounds, NOW_MS)
    if decision.retry_after_s is not None:
        assert decision.outcome == "rejected"
        assert bounds.retry_after_min_s <= decision.retry_after_s <= bounds.retry_after_max_s
    if decision.outcome == "delayed":
        assert decision.delay_s == bounds.lanes[request.lane].delay_s or decision.lane != (
            request.lane
        )
    assert decision.lane in bounds.lanes


# --------------------------------------------------------------------------- flood


def simulate(a_per_tick: int, b_per_tick: int, ticks: int = 600) -> dict[str, Any]:
    """One FIFO queue drained 10 runs a tick; each tick a's runs arrive first (worst
    case for b), then b's. Every decision sees the queue as it is at that moment."""
    bounds = limits(max_queued_per_tenant=90)
    drain_per_tick = 10
    queue: collections.deque[str] = collections.deque()
    by_tenant: collections.Counter[str] = collections.Counter()
    outcomes: dict[str, collections.Counter[str]] = {
        "a": collections.Counter(),
        "b": collections.Counter(),
    }
    a_peak, drained = 0, 0
    for _ in range(ticks):
        for _ in range(min(drain_per_tick, len(queue))):
            by_tenant[queue.popleft()] -= 1
            drained += 1
        for tenant in ["a"] * a_per_tick + ["b"] * b_per_tick:
            snapshot = snap(dict(by_tenant), total=len(queue), rate=float(drain_per_tick))
            decision = ask(snapshot, tenant=tenant, limits=bounds)
            outcomes[tenant][decision.outcome] += 1
            if decision.outcome == "accepted":
                queue.append(tenant)
                by_tenant[tenant] += 1
            a_peak = max(a_peak, by_tenant["a"])
            assert len(queue) <= bounds.max_queued
    return {"outcomes": outcomes, "a_peak": a_peak, "drained": drained, "bounds": bounds}


def test_flood_from_one_tenant_leaves_the_other_its_acceptance() -> None:
    normal = 3  # each tenant's usual runs per tick; 6 of 10 capacity between them
    alone = simulate(a_per_tick=0, b_per_tick=normal)
    flood = simulate(a_per_tick=20 * normal, b_per_tick=normal)
    b_alone = alone["outcomes"]["b"]["accepted"]
    b_flood = flood["outcomes"]["b"]["accepted"]
    assert b_alone == 600 * normal  # sanity: alone, b is never held back
    assert b_flood >= 0.95 * b_alone
    assert flood["a_peak"] <= flood["bounds"].max_queued_per_tenant
    assert flood["outcomes"]["a"]["rejected"] > 0  # the flood was actually held back
    # Work-conserving: the flood still keeps the workers busy after the first tick.
    assert flood["drained"] >= 10 * 599
