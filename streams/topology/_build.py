"""Owns the checks that span keys or stages (bounds between stages, lane routes, cycles,
topic clashes) and turns the validated file model into frozen Topology objects.

Must not read files or word pydantic errors (streams.topology._load does that); every
mistake is one Problem at the key path the user must change.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Mapping

from streams.policy.dlq_valve import DeadLetterLimit
from streams.policy.review import ReviewConfig
from streams.topology._degradation import resolve_degradation
from streams.topology._errors import KeyPath, Problem, suggest
from streams.topology._handlers import import_handler
from streams.topology._intake import IntakeConfig, resolve_intake
from streams.topology._model import (
    CountThresholdsIn,
    ReviewIn,
    SecondsThresholdsIn,
    StageIn,
    TopologyIn,
)
from streams.topology._objects import (
    KEEP_FOREVER_MS,
    CountThresholds,
    PressureConfig,
    SecondsThresholds,
    Stage,
    TopicSpec,
    Topology,
    lane_topic,
)
from streams.topology._retry import resolve_retry
from streams.topology._tools import resolve_tools
from streams.types import LANES, Lane

# Names become parts of topic names joined by '.', so they may not contain '.'; 64 chars
# each keeps "{workflow}.{stage}.{lane}" well under Kafka's 249-character topic limit.
_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_HANDLER = re.compile(rf"{_DOTTED}:{_DOTTED}")
#: A review stage's runner timeout is max_wait_s plus this (its own deadline ends it first).
_REVIEW_GRACE_S = 60.0
_LANE_BY_NAME: dict[str, Lane] = {lane: lane for lane in LANES}


def build(model: TopologyIn, source: str, validate_handlers: bool) -> Topology:
    workflow = _name(model.workflow, ("workflow",))
    lanes = _lanes(model.lanes, ("lanes",), LANES, "")
    _retention(model.topic_defaults.retention_ms, ("topic_defaults", "retention_ms"))
    defaults = TopicSpec(model.topic_defaults.partitions, model.topic_defaults.retention_ms)
    dead_letter_topic = model.dead_letter_topic or f"{workflow}.dlq"
    _topic_name(dead_letter_topic, ("dead_letter_topic",))
    if not model.stages:
        raise Problem(("stages",), "needs at least one stage")

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
    tools = resolve_tools(model.tools, raw, source, import_classes=validate_handlers)

    stages: dict[str, Stage] = {}
    for name, s in raw.items():
        pressure = s.pressure
        review = _review(s)
        stages[name] = Stage(
            source=source,
            workflow=workflow,
            name=name,
            handler=s.handler or "",
            lanes=stage_lanes[name],
            # A review stage's handler calls are its pending reviews: max_pending bounds them.
            concurrency=s.concurrency if review is None else review.max_pending,
            partition_buffer=s.partition_buffer,
            partition_resume=(
                s.partition_buffer // 2 if s.partition_resume is None else s.partition_resume
            ),
            # A pending review ends at its own deadline (max_wait_s from when it was first
            # parked, kept across restarts); the runner's timeout is only a backstop.
            handler_timeout_s=(
                s.handler_timeout_s if review is None else review.max_wait_s + _REVIEW_GRACE_S
            ),
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
            allow_lane_promotion=s.allow_lane_promotion,
            dead_letter_limit=_dead_letter_limit(name, s),
            routes=types.MappingProxyType(routes[name]),
            tools=tuple(s.tools),
            retry=resolve_retry(model.retry, name, s),
            review=review,
        )
    topology = Topology(
        source=source,
        workflow=workflow,
        delivery=model.delivery,
        lanes=lanes,
        dead_letter_topic=dead_letter_topic,
        topic_defaults=defaults,
        intake=None,
        stages=types.MappingProxyType(stages),
        tools=types.MappingProxyType(tools),
        schema_registry_url=None if model.schema_registry is None else model.schema_registry.url,
    )
    _check_topics(topology, raw)
    # Before the intake: its default entry stage leaves out a level's review detours.
    degradation = resolve_degradation(model.degradation, topology, model.intake.entry_stage)
    topology = dataclasses.replace(topology, degradation=degradation)
    topology = dataclasses.replace(topology, intake=_intake(model, topology))
    if validate_handlers:
        for name, stage in stages.items():
            if stage.review is not None:
                continue
            try:
                import_handler(stage.handler)
            except Problem as problem:
                raise Problem(("stages", name, "handler"), problem.problem) from None
    return topology


def _dead_letter_limit(name: str, s: StageIn) -> DeadLetterLimit:
    # By keyword: fields the valve may grow later keep their defaults.
    given = s.dead_letter_limit
    try:
        return DeadLetterLimit(
            max_ratio=given.max_ratio,
            window=given.window,
            min_records=given.min_records,
            max_consecutive=given.max_consecutive,
        )
    except ValueError as exc:  # the valve's own checks, should they outgrow ours
        raise Problem(("stages", name, "dead_letter_limit"), str(exc)) from None


def _intake(model: TopologyIn, topology: Topology) -> IntakeConfig | None:
    """The intake section, checked in full when the file has one. Without one, its
    defaults may not fit every workflow (several entry stages, no "standard" lane); that
    is no mistake for workers, so it is told only when an intake asks for its config."""
    if "intake" in model.model_fields_set:
        return resolve_intake(model.intake, topology)
    try:
        return resolve_intake(model.intake, topology)
    except Problem:
        return None


def _check_kind(at: KeyPath, s: StageIn) -> None:
    """A review stage's handler is a person: it names none; every other stage names one."""
    if s.kind == "review":
        if s.handler is not None:
            raise Problem(
                (*at, "handler"), "a review stage has no handler (a person decides); remove it"
            )
        return
    if s.handler is None:
        raise Problem((*at, "handler"), "required key is missing ('package.module:function')")
    if s.review is not None:
        raise Problem((*at, "review"), "only a stage with kind: review takes review settings")


