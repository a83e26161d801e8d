"""Topology files: load one workflow's YAML, validate it, hand out frozen objects.

Owns the file format, its validation and every name derived from it (topics, consumer
groups, lane routing). Must not talk to Kafka or call handlers: it only imports them to
prove they exist. Every mistake surfaces as one ConfigError naming the file and key path.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import types
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.errors import ConfigError
from streams.types import LANES, DeliveryMode, Lane

__all__ = [
    "CountThresholds",
    "DeadLetterLimit",
    "OnStale",
    "PressureConfig",
    "SecondsThresholds",
    "Stage",
    "TopicSpec",
    "Topology",
    "load_topology",
    "parse_topology",
]

#: What a stage does when its downstream pressure reports go stale: pause to be safe, or
#: hold its current pause/resume state.
OnStale = Literal["pause", "hold"]

DEFAULT_PARTITIONS = 6
DEFAULT_RETENTION_MS = 7 * 24 * 60 * 60 * 1000  # Kafka's own default retention.ms
KEEP_FOREVER_MS = -1  # Kafka's retention.ms for "never delete by age"
# Every worker and the intake read the whole pressure topic; it holds a few small
# compacted records per worker, so one partition keeps reading it trivial.
PRESSURE_TOPIC_PARTITIONS = 1

# Names become parts of topic names joined by '.', so they may not contain '.'; 64 chars
# each keeps "{workflow}.{stage}.{lane}" well under Kafka's 249-character topic limit.
_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_HANDLER = re.compile(rf"{_DOTTED}:{_DOTTED}")
_LANE_BY_NAME: dict[str, Lane] = {lane: lane for lane in LANES}

KeyPath = tuple[str | int, ...]


# --------------------------------------------------------------------------- frozen output


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How a topic should be created. retention_ms -1 means keep forever."""

    partitions: int
    retention_ms: int
    compacted: bool = False


@dataclass(frozen=True, slots=True)
class CountThresholds:
    """A hysteresis band on a count (e.g. lag): pause at `pause`, resume below `resume`."""

    pause: int
    resume: int


@dataclass(frozen=True, slots=True)
class SecondsThresholds:
    """A hysteresis band on a duration in seconds; resume < pause always holds."""

    pause: float
    resume: float


@dataclass(frozen=True, slots=True)
class PressureConfig:
    """Thresholds a stage applies to its downstream stages' pressure reports."""

    lag: CountThresholds
    oldest_age_s: SecondsThresholds
    p95_latency_s: SecondsThresholds | None
    min_dwell_s: float  # least time to stay paused or resumed, against flapping
    stale_after_s: float  # a report older than this is stale
    on_stale: OnStale


