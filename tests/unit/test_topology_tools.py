"""The `tools:` section and a stage's `tools: [...]`: defaults, frozen specs, one clear
error per mistake naming the file and key path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.errors import ConfigError
from streams.policy.adaptive_limit import AdaptiveConfig
from streams.policy.breaker import BreakerConfig
from streams.topology import ToolSpec, load_topology, parse_topology

BASE: dict[str, Any] = {
    "workflow": "triage",
    "tools": {"crm": {"concurrency": 4, "rate": 20, "timeout_s": 2}},
    "stages": {
        "plan": {"handler": "topology.example_handlers:plan", "downstream": ["act"]},
        "act": {"handler": "topology.example_handlers:act", "tools": ["crm"]},
    },
}


def _with(**tools: Any) -> dict[str, Any]:
    """BASE with these tools instead, listed by stage act."""
    data = copy.deepcopy(BASE)
    data["tools"] = tools
    data["stages"]["act"]["tools"] = list(tools)
    return data


def test_defaults_and_the_stage_list() -> None:
    topology = parse_topology(_with(llm={}), "inline")
    spec = topology.tools["llm"]
    assert isinstance(spec, ToolSpec)
    assert spec.concurrency is None and spec.rate_per_s is None and spec.burst is None
    assert spec.timeout_s == 30.0 and spec.max_wait_s == 5.0 and spec.pause_at_waiting == 8
    assert spec.breaker == BreakerConfig(slow_call_s=30.0)  # resilience4j's model, our defaults
    assert spec.adaptive is None
    assert spec.failure_errors == ("Exception",) and spec.ignored_errors == ()
    assert topology.stages["act"].tools == ("llm",)
    assert topology.stages["plan"].tools == ()
    assert topology.tools_used_by("llm") == ("act",)


def test_a_declared_tool_with_everything_set() -> None:
    data = _with(
        crm={
            "rate": 20,
            "burst": 5,
            "timeout_s": 2,
            "max_wait_s": 0.5,
            "pause_at_waiting": 3,
            "failure_errors": ["ConnectionError", "json:JSONDecodeError"],
            "ignored_errors": ["LookupError"],
            "breaker": {"window": 10, "minimum_calls": 5, "open_s": 3, "half_open_probes": 2},
            "adaptive": {"min": 2, "max": 16, "initial": 4},
        }
    )
    topology = parse_topology(data, "inline")
    spec = topology.tools["crm"]
    assert (spec.concurrency, spec.rate_per_s, spec.burst) == (None, 20.0, 5.0)
    assert spec.breaker == BreakerConfig(
        window=10, minimum_calls=5, open_s=3.0, half_open_probes=2, slow_call_s=2.0
    )
    assert spec.adaptive == AdaptiveConfig(min_limit=2, max_limit=16, initial_limit=4)
    assert topology.stages["act"].tools == ("crm",)
    assert topology.tools_used_by("crm") == ("act",)
    classes = spec.error_classes()
    assert classes.failures[0] is ConnectionError and classes.ignored == (LookupError,)


def test_burst_defaults_to_one_second_of_calls_and_null_breaker_turns_it_off() -> None:
    topology = parse_topology(_with(crm={"rate": 0.5, "breaker": None}), "inline")
    assert topology.tools["crm"].burst == 1.0
    assert topology.tools["crm"].breaker is None
    assert parse_topology(_with(crm={"rate": 40}), "i").tools["crm"].burst == 40.0


CASES = [
    (
        {"stages.act.tools": ["cmr"]},
        "stages.act.tools[0]",
        "unknown tool 'cmr' (did you mean 'crm'?)",
    ),
    ({"stages.act.tools": ["crm", "crm"]}, "stages.act.tools[1]", "'crm' is listed twice"),
    ({"tools.crm.concurency": 3}, "tools.crm.concurency", "did you mean 'concurrency'?"),
    ({"tools.crm.rate": 0}, "tools.crm.rate", "must be > 0"),
    ({"tools.crm.burst": 0.5}, "tools.crm.burst", "must be >= 1"),
    ({"tools.crm.burst": 3, "tools.crm.rate": None}, "tools.crm.burst", "only with a rate"),
    (
        {"tools.crm.breaker": {"window": 5, "minimum_calls": 6}},
        "tools.crm.breaker.minimum_calls",
        "at most window (5)",
    ),
    ({"tools.crm.breaker": {"failure_ratio": 1.5}}, "tools.crm.breaker.failure_ratio", "<= 1"),
    ({"tools.crm.adaptive": {"min": 5, "max": 4}}, "tools.crm.adaptive.max", "at least min (5)"),
    ({"tools.crm.adaptive": {"min": 1, "max": 20}}, "tools.crm.adaptive", "not both"),
    (
        {"tools.crm.failure_errors": ["no such thing"]},
        "tools.crm.failure_errors[0]",
        "an exception class",
    ),
    ({"tools.CRM": {}}, "tools.CRM", "must be 1-64 characters"),
]


@pytest.mark.parametrize(("changes", "key_path", "fragment"), CASES)
def test_each_mistake_is_one_clear_error(
    tmp_path: Path, changes: dict[str, Any], key_path: str, fragment: str
) -> None:
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key_path}: "), message
    assert fragment in message, message
    assert "\n" not in message


def test_an_error_class_that_does_not_import_is_told_at_load(tmp_path: Path) -> None:
    data = _with(crm={"failure_errors": ["nosuchmodule_xyz:Boom"]})
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"tools\.crm\.failure_errors\[0\]: cannot import"):
        load_topology(path)
    with pytest.raises(ConfigError, match="is not an exception class"):
        parse_topology(_with(crm={"ignored_errors": ["json:dumps"]}), "inline")
