"""The degradation ladder: which level a workflow runs at, from its signals, with hysteresis.

Owns the ordered levels, what enters each (a queue age, downstream pressure, a tool's
breaker open or saturated, a full review queue), the no-flapping exit rule, the knobs each
level accumulates, and how an operator's forced level wins. Must not read a clock or do
I/O: callers pass readings and times in (streams.runtime.degradation gathers them).

Rules, applied on each ``LadderState.update``:
  * a level's conditions are OR-ed: any condition reading ``enter`` enters the level (and
    every level below it) at once; entering never waits, it protects a bound.
  * a level is left only once every one of its conditions has read ``clear`` (under its
    exit threshold) continuously for ``min_dwell_s``; a reading back in the band (between
    exit and enter) or a missing reading restarts that wait. So every exit comes at least
    ``min_dwell_s`` after the last entering reading, and the level cannot flap faster.
  * the level is the highest level entered; level 0 is the base (normal) and has no
    conditions.
streams.policy.hysteresis's gate counts its dwell from the last transition, so a level
entered long ago would drop the moment its signal dipped; the ladder needs the dwell under
the exit threshold, hence its own small latch here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from streams.types import Lane

Reading = Literal["enter", "hold", "clear"]
FlagKind = Literal["pressure_paused", "tool_open", "tool_saturated", "review_full"]
FLAG_KINDS: tuple[FlagKind, ...] = ("pressure_paused", "tool_open", "tool_saturated", "review_full")
#: What a lane's new runs get at a level (README "Degradation"): accept as usual, wait the
#: lane's delay_s, or be refused with reason code "degraded".
LaneAction = Literal["accept", "delay", "reject"]
LANE_ACTIONS: tuple[LaneAction, ...] = ("accept", "delay", "reject")
_RANK: dict[Reading, int] = {"clear": 0, "hold": 1, "enter": 2}


@dataclass(frozen=True, slots=True)
class Signals:
    """One reading of the workflow. oldest_age_s: per stage, the age of its oldest queued
    record (a stage missing: not read). The sets name what is so now: stages paused by
    downstream pressure, tools whose breaker is open (or forced open), tools saturated,
    review stages whose queue is full."""

    oldest_age_s: Mapping[str, float] = field(default_factory=dict)
    pressure_paused: frozenset[str] = frozenset()
    tools_open: frozenset[str] = frozenset()
    tools_saturated: frozenset[str] = frozenset()
    reviews_full: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class AgeCondition:
    """The oldest queued record at `stage` (None: at any stage) is at least `enter_s` old;
    clear below `exit_s`."""

    stage: str | None
    enter_s: float
    exit_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.enter_s) and math.isfinite(self.exit_s)):
            raise ValueError("enter_s and exit_s must be finite numbers")
        if not 0 <= self.exit_s < self.enter_s:
            raise ValueError(
                f"exit_s ({self.exit_s}) must be >= 0 and below enter_s ({self.enter_s}), "
                "or the level would flap"
            )

    def reading(self, signals: Signals) -> Reading:
        ages = signals.oldest_age_s
        if self.stage is None:
            if not ages:
                return "hold"
            age = max(ages.values())
        elif self.stage in ages:
            age = ages[self.stage]
        else:
            return "hold"  # not read: what a missing reading means is no reason to move
        if age >= self.enter_s:
            return "enter"
        return "clear" if age < self.exit_s else "hold"


@dataclass(frozen=True, slots=True)
class FlagCondition:
    """A yes/no signal about one stage or tool: `pressure_paused` (the stage is paused by
    downstream pressure), `tool_open`, `tool_saturated`, `review_full`."""

    kind: FlagKind
    name: str

    def reading(self, signals: Signals) -> Reading:
        named = {
            "pressure_paused": signals.pressure_paused,
            "tool_open": signals.tools_open,
            "tool_saturated": signals.tools_saturated,
            "review_full": signals.reviews_full,
        }[self.kind]
        return "enter" if self.name in named else "clear"


Condition = AgeCondition | FlagCondition


def _no_knobs() -> Mapping[str, object]:
    return MappingProxyType({})


def _no_lanes() -> Mapping[Lane, LaneAction]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class LevelSpec:
    """One rung. knobs: free-form values handlers read; pause_stages: stages stopped at this
    level; require_review: stages whose records pass their review stage first;
    intake_lanes: what each lane's new runs get. A level also has everything of the levels
    below it (knobs overridden by name, sets and lanes merged)."""

    name: str
    when: tuple[Condition, ...] = ()
    knobs: Mapping[str, object] = field(default_factory=_no_knobs)
    pause_stages: frozenset[str] = frozenset()
    require_review: frozenset[str] = frozenset()
    intake_lanes: Mapping[Lane, LaneAction] = field(default_factory=_no_lanes)


@dataclass(frozen=True, slots=True)
class LevelView:
    """A level as handlers and the runtime see it (`ctx.degradation`): its name, its index
    (0 = normal), the knobs and acted-on sets accumulated up to it, and whether an
    operator forced it."""

    level: str
    index: int
    knobs: Mapping[str, object]
    pause_stages: frozenset[str]
    require_review: frozenset[str]
    intake_lanes: Mapping[Lane, LaneAction]
    forced: bool = False

    @property
    def degraded(self) -> bool:
        return self.index > 0

    def knob(self, name: str, default: object = None) -> object:
        return self.knobs.get(name, default)


@dataclass(frozen=True, slots=True)
class Ladder:
    """The ordered levels, base first (it has no conditions), and the exit dwell."""

    levels: tuple[LevelSpec, ...]
    min_dwell_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("a ladder needs at least its base level")
        if not (self.min_dwell_s >= 0 and math.isfinite(self.min_dwell_s)):
            raise ValueError(f"min_dwell_s must be a finite number >= 0, got {self.min_dwell_s}")
        names = [level.name for level in self.levels]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"level {name!r} is listed twice")
        if self.levels[0].when:
            raise ValueError(
                f"the base level {names[0]!r} is where the ladder rests: no conditions"
            )
        for level in self.levels[1:]:
            if not level.when:
                raise ValueError(f"level {level.name!r} needs at least one condition")

    def index_of(self, name: str) -> int | None:
        return next((i for i, level in enumerate(self.levels) if level.name == name), None)

    def view(self, index: int, *, forced: bool = False) -> LevelView:
        knobs: dict[str, object] = {}
        pause: set[str] = set()
        review: set[str] = set()
        lanes: dict[Lane, LaneAction] = {}
        for level in self.levels[: index + 1]:
            knobs.update(level.knobs)
            pause |= level.pause_stages
            review |= level.require_review
            lanes.update(level.intake_lanes)
        return LevelView(
            self.levels[index].name,
            index,
            MappingProxyType(knobs),
            frozenset(pause),
            frozenset(review),
            MappingProxyType(lanes),
            forced,
        )


#: The ladder of a workflow without a `degradation:` section: one level, never left.
NO_LADDER = Ladder(levels=(LevelSpec("normal"),), min_dwell_s=0.0)
NORMAL = NO_LADDER.view(0)


class LadderState:
    """The computed level over time. ``start`` seeds it at a level (a process joining a
    degraded workflow takes the level the others publish; see README "Degradation")."""

    __slots__ = ("_active", "_clear_since", "ladder", "level")

    def __init__(self, ladder: Ladder, *, start: int = 0) -> None:
        self.ladder = ladder
        n = len(ladder.levels)
        self._active = [0 < i <= start for i in range(n)]
        self._clear_since: list[float | None] = [None] * n
        self.level = min(max(start, 0), n - 1)

    def update(self, signals: Signals, now_mono: float) -> int:
        """Feed one reading taken at ``now_mono``; returns the level's index."""
        dwell = self.ladder.min_dwell_s
        for i, spec in enumerate(self.ladder.levels):
            if i == 0:
                continue
            worst = max((c.reading(signals) for c in spec.when), key=_RANK.__getitem__)
            if worst == "enter":
                self._active[i] = True
                self._clear_since[i] = None
            elif worst == "hold":
                self._clear_since[i] = None
            elif self._active[i]:
                since = self._clear_since[i]
                if since is None:
                    since = self._clear_since[i] = now_mono
                if now_mono - since >= dwell:
                    self._active[i] = False
                    self._clear_since[i] = None
        # Entering a level enters those below it; the highest entered is the level.
        self.level = max((i for i, active in enumerate(self._active) if active), default=0)
        for i in range(1, self.level):
            if not self._active[i]:
                self._active[i] = True
                self._clear_since[i] = None
        return self.level


@dataclass(frozen=True, slots=True)
class ForcedLevel:
    """An operator's forced level (streams control W degrade), until `expires_at` (wall
    seconds; None: until cleared)."""

    level: str
    expires_at: float | None = None

    def in_force(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


def effective_level(ladder: Ladder, computed: int, forced: ForcedLevel | None, now: float) -> int:
    """The level everyone acts on: a forced level in force wins, up or down (the operator
    knows about the incident); a forced name the ladder lacks is ignored."""
    if forced is None or not forced.in_force(now):
        return computed
    index = ladder.index_of(forced.level)
    return computed if index is None else index