@dataclass(frozen=True, slots=True)
class DeadLetterLimit:
    """The safety valve: stop the worker rather than dead-letter everything."""

    max_ratio: float  # dead-lettered / processed over the last `window` records
    window: int
    min_records: int  # no ratio verdict before this many records
    max_consecutive: int | None  # None: no limit on dead letters in a row


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of a workflow: a consumer group running one handler on its input topics.

    `lanes` is most urgent first. A background stage always has lanes ("background",) and
    reads either its own background topic or `input_topic`. `routes` maps each of its lanes
    to the topics it emits to (see `output_topics`).
    """

    source: str
    workflow: str
    name: str
    handler: str  # "package.module:function", imported by resolve_handler()
    lanes: tuple[Lane, ...]
    concurrency: int
    partition_buffer: int
    partition_resume: int
    handler_timeout_s: float
    max_queue_age_s: float
    max_lag: int
    downstream: tuple[str, ...]
    pressure: PressureConfig
    delivery: DeliveryMode
    topic_spec: TopicSpec  # for the topics this stage owns (its lane topics)
    background: bool
    input_topic: str | None
    yields_to: tuple[str, ...]
    dead_letter_limit: DeadLetterLimit
    routes: Mapping[Lane, tuple[str, ...]]

    @property
    def consumer_group(self) -> str:
        return f"{self.workflow}.{self.name}"

    @property
    def input_topics_by_lane(self) -> dict[Lane, str]:
        """Input topic of each lane, most urgent first (the order a worker serves them)."""
        if self.input_topic is not None:
            return {"background": self.input_topic}
        return {lane: _lane_topic(self.workflow, self.name, lane) for lane in self.lanes}

    @property
    def input_topics(self) -> tuple[str, ...]:
        return tuple(self.input_topics_by_lane.values())

    def output_topics(self, lane: Lane) -> tuple[str, ...]:
        """Topics a record of `lane` goes to once this stage is done with it.

        One topic per downstream stage: its topic for `lane`, or, if it does not take
        `lane`, its most urgent lane that is less urgent than `lane` (never promote). A
        foreground stage with no downstream emits to "{workflow}.completed"; a background
        stage with no downstream emits nothing. Raises ValueError for a lane the stage
        does not take (a background stage treats every record as lane "background").
        """
        try:
            return self.routes[lane]
        except KeyError:
            raise ValueError(
                f"stage {self.name!r} does not take lane {lane!r} "
                f"(it takes {', '.join(self.lanes)})"
            ) from None

    def resolve_handler(self) -> Callable[..., Any]:
        """Import the handler. Raises ConfigError if it is missing or not callable."""
        try:
            return _import_handler(self.handler)
        except _Problem as problem:
            raise ConfigError(self.source, f"stages.{self.name}.handler", problem.problem) from None


@dataclass(frozen=True, slots=True)
class Topology:
    """One workflow: its stages (in file order) and every topic it needs."""

    source: str
    workflow: str
    delivery: DeliveryMode
    lanes: tuple[Lane, ...]  # most urgent first, the order workers serve them
    dead_letter_topic: str
    topic_defaults: TopicSpec
    intake: Mapping[str, Any]  # reserved; kept as given (top level read-only)
    stages: Mapping[str, Stage]

    @property
    def pressure_topic(self) -> str:
        return f"{self.workflow}.pressure"

    @property
    def completed_topic(self) -> str:
        return f"{self.workflow}.completed"

    @property
    def runs_topic(self) -> str:
        """The run ledger the intake replicas share: compacted, one partition, so its order
        is the order of every replica's admissions (see streams.intake.state)."""
        return f"{self.workflow}.runs"

    @property
    def decisions_topic(self) -> str:
        return f"{self.workflow}.decisions"

    @property
    def delayed_topic(self) -> str:
        """Admitted runs waiting for their due time before entering the first stage."""
        return f"{self.workflow}.delayed"

    @property
    def entry_stages(self) -> tuple[Stage, ...]:
        """Foreground stages no other stage emits to: where the intake puts new runs."""
        fed = {name for stage in self.stages.values() for name in stage.downstream}
        return tuple(s for s in self.stages.values() if not s.background and s.name not in fed)

    def all_topics(self) -> dict[str, TopicSpec]:
        """Every topic the workflow reads or writes, with how to create it.

        An explicit `input_topic` from outside the workflow is included with its stage's
        spec, so "create if missing" works; one the workflow already defines keeps that spec.
        """
        topics = {
            self.pressure_topic: TopicSpec(PRESSURE_TOPIC_PARTITIONS, KEEP_FOREVER_MS, True),
            self.completed_topic: self.topic_defaults,
            self.dead_letter_topic: self.topic_defaults,
            self.runs_topic: TopicSpec(1, KEEP_FOREVER_MS, True),
            self.decisions_topic: self.topic_defaults,
            self.delayed_topic: self.topic_defaults,
        }
        # Lane topics first, so a stage tapping another's topic never decides its spec.
        for stage in sorted(self.stages.values(), key=lambda s: s.input_topic is not None):
            for topic in stage.input_topics:
                topics.setdefault(topic, stage.topic_spec)
        return topics


