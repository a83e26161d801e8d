"""Owns the `degradation:` section of a topology file: its keys (pydantic, strict, like the
rest of the file), the checks against the workflow (stages, tools, lanes, review stages)
and the frozen DegradationSpec the runtime reads.

Must not decide a level (streams.policy.degradation does) nor word pydantic errors
(streams.topology._errors does); every mistake is one Problem at the key path to change.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from streams.policy.degradation import (
    AgeCondition,
    Condition,
    FlagCondition,
    FlagKind,
    Ladder,
    LaneAction,
    LevelSpec,
)
from streams.topology._errors import KeyPath, Problem, null_is_empty, suggest
from streams.types import Lane

if TYPE_CHECKING:
    from streams.topology._objects import Topology

DEFAULT_BASE_LEVEL = "normal"
DEFAULT_MIN_DWELL_S = 60.0
ANY_STAGE = "any"
_NAME = re.compile(r"[a-z0-9_-]{1,64}")


class _In(BaseModel):
    # The same strictness as streams.topology._model.In (not imported: _model imports this).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class AgeConditionIn(_In):
    stage: str | None = None  # left out: the entry stage; "any": any stage
    enter: float = Field(gt=0)
    exit: float = Field(ge=0)


class WhenIn(_In):
    oldest_age_s: AgeConditionIn | None = None
    pressure_paused: list[str] = Field(default_factory=list)
    tool_open: list[str] = Field(default_factory=list)
    tool_saturated: list[str] = Field(default_factory=list)
    review_full: list[str] = Field(default_factory=list)


class LevelIntakeIn(_In):
    lanes: Annotated[dict[str, LaneAction], null_is_empty()] = Field(default_factory=dict)


class LevelIn(_In):
    when: WhenIn
    knobs: Annotated[dict[str, Any], null_is_empty()] = Field(default_factory=dict)
    pause_stages: list[str] = Field(default_factory=list)
    require_review: list[str] = Field(default_factory=list)
    intake: Annotated[LevelIntakeIn, null_is_empty()] = LevelIntakeIn()


class DegradationIn(_In):
    base_level: str = DEFAULT_BASE_LEVEL
    min_dwell_s: float = Field(default=DEFAULT_MIN_DWELL_S, ge=0)
    levels: dict[str, LevelIn] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class DegradationSpec:
    """A workflow's ladder, and for each stage named by a level's `require_review` the
    review stage its records pass first (the one review stage whose downstream is it)."""

    ladder: Ladder
    review_detours: Mapping[str, str]

    @property
    def watched_stages(self) -> tuple[str, ...]:
        """Stages whose oldest queued age a level's conditions read (every stage for an
        `any` condition is the caller's to expand: it is None in the condition)."""
        names = {
            c.stage
            for level in self.ladder.levels
            for c in level.when
            if isinstance(c, AgeCondition) and c.stage is not None
        }
        return tuple(sorted(names))

    @property
    def reads_any_stage(self) -> bool:
        return any(
            isinstance(c, AgeCondition) and c.stage is None
            for level in self.ladder.levels
            for c in level.when
        )


def resolve_degradation(
    given: DegradationIn | None, topology: Topology, entry_stage: str | None
) -> DegradationSpec | None:
    """`topology` is built but has no intake yet (the intake's default entry stage leaves
    out the review stages a level detours through); `entry_stage` is intake.entry_stage
    as written, if it is."""
    if given is None:
        return None
    at: KeyPath = ("degradation",)
    base = _level_name(given.base_level, (*at, "base_level"))
    levels = [LevelSpec(base)]
    detours: dict[str, str] = {}
    for name, level in given.levels.items():
        for i, stage in enumerate(level.require_review):
            detours[stage] = _detour(stage, (*at, "levels", name, "require_review", i), topology)
    if entry_stage is None:
        entries = [s.name for s in topology.entry_stages if s.name not in detours.values()]
        entry_stage = entries[0] if len(entries) == 1 else None
    for name, level in given.levels.items():
        here: KeyPath = (*at, "levels", name)
        _level_name(name, here)
        if name == base:
            raise Problem(here, f"is the base level ({base!r}); name the levels above it")
        levels.append(_level(name, level, here, topology, entry_stage))
    try:
        ladder = Ladder(levels=tuple(levels), min_dwell_s=given.min_dwell_s)
    except ValueError as exc:  # the policy's own checks, should they outgrow ours
        raise Problem(at, str(exc)) from None
    return DegradationSpec(ladder, types.MappingProxyType(detours))


