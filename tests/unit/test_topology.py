"""Topology loading: the example, derived names, and one clear error per kind of mistake."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import streams.topology as topology_package
from streams.cli import app
from streams.errors import ConfigError
from streams.policy import dlq_valve, downstream
from streams.topology import (
    CountThresholds,
    Stage,
    TopicSpec,
    Topology,
    load_topology,
    parse_topology,
    topology_keys,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "topology" / "example.yaml"
FIXTURES = Path(__file__).parent / "topologies"
H = "tests.unit.topologies.handlers"

BASE: dict[str, Any] = {
    "workflow": "triage",
    "stages": {
        "plan": {"handler": "topology.example_handlers:plan", "downstream": ["act"]},
        "act": {"handler": "topology.example_handlers:act"},
    },
}
DELETE = object()


def _with(changes: dict[str, Any]) -> dict[str, Any]:
    """BASE with dotted-path changes applied (DELETE removes the key)."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return data


def _write(tmp_path: Path, data: object, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _error(path: Path, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_topology(path, **kwargs)
    return info.value


# --------------------------------------------------------------------------- the example


def test_example_loads_with_handlers_validated() -> None:
    topology = load_topology(EXAMPLE)
    assert topology.workflow == "triage"
    assert topology.lanes == ("urgent", "standard")
    assert list(topology.stages) == ["plan", "act", "enrich"]
    assert [s.name for s in topology.entry_stages] == ["plan"]
    assert topology.stages["act"].delivery == "exactly_once"
    assert topology.stages["plan"].delivery == "at_least_once"
    assert topology.stages["plan"].pressure.lag == CountThresholds(pause=500, resume=250)
    assert topology.stages["plan"].partition_resume == 100  # partition_buffer // 2


def test_example_derived_names() -> None:
    topology = load_topology(EXAMPLE)
    plan, act, enrich = (topology.stages[n] for n in ("plan", "act", "enrich"))
    assert plan.consumer_group == "triage.plan"
    assert plan.input_topics == ("triage.plan.urgent", "triage.plan.standard")
    assert plan.output_topics("urgent") == ("triage.act.urgent",)
    assert act.output_topics("standard") == ("triage.completed",)
    assert enrich.lanes == ("background",)
    assert enrich.input_topics == ("triage.completed",)
    assert enrich.output_topics("background") == ()
    assert enrich.yields_to == ("plan", "act")


def test_all_topics_lists_every_topic_with_its_spec() -> None:
    topology = load_topology(EXAMPLE)
    default = TopicSpec(partitions=6, retention_ms=604_800_000)
    assert topology.all_topics() == {
        "triage.pressure": TopicSpec(partitions=1, retention_ms=-1, compacted=True),
        "triage.completed": default,
        "triage.dlq": default,
        "triage.runs": TopicSpec(partitions=1, retention_ms=-1, compacted=True),
        "triage.control": TopicSpec(partitions=1, retention_ms=-1, compacted=True),
        "triage.decisions": default,
        "triage.delayed": default,
        "triage.plan.urgent": default,
        "triage.plan.standard": default,
        "triage.act.urgent": default,
        "triage.act.standard": default,
    }


# --------------------------------------------------------------------------- derivation


def test_defaults_fill_in_a_minimal_topology() -> None:
    topology = parse_topology(copy.deepcopy(BASE), "inline")
    assert topology.lanes == ("urgent", "standard", "background")
    assert topology.dead_letter_topic == "triage.dlq"
    assert topology.delivery == "at_least_once"
    assert topology.intake is not None  # the intake's defaults fit this workflow
    assert (topology.intake.entry_stage, topology.intake.default_lane) == ("plan", "standard")
    act = topology.stages["act"]
    assert act.partition_resume == act.partition_buffer // 2
    assert act.input_topics == (
        "triage.act.urgent",
        "triage.act.standard",
        "triage.act.background",
    )


def test_stage_overrides_topic_spec_and_dead_letter_topic() -> None:
    data = _with(
        {
            "dead_letter_topic": "triage.dead",
            "topic_defaults": {"partitions": 3, "retention_ms": -1},
            "stages.act.partitions": 12,
        }
    )
    topics = parse_topology(data, "inline").all_topics()
    assert topics["triage.dead"] == TopicSpec(3, -1)
    assert topics["triage.act.urgent"] == TopicSpec(12, -1)
    assert topics["triage.plan.urgent"] == TopicSpec(3, -1)
    assert "triage.dlq" not in topics


def test_lane_missing_downstream_is_demoted_never_promoted() -> None:
    data = _with({"stages.act.lanes": ["standard", "background"]})
    plan = parse_topology(data, "inline").stages["plan"]
    assert plan.output_topics("urgent") == ("triage.act.standard",)
    assert plan.output_topics("standard") == ("triage.act.standard",)
    assert plan.output_topics("background") == ("triage.act.background",)


def test_fan_out_and_background_stage_on_its_own_lane() -> None:
    data = _with(
        {
            "stages.plan.downstream": ["act", "audit"],
            "stages.audit": {"handler": f"{H}:ok", "background": True},
        }
    )
    topology = parse_topology(data, "inline")
    assert topology.stages["plan"].output_topics("urgent") == (
        "triage.act.urgent",
        "triage.audit.background",
    )
    assert topology.stages["audit"].input_topics == ("triage.audit.background",)
    assert topology.stages["audit"].consumer_group == "triage.audit"


def test_output_topics_rejects_a_lane_the_stage_does_not_take() -> None:
    data = _with({"stages.plan.lanes": ["urgent"], "stages.act.lanes": ["urgent"]})
    with pytest.raises(ValueError, match="does not take lane 'standard'"):
        parse_topology(data, "inline").stages["plan"].output_topics("standard")


def test_nested_attribute_handler_resolves() -> None:
    data = _with({"stages.act.handler": f"{H}:Handlers.nested"})
    assert callable(parse_topology(data, "inline").stages["act"].resolve_handler())


def test_validate_handlers_false_skips_import_but_resolve_still_reports(tmp_path: Path) -> None:
    path = _write(tmp_path, _with({"stages.act.handler": "no_such_module:act"}))
    topology = load_topology(path, validate_handlers=False)
    with pytest.raises(ConfigError) as info:
        topology.stages["act"].resolve_handler()
    assert info.value.source == str(path)
    assert info.value.key_path == "stages.act.handler"
    assert "No module named 'no_such_module'" in str(info.value)


def test_objects_are_frozen() -> None:
    topology = load_topology(EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.workflow = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.stages["plan"].concurrency = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.stages["plan"].pressure.lag.pause = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        topology.stages["x"] = topology.stages["plan"]  # type: ignore[index]
    with pytest.raises(TypeError):
        topology.stages["plan"].routes["urgent"] = ()  # type: ignore[index]
    assert isinstance(topology, Topology) and isinstance(topology.stages["plan"], Stage)


# --------------------------------------------------------------------------- file errors


def test_file_not_found() -> None:
    path = FIXTURES / "missing.yaml"
    error = _error(path)
    assert str(error) == f"{path}: file not found"


@pytest.mark.parametrize("name", ["empty.yaml", "comments_only.yaml"])
def test_empty_file(name: str) -> None:
    error = _error(FIXTURES / name)
    assert str(error).startswith(f"{FIXTURES / name}: file is empty")


def test_bad_yaml_syntax_names_the_line() -> None:
    error = _error(FIXTURES / "syntax_error.yaml")
    assert str(FIXTURES / "syntax_error.yaml") in str(error)
    assert "invalid YAML at line 5" in str(error)


def test_duplicate_key_names_the_line() -> None:
    error = _error(FIXTURES / "duplicate_key.yaml")
    assert "duplicate key 'concurrency'" in str(error)
    assert "line 6" in str(error)


def test_typo_names_key_path_suggestion_and_line() -> None:
    path = FIXTURES / "typo.yaml"
    error = _error(path, validate_handlers=False)
    assert str(error) == (
        f"{path}: stages.plan.concurency: unknown key (did you mean 'concurrency'?) [line 5]"
    )
    assert error.key_path == "stages.plan.concurency"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    error = _error(_write(tmp_path, ["workflow", "triage"]))
    assert (
        str(error)
        == f"{tmp_path / 'bad.yaml'}: must be a mapping with 'workflow' and 'stages', got a list"
    )


# --------------------------------------------------------------------------- content errors
# (changes to BASE, expected key path, fragment of the message)

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "unknown key",
        {"stages.plan.concurency": 4},
        "stages.plan.concurency",
        "did you mean 'concurrency'?",
    ),
    ("unknown top key", {"stagse": {}}, "stagse", "did you mean 'stages'?"),
    (
        "unknown pressure key",
        {"stages.plan.pressure": {"lags": {}}},
        "stages.plan.pressure.lags",
        "did you mean 'lag'?",
    ),
    ("missing workflow", {"workflow": DELETE}, "workflow", "required key is missing"),
    (
        "missing handler",
        {"stages.act.handler": DELETE},
        "stages.act.handler",
        "required key is missing",
    ),
    ("no stages", {"stages": {}}, "stages", "needs at least one stage"),
    ("stage not a mapping", {"stages.act": "x"}, "stages.act", "must be a mapping, got 'x'"),
    (
        "wrong type",
        {"stages.act.concurrency": "many"},
        "stages.act.concurrency",
        "must be a whole number, got 'many'",
    ),
    (
        "bool is not int",
        {"stages.act.max_lag": True},
        "stages.act.max_lag",
        "must be a whole number, got True",
    ),
    (
        "zero bound",
        {"stages.act.concurrency": 0},
        "stages.act.concurrency",
        "must be > 0, got 0",
    ),
    (
        "negative bound",
        {"stages.act.partition_buffer": -5},
        "stages.act.partition_buffer",
        "must be > 0, got -5",
    ),
    (
        "zero timeout",
        {"stages.act.handler_timeout_s": 0},
        "stages.act.handler_timeout_s",
        "must be > 0, got 0",
    ),
    (
        "zero partitions",
        {"topic_defaults.partitions": 0},
        "topic_defaults.partitions",
        "must be > 0, got 0",
    ),
    (
        "bad retention",
        {"stages.act.retention_ms": 0},
        "stages.act.retention_ms",
        "or -1 to keep forever, got 0",
    ),
    (
        "bad delivery",
        {"delivery": "at_most_once"},
        "delivery",
        "must be one of at_least_once, exactly_once, got 'at_most_once' "
        "(did you mean 'at_least_once'?)",
    ),
    (
        "bad on_stale",
        {"stages.plan.pressure": {"on_stale": "panic"}},
        "stages.plan.pressure.on_stale",
        "must be one of pause, hold, got 'panic'",
    ),
    (
        "partition_resume at buffer",
        {"stages.act.partition_buffer": 10, "stages.act.partition_resume": 10},
        "stages.act.partition_resume",
        "must be below partition_buffer (10), got 10",
    ),
    (
        "partition_resume negative",
        {"stages.act.partition_resume": -1},
        "stages.act.partition_resume",
        "must be >= 0, got -1",
    ),
    (
        "lag resume not below pause",
        {"stages.plan.pressure": {"lag": {"pause": 500, "resume": 600}}},
        "stages.plan.pressure.lag.resume",
        "must be below pause (500), got 600",
    ),
    (
        "age resume equal pause",
        {"stages.plan.pressure": {"oldest_age_s": {"pause": 5, "resume": 5}}},
        "stages.plan.pressure.oldest_age_s.resume",
        "must be below pause (5.0), got 5.0",
    ),
    (
        "p95 resume above pause",
        {"stages.plan.pressure": {"p95_latency_s": {"pause": 1, "resume": 2}}},
        "stages.plan.pressure.p95_latency_s.resume",
        "must be below pause",
    ),
    (
        "lag pause above downstream max_lag",
        {"stages.act.max_lag": 100},
        "stages.plan.pressure.lag.pause",
        "max_lag of downstream stage 'act' (100), got 500",
    ),
    (
        "age pause above downstream max age",
        {"stages.act.max_queue_age_s": 20},
        "stages.plan.pressure.oldest_age_s.pause",
        "max_queue_age_s of downstream stage 'act'",
    ),
    (
        "pressure on last stage",
        {"stages.act.pressure": {"min_dwell_s": 2}},
        "stages.act.pressure",
        "has no effect",
    ),
    (
        "min_records above window",
        {"stages.act.dead_letter_limit": {"window": 10, "min_records": 20}},
        "stages.act.dead_letter_limit.min_records",
        "at most window (10), got 20",
    ),
    ("unknown lane", {"lanes": ["urgent", "fast"]}, "lanes[1]", "unknown lane 'fast'"),
    ("duplicate lane", {"lanes": ["urgent", "urgent"]}, "lanes[1]", "listed twice"),
    (
        "lanes out of order",
        {"lanes": ["standard", "urgent"]},
        "lanes",
        "from most to least urgent: urgent, standard",
    ),
    ("no lanes", {"lanes": []}, "lanes", "at least one lane"),
    (
        "stage lane not in workflow",
        {"lanes": ["urgent", "standard"], "stages.act.lanes": ["background"]},
        "stages.act.lanes[0]",
        "not one of the workflow's lanes (urgent, standard)",
    ),
    (
        "stage unknown lane",
        {"stages.act.lanes": ["standrad"]},
        "stages.act.lanes[0]",
        "did you mean 'standard'?",
    ),
    (
        "unknown downstream",
        {"stages.plan.downstream": ["acts"]},
        "stages.plan.downstream[0]",
        "unknown stage 'acts' (did you mean 'act'?)",
    ),
    (
        "duplicate downstream",
        {"stages.plan.downstream": ["act", "act"]},
        "stages.plan.downstream[1]",
        "listed twice",
    ),
    (
        "cycle",
        {"stages.act.downstream": ["plan"]},
        "stages.act.downstream",
        "cycle plan -> act -> plan",
    ),
    ("self cycle", {"stages.act.downstream": ["act"]}, "stages.act.downstream", "cycle act -> act"),
    (
        "no lane to demote to",
        {"stages.plan.lanes": ["background"], "stages.act.lanes": ["urgent"]},
        "stages.plan.downstream[0]",
        "takes no lane at or below 'background'",
    ),
    (
        "handler format",
        {"stages.act.handler": "act.py"},
        "stages.act.handler",
        "must look like 'package.module:function', got 'act.py'",
    ),
    (
        "handler module missing",
        {"stages.act.handler": "nope.handlers:act"},
        "stages.act.handler",
        "cannot import 'nope.handlers': ModuleNotFoundError: No module named 'nope'",
    ),
    (
        "handler module raises",
        {"stages.act.handler": "tests.unit.topologies.broken_handlers:act"},
        "stages.act.handler",
        "RuntimeError: boom at import",
    ),
    (
        "handler attribute missing",
        {"stages.act.handler": f"{H}:missing"},
        "stages.act.handler",
        f"module '{H}' has no attribute 'missing'",
    ),
    (
        "handler not callable",
        {"stages.act.handler": f"{H}:NOT_CALLABLE"},
        "stages.act.handler",
        "is not callable (it is a int)",
    ),
    (
        "handler signature",
        {"stages.act.handler": f"{H}:no_ctx"},
        "stages.act.handler",
        "must accept (event, ctx)",
    ),
    (
        "yields_to on foreground",
        {"stages.act.yields_to": ["plan"]},
        "stages.act.yields_to",
        "only background stages yield",
    ),
    (
        "yields_to unknown",
        {"stages.bg": {"handler": f"{H}:ok", "background": True, "yields_to": ["plam"]}},
        "stages.bg.yields_to[0]",
        "unknown stage 'plam' (did you mean 'plan'?)",
    ),
    (
        "yields_to background",
        {"stages.bg": {"handler": f"{H}:ok", "background": True, "yields_to": ["bg"]}},
        "stages.bg.yields_to[0]",
        "must name a foreground stage",
    ),
    (
        "input_topic on foreground",
        {"stages.act.input_topic": "other.topic"},
        "stages.act.input_topic",
        "only background stages",
    ),
    (
        "input_topic invalid",
        {"stages.bg": {"handler": f"{H}:ok", "background": True, "input_topic": "a b"}},
        "stages.bg.input_topic",
        "not a valid Kafka topic name",
    ),
    (
        "input_topic pressure",
        {"stages.bg": {"handler": f"{H}:ok", "background": True, "input_topic": "triage.pressure"}},
        "stages.bg.input_topic",
        "cannot read the pressure topic",
    ),
    (
        "input_topic override",
        {
            "stages.bg": {
                "handler": f"{H}:ok",
                "background": True,
                "input_topic": "triage.completed",
                "partitions": 3,
            }
        },
        "stages.bg.partitions",
        "remove the override",
    ),
    (
        "lanes on background",
        {"stages.bg": {"handler": f"{H}:ok", "background": True, "lanes": ["urgent"]}},
        "stages.bg.lanes",
        "background lane only",
    ),
    (
        "emit to input_topic stage",
        {
            "stages.plan.downstream": ["act", "bg"],
            "stages.bg": {"handler": f"{H}:ok", "background": True, "input_topic": "x.y"},
        },
        "stages.plan.downstream[1]",
        "nothing can emit to it",
    ),
    (
        "cycle through completed",
        {
            "stages.bg": {
                "handler": f"{H}:ok",
                "background": True,
                "input_topic": "triage.completed",
                "downstream": ["plan"],
            }
        },
        "stages.bg.downstream",
        "cycle plan -> act -> bg -> plan",
    ),
    ("bad workflow name", {"workflow": "Triage.v2"}, "workflow", "1-64 characters of a-z"),
    (
        "bad stage name",
        {"stages.Plan": {"handler": f"{H}:ok"}},
        "stages.Plan",
        "1-64 characters of a-z",
    ),
    (
        "dead letter topic clash",
        {"dead_letter_topic": "triage.pressure"},
        "dead_letter_topic",
        "is the pressure topic",
    ),
    (
        "dead letter topic is an input",
        {"dead_letter_topic": "triage.act.urgent"},
        "dead_letter_topic",
        "also an input of stage 'act'",
    ),
    ("intake not a mapping", {"intake": [1]}, "intake", "must be a mapping, got a list"),
]


@pytest.mark.parametrize(
    ("changes", "key_path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_mistake_is_one_clear_error(
    tmp_path: Path, changes: dict[str, Any], key_path: str, fragment: str
) -> None:
    path = _write(tmp_path, _with(changes), name="my_flow.yaml")
    error = _error(path)
    message = str(error)
    assert message.startswith(f"{path}: {key_path}: "), message
    assert error.key_path == key_path
    assert fragment in message, message
    assert "\n" not in message  # one line, not a pydantic dump
    assert "pydantic" not in message.lower() and "Input should" not in message


def test_parse_topology_errors_name_the_source_without_lines() -> None:
    with pytest.raises(ConfigError) as info:
        parse_topology(_with({"stages.act.concurrency": 0}), "inline-source")
    assert str(info.value) == "inline-source: stages.act.concurrency: must be > 0, got 0"


def test_external_input_topic_is_listed_with_its_stage_spec() -> None:
    data = _with(
        {
            "stages.bg": {
                "handler": f"{H}:ok",
                "background": True,
                "input_topic": "billing.completed",
                "partitions": 2,
            }
        }
    )
    topology = parse_topology(data, "inline")
    assert topology.all_topics()["billing.completed"] == TopicSpec(2, 604_800_000)
    assert topology.stages["bg"].input_topics_by_lane == {"background": "billing.completed"}
    assert [s.name for s in topology.entry_stages] == ["plan"]


# --------------------------------------------------------------------------- one model


def test_intake_mistakes_fail_at_load_with_key_path_and_line() -> None:
    path = FIXTURES / "intake_typo.yaml"
    error = _error(path, validate_handlers=False)
    assert str(error) == (
        f"{path}: intake.lanes.standard.on_saturaton: unknown key "
        "(did you mean 'on_saturation'?) [line 8]"
    )


def test_validate_command_rejects_a_typo_inside_intake() -> None:
    path = FIXTURES / "intake_typo.yaml"
    result = CliRunner().invoke(app, ["topology", "validate", str(path)])
    assert result.exit_code == 1, result.output
    assert f"{path}: intake.lanes.standard.on_saturaton: unknown key" in result.output
    assert "Traceback" not in result.output


def test_validate_command_reports_the_intake_of_a_valid_file() -> None:
    result = CliRunner().invoke(app, ["topology", "validate", str(REPO / "topology/triage.yaml")])
    assert result.exit_code == 0, result.output
    assert "intake: runs enter plan, default lane standard, max 1200 queued" in result.output


def test_the_topology_carries_its_intake_config() -> None:
    topology = load_topology(REPO / "topology" / "triage.yaml", validate_handlers=False)
    assert topology.intake is not None
    assert topology.intake.entry_stage == "plan"
    assert topology.intake.limits.max_queued == 1200


def test_one_dead_letter_limit_and_one_on_stale() -> None:
    topology = load_topology(EXAMPLE)
    limit = topology.stages["plan"].dead_letter_limit
    assert type(limit) is dlq_valve.DeadLetterLimit
    assert limit == dlq_valve.DeadLetterLimit()  # the file's defaults are the valve's
    assert topology_package.DeadLetterLimit is dlq_valve.DeadLetterLimit
    assert topology_package.OnStale is downstream.OnStale


def test_validate_command_notes_an_intake_the_defaults_do_not_fit(tmp_path: Path) -> None:
    data = _with({"stages.plan.downstream": []})  # plan and act both take new runs
    result = CliRunner().invoke(app, ["topology", "validate", str(_write(tmp_path, data))])
    assert result.exit_code == 0, result.output  # fine for workers
    assert "intake: not served by the intake until set: intake.entry_stage: " in result.output


# --------------------------------------------------------------------------- the manual
# README "## Workflows" holds a table of every key; these keep it and the model in step.


def _workflows_section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Workflows\n(.*?)(?=^## )", readme, re.S | re.M)
    assert match, "README has no '## Workflows' section"
    return match.group(1)


def test_readme_key_table_lists_exactly_the_keys_the_model_accepts() -> None:
    rows = re.findall(r"^\| `([^`]+)` \|", _workflows_section(), re.M)
    assert len(rows) == len(set(rows)), "a key is listed twice"
    documented, accepted = set(rows), set(topology_keys())
    assert not accepted - documented, f"keys missing from the README table: {accepted - documented}"
    assert not documented - accepted, (
        f"README lists keys the model refuses: {documented - accepted}"
    )


def test_readme_minimal_example_is_the_runnable_file() -> None:
    minimal = REPO / "topology" / "minimal.yaml"
    assert f"```yaml\n{minimal.read_text(encoding='utf-8')}```" in _workflows_section()
    topology = load_topology(minimal)  # handlers imported: it runs as it stands
    assert topology.intake is not None and topology.intake.entry_stage == "draft"
