"""Intake settings: defaults, a full section, and one clear error per kind of mistake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streams.errors import ConfigError
from streams.intake.config import IntakeConfig, intake_limits, load_intake_config
from streams.policy.admission import AdmissionLimits, LanePolicy
from streams.topology import Topology, load_topology, parse_topology

H = "tests.unit.topologies.handlers:ok"


def topology(
    intake: Any = None,
    *,
    source: str = "wf.yaml",
    lanes: list[str] | None = None,
    stages: dict[str, Any] | None = None,
) -> Topology:
    data: dict[str, Any] = {
        "workflow": "triage",
        "stages": stages or {"plan": {"handler": H, "downstream": ["act"]}, "act": {"handler": H}},
    }
    if intake is not None:
        data["intake"] = intake
    if lanes is not None:
        data["lanes"] = lanes
    return parse_topology(data, source, validate_handlers=False)


def config(intake: Any = None, **kwargs: Any) -> IntakeConfig:
    return load_intake_config(topology(intake, **kwargs))


def error(intake: Any, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config(intake, **kwargs)
    return caught.value


def test_missing_section_gives_the_defaults() -> None:
    parsed = config()
    assert parsed.limits == AdmissionLimits(max_queued=10_000, max_queued_per_tenant=1_000)
    assert dict(parsed.limits.lanes) == {
        "urgent": LanePolicy("accept"),
        "standard": LanePolicy("delay", 30.0),
        "background": LanePolicy("reject"),
    }
    assert (parsed.entry_stage, parsed.default_lane) == ("plan", "standard")
    assert (parsed.dedupe_window_s, parsed.max_body_bytes, parsed.payload_schema) == (
        86_400.0,
        65_536,
        None,
    )
    assert intake_limits(parsed) is parsed.limits
    assert config({}) == parsed


def test_full_section(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    schema = tmp_path / "schemas" / "run.avsc"
    schema.write_text(json.dumps({"type": "record", "name": "Run", "fields": []}))
    parsed = config(
        {
            "max_queued_runs": 500,
            "max_queued_per_tenant": 100,
            "tenants": {"acme": {"max_queued": 300, "weight": 3}, "tiny": {"weight": 0.5}},
            "saturation_ratio": 0.9,
            "pressure_saturation_ratio": 0.6,
            "lanes": {
                "standard": {"on_saturation": "downgrade", "downgrade_to": "background"},
                "background": {"on_saturation": "delay", "delay_s": 120},
            },
            "retry_after_s": {"min": 2, "max": 30},
            "deadline_action": "downgrade",
            "dedupe_window_s": 600,
            "max_body_bytes": 1024,
            "payload_schema": "schemas/run.avsc",
            "entry_stage": "plan",
            "default_lane": "urgent",
        },
        source=str(tmp_path / "wf.yaml"),
    )
    limits = parsed.limits
    assert (limits.max_queued, limits.max_queued_per_tenant) == (500, 100)
    assert dict(limits.tenant_max_queued) == {"acme": 300}
    assert dict(limits.tenant_weights) == {"acme": 3.0, "tiny": 0.5}
    assert (limits.saturation_ratio, limits.pressure_saturation_ratio) == (0.9, 0.6)
    assert dict(limits.lanes) == {
        "urgent": LanePolicy("accept"),
        "standard": LanePolicy("downgrade", downgrade_to="background"),
        "background": LanePolicy("delay", 120.0),
    }
    assert (limits.retry_after_min_s, limits.retry_after_max_s) == (2.0, 30.0)
    assert limits.deadline_action == "downgrade"
    assert parsed.payload_schema == schema
    assert (parsed.dedupe_window_s, parsed.max_body_bytes, parsed.default_lane) == (
        600.0,
        1024,
        "urgent",
    )


def test_defaults_follow_a_lower_workflow_bound_and_ratio() -> None:
    parsed = config({"max_queued_runs": 200, "saturation_ratio": 0.4})
    assert parsed.limits.max_queued_per_tenant == 200  # not the default 1000
    assert parsed.limits.pressure_saturation_ratio == 0.4  # not the default 0.5


def test_lanes_follow_the_workflow() -> None:
    parsed = config(lanes=["urgent", "background"], intake={"default_lane": "urgent"})
    assert set(parsed.limits.lanes) == {"urgent", "background"}


def test_empty_yaml_mappings_read_as_empty() -> None:
    assert config({"tenants": None, "lanes": None, "retry_after_s": None}) == config()


@pytest.mark.parametrize(
    ("intake", "key_path", "problem"),
    [
        ({"max_queud_runs": 5}, "intake.max_queud_runs", "did you mean 'max_queued_runs'?"),
        ({"max_queued_runs": 0}, "intake.max_queued_runs", "must be > 0, got 0"),
        ({"max_queued_runs": -3}, "intake.max_queued_runs", "must be > 0, got -3"),
        ({"max_queued_runs": "10"}, "intake.max_queued_runs", "whole number, got '10'"),
        ({"max_queued_runs": True}, "intake.max_queued_runs", "whole number, got True"),
        ({"max_queued_runs": 1.5}, "intake.max_queued_runs", "whole number, got 1.5"),
        ({"max_queued_runs": None}, "intake.max_queued_runs", "got nothing (null)"),
        ({"max_queued_per_tenant": 0}, "intake.max_queued_per_tenant", "must be > 0"),
        (
            {"max_queued_runs": 100, "max_queued_per_tenant": 101},
            "intake.max_queued_per_tenant",
            "101 is above max_queued_runs (100)",
        ),
        ({"tenants": [1]}, "intake.tenants", "must be a mapping, got a list"),
        ({"tenants": {1: {}}}, "intake.tenants", "keys must be text, got 1; quote it"),
        ({"tenants": {"": {}}}, "intake.tenants.", "must not be empty"),
        ({"tenants": {"a": {"max_queue": 1}}}, "intake.tenants.a.max_queue", "'max_queued'?"),
        ({"tenants": {"a": {"max_queued": 0}}}, "intake.tenants.a.max_queued", "must be > 0"),
        (
            {"tenants": {"a": {"max_queued": 10_001}}},
            "intake.tenants.a.max_queued",
            "is above max_queued_runs (10000)",
        ),
        ({"tenants": {"a": {"weight": 0}}}, "intake.tenants.a.weight", "must be > 0, got 0"),
        ({"tenants": {"a": {"weight": ".inf"}}}, "intake.tenants.a.weight", "must be a number"),
        ({"tenants": {"a": {"weight": float("inf")}}}, "intake.tenants.a.weight", "finite"),
        ({"saturation_ratio": 0}, "intake.saturation_ratio", "must be in (0, 1]"),
        ({"saturation_ratio": 1.2}, "intake.saturation_ratio", "of max_queued_runs, got 1.2"),
        ({"pressure_saturation_ratio": -0.1}, "intake.pressure_saturation_ratio", "(0, 1]"),
        (
            {"saturation_ratio": 0.6, "pressure_saturation_ratio": 0.7},
            "intake.pressure_saturation_ratio",
            "0.7 is above saturation_ratio (0.6)",
        ),
        ({"lanes": {"standrd": {}}}, "intake.lanes.standrd", "did you mean 'standard'?"),
        (
            {"lanes": {"standard": {"on_saturation": "wait"}}},
            "intake.lanes.standard.on_saturation",
            "must be one of accept, delay, downgrade, reject, got 'wait'",
        ),
        (
            {"lanes": {"standard": {"on_saturaton": "delay"}}},
            "intake.lanes.standard.on_saturaton",
            "did you mean 'on_saturation'?",
        ),
        (
            {"lanes": {"standard": {"on_saturation": "delay", "delay_s": 0}}},
            "intake.lanes.standard.delay_s",
            "must be > 0",
        ),
        (
            {"lanes": {"background": {"delay_s": 5}}},
            "intake.lanes.background.delay_s",
            "only for on_saturation: delay, not reject",
        ),
        (
            {"lanes": {"standard": {"on_saturation": "downgrade"}}},
            "intake.lanes.standard",
            "needs downgrade_to, a less urgent lane (one of background)",
        ),
        (
            {"lanes": {"standard": {"on_saturation": "downgrade", "downgrade_to": "urgent"}}},
            "intake.lanes.standard.downgrade_to",
            "'urgent' is not less urgent than 'standard'",
        ),
        (
            {"lanes": {"background": {"on_saturation": "downgrade", "downgrade_to": "urgent"}}},
            "intake.lanes.background.on_saturation",
            "'background' is the least urgent lane; it cannot downgrade",
        ),
        (
            {"lanes": {"standard": {"on_saturation": "downgrade", "downgrade_to": "bulk"}}},
            "intake.lanes.standard.downgrade_to",
            "unknown lane 'bulk'",
        ),
        (
            {"lanes": {"urgent": {"on_saturation": "accept", "downgrade_to": "standard"}}},
            "intake.lanes.urgent.downgrade_to",
            "only for on_saturation: downgrade",
        ),
        ({"retry_after_s": {"min": 0}}, "intake.retry_after_s.min", "must be > 0"),
        ({"retry_after_s": {"mx": 5}}, "intake.retry_after_s.mx", "did you mean 'max'?"),
        (
            {"retry_after_s": {"min": 10, "max": 5}},
            "intake.retry_after_s.max",
            "min (10) is above max (5)",
        ),
        (
            {"retry_after_s": {"min": 100}},
            "intake.retry_after_s.min",
            "min (100) is above max (60, the default)",
        ),
        ({"retry_after_s": 5}, "intake.retry_after_s", "must be a mapping, got 5"),
        ({"deadline_action": "drop"}, "intake.deadline_action", "must be one of reject, downgrade"),
        ({"dedupe_window_s": 0}, "intake.dedupe_window_s", "must be > 0"),
        ({"max_body_bytes": -1}, "intake.max_body_bytes", "must be > 0"),
        ({"entry_stage": "plam"}, "intake.entry_stage", "did you mean 'plan'?"),
        ({"entry_stage": "act"}, "intake.entry_stage", "fed by another stage"),
        ({"entry_stage": 3}, "intake.entry_stage", "must be a stage name, got 3"),
        ({"default_lane": "bulk"}, "intake.default_lane", "unknown lane 'bulk'"),
        ({"payload_schema": 7}, "intake.payload_schema", "path of an .avsc file, got 7"),
    ],
)
def test_each_mistake_names_its_key(intake: Any, key_path: str, problem: str) -> None:
    caught = error(intake)
    assert caught.source == "wf.yaml"
    assert caught.key_path == key_path
    assert problem in caught.problem


def test_lane_outside_the_workflow() -> None:
    caught = error({"lanes": {"urgent": {}}}, lanes=["standard", "background"])
    assert caught.key_path == "intake.lanes.urgent"
    assert "not one of the workflow's lanes (standard, background)" in caught.problem
    caught = error(
        {"lanes": {"urgent": {"on_saturation": "downgrade", "downgrade_to": "background"}}},
        lanes=["urgent", "standard"],
    )
    assert caught.key_path == "intake.lanes.urgent.downgrade_to"
    assert "not one of the workflow's lanes (urgent, standard)" in caught.problem


def test_default_lane_must_exist_in_the_workflow() -> None:
    caught = error({}, lanes=["urgent", "background"])
    assert caught.key_path == "intake.default_lane"
    assert "no 'standard' lane, the default; name one of urgent, background" in caught.problem
    caught = error({"default_lane": "standard"}, lanes=["urgent", "background"])
    assert "not one of the workflow's lanes" in caught.problem


def test_several_entry_stages_need_a_name() -> None:
    two_entries = {"plan": {"handler": H}, "fetch": {"handler": H}}
    caught = error({}, stages=two_entries)
    assert caught.key_path == "intake.entry_stage"
    assert "several entry stages (plan, fetch); name one" in caught.problem
    assert config({"entry_stage": "fetch"}, stages=two_entries).entry_stage == "fetch"


def test_a_background_stage_is_no_entry() -> None:
    stages = {
        "plan": {"handler": H},
        "index": {"handler": H, "background": True, "input_topic": "triage.completed"},
    }
    caught = error({"entry_stage": "index"}, stages=stages)
    assert "is a background stage; entry stages: plan" in caught.problem


def test_payload_schema_is_relative_to_the_topology_file(tmp_path: Path) -> None:
    source = str(tmp_path / "wf.yaml")
    missing = error({"payload_schema": "run.avsc"}, source=source)
    assert missing.source == source
    assert missing.key_path == "intake.payload_schema"
    assert f"file not found: {tmp_path / 'run.avsc'}" in missing.problem

    (tmp_path / "run.avsc").write_text("{not json")
    broken = error({"payload_schema": "run.avsc"}, source=source)
    assert "is not JSON (line 1, column 2)" in broken.problem

    (tmp_path / "run.avsc").write_text(json.dumps({"name": "Run"}))
    typeless = error({"payload_schema": "run.avsc"}, source=source)
    assert "not an Avro schema: expected a JSON object with a 'type'" in typeless.problem

    (tmp_path / "dir.avsc").mkdir()
    unreadable = error({"payload_schema": "dir.avsc"}, source=source)
    assert "cannot read" in unreadable.problem

    (tmp_path / "run.avsc").write_text(json.dumps({"type": "string"}))
    assert config({"payload_schema": "run.avsc"}, source=source).payload_schema == (
        tmp_path / "run.avsc"
    )


def test_the_error_message_reads_as_one_line() -> None:
    caught = error({"max_queued_runs": 0})
    assert str(caught) == "wf.yaml: intake.max_queued_runs: must be > 0, got 0"


# --------------------------------------------------------------------------- one model


def test_a_file_without_intake_section_still_loads_when_defaults_do_not_fit() -> None:
    # Workers need no intake; the intake says what to add when it is asked to serve it.
    two_entries = {"plan": {"handler": H}, "fetch": {"handler": H}}
    loaded = topology(stages=two_entries)
    assert loaded.intake is None
    with pytest.raises(ConfigError) as caught:
        load_intake_config(loaded)
    assert str(caught.value) == (
        "wf.yaml: intake.entry_stage: the workflow has several entry stages (plan, fetch); name one"
    )


def test_the_topology_carries_the_same_config_the_accessor_returns() -> None:
    loaded = topology({"max_queued_runs": 50})
    assert loaded.intake is not None
    assert load_intake_config(loaded) is loaded.intake
    assert loaded.intake.limits.max_queued == 50


@pytest.mark.parametrize(
    ("intake", "key_path", "problem"),
    [
        ({"max_queued_per_tenant": None}, "intake.max_queued_per_tenant", "got nothing (null)"),
        ({"pressure_saturation_ratio": None}, "intake.pressure_saturation_ratio", "a number"),
        ({"tenants": {"a": {"max_queued": None}}}, "intake.tenants.a.max_queued", "(null)"),
        (
            {"lanes": {"standard": {"on_saturation": None}}},
            "intake.lanes.standard.on_saturation",
            "must be one of accept, delay, downgrade, reject, got nothing (null)",
        ),
        (
            {"lanes": {"standard": {"on_saturation": "downgrade", "downgrade_to": 3}}},
            "intake.lanes.standard.downgrade_to",
            "must be a lane name, got 3",
        ),
        ({"payload_schema": ""}, "intake.payload_schema", "path of an .avsc file, got ''"),
        ({"default_lane": 1}, "intake.default_lane", "must be a lane name, got 1"),
        ({1: 2}, "intake", "keys must be text, got 1; quote it"),
        ({"lanes": {2: {}}}, "intake.lanes", "keys must be text, got 2; quote it"),
        ({"deadline_action": "rejct"}, "intake.deadline_action", "(did you mean 'reject'?)"),
    ],
)
def test_explicit_nulls_and_wrong_kinds_name_their_key(
    intake: Any, key_path: str, problem: str
) -> None:
    caught = error(intake)
    assert caught.key_path == key_path
    assert problem in caught.problem


def test_null_sections_read_as_empty() -> None:
    assert config(None) == config({"lanes": {"standard": None}, "tenants": {"a": None}})
    data = {"workflow": "triage", "stages": {"plan": {"handler": H}}, "intake": None}
    loaded = parse_topology(data, "wf.yaml", validate_handlers=False)
    assert loaded.intake == config()


def test_intake_mistakes_in_a_file_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(
        "workflow: triage\n"
        "stages:\n"
        "  plan: {handler: tests.unit.topologies.handlers:ok}\n"
        "intake:\n"
        "  tenants:\n"
        "    acme:\n"
        "      max_queued: 0\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_topology(path)
    assert (
        str(caught.value) == f"{path}: intake.tenants.acme.max_queued: must be > 0, got 0 [line 7]"
    )