def _review(s: StageIn) -> ReviewConfig | None:
    if s.kind != "review":
        return None
    given = s.review or ReviewIn()
    return ReviewConfig(
        max_pending=given.max_pending,
        max_wait_s=given.max_wait_s,
        on_timeout=given.on_timeout,
        rate_window_s=given.rate_window_s,
    )


def _check_stage(name: str, s: StageIn) -> None:
    """Checks within one stage."""
    at: KeyPath = ("stages", name)
    _check_kind(at, s)
    if s.handler is not None and not _HANDLER.fullmatch(s.handler):
        raise Problem(
            (*at, "handler"), f"must look like 'package.module:function', got {s.handler!r}"
        )
    if s.partition_resume is not None and s.partition_resume >= s.partition_buffer:
        raise Problem(
            (*at, "partition_resume"),
            f"must be below partition_buffer ({s.partition_buffer}), got {s.partition_resume}",
        )
    p = s.pressure
    bands: list[tuple[str, CountThresholdsIn | SecondsThresholdsIn | None]] = [
        ("lag", p.lag),
        ("oldest_age_s", p.oldest_age_s),
        ("p95_latency_s", p.p95_latency_s),
    ]
    for key, band in bands:
        if band is not None and band.resume >= band.pause:
            raise Problem(
                (*at, "pressure", key, "resume"),
                f"must be below pause ({band.pause}), got {band.resume}",
            )
    limit = s.dead_letter_limit
    if limit.min_records > limit.window:
        raise Problem(
            (*at, "dead_letter_limit", "min_records"),
            f"must be at most window ({limit.window}), got {limit.min_records}",
        )
    if s.retention_ms is not None:
        _retention(s.retention_ms, (*at, "retention_ms"))
    if s.input_topic is not None:
        if not s.background:
            raise Problem(
                (*at, "input_topic"),
                "only background stages read an explicit topic; set background: true or remove it",
            )
        _topic_name(s.input_topic, (*at, "input_topic"))
    if s.yields_to and not s.background:
        raise Problem(
            (*at, "yields_to"), "only background stages yield; set background: true or remove it"
        )
    if "pressure" in s.model_fields_set and not s.downstream and not s.yields_to:
        raise Problem(
            (*at, "pressure"), "has no effect: the stage has no downstream and yields to no stage"
        )


def _check_references(name: str, s: StageIn, raw: Mapping[str, StageIn]) -> None:
    """Checks of one stage's references to other stages, once every stage is sound."""
    at: KeyPath = ("stages", name)
    p = s.pressure
    for i, other in enumerate(s.yields_to):
        _known_stage(other, (*at, "yields_to", i), raw)
        if raw[other].background:
            raise Problem(
                (*at, "yields_to", i),
                f"must name a foreground stage, got background stage {other!r}",
            )
        if other in s.yields_to[:i]:
            raise Problem((*at, "yields_to", i), f"{other!r} is listed twice")
    for i, other in enumerate(s.downstream):
        _known_stage(other, (*at, "downstream", i), raw)
        if other in s.downstream[:i]:
            raise Problem((*at, "downstream", i), f"{other!r} is listed twice")
        if raw[other].input_topic is not None:
            raise Problem(
                (*at, "downstream", i),
                f"stage {other!r} reads input_topic {raw[other].input_topic!r}, "
                "so nothing can emit to it",
            )
        # Pausing later than the downstream bound cannot keep that bound (invariant 4).
        if p.lag.pause > raw[other].max_lag:
            raise Problem(
                (*at, "pressure", "lag", "pause"),
                f"must be at most the max_lag of downstream stage {other!r} "
                f"({raw[other].max_lag}), got {p.lag.pause}",
            )
        if p.oldest_age_s.pause > raw[other].max_queue_age_s:
            raise Problem(
                (*at, "pressure", "oldest_age_s", "pause"),
                f"must be at most the max_queue_age_s of downstream stage {other!r} "
                f"({raw[other].max_queue_age_s}), got {p.oldest_age_s.pause}",
            )


