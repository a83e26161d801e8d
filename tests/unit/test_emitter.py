"""The emit rule: where ctx.emit sends a run, in which lane, and what it refuses."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from streams.errors import EmitRejected
from streams.events import TaskEvent, TaskEventCodec, new_task_event
from streams.runtime.emitter import Emitter
from streams.topology import Topology, parse_topology
from streams.types import Lane


def _topology(**plan: Any) -> Topology:
    return parse_topology(
        {
            "workflow": "wf",
            "lanes": ["urgent", "standard", "background"],
            "stages": {
                "plan": {
                    "handler": "tests.integration.handlers:noop",
                    "downstream": ["act"],
                    "lanes": ["urgent", "standard"],
                    **plan,
                },
                "act": {
                    "handler": "tests.integration.handlers:noop",
                    "lanes": ["urgent", "standard"],
                },
            },
        },
        "<test>",
        validate_handlers=False,
    )


def _emitter(**plan: Any) -> Emitter:
    topology = _topology(**plan)
    return Emitter(
        topology,
        topology.stages["plan"],
        TaskEventCodec(),
        lambda: 1_000,
        allow_lane_promotion=topology.stages["plan"].allow_lane_promotion,
    )


def _event(lane: Lane) -> TaskEvent:
    return new_task_event(
        workflow="wf", stage="plan", tenant="t", lane=lane, payload=b"{}", now_ms=0
    )


def _decoded(emitter: Emitter, event: object, lane: Lane | None, arrived: Lane) -> list[Any]:
    codec = TaskEventCodec()
    return [(e.topic, codec.decode(e.value)) for e in emitter.build(event, lane, arrived)]


def test_an_emit_goes_to_the_lane_asked_for_and_the_event_says_so() -> None:
    [(topic, event)] = _decoded(_emitter(), _event("urgent"), "standard", "urgent")
    assert topic == "wf.act.standard"
    assert (event.lane, event.stage, event.enqueued_at_ms, event.attempt) == (
        "standard",
        "act",
        1_000,
        0,
    )


def test_without_a_lane_the_event_keeps_its_own() -> None:
    [(topic, event)] = _decoded(_emitter(), _event("urgent"), None, "urgent")
    assert (topic, event.lane) == ("wf.act.urgent", "urgent")


def test_a_demotion_to_a_lane_no_downstream_takes_is_refused() -> None:
    # act takes urgent and standard only: nothing at or below background.
    with pytest.raises(EmitRejected, match="no downstream stage takes lane background"):
        _emitter().build(_event("urgent"), "background", "urgent")


def test_a_promotion_is_refused_unless_the_stage_allows_it() -> None:
    with pytest.raises(EmitRejected, match="cannot be promoted to urgent"):
        _emitter().build(_event("standard"), "urgent", "standard")
    # The event's own lane counts too: changing it in a copy is a promotion as well.
    with pytest.raises(EmitRejected, match="cannot be promoted"):
        _emitter().build(_event("urgent"), None, "standard")
    [(topic, event)] = _decoded(
        _emitter(allow_lane_promotion=True), _event("standard"), "urgent", "standard"
    )
    assert (topic, event.lane) == ("wf.act.urgent", "urgent")


@pytest.mark.parametrize(
    ("event", "match"),
    [
        ({"run_id": "x"}, "takes a TaskEvent, got dict"),
        (dataclasses.replace(_event("standard"), priority=2**40), "cannot be encoded"),
        (dataclasses.replace(_event("standard"), payload="text"), "cannot be encoded"),  # type: ignore[arg-type]
        (dataclasses.replace(_event("standard"), lane="sideways"), "unknown lane"),  # type: ignore[arg-type]
    ],
)
def test_what_cannot_be_sent_is_refused_with_the_reason(event: object, match: str) -> None:
    with pytest.raises(EmitRejected, match=match):
        _emitter().build(event, None, "standard")
