"""The runtime's pure parts of degradation: signals from pressure reports, which stages'
ages are read, a stage worker's reactions (pauses, the review detour), and the view the
monitor and `streams control show` get from W.control."""

from __future__ import annotations

from streams.control.records import (
    ControlState,
    forced_level,
    manual_pause,
    published_level,
    tool_forced_open,
)
from streams.control.state import control_view
from streams.runtime.degradation import DegradationNow, age_stages, ladder_of, signals_from
from streams.runtime.degradation_act import StageDegradation
from streams.runtime.pauses import PauseSet
from streams.runtime.pressure_reports import PressureReport, ToolHealth
from streams.topology import Topology, parse_topology
from streams.types import Record, TopicPartition

H = "topology.example_handlers"


def _topology() -> Topology:
    return parse_topology(
        {
            "workflow": "wf",
            "tools": {"crm": {"pause_at_waiting": 4}},
            "stages": {
                "plan": {"handler": f"{H}:plan", "downstream": ["act"]},
                "approve": {"kind": "review", "downstream": ["act"]},
                "act": {"handler": f"{H}:act", "tools": ["crm"]},
                "enrich": {"handler": f"{H}:act", "background": True},
            },
            "degradation": {
                "levels": {
                    "lean": {
                        "when": {"oldest_age_s": {"stage": "any", "enter": 30, "exit": 10}},
                        "pause_stages": ["enrich"],
                    },
                    "essential": {
                        "when": {"tool_open": ["crm"], "review_full": ["approve"]},
                        "require_review": ["act"],
                    },
                }
            },
        },
        "wf.yaml",
    )


def _report(
    stage: str,
    at: float,
    *,
    in_flight: int = 0,
    concurrency: int | None = None,
    pressure_paused: bool = False,
    tools: tuple[ToolHealth, ...] = (),
) -> PressureReport:
    return PressureReport(
        stage=stage,
        worker="w",
        p95_latency_s=None,
        in_flight=in_flight,
        reported_at=at,
        pressure_paused=pressure_paused,
        concurrency=concurrency,
        tools=tools,
    )


def test_any_stage_reads_every_foreground_stage_but_review_and_background() -> None:
    assert age_stages(_topology()) == ("act", "plan")


def test_signals_from_fresh_reports_only() -> None:
    topology = _topology()
    reports = [
        _report("act", 100.0, tools=(ToolHealth("crm", "open", 1, 0, 4),)),
        _report("act", 100.0, tools=(ToolHealth("crm", "closed", 4, 4, 4),)),
        _report("approve", 100.0, in_flight=50, concurrency=50),
        _report("plan", 100.0, pressure_paused=True),
        _report("act", 10.0, tools=(ToolHealth("other", "open", 0, 0, None),)),  # stale
    ]
    signals = signals_from(topology, {"plan": 3.0}, reports, ["llm"], now=101.0, fresh_within_s=5)
    assert signals.tools_open == {"crm", "llm"}  # llm: forced open by an operator
    assert signals.tools_saturated == {"crm"}  # 4 waiting >= pause_at_waiting 4
    assert signals.reviews_full == {"approve"}
    assert signals.pressure_paused == {"plan"}
    assert signals.oldest_age_s == {"plan": 3.0}


def test_a_stage_pauses_for_its_level_and_for_an_operator() -> None:
    topology = _topology()
    ladder = ladder_of(topology)
    tp = TopicPartition("wf.enrich.background", 0)
    pauses = PauseSet()
    enrich = StageDegradation(topology, topology.stages["enrich"])
    enrich.mark(pauses, [tp], DegradationNow(view=ladder.view(1)))
    assert pauses.reasons(tp) == {"degraded"}
    record = manual_pause("wf", "enrich", who="ana", why=None, at_ms=0)
    enrich.mark(
        pauses, [tp], DegradationNow(view=ladder.view(0), paused_by_operator={"enrich": record})
    )
    assert pauses.reasons(tp) == {"operator"}
    enrich.mark(pauses, [tp], DegradationNow(view=ladder.view(0)))
    assert pauses.reasons(tp) == frozenset()


def test_the_review_detour_at_a_level_and_not_for_a_decided_record() -> None:
    topology = _topology()
    ladder = ladder_of(topology)
    act = StageDegradation(topology, topology.stages["act"])
    record = Record("wf.act.standard", 0, 1, b"k", b"v", 1)
    essential = DegradationNow(view=ladder.view(2))
    assert act.review_topic(record, "standard", DegradationNow(view=ladder.view(1))) is None
    assert act.review_topic(record, "standard", essential) == "wf.approve.standard"
    assert act.review_topic(record, "urgent", essential) == "wf.approve.urgent"
    decided = Record(
        "wf.act.standard", 0, 2, b"k", b"v", 1, (("streams.review.decision", b"approve"),)
    )
    assert act.review_topic(decided, "standard", essential) is None


def test_the_view_of_the_control_topic() -> None:
    topology = _topology()
    state = ControlState("wf")
    state.apply(published_level("wf", "lean", who="w", at_ms=0))
    assert control_view(topology, state, now=1.0).level == "lean"
    state.apply(
        forced_level("wf", "essential", who="ana", why="crm", at_ms=0, expires_at_ms=10_000)
    )
    state.apply(tool_forced_open("wf", "crm", who="ana", why=None, at_ms=0))
    view = control_view(topology, state, now=5.0)
    assert view.level == "essential" and view.forced is not None and view.forced.who == "ana"
    assert set(view.tools_forced_open) == {"crm"}
    expired = control_view(topology, state, now=11.0)
    assert expired.level == "lean" and expired.forced is None
    assert expired.to_json()["tools_forced_open"] == {
        "crm": {"who": "ana", "why": None, "at_ms": 0}
    }