def load_topology(path: str | Path, *, validate_handlers: bool = True) -> Topology:
    """Read and validate a topology file. Raises ConfigError (one, the first found).

    With validate_handlers, every handler module is imported (running its top level), so
    tooling that only needs topic names can pass False.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(source, "", "is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, "", f"invalid YAML{where}: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError(source, "", "file is empty; copy topology/example.yaml to start")
    return _parse(data, source, validate_handlers, root)


def parse_topology(data: object, source: str, *, validate_handlers: bool = True) -> Topology:
    """Validate already-parsed data (e.g. from a test or another format); see load_topology."""
    return _parse(data, source, validate_handlers, None)


# --------------------------------------------------------------------------- file input
# Pydantic checks shapes, types and single-field bounds; _build checks everything that
# spans fields or stages. strict=True because YAML is typed: "64" or `yes` is a mistake.


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class _CountThresholdsIn(_In):
    pause: int = Field(gt=0)
    resume: int = Field(ge=0)


class _SecondsThresholdsIn(_In):
    pause: float = Field(gt=0)
    resume: float = Field(ge=0)


class _PressureIn(_In):
    lag: _CountThresholdsIn = _CountThresholdsIn(pause=500, resume=250)
    oldest_age_s: _SecondsThresholdsIn = _SecondsThresholdsIn(pause=30.0, resume=10.0)
    p95_latency_s: _SecondsThresholdsIn | None = None
    min_dwell_s: float = Field(default=1.0, ge=0)
    stale_after_s: float = Field(default=5.0, gt=0)
    on_stale: OnStale = "pause"


class _DeadLetterLimitIn(_In):
    max_ratio: float = Field(default=0.5, ge=0, le=1)
    window: int = Field(default=100, gt=0)
    min_records: int = Field(default=20, gt=0)
    max_consecutive: int | None = Field(default=50, gt=0)  # null: no consecutive limit


class _TopicDefaultsIn(_In):
    partitions: int = Field(default=DEFAULT_PARTITIONS, gt=0)
    retention_ms: int = DEFAULT_RETENTION_MS


class _StageIn(_In):
    handler: str
    lanes: list[str] | None = None
    concurrency: int = Field(default=16, gt=0)
    partition_buffer: int = Field(default=100, gt=0)
    partition_resume: int | None = Field(default=None, ge=0)
    handler_timeout_s: float = Field(default=30.0, gt=0)
    max_queue_age_s: float = Field(default=300.0, gt=0)
    max_lag: int = Field(default=1000, gt=0)
    downstream: list[str] = Field(default_factory=list)
    pressure: _PressureIn = _PressureIn()
    delivery: DeliveryMode | None = None
    partitions: int | None = Field(default=None, gt=0)
    retention_ms: int | None = None
    background: bool = False
    input_topic: str | None = None
    yields_to: list[str] = Field(default_factory=list)
    dead_letter_limit: _DeadLetterLimitIn = _DeadLetterLimitIn()


class _TopologyIn(_In):
    workflow: str
    delivery: DeliveryMode = "at_least_once"
    lanes: list[str] = Field(default_factory=lambda: [str(lane) for lane in LANES])
    dead_letter_topic: str | None = None
    topic_defaults: _TopicDefaultsIn = _TopicDefaultsIn()
    intake: dict[str, Any] = Field(default_factory=dict)
    stages: dict[str, _StageIn]


class _Problem(Exception):
    """One validation failure, raised inside this module and turned into a ConfigError."""

    def __init__(self, path: KeyPath, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML silently lets the last win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            # Merge keys (<<) legitimately repeat keys; only literal repeats are mistakes.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key_node.value}'", key_node.start_mark
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _parse(data: object, source: str, validate_handlers: bool, root: yaml.Node | None) -> Topology:
    try:
        if not isinstance(data, dict):
            raise _Problem((), f"must be a mapping with 'workflow' and 'stages', got {_kind(data)}")
        try:
            model = _TopologyIn.model_validate(data)
        except ValidationError as exc:
            raise _from_validation_error(exc) from None
        return _build(model, source, validate_handlers)
    except _Problem as problem:
        line = _line_of(root, problem.path)
        # A line helps only below the top level: the whole file starts at line 1.
        suffix = f" [line {line}]" if line is not None and problem.path else ""
        raise ConfigError(source, _dotted(problem.path), problem.problem + suffix) from None


# --------------------------------------------------------------------------- validation


def _build(model: _TopologyIn, source: str, validate_handlers: bool) -> Topology:
    workflow = _name(model.workflow, ("workflow",))
    lanes = _lanes(model.lanes, ("lanes",), LANES, "")
    _retention(model.topic_defaults.retention_ms, ("topic_defaults", "retention_ms"))
    defaults = TopicSpec(model.topic_defaults.partitions, model.topic_defaults.retention_ms)
    dead_letter_topic = model.dead_letter_topic or f"{workflow}.dlq"
    _topic_name(dead_letter_topic, ("dead_letter_topic",))
    if not model.stages:
        raise _Problem(("stages",), "needs at least one stage")

    raw = model.stages
    for name in raw:
        _name(name, ("stages", name))
    stage_lanes = {name: _stage_lanes(name, s, lanes) for name, s in raw.items()}
    for name, s in raw.items():
        _check_stage(name, s)
    for name, s in raw.items():
        _check_references(name, s, raw)
    routes = {name: _routes(workflow, name, s, stage_lanes, raw) for name, s in raw.items()}
    _check_cycles(workflow, raw, routes)

    stages: dict[str, Stage] = {}
    for name, s in raw.items():
        pressure = s.pressure
        stages[name] = Stage(
            source=source,
            workflow=workflow,
            name=name,
            handler=s.handler,
            lanes=stage_lanes[name],
            concurrency=s.concurrency,
            partition_buffer=s.partition_buffer,
            partition_resume=(
                s.partition_buffer // 2 if s.partition_resume is None else s.partition_resume
            ),
            handler_timeout_s=s.handler_timeout_s,
            max_queue_age_s=s.max_queue_age_s,
            max_lag=s.max_lag,
            downstream=tuple(s.downstream),
            pressure=PressureConfig(
                lag=CountThresholds(pressure.lag.pause, pressure.lag.resume),
                oldest_age_s=SecondsThresholds(
                    pressure.oldest_age_s.pause, pressure.oldest_age_s.resume
                ),
                p95_latency_s=(
                    None
                    if pressure.p95_latency_s is None
                    else SecondsThresholds(
                        pressure.p95_latency_s.pause, pressure.p95_latency_s.resume
                    )
                ),
                min_dwell_s=pressure.min_dwell_s,
                stale_after_s=pressure.stale_after_s,
                on_stale=pressure.on_stale,
            ),
            delivery=s.delivery or model.delivery,
            topic_spec=TopicSpec(
                s.partitions or defaults.partitions,
                defaults.retention_ms if s.retention_ms is None else s.retention_ms,
            ),
            background=s.background,
            input_topic=s.input_topic,
            yields_to=tuple(s.yields_to),
            dead_letter_limit=DeadLetterLimit(
                s.dead_letter_limit.max_ratio,
                s.dead_letter_limit.window,
                s.dead_letter_limit.min_records,
                s.dead_letter_limit.max_consecutive,
            ),
            routes=types.MappingProxyType(routes[name]),
        )
    topology = Topology(
        source=source,
        workflow=workflow,
        delivery=model.delivery,
        lanes=lanes,
        dead_letter_topic=dead_letter_topic,
        topic_defaults=defaults,
        intake=types.MappingProxyType(dict(model.intake)),
        stages=types.MappingProxyType(stages),
    )
    _check_topics(topology, raw)
    if validate_handlers:
        for name, stage in stages.items():
            try:
                _import_handler(stage.handler)
            except _Problem as problem:
                raise _Problem(("stages", name, "handler"), problem.problem) from None
    return topology


def _check_stage(name: str, s: _StageIn) -> None:
    """Checks within one stage."""
    at: KeyPath = ("stages", name)
    if not _HANDLER.fullmatch(s.handler):
        raise _Problem(
            (*at, "handler"), f"must look like 'package.module:function', got {s.handler!r}"
        )
    if s.partition_resume is not None and s.partition_resume >= s.partition_buffer:
        raise _Problem(
            (*at, "partition_resume"),
            f"must be below partition_buffer ({s.partition_buffer}), got {s.partition_resume}",
        )
    p = s.pressure
    bands: list[tuple[str, _CountThresholdsIn | _SecondsThresholdsIn | None]] = [
        ("lag", p.lag),
        ("oldest_age_s", p.oldest_age_s),
        ("p95_latency_s", p.p95_latency_s),
    ]
    for key, band in bands:
        if band is not None and band.resume >= band.pause:
            raise _Problem(
                (*at, "pressure", key, "resume"),
                f"must be below pause ({band.pause}), got {band.resume}",
            )
    limit = s.dead_letter_limit
    if limit.min_records > limit.window:
        raise _Problem(
            (*at, "dead_letter_limit", "min_records"),
            f"must be at most window ({limit.window}), got {limit.min_records}",
        )
    if s.retention_ms is not None:
        _retention(s.retention_ms, (*at, "retention_ms"))
    if s.input_topic is not None:
        if not s.background:
            raise _Problem(
                (*at, "input_topic"),
                "only background stages read an explicit topic; set background: true or remove it",
            )
        _topic_name(s.input_topic, (*at, "input_topic"))
    if s.yields_to and not s.background:
        raise _Problem(
            (*at, "yields_to"), "only background stages yield; set background: true or remove it"
        )
    if "pressure" in s.model_fields_set and not s.downstream and not s.yields_to:
        raise _Problem(
            (*at, "pressure"), "has no effect: the stage has no downstream and yields to no stage"
        )


def _check_references(name: str, s: _StageIn, raw: Mapping[str, _StageIn]) -> None:
    """Checks of one stage's references to other stages, once every stage is sound."""
    at: KeyPath = ("stages", name)
    p = s.pressure
    for i, other in enumerate(s.yields_to):
        _known_stage(other, (*at, "yields_to", i), raw)
        if raw[other].background:
            raise _Problem(
                (*at, "yields_to", i),
                f"must name a foreground stage, got background stage {other!r}",
            )
        if other in s.yields_to[:i]:
            raise _Problem((*at, "yields_to", i), f"{other!r} is listed twice")
    for i, other in enumerate(s.downstream):
        _known_stage(other, (*at, "downstream", i), raw)
        if other in s.downstream[:i]:
            raise _Problem((*at, "downstream", i), f"{other!r} is listed twice")
        if raw[other].input_topic is not None:
            raise _Problem(
                (*at, "downstream", i),
                f"stage {other!r} reads input_topic {raw[other].input_topic!r}, "
                "so nothing can emit to it",
            )
        # Pausing later than the downstream bound cannot keep that bound (invariant 4).
        if p.lag.pause > raw[other].max_lag:
            raise _Problem(
                (*at, "pressure", "lag", "pause"),
                f"must be at most the max_lag of downstream stage {other!r} "
                f"({raw[other].max_lag}), got {p.lag.pause}",
            )
        if p.oldest_age_s.pause > raw[other].max_queue_age_s:
            raise _Problem(
                (*at, "pressure", "oldest_age_s", "pause"),
                f"must be at most the max_queue_age_s of downstream stage {other!r} "
                f"({raw[other].max_queue_age_s}), got {p.oldest_age_s.pause}",
            )