def _level(
    name: str, level: LevelIn, at: KeyPath, topology: Topology, entry_stage: str | None
) -> LevelSpec:
    stages = topology.stages
    when = level.when
    conditions: list[Condition] = []
    if when.oldest_age_s is not None:
        conditions.append(
            _age(when.oldest_age_s, (*at, "when", "oldest_age_s"), topology, entry_stage)
        )
    flags: list[tuple[FlagKind, list[str]]] = [
        ("pressure_paused", when.pressure_paused),
        ("tool_open", when.tool_open),
        ("tool_saturated", when.tool_saturated),
        ("review_full", when.review_full),
    ]
    for kind, names in flags:
        for i, target in enumerate(names):
            where: KeyPath = (*at, "when", kind, i)
            if kind in ("tool_open", "tool_saturated"):
                if target not in topology.tools:
                    raise Problem(
                        where,
                        f"unknown tool {target!r}{suggest(target, list(topology.tools), 'tools')}",
                    )
            else:
                _known_stage(target, where, stages)
                if kind == "review_full" and stages[target].review is None:
                    raise Problem(where, f"stage {target!r} is not a review stage (kind: review)")
            conditions.append(FlagCondition(kind, target))
    if not conditions:
        raise Problem(
            (*at, "when"),
            "needs at least one condition (oldest_age_s, pressure_paused, tool_open, "
            "tool_saturated, review_full)",
        )
    for i, stage in enumerate(level.pause_stages):
        where = (*at, "pause_stages", i)
        _known_stage(stage, where, stages)
        if not stages[stage].background:
            raise Problem(
                where,
                f"stage {stage!r} is not a background stage; a level stops background stages "
                "only (pause a foreground stage by hand: streams control W pause --stage)",
            )
    lanes: dict[Lane, LaneAction] = {}
    for lane_name, action in level.intake.lanes.items():
        lane = next((lane for lane in topology.lanes if lane == lane_name), None)
        if lane is None:
            raise Problem(
                (*at, "intake", "lanes", lane_name),
                f"is not one of the workflow's lanes ({', '.join(topology.lanes)})",
            )
        lanes[lane] = action
    return LevelSpec(
        name,
        when=tuple(conditions),
        knobs=types.MappingProxyType(dict(level.knobs)),
        pause_stages=frozenset(level.pause_stages),
        require_review=frozenset(level.require_review),
        intake_lanes=types.MappingProxyType(lanes),
    )


def _detour(stage: str, at: KeyPath, topology: Topology) -> str:
    """The review stage `stage`'s records go through first when a level requires review."""
    _known_stage(stage, at, topology.stages)
    feeders = [
        s.name for s in topology.stages.values() if s.review is not None and stage in s.downstream
    ]
    if len(feeders) != 1:
        found = f"found {', '.join(feeders)}" if feeders else "found none"
        raise Problem(
            at,
            f"needs exactly one review stage (kind: review) with {stage!r} in its downstream, "
            f"where its records go first at this level; {found}",
        )
    return feeders[0]


def _age(
    given: AgeConditionIn, at: KeyPath, topology: Topology, entry_stage: str | None
) -> AgeCondition:
    if given.exit >= given.enter:
        raise Problem((*at, "exit"), f"must be below enter ({given.enter:g}), got {given.exit:g}")
    stage: str | None
    if given.stage == ANY_STAGE:
        stage = None
    elif given.stage is not None:
        _known_stage(given.stage, (*at, "stage"), topology.stages)
        stage = given.stage
    elif entry_stage is not None:
        stage = entry_stage
    else:
        raise Problem(
            (*at, "stage"),
            "the workflow has several entry stages: name the stage (or 'any')",
        )
    return AgeCondition(stage=stage, enter_s=given.enter, exit_s=given.exit)


def _level_name(name: str, at: KeyPath) -> str:
    if not _NAME.fullmatch(name):
        raise Problem(
            at, f"must be 1-64 characters of a-z, 0-9, '_' or '-' (it labels metrics), got {name!r}"
        )
    return name


def _known_stage(name: str, at: KeyPath, stages: Mapping[str, object]) -> None:
    if name not in stages:
        raise Problem(at, f"unknown stage {name!r}{suggest(name, list(stages), 'stages')}")
