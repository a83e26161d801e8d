"""`streams control` commands as records: durations, names checked against the topology,
the audit fields, and `clear` turning every active override off."""

from __future__ import annotations

import pytest

from streams.control.commands import (
    clear_records,
    degrade_record,
    parse_duration_s,
    pause_record,
    resume_record,
    tool_record,
)
from streams.control.records import ControlState, manual_pause, tool_forced_open
from streams.errors import StreamsError
from streams.topology import Topology, parse_topology

H = "topology.example_handlers"


def _topology() -> Topology:
    return parse_topology(
        {
            "workflow": "wf",
            "tools": {"crm": {}},
            "stages": {
                "plan": {"handler": f"{H}:plan", "downstream": ["act"]},
                "act": {"handler": f"{H}:act", "tools": ["crm"]},
            },
            "degradation": {
                "levels": {"lean": {"when": {"oldest_age_s": {"enter": 30, "exit": 10}}}}
            },
        },
        "wf.yaml",
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("90s", 90), ("2h", 7200), ("1h30m", 5400), ("45", 45)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5m", "0s", "5x"])
def test_bad_durations_say_what_a_duration_looks_like(text: str) -> None:
    with pytest.raises(StreamsError, match="30m"):
        parse_duration_s(text)


def test_degrade_records_the_level_expiry_and_audit() -> None:
    record = degrade_record(_topology(), "lean", for_s=1800, who="ana", why="incident", now=100.0)
    assert (record.kind, record.level, record.active) == ("level", "lean", True)
    assert record.expires_at_ms == 1_900_000
    assert (record.who, record.why, record.at_ms) == ("ana", "incident", 100_000)
    assert (
        degrade_record(_topology(), "normal", for_s=None, who="a", why=None, now=1).expires_at_ms
        is None
    )


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(StreamsError, match="known levels: normal, lean"):
        degrade_record(_topology(), "essential", for_s=None, who="a", why=None, now=0)
    with pytest.raises(StreamsError, match="known stages: plan, act"):
        pause_record(_topology(), "enrich", who="a", why=None, now=0)
    with pytest.raises(StreamsError, match="known tools: crm"):
        tool_record(_topology(), "llm", open_=True, who="a", why=None, now=0)


def test_pause_resume_and_tool() -> None:
    topology = _topology()
    paused = pause_record(topology, "act", who="ana", why="crm down", now=1.0)
    assert (paused.key, paused.active, paused.why) == ("pause/act", True, "crm down")
    assert resume_record(topology, "act", who="bo", why=None, now=2.0).active is False
    assert tool_record(topology, "crm", open_=True, who="a", why=None, now=0).active is True
    assert tool_record(topology, "crm", open_=False, who="a", why=None, now=0).active is False


def test_clear_turns_every_active_override_off_and_keeps_who() -> None:
    state = ControlState("wf")
    state.apply(degrade_record(_topology(), "lean", for_s=None, who="a", why=None, now=0))
    state.apply(manual_pause("wf", "act", who="a", why=None, at_ms=0))
    state.apply(manual_pause("wf", "plan", who="a", why=None, at_ms=0, active=False))
    state.apply(tool_forced_open("wf", "crm", who="a", why=None, at_ms=0))
    records = clear_records(_topology(), state, who="cy", why="over", now=5.0)
    assert sorted(r.key for r in records) == ["level", "pause/act", "tool/crm"]
    assert all(not r.active and r.who == "cy" and r.why == "over" for r in records)
