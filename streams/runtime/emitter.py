"""Turns a handler's ctx.emit(event, lane=...) into encoded records for the next stages.

Owns the lane rule for emits and their encoding, done at the moment of the emit (on the
handler's thread), so an event that cannot be encoded is refused to the handler that made
it, never discovered later on the poll thread. Must not send anything: the worker sends
the encoded records after the handler returns, and only if it succeeded.

The lane rule: an emit goes to the lane asked for (`lane=`, else the event's own lane), and
the event is queued there with that lane, so the next stage sees where it is. A handler may
demote a run (urgent → standard → background) but never promote it above the lane it
arrived on unless the stage sets `allow_lane_promotion: true`: otherwise a background
handler could turn bulk work into urgent work and take capacity reserved for it. A
downstream stage that does not take the lane gets the record in its next less urgent lane.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from streams.errors import EmitRejected
from streams.events import TaskEvent, TaskEventCodec, error_text
from streams.policy.run_end import main_path
from streams.runtime.context import Emit
from streams.topology import Stage, Topology
from streams.types import LANES, Lane

_RANK = {lane: i for i, lane in enumerate(LANES)}


@dataclass(frozen=True, slots=True)
class _Target:
    topic: str
    stage: str  # the stage that reads it ("completed" for the workflow's completed topic)
    lane: Lane


class Emitter:
    """Shared by every handler call of one stage; thread-safe (read-only after init)."""

    def __init__(
        self,
        topology: Topology,
        stage: Stage,
        codec: TaskEventCodec,
        clock_ms: Callable[[], int],
        *,
        allow_lane_promotion: bool = False,
    ) -> None:
        self.stage = stage.name
        self._codec = codec
        self._now_ms = clock_ms
        self._allow_promotion = allow_lane_promotion
        self._targets = _targets_by_lane(topology, stage)

    def build(self, event: object, lane: Lane | None, arrived_in: Lane) -> list[Emit]:
        """The records for `event`, one per downstream stage. Raises EmitRejected."""
        if not isinstance(event, TaskEvent):
            raise EmitRejected(
                f"stage {self.stage}: ctx.emit takes a TaskEvent, got {type(event).__name__}"
            )
        wanted = event.lane if lane is None else lane
        rank = _RANK.get(wanted)
        if rank is None:
            raise EmitRejected(
                f"stage {self.stage}: unknown lane {wanted!r} (lanes: {', '.join(LANES)})"
            )
        if rank < _RANK[arrived_in] and not self._allow_promotion:
            raise EmitRejected(
                f"stage {self.stage}: a run that arrived in lane {arrived_in} cannot be "
                f"promoted to {wanted} (set allow_lane_promotion: true on the stage to allow)"
            )
        targets = self._targets.get(wanted)
        if targets is None:
            raise EmitRejected(
                f"stage {self.stage}: no downstream stage takes lane {wanted} or a less urgent one"
            )
        now_ms = self._now_ms()
        emits: list[Emit] = []
        for target in targets:
            try:
                value = self._codec.encode_for_stage(
                    event, target.stage, now_ms, target.lane, topic=target.topic
                )
                key, headers = event.run_id.encode(), _trace_headers(event)
            except Exception as exc:  # an invalid field of any kind: the handler's event
                raise EmitRejected(
                    f"stage {self.stage}: the event for {target.topic} cannot be encoded: "
                    f"{type(exc).__name__}: {error_text(exc, 500)}"
                ) from exc
            emits.append(Emit(target.topic, value, key, headers))
        return emits


def completion_topic(topology: Topology, stage: Stage) -> str | None:
    """Where a record `stage` handles without emitting goes: the completed topic for a stage
    on the run's main path (the run ended there), None for background stages and what only
    they feed (streams.policy.run_end)."""
    on_path = main_path(
        (s.name for s in topology.entry_stages),
        {name: s.downstream for name, s in topology.stages.items()},
        {name for name, s in topology.stages.items() if s.background},
    )
    return topology.completed_topic if stage.name in on_path else None


def _targets_by_lane(topology: Topology, stage: Stage) -> Mapping[Lane, tuple[_Target, ...]]:
    """Where a record of each lane goes: the stage's own routes for the lanes it takes, and
    the same rule (each downstream's most urgent lane at or below it) for the lanes a
    handler may demote to. Lanes nothing can take are left out."""
    lane_of_topic: dict[str, tuple[str, Lane]] = {}
    # Lane topics first: a stage tapping another's topic does not own it.
    for other in sorted(topology.stages.values(), key=lambda s: s.input_topic is not None):
        for lane, topic in other.input_topics_by_lane.items():
            lane_of_topic.setdefault(topic, (other.name, lane))
    targets: dict[Lane, tuple[_Target, ...]] = {}
    for lane in LANES:
        if lane in stage.routes:
            found: list[_Target] = []
            for topic in stage.routes[lane]:
                name, topic_lane = lane_of_topic.get(topic, ("completed", lane))
                found.append(_Target(topic, name, topic_lane))
            targets[lane] = tuple(found)
            continue
        if not stage.downstream:
            if not stage.background:
                targets[lane] = (_Target(topology.completed_topic, "completed", lane),)
            else:
                targets[lane] = ()
            continue
        demoted: list[_Target] = []
        for name in stage.downstream:
            taken = topology.stages[name].input_topics_by_lane
            below = [t for t in LANES if _RANK[t] >= _RANK[lane] and t in taken]
            if not below:
                break
            demoted.append(_Target(taken[below[0]], name, below[0]))
        else:
            targets[lane] = tuple(demoted)
    return targets


def _trace_headers(event: TaskEvent) -> tuple[tuple[str, bytes], ...]:
    if not event.trace_context:
        return ()  # the common case, without a generator per emit
    return tuple((f"trace.{k}", v.encode()) for k, v in event.trace_context.items())
