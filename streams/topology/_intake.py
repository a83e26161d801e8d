"""Owns the intake's settings (IntakeConfig) and the checks of a topology's `intake:`
section that span keys or need the workflow (its lanes and entry stages).

Must not serve HTTP, touch Kafka or decide admissions (streams.policy.admission does).
The section's keys, types and defaults are the model's (streams.topology._model.IntakeIn).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, NoReturn

from streams.errors import ConfigError
from streams.policy.admission import DEFAULT_LANE_POLICIES, AdmissionLimits, LanePolicy
from streams.topology._errors import KeyPath, Problem, dotted, show, suggest
from streams.topology._model import (
    DEFAULT_MAX_QUEUED_PER_TENANT,
    DEFAULT_PRESSURE_SATURATION_RATIO,
    IntakeIn,
    LaneIn,
    TenantIn,
)
from streams.types import LANES, Lane

if TYPE_CHECKING:
    from streams.topology._objects import Topology

DEFAULT_LANE: Lane = "standard"


@dataclass(frozen=True, slots=True)
class IntakeConfig:
    """One workflow's intake settings, validated against its topology."""

    limits: AdmissionLimits  # everything the admission policy needs
    entry_stage: str  # the stage new runs are written to
    default_lane: Lane  # lane of a run that names none
    dedupe_window_s: float  # a repeated idempotency key within this window collapses
    max_body_bytes: int  # larger request bodies are refused before parsing
    payload_schema: Path | None  # Avro schema (.avsc) a run's payload must match


def load_intake_config(topology: Topology) -> IntakeConfig:
    """The intake settings of `topology`. Raises ConfigError when the file has no intake
    section and the workflow leaves entry_stage or default_lane open (see Topology)."""
    if topology.intake is not None:
        return topology.intake
    try:
        return resolve_intake(IntakeIn(), topology)
    except Problem as problem:
        raise ConfigError(topology.source, dotted(problem.path), problem.problem) from None


def intake_limits(config: IntakeConfig) -> AdmissionLimits:
    """The admission policy's limits for this intake."""
    return config.limits


def resolve_intake(section: IntakeIn, topology: Topology) -> IntakeConfig:
    """Check `section` against the workflow it serves. Raises Problem (the first mistake)."""
    max_queued = section.max_queued_runs
    per_tenant = section.max_queued_per_tenant
    if per_tenant is None:
        per_tenant = min(DEFAULT_MAX_QUEUED_PER_TENANT, max_queued)
    _not_above_workflow(per_tenant, max_queued, ("max_queued_per_tenant",))
    bounds, weights = _tenants(section.tenants, max_queued)
    saturation = section.saturation_ratio
    pressure = section.pressure_saturation_ratio
    if pressure is None:
        pressure = min(DEFAULT_PRESSURE_SATURATION_RATIO, saturation)
    elif pressure > saturation:
        _fail(
            ("pressure_saturation_ratio",),
            f"{show(pressure)} is above saturation_ratio ({show(saturation)}); under "
            "downstream pressure saturation must start earlier, not later",
        )
    retry = section.retry_after_s
    if retry.max < retry.min:
        explicit = "max" in retry.model_fields_set
        _fail(
            ("retry_after_s", "max" if explicit else "min"),
            f"min ({show(retry.min)}) is above max ({show(retry.max)}"
            + ("" if explicit else ", the default")
            + ")",
        )
    limits = AdmissionLimits(
        max_queued=max_queued,
        max_queued_per_tenant=per_tenant,
        tenant_max_queued=MappingProxyType(bounds),
        tenant_weights=MappingProxyType(weights),
        saturation_ratio=saturation,
        pressure_saturation_ratio=pressure,
        lanes=MappingProxyType(_lanes(section.lanes, topology.lanes)),
        retry_after_min_s=retry.min,
        retry_after_max_s=retry.max,
        deadline_action=section.deadline_action,
    )
    return IntakeConfig(
        limits=limits,
        entry_stage=_entry_stage(section.entry_stage, topology),
        default_lane=_default_lane(section.default_lane, topology.lanes),
        dedupe_window_s=section.dedupe_window_s,
        max_body_bytes=section.max_body_bytes,
        payload_schema=_payload_schema(section.payload_schema, topology.source),
    )


def _tenants(
    tenants: dict[str, TenantIn], max_queued: int
) -> tuple[dict[str, int], dict[str, float]]:
    bounds: dict[str, int] = {}
    weights: dict[str, float] = {}
    for name, tenant in tenants.items():
        at: KeyPath = ("tenants", name)
        if not name:
            _fail(at, "a tenant name must not be empty")
        if tenant.max_queued is not None:
            bounds[name] = tenant.max_queued
            _not_above_workflow(tenant.max_queued, max_queued, (*at, "max_queued"))
        if "weight" in tenant.model_fields_set:
            weights[name] = tenant.weight
    return bounds, weights