def _stage_lanes(name: str, s: _StageIn, workflow_lanes: tuple[Lane, ...]) -> tuple[Lane, ...]:
    if s.background:
        if s.lanes is not None:
            raise _Problem(
                ("stages", name, "lanes"),
                "background stages take the background lane only; remove lanes",
            )
        return ("background",)
    if s.lanes is None:
        return workflow_lanes
    return _lanes(s.lanes, ("stages", name, "lanes"), workflow_lanes, " the workflow's")


def _routes(
    workflow: str,
    name: str,
    s: _StageIn,
    stage_lanes: Mapping[str, tuple[Lane, ...]],
    raw: Mapping[str, _StageIn],
) -> dict[Lane, tuple[str, ...]]:
    routes: dict[Lane, tuple[str, ...]] = {}
    for lane in stage_lanes[name]:
        if not s.downstream:
            routes[lane] = () if s.background else (f"{workflow}.completed",)
            continue
        topics = []
        for i, other in enumerate(s.downstream):
            # Demote to the next less urgent lane the downstream takes; never promote, so
            # background work cannot take capacity reserved for urgent runs.
            target = next(
                (t for t in stage_lanes[other] if LANES.index(t) >= LANES.index(lane)), None
            )
            if target is None:
                raise _Problem(
                    ("stages", name, "downstream", i),
                    f"stage {other!r} takes no lane at or below {lane!r} (it takes "
                    f"{', '.join(stage_lanes[other])}), so {name!r} has nowhere to send "
                    f"its {lane} records",
                )
            topics.append(_lane_topic(workflow, other, target))
        routes[lane] = tuple(topics)
    return routes


