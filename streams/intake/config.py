"""Intake settings: turn a topology's raw ``intake`` section into a frozen IntakeConfig.

Owns the section's format, defaults and validation; must not serve HTTP, touch Kafka or
decide admissions (streams.policy.admission does). Every mistake is one ConfigError naming
the topology file and the key path under ``intake``.

The section, every key optional (defaults shown)::

    intake:
      max_queued_runs: 10000          # hard bound of the workflow's queue
      max_queued_per_tenant: 1000     # hard bound per tenant (at most max_queued_runs)
      tenants:                        # per-tenant overrides
        acme: {max_queued: 2000, weight: 2.0}   # weight: fair-share weight, default 1.0
      saturation_ratio: 0.8           # saturated from this fraction of max_queued_runs
      pressure_saturation_ratio: 0.5  # ... or this one while downstream pressure pauses
      lanes:                          # what each lane's runs get while saturated
        urgent: {on_saturation: accept}
        standard: {on_saturation: delay, delay_s: 30}
        background: {on_saturation: reject}   # or: downgrade, with downgrade_to: <lane>
      retry_after_s: {min: 1, max: 60}
      deadline_action: reject         # or downgrade (to the least urgent lane)
      dedupe_window_s: 3600
      max_body_bytes: 65536
      payload_schema: schemas/run.avsc  # relative to the topology file; default none
      entry_stage: plan               # default: the workflow's only entry stage
      default_lane: standard
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

from streams.errors import ConfigError
from streams.policy.admission import (
    DEADLINE_ACTIONS,
    DEFAULT_LANE_POLICIES,
    SATURATION_ACTIONS,
    AdmissionLimits,
    DeadlineAction,
    LanePolicy,
    SaturationAction,
)
from streams.topology import Topology
from streams.types import LANES, Lane

__all__ = ["IntakeConfig", "intake_limits", "load_intake_config"]

DEFAULT_MAX_QUEUED_RUNS = 10_000
DEFAULT_MAX_QUEUED_PER_TENANT = 1_000  # or max_queued_runs, if that is lower
DEFAULT_SATURATION_RATIO = 0.8
DEFAULT_PRESSURE_SATURATION_RATIO = 0.5  # or saturation_ratio, if that is lower
DEFAULT_RETRY_AFTER_MIN_S = 1.0
DEFAULT_RETRY_AFTER_MAX_S = 60.0
DEFAULT_DELAY_S = 30.0
DEFAULT_DEDUPE_WINDOW_S = 3600.0
DEFAULT_MAX_BODY_BYTES = 65_536
DEFAULT_LANE: Lane = "standard"

_KEYS = (
    "max_queued_runs",
    "max_queued_per_tenant",
    "tenants",
    "saturation_ratio",
    "pressure_saturation_ratio",
    "lanes",
    "retry_after_s",
    "deadline_action",
    "dedupe_window_s",
    "max_body_bytes",
    "payload_schema",
    "entry_stage",
    "default_lane",
)
_TENANT_KEYS = ("max_queued", "weight")
_LANE_KEYS = ("on_saturation", "delay_s", "downgrade_to")
_RETRY_KEYS = ("min", "max")

KeyPath = tuple[str, ...]
_Choice = TypeVar("_Choice", bound=str)


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
    """Parse and validate ``topology.intake``. Raises ConfigError (the first mistake)."""
    try:
        return _parse(topology)
    except _Problem as problem:
        key_path = ".".join(("intake", *problem.path))
        raise ConfigError(topology.source, key_path, problem.problem) from None


def intake_limits(config: IntakeConfig) -> AdmissionLimits:
    """The admission policy's limits for this intake."""
    return config.limits


# --------------------------------------------------------------------------- parsing


