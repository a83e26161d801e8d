"""The `retry:` section (workflow defaults, per-stage overrides): defaults, merging, the
retry-tier and escalation topics it adds, and one clear error per mistake."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from streams.errors import ConfigError
from streams.policy.retry import RetryBudgetConfig, RetryPolicy
from streams.topology import parse_topology

BASE: dict[str, Any] = {
    "workflow": "triage",
    "stages": {
        "plan": {"handler": "topology.example_handlers:plan", "downstream": ["act"]},
        "act": {"handler": "topology.example_handlers:act"},
    },
}


def _data(**top: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(top)
    return data


def test_without_retry_sections_there_are_no_retries_and_no_retry_topics() -> None:
    topology = parse_topology(_data(), "inline")
    assert all(stage.retry is None for stage in topology.stages.values())
    assert topology.retry_topics == {}
    assert not any(".retry." in t or t.endswith("escalations") for t in topology.all_topics())


def test_workflow_defaults_apply_to_every_stage_and_create_tier_topics() -> None:
    topology = parse_topology(_data(retry={}), "inline")
    for stage in topology.stages.values():
        assert stage.retry == RetryPolicy()
    assert topology.retry_topics == {
        5: "triage.retry.5s",
        30: "triage.retry.30s",
        300: "triage.retry.300s",
    }
    topics = topology.all_topics()
    for topic in (*topology.retry_topics.values(), topology.escalations_topic):
        assert topics[topic] == topology.topic_defaults
    assert topology.escalations_topic == "triage.escalations"


def test_a_stage_overrides_single_keys_of_the_workflow_defaults() -> None:
    data = _data(retry={"max_attempts": 5, "tiers": [2, 10], "budget": {"ratio": 0.5}})
    data["stages"]["act"]["retry"] = {
        "base_s": 0.5,
        "retry_on": ["ConnectionError"],
        "on_exhausted": "escalate",
        "budget": {"min_retries": 1, "max_run_retries": 4},
    }
    data["stages"]["plan"]["retry"] = None  # this stage never retries
    topology = parse_topology(data, "inline")
    act = topology.stages["act"].retry
    assert act == RetryPolicy(
        max_attempts=5,
        base_s=0.5,
        tiers_s=(2, 10),
        retry_on=("ConnectionError",),
        on_exhausted="escalate",
        budget=RetryBudgetConfig(ratio=0.5, min_retries=1, max_run_retries=4),
    )
    assert topology.stages["plan"].retry is None
    assert topology.retry_topics == {2: "triage.retry.2s", 10: "triage.retry.10s"}


def test_only_a_stage_with_retry_adds_its_tiers() -> None:
    data = _data()
    data["stages"]["act"]["retry"] = {"tiers": [7]}
    topology = parse_topology(data, "inline")
    assert topology.stages["plan"].retry is None
    assert topology.retry_topics == {7: "triage.retry.7s"}


@pytest.mark.parametrize(
    ("retry", "path", "words"),
    [
        ({"tiers": [30, 5]}, "retry.tiers", "ascending"),
        ({"tiers": []}, "retry.tiers", "at least one"),
        ({"tiers": [0]}, "retry.tiers", "ascending"),
        ({"max_attempts": 0}, "retry.max_attempts", "must be > 0"),
        ({"retry_on": ["not a class"]}, "retry.retry_on[0]", "class name"),
        ({"on_exhausted": "panic"}, "retry.on_exhausted", "escalate"),
        ({"cap_s": 1, "base_s": 2}, "retry.cap_s", "at least base_s"),
        ({"budget": {"ratio": -1}}, "retry.budget.ratio", "must be >= 0"),
        ({"tries": 3}, "retry.tries", ""),
    ],
)
def test_mistakes_name_the_key(retry: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_topology(_data(retry=retry), "inline")
    assert caught.value.key_path == path
    assert words in str(caught.value)


def test_a_stage_mistake_names_the_stage_key() -> None:
    data = _data()
    data["stages"]["act"]["retry"] = {"tiers": [9, 3]}
    with pytest.raises(ConfigError) as caught:
        parse_topology(data, "inline")
    assert caught.value.key_path == "stages.act.retry.tiers"


def test_a_stage_reading_another_topic_does_not_retry() -> None:
    data = _data(retry={})
    data["stages"]["enrich"] = {
        "handler": "topology.example_handlers:act",
        "background": True,
        "input_topic": "triage.completed",
    }
    topology = parse_topology(data, "inline")
    assert topology.stages["enrich"].retry is None  # the workflow's default skips it
    data["stages"]["enrich"]["retry"] = {"max_attempts": 2}
    with pytest.raises(ConfigError) as caught:
        parse_topology(data, "inline")
    assert caught.value.key_path == "stages.enrich.retry"
    assert "own lane topics" in str(caught.value)