def _stage_lanes(name: str, s: StageIn, workflow_lanes: tuple[Lane, ...]) -> tuple[Lane, ...]:
    if s.background:
        if s.lanes is not None:
            raise Problem(
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
    s: StageIn,
    stage_lanes: Mapping[str, tuple[Lane, ...]],
    raw: Mapping[str, StageIn],
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
                raise Problem(
                    ("stages", name, "downstream", i),
                    f"stage {other!r} takes no lane at or below {lane!r} (it takes "
                    f"{', '.join(stage_lanes[other])}), so {name!r} has nowhere to send "
                    f"its {lane} records",
                )
            topics.append(lane_topic(workflow, other, target))
        routes[lane] = tuple(topics)
    return routes


def _check_cycles(
    workflow: str, raw: Mapping[str, StageIn], routes: Mapping[str, Mapping[Lane, tuple[str, ...]]]
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
                raise Problem(key, f"cycle {' -> '.join(cycle)}; records would circle forever")
            if nxt not in done:
                visit(nxt, path)
        path.pop()
        done.add(node)

    for name in raw:
        if name not in done:
            visit(name, [])


def _check_topics(topology: Topology, raw: Mapping[str, StageIn]) -> None:
    fixed = {
        topology.pressure_topic: "the pressure topic",
        topology.completed_topic: "the completed topic",
    }
    if topology.dead_letter_topic in fixed:
        raise Problem(
            ("dead_letter_topic",),
            f"{topology.dead_letter_topic!r} is {fixed[topology.dead_letter_topic]}",
        )
    owned = {topology.dead_letter_topic: "the dead-letter topic", **fixed}
    for stage in topology.stages.values():
        if stage.input_topic is None:
            for topic in stage.input_topics:
                if topic in owned:
                    raise Problem(
                        ("dead_letter_topic",),
                        f"{topic!r} is also an input of stage {stage.name!r}",
                    )
                owned[topic] = f"an input of stage {stage.name!r}"
    for stage in topology.stages.values():
        at: KeyPath = ("stages", stage.name)
        if stage.input_topic == topology.pressure_topic:
            raise Problem(
                (*at, "input_topic"),
                "cannot read the pressure topic; it holds pressure reports, not runs",
            )
        overrides = [
            k for k in ("partitions", "retention_ms") if getattr(raw[stage.name], k) is not None
        ]
        if stage.input_topic in owned and overrides:
            raise Problem(
                (*at, overrides[0]),
                f"input_topic {stage.input_topic!r} is {owned[stage.input_topic]}, which sets its "
                "own partitions and retention; remove the override",
            )


# --------------------------------------------------------------------------- small checks


def _name(value: str, path: KeyPath) -> str:
    if not _NAME.fullmatch(value):
        raise Problem(
            path,
            "must be 1-64 characters of a-z, 0-9, '_' or '-' (it becomes part of topic "
            f"names), got {value!r}",
        )
    return value


def _topic_name(value: str, path: KeyPath) -> None:
    if not _TOPIC.fullmatch(value) or value in (".", ".."):
        raise Problem(
            path,
            "is not a valid Kafka topic name (1-249 characters of A-Z, a-z, 0-9, '.', '_', "
            f"'-'), got {value!r}",
        )


def _retention(value: int, path: KeyPath) -> None:
    if value <= 0 and value != KEEP_FOREVER_MS:
        raise Problem(
            path, f"must be a positive number of milliseconds, or -1 to keep forever, got {value}"
        )


def _known_stage(name: str, path: KeyPath, raw: Mapping[str, StageIn]) -> None:
    if name not in raw:
        raise Problem(path, f"unknown stage {name!r}{suggest(name, list(raw), 'stages')}")


def _lanes(
    names: list[str], path: KeyPath, allowed: tuple[Lane, ...], whose: str
) -> tuple[Lane, ...]:
    if not names:
        raise Problem(path, "must name at least one lane")
    chosen: list[Lane] = []
    for i, name in enumerate(names):
        lane = _LANE_BY_NAME.get(name)
        if lane is None:
            raise Problem((*path, i), f"unknown lane {name!r}{suggest(name, list(LANES), 'lanes')}")
        if lane not in allowed:
            raise Problem(
                (*path, i), f"lane {name!r} is not one of{whose} lanes ({', '.join(allowed)})"
            )
        if lane in chosen:
            raise Problem((*path, i), f"lane {name!r} is listed twice")
        chosen.append(lane)
    ordered = tuple(sorted(chosen, key=LANES.index))
    if tuple(chosen) != ordered:
        # Workers serve lanes in this order; a list that reads otherwise would mislead.
        raise Problem(path, f"list lanes from most to least urgent: {', '.join(ordered)}")
    return ordered