class _Problem(Exception):
    def __init__(self, path: KeyPath, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


def _parse(topology: Topology) -> IntakeConfig:
    raw = _section(topology.intake, (), _KEYS)
    max_queued = _count(raw, "max_queued_runs", DEFAULT_MAX_QUEUED_RUNS, ())
    per_tenant = _count(
        raw, "max_queued_per_tenant", min(DEFAULT_MAX_QUEUED_PER_TENANT, max_queued), ()
    )
    _not_above_workflow(per_tenant, max_queued, ("max_queued_per_tenant",))
    bounds, weights = _tenants(raw.get("tenants"), max_queued)
    saturation = _ratio(raw, "saturation_ratio", DEFAULT_SATURATION_RATIO)
    pressure = _ratio(
        raw, "pressure_saturation_ratio", min(DEFAULT_PRESSURE_SATURATION_RATIO, saturation)
    )
    if pressure > saturation:
        _fail(
            ("pressure_saturation_ratio",),
            f"{_show(pressure)} is above saturation_ratio ({_show(saturation)}); under "
            "downstream pressure saturation must start earlier, not later",
        )
    retry_min, retry_max = _retry_after(raw.get("retry_after_s"))
    deadline_action: DeadlineAction = _choice(
        raw.get("deadline_action", "reject"), ("deadline_action",), DEADLINE_ACTIONS
    )
    limits = AdmissionLimits(
        max_queued=max_queued,
        max_queued_per_tenant=per_tenant,
        tenant_max_queued=MappingProxyType(bounds),
        tenant_weights=MappingProxyType(weights),
        saturation_ratio=saturation,
        pressure_saturation_ratio=pressure,
        lanes=MappingProxyType(_lanes(raw.get("lanes"), topology.lanes)),
        retry_after_min_s=retry_min,
        retry_after_max_s=retry_max,
        deadline_action=deadline_action,
    )
    return IntakeConfig(
        limits=limits,
        entry_stage=_entry_stage(raw.get("entry_stage"), topology),
        default_lane=_default_lane(raw.get("default_lane"), topology.lanes),
        dedupe_window_s=_seconds(raw, "dedupe_window_s", DEFAULT_DEDUPE_WINDOW_S, ()),
        max_body_bytes=_count(raw, "max_body_bytes", DEFAULT_MAX_BODY_BYTES, ()),
        payload_schema=_payload_schema(raw.get("payload_schema"), topology.source),
    )


def _tenants(value: object, max_queued: int) -> tuple[dict[str, int], dict[str, float]]:
    bounds: dict[str, int] = {}
    weights: dict[str, float] = {}
    for name, entry in _section(value, ("tenants",), None).items():
        at = ("tenants", name)
        if not name:
            _fail(at, "a tenant name must not be empty")
        tenant = _section(entry, at, _TENANT_KEYS)
        if "max_queued" in tenant:
            bounds[name] = _count(tenant, "max_queued", 0, at)
            _not_above_workflow(bounds[name], max_queued, (*at, "max_queued"))
        if "weight" in tenant:
            weights[name] = _positive(tenant["weight"], (*at, "weight"))
    return bounds, weights


def _lanes(value: object, workflow_lanes: tuple[Lane, ...]) -> dict[Lane, LanePolicy]:
    given = _section(value, ("lanes",), None)
    policies = {lane: DEFAULT_LANE_POLICIES[lane] for lane in workflow_lanes}
    for name, entry in given.items():
        at = ("lanes", name)
        lane = _lane(name, at, workflow_lanes)
        spec = _section(entry, at, _LANE_KEYS)
        action: SaturationAction = _choice(
            spec.get("on_saturation", policies[lane].on_saturation),
            (*at, "on_saturation"),
            SATURATION_ACTIONS,
        )
        if "delay_s" in spec and action != "delay":
            _fail((*at, "delay_s"), f"is only for on_saturation: delay, not {action}")
        if "downgrade_to" in spec and action != "downgrade":
            _fail((*at, "downgrade_to"), f"is only for on_saturation: downgrade, not {action}")
        lesser = workflow_lanes[workflow_lanes.index(lane) + 1 :]
        target: Lane | None = None
        if action == "downgrade":
            if not lesser:
                _fail(
                    (*at, "on_saturation"),
                    f"{lane!r} is the least urgent lane; it cannot downgrade",
                )
            if "downgrade_to" not in spec:
                hint = f" (one of {', '.join(lesser)})" if lesser else ""
                _fail(at, f"on_saturation: downgrade needs downgrade_to, a less urgent lane{hint}")
            target = _lane(spec["downgrade_to"], (*at, "downgrade_to"), workflow_lanes)
            if target not in lesser:
                _fail(
                    (*at, "downgrade_to"),
                    f"{target!r} is not less urgent than {lane!r}; use one of {', '.join(lesser)}",
                )
        delay_s = _seconds(spec, "delay_s", DEFAULT_DELAY_S, at)
        policies[lane] = LanePolicy(action, delay_s, target)
    return policies


def _retry_after(value: object) -> tuple[float, float]:
    at: KeyPath = ("retry_after_s",)
    spec = _section(value, at, _RETRY_KEYS)
    low = _seconds(spec, "min", DEFAULT_RETRY_AFTER_MIN_S, at)
    high = _seconds(spec, "max", DEFAULT_RETRY_AFTER_MAX_S, at)
    if high < low:
        key = "max" if "max" in spec else "min"
        _fail(
            (*at, key),
            f"min ({_show(low)}) is above max ({_show(high)}"
            + ("" if "max" in spec else ", the default")
            + ")",
        )
    return low, high


def _entry_stage(value: object, topology: Topology) -> str:
    at: KeyPath = ("entry_stage",)
    entries = [stage.name for stage in topology.entry_stages]
    if value is None:
        if len(entries) == 1:
            return entries[0]
        if not entries:
            _fail(at, "the workflow has no foreground stage that no other stage feeds")
        _fail(at, f"the workflow has several entry stages ({', '.join(entries)}); name one")
    if not isinstance(value, str):
        _fail(at, f"must be a stage name, got {_show(value)}")
    if value not in topology.stages:
        _fail(at, f"unknown stage {value!r}{_suggest(value, list(topology.stages))}")
    if value not in entries:
        why = (
            "a background stage"
            if topology.stages[value].background
            else "fed by another stage, so runs would skip the stages before it"
        )
        _fail(at, f"stage {value!r} is {why}; entry stages: {', '.join(entries) or 'none'}")
    return value


def _default_lane(value: object, workflow_lanes: tuple[Lane, ...]) -> Lane:
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


def _payload_schema(value: object, source: str) -> Path | None:
    at: KeyPath = ("payload_schema",)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        _fail(at, f"must be the path of an .avsc file, got {_show(value)}")
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


# --------------------------------------------------------------------------- small checks


def _section(value: object, at: KeyPath, allowed: tuple[str, ...] | None) -> Mapping[str, Any]:
    """A mapping with text keys (an empty YAML key, None, reads as empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        _fail(at, f"must be a mapping, got {_show(value)}")
    for key in value:
        if not isinstance(key, str):
            _fail(at, f"keys must be text, got {_show(key)}; quote it")
        if allowed is not None and key not in allowed:
            _fail((*at, key), f"unknown key{_suggest(key, list(allowed))}")
    return value


def _count(spec: Mapping[str, Any], key: str, default: int, at: KeyPath) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        _fail((*at, key), f"must be a whole number, got {_show(value)}")
    if value <= 0:
        _fail((*at, key), f"must be > 0, got {value}")
    return value


def _seconds(spec: Mapping[str, Any], key: str, default: float, at: KeyPath) -> float:
    return _positive(spec.get(key, default), (*at, key))


def _positive(value: object, at: KeyPath) -> float:
    number = _number(value, at)
    if number <= 0:
        _fail(at, f"must be > 0, got {_show(value)}")
    return number


def _ratio(spec: Mapping[str, Any], key: str, default: float) -> float:
    number = _number(spec.get(key, default), (key,))
    if not 0 < number <= 1:
        _fail((key,), f"must be in (0, 1], a fraction of max_queued_runs, got {_show(number)}")
    return number


def _number(value: object, at: KeyPath) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(at, f"must be a number, got {_show(value)}")
    if not math.isfinite(value):
        _fail(at, f"must be a finite number, got {_show(value)}")
    return float(value)


def _choice(value: object, at: KeyPath, choices: tuple[_Choice, ...]) -> _Choice:
    for choice in choices:
        if value == choice:
            return choice
    _fail(at, f"must be one of {', '.join(choices)}, got {_show(value)}")


def _lane(value: object, at: KeyPath, workflow_lanes: tuple[Lane, ...]) -> Lane:
    if not isinstance(value, str):
        _fail(at, f"must be a lane name, got {_show(value)}")
    lane = next((known for known in LANES if known == value), None)
    if lane is None:
        _fail(at, f"unknown lane {value!r}{_suggest(value, list(LANES))}")
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


def _suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known: {', '.join(known)})" if known else ""


def _show(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(at: KeyPath, problem: str) -> NoReturn:
    raise _Problem(at, problem)