def _check_cycles(
    workflow: str, raw: Mapping[str, _StageIn], routes: Mapping[str, Mapping[Lane, tuple[str, ...]]]
) -> None:
    # Edges are "emits to a topic the other stage reads", so a background stage reading
    # "{workflow}.completed" and feeding the first stage is caught too.
    readers: dict[str, list[str]] = {}
    for name, s in raw.items():
        if s.input_topic is not None:
            readers.setdefault(s.input_topic, []).append(name)
    edges: dict[str, list[tuple[str, KeyPath]]] = {}
    for name, s in raw.items():
        out = edges.setdefault(name, [])
        out.extend((other, ("stages", name, "downstream")) for other in s.downstream)
        topics = {t for lane_topics in routes[name].values() for t in lane_topics}
        for topic in sorted(topics):
            out.extend((r, ("stages", r, "input_topic")) for r in readers.get(topic, []))
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        path.append(node)
        for nxt, key in edges[node]:
            if nxt in path:
                cycle = [*path[path.index(nxt) :], nxt]
                raise _Problem(key, f"cycle {' -> '.join(cycle)}; records would circle forever")
            if nxt not in done:
                visit(nxt, path)
        path.pop()
        done.add(node)

    for name in raw:
        if name not in done:
            visit(name, [])


def _check_topics(topology: Topology, raw: Mapping[str, _StageIn]) -> None:
    fixed = {
        topology.pressure_topic: "the pressure topic",
        topology.completed_topic: "the completed topic",
    }
    if topology.dead_letter_topic in fixed:
        raise _Problem(
            ("dead_letter_topic",),
            f"{topology.dead_letter_topic!r} is {fixed[topology.dead_letter_topic]}",
        )
    owned = {topology.dead_letter_topic: "the dead-letter topic", **fixed}
    for stage in topology.stages.values():
        if stage.input_topic is None:
            for topic in stage.input_topics:
                if topic in owned:
                    raise _Problem(
                        ("dead_letter_topic",),
                        f"{topic!r} is also an input of stage {stage.name!r}",
                    )
                owned[topic] = f"an input of stage {stage.name!r}"
    for stage in topology.stages.values():
        at: KeyPath = ("stages", stage.name)
        if stage.input_topic == topology.pressure_topic:
            raise _Problem(
                (*at, "input_topic"),
                "cannot read the pressure topic; it holds pressure reports, not runs",
            )
        overrides = [
            k for k in ("partitions", "retention_ms") if getattr(raw[stage.name], k) is not None
        ]
        if stage.input_topic in owned and overrides:
            raise _Problem(
                (*at, overrides[0]),
                f"input_topic {stage.input_topic!r} is {owned[stage.input_topic]}, which sets its "
                "own partitions and retention; remove the override",
            )


