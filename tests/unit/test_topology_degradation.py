"""The `degradation:` section: defaults, the ladder it builds, and one ConfigError naming
the file and key path for each kind of mistake."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.errors import ConfigError
from streams.policy.degradation import AgeCondition, FlagCondition
from streams.topology import load_topology, parse_topology, topology_keys

H = "topology.example_handlers"
BASE: dict[str, Any] = {
    "workflow": "wf",
    "tools": {"crm": {}},
    "stages": {
        "plan": {"handler": f"{H}:plan", "downstream": ["act"]},
        "approve": {"kind": "review", "downstream": ["act"]},
        "act": {"handler": f"{H}:act", "tools": ["crm"]},
        "enrich": {"handler": f"{H}:act", "background": True},
    },
    "degradation": {
        "min_dwell_s": 30,
        "levels": {
            "lean": {
                "when": {"oldest_age_s": {"enter": 30, "exit": 10}},
                "knobs": {"model": "small", "retrieval_k": 3},
                "pause_stages": ["enrich"],
                "intake": {"lanes": {"background": "reject"}},
            },
            "essential": {
                "when": {
                    "oldest_age_s": {"stage": "any", "enter": 60, "exit": 20},
                    "tool_open": ["crm"],
                    "review_full": ["approve"],
                    "pressure_paused": ["plan"],
                },
                "require_review": ["act"],
            },
        },
    },
}


def _with(path: str, value: object) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


def test_the_section_builds_the_ladder_with_defaults() -> None:
    topology = parse_topology(BASE, "wf.yaml")
    spec = topology.degradation
    assert spec is not None
    ladder = spec.ladder
    assert [level.name for level in ladder.levels] == ["normal", "lean", "essential"]
    assert ladder.min_dwell_s == 30
    lean = ladder.levels[1]
    assert lean.when == (AgeCondition(stage="plan", enter_s=30, exit_s=10),)  # entry stage
    assert dict(lean.knobs) == {"model": "small", "retrieval_k": 3}
    essential = ladder.levels[2]
    assert AgeCondition(stage=None, enter_s=60, exit_s=20) in essential.when
    assert FlagCondition("tool_open", "crm") in essential.when
    assert dict(spec.review_detours) == {"act": "approve"}
    # The detour review stage is fed by nobody, yet it is no entry stage for the intake.
    assert [s.name for s in topology.entry_stages] == ["plan"]
    assert topology.intake is not None and topology.intake.entry_stage == "plan"
    assert topology.control_topic == "wf.control"
    spec_of_control = topology.all_topics()["wf.control"]
    assert spec_of_control.compacted and spec_of_control.partitions == 1


def test_no_section_no_ladder_but_a_control_topic() -> None:
    data = copy.deepcopy(BASE)
    del data["degradation"]
    topology = parse_topology(data, "wf.yaml")
    assert topology.degradation is None
    assert "wf.control" in topology.all_topics()


def test_default_min_dwell_is_a_minute() -> None:
    data = _with("degradation.min_dwell_s", 60)
    del data["degradation"]["min_dwell_s"]
    spec = parse_topology(data, "wf.yaml").degradation
    assert spec is not None and spec.ladder.min_dwell_s == 60


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        ("degradation.levels.lean.when", {}, "degradation.levels.lean.when", "at least one"),
        (
            "degradation.levels.lean.when.oldest_age_s.exit",
            40,
            "degradation.levels.lean.when.oldest_age_s.exit",
            "below enter",
        ),
        (
            "degradation.levels.lean.when.oldest_age_s.stage",
            "plam",
            "degradation.levels.lean.when.oldest_age_s.stage",
            "did you mean 'plan'",
        ),
        (
            "degradation.levels.essential.when.tool_open",
            ["crn"],
            "degradation.levels.essential.when.tool_open[0]",
            "unknown tool 'crn'",
        ),
        (
            "degradation.levels.essential.when.review_full",
            ["act"],
            "degradation.levels.essential.when.review_full[0]",
            "not a review stage",
        ),
        (
            "degradation.levels.lean.pause_stages",
            ["act"],
            "degradation.levels.lean.pause_stages[0]",
            "not a background stage",
        ),
        (
            "degradation.levels.essential.require_review",
            ["plan"],
            "degradation.levels.essential.require_review[0]",
            "exactly one review stage",
        ),
        (
            "degradation.levels.lean.intake.lanes",
            {"background": "drop"},
            "degradation.levels.lean.intake.lanes.background",
            "one of accept, delay, reject",
        ),
        (
            "degradation.levels.lean.knobz",
            {},
            "degradation.levels.lean.knobz",
            "did you mean 'knobs'",
        ),
        ("degradation.base_level", "lean", "degradation.levels.lean", "base level"),
        ("degradation.levels", {}, "degradation.levels", ""),
        ("degradation.min_dwell_s", -1, "degradation.min_dwell_s", ">= 0"),
    ],
)
def test_mistakes_name_the_file_and_key(
    tmp_path: Path, path: str, value: object, key: str, words: str
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(_with(path, value), sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_topology(file)
    message = str(caught.value)
    assert str(file) in message
    assert key in message, message
    assert words in message, message


def test_every_degradation_key_is_listed_for_the_manual() -> None:
    keys = set(topology_keys())
    for key in (
        "degradation.base_level",
        "degradation.min_dwell_s",
        "degradation.levels.<level>.when.oldest_age_s.stage",
        "degradation.levels.<level>.when.tool_saturated",
        "degradation.levels.<level>.knobs",
        "degradation.levels.<level>.intake.lanes.<lane>",
        "degradation.levels.<level>.require_review",
    ):
        assert key in keys, key