def _lanes(given: dict[str, LaneIn], workflow_lanes: tuple[Lane, ...]) -> dict[Lane, LanePolicy]:
    policies = {lane: DEFAULT_LANE_POLICIES[lane] for lane in workflow_lanes}
    for name, spec in given.items():
        at: KeyPath = ("lanes", name)
        lane = _lane(name, at, workflow_lanes)
        action = spec.on_saturation or policies[lane].on_saturation
        if "delay_s" in spec.model_fields_set and action != "delay":
            _fail((*at, "delay_s"), f"is only for on_saturation: delay, not {action}")
        if spec.downgrade_to is not None and action != "downgrade":
            _fail((*at, "downgrade_to"), f"is only for on_saturation: downgrade, not {action}")
        lesser = workflow_lanes[workflow_lanes.index(lane) + 1 :]
        target: Lane | None = None
        if action == "downgrade":
            if not lesser:
                _fail(
                    (*at, "on_saturation"),
                    f"{lane!r} is the least urgent lane; it cannot downgrade",
                )
            if spec.downgrade_to is None:
                hint = f" (one of {', '.join(lesser)})"
                _fail(at, f"on_saturation: downgrade needs downgrade_to, a less urgent lane{hint}")
            target = _lane(spec.downgrade_to, (*at, "downgrade_to"), workflow_lanes)
            if target not in lesser:
                _fail(
                    (*at, "downgrade_to"),
                    f"{target!r} is not less urgent than {lane!r}; use one of {', '.join(lesser)}",
                )
        policies[lane] = LanePolicy(action, spec.delay_s, target)
    return policies


def _entry_stage(value: str | None, topology: Topology) -> str:
    at: KeyPath = ("entry_stage",)
    entries = [stage.name for stage in topology.entry_stages]
    if value is None:
        if len(entries) == 1:
            return entries[0]
        if not entries:
            _fail(at, "the workflow has no foreground stage that no other stage feeds")
        _fail(at, f"the workflow has several entry stages ({', '.join(entries)}); name one")
    if value not in topology.stages:
        _fail(at, f"unknown stage {value!r}{suggest(value, list(topology.stages), 'stages')}")
    if value not in entries:
        why = (
            "a background stage"
            if topology.stages[value].background
            else "fed by another stage, so runs would skip the stages before it"
        )
        _fail(at, f"stage {value!r} is {why}; entry stages: {', '.join(entries) or 'none'}")
    return value


def _default_lane(value: str | None, workflow_lanes: tuple[Lane, ...]) -> Lane:
    at: KeyPath = ("default_lane",)
    if value is None:
        if DEFAULT_LANE not in workflow_lanes:
            _fail(
                at,
                f"the workflow has no {DEFAULT_LANE!r} lane, the default; name one of "
                f"{', '.join(workflow_lanes)}",
            )
        return DEFAULT_LANE
    return _lane(value, at, workflow_lanes)


def _payload_schema(value: str | None, source: str) -> Path | None:
    at: KeyPath = ("payload_schema",)
    if value is None:
        return None
    # Relative to the topology file, so the pair can move together.
    path = Path(source).parent / value
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        _fail(at, f"file not found: {path} (paths are relative to the topology file)")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(at, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(at, f"{path} is not JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}")
    if not isinstance(schema, dict) or "type" not in schema:
        _fail(at, f"{path} is not an Avro schema: expected a JSON object with a 'type'")
    return path


def _lane(value: str, at: KeyPath, workflow_lanes: tuple[Lane, ...]) -> Lane:
    lane = next((known for known in LANES if known == value), None)
    if lane is None:
        _fail(at, f"unknown lane {value!r}{suggest(value, list(LANES), 'lanes')}")
    if lane not in workflow_lanes:
        _fail(
            at, f"lane {value!r} is not one of the workflow's lanes ({', '.join(workflow_lanes)})"
        )
    return lane


def _not_above_workflow(bound: int, max_queued: int, at: KeyPath) -> None:
    if bound > max_queued:
        _fail(
            at,
            f"{bound} is above max_queued_runs ({max_queued}); a tenant cannot queue more "
            "than the whole workflow",
        )


def _fail(at: KeyPath, problem: str) -> NoReturn:
    # Paths here are below `intake`; the Problem carries the full path from the file's top.
    raise Problem(("intake", *at), problem)