# --------------------------------------------------------------------------- small checks


def _name(value: str, path: KeyPath) -> str:
    if not _NAME.fullmatch(value):
        raise _Problem(
            path,
            "must be 1-64 characters of a-z, 0-9, '_' or '-' (it becomes part of topic "
            f"names), got {value!r}",
        )
    return value


def _topic_name(value: str, path: KeyPath) -> None:
    if not _TOPIC.fullmatch(value) or value in (".", ".."):
        raise _Problem(
            path,
            "is not a valid Kafka topic name (1-249 characters of A-Z, a-z, 0-9, '.', '_', "
            f"'-'), got {value!r}",
        )


def _retention(value: int, path: KeyPath) -> None:
    if value <= 0 and value != KEEP_FOREVER_MS:
        raise _Problem(
            path, f"must be a positive number of milliseconds, or -1 to keep forever, got {value}"
        )


def _known_stage(name: str, path: KeyPath, raw: Mapping[str, _StageIn]) -> None:
    if name not in raw:
        raise _Problem(path, f"unknown stage {name!r}{_suggest(name, list(raw), 'stages')}")


def _lanes(
    names: list[str], path: KeyPath, allowed: tuple[Lane, ...], whose: str
) -> tuple[Lane, ...]:
    if not names:
        raise _Problem(path, "must name at least one lane")
    chosen: list[Lane] = []
    for i, name in enumerate(names):
        lane = _LANE_BY_NAME.get(name)
        if lane is None:
            raise _Problem(
                (*path, i), f"unknown lane {name!r}{_suggest(name, list(LANES), 'lanes')}"
            )
        if lane not in allowed:
            raise _Problem(
                (*path, i), f"lane {name!r} is not one of{whose} lanes ({', '.join(allowed)})"
            )
        if lane in chosen:
            raise _Problem((*path, i), f"lane {name!r} is listed twice")
        chosen.append(lane)
    ordered = tuple(sorted(chosen, key=LANES.index))
    if tuple(chosen) != ordered:
        # Workers serve lanes in this order; a list that reads otherwise would mislead.
        raise _Problem(path, f"list lanes from most to least urgent: {', '.join(ordered)}")
    return ordered


