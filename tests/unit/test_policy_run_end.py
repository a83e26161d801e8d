"""The run's main path: where returning without an emit ends the run."""

from __future__ import annotations

from typing import Any

from streams.policy.run_end import main_path
from streams.runtime.emitter import completion_topic
from streams.topology import Topology, parse_topology


def test_every_foreground_stage_reached_from_an_entry_is_on_the_path() -> None:
    downstream = {"plan": ("act", "enrich"), "act": ("reply",), "reply": (), "enrich": ()}
    assert main_path(["plan"], downstream, {"enrich"}) == {"plan", "act", "reply"}


def test_a_foreground_stage_fed_only_through_a_background_stage_is_off_the_path() -> None:
    downstream = {"plan": ("enrich",), "enrich": ("index",), "index": ()}
    assert main_path(["plan"], downstream, {"enrich"}) == {"plan"}


def test_a_stage_shared_by_two_branches_is_counted_once_and_cycles_end() -> None:
    downstream = {"a": ("b", "c"), "b": ("d",), "c": ("d",), "d": ("a",)}
    assert main_path(["a"], downstream, set()) == {"a", "b", "c", "d"}


def test_several_entry_stages_and_a_background_entry() -> None:
    downstream = {"a": (), "b": (), "tap": ()}
    assert main_path(["a", "b", "tap"], downstream, {"tap"}) == {"a", "b"}


def _topology(**stages: dict[str, Any]) -> Topology:
    return parse_topology(
        {
            "workflow": "wf",
            "lanes": ["urgent", "standard", "background"],
            "stages": {
                name: {"handler": "tests.integration.handlers:noop", **spec}
                for name, spec in stages.items()
            },
        },
        "<test>",
        validate_handlers=False,
    )


def test_the_worker_writes_completions_from_main_path_stages_only() -> None:
    topology = _topology(
        plan={"downstream": ["act", "enrich"]},
        act={},
        enrich={"background": True},
        # A tap on the completed topic: background by rule, so off the path.
        audit={"background": True, "input_topic": "wf.completed"},
    )
    topics = {name: completion_topic(topology, s) for name, s in topology.stages.items()}
    assert topics == {"plan": "wf.completed", "act": "wf.completed", "enrich": None, "audit": None}