def _suggest(word: str, known: list[str], what: str) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known {what}: {', '.join(known)})" if known else ""


def _import_handler(ref: str) -> Callable[..., Any]:
    module_name, _, attr_path = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # user code: its import may fail any way at all
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0]:
            hint = " (run from the project root, or put its directory on PYTHONPATH)"
        raise _Problem(
            (), f"cannot import {module_name!r}: {type(exc).__name__}: {exc}{hint}"
        ) from None
    target: object = module
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise _Problem((), f"module {module_name!r} has no attribute {attr_path!r}")
        target = getattr(target, part)
    if not callable(target):
        raise _Problem((), f"{ref!r} is not callable (it is a {type(target).__name__})")
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have no signature; nothing to check
        return target
    try:
        signature.bind(None, None)
    except TypeError as exc:
        raise _Problem((), f"{ref!r} must accept (event, ctx): {exc}") from None
    return target


def _lane_topic(workflow: str, stage: str, lane: Lane) -> str:
    return f"{workflow}.{stage}.{lane}"


# --------------------------------------------------------------------------- error rendering


def _from_validation_error(exc: ValidationError) -> _Problem:
    """Turn pydantic's first error into one plain sentence; the rest are usually echoes."""
    error = exc.errors(include_url=False)[0]
    path: KeyPath = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        key = str(path[-1])
        return _Problem(path, f"unknown key{_suggest(key, _field_names_at(path[:-1]), 'keys')}")
    if kind == "missing":
        return _Problem(path, "required key is missing")
    if kind in ("model_type", "dict_type"):
        return _Problem(path, f"must be a mapping, got {_kind(value)}")
    if kind == "list_type":
        return _Problem(path, f"must be a list, got {_kind(value)}")
    message = str(error["msg"])
    if message.startswith("Input should be "):
        message = "must be " + message.removeprefix("Input should be ")
    return _Problem(path, f"{message}, got {_kind(value)}")


def _field_names_at(path: KeyPath) -> list[str]:
    """The keys the model allows at `path`, for did-you-mean suggestions."""
    tp: Any = _TopologyIn
    for part in (*path, None):
        tp = _unwrap_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if part is None:
                return list(tp.model_fields)
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
        else:
            return []
    return []


def _unwrap_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(root: yaml.Node | None, path: KeyPath) -> int | None:
    """Line (1-based) of the deepest node on `path` that exists in the file."""
    if root is None:
        return None
    node: yaml.Node = root
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next(
                (
                    kv
                    for kv in node.value
                    if isinstance(kv[0], yaml.ScalarNode) and kv[0].value == part
                ),
                None,
            )
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
