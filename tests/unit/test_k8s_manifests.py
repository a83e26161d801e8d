"""deploy/k8s/: every manifest is schema-valid (Kubernetes kinds against the schemas
bundled in kubernetes-validate, strict; KEDA ScaledObjects against KEDA's CRD and its
scalers' metadata keys, vendored in deploy/k8s/schemas/), matches the example topology
(a workload and a ScaledObject per stage, replicas bounded by partition counts), runs
real `streams` commands, and is what deploy/render.py makes of the topology."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from streams.cli import app
from streams.topology import Stage, Topology, load_topology
from tests.metric_inventory import defined_sample_names
from tests.promql_names import series_names

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
TOPOLOGY_FILE = "topology/example.yaml"
#: The Kubernetes release the manifests are checked against (KEDA 2.21 supports it).
K8S_VERSION = "1.33"

Manifest = dict[str, Any]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _manifests() -> list[Manifest]:
    return [
        doc
        for path in _manifest_files()
        for doc in yaml.safe_load_all(path.read_text())
        if doc is not None
    ]


def _of_kind(*kinds: str) -> list[Manifest]:
    return [m for m in _manifests() if m["kind"] in kinds]


def _topology() -> Topology:
    return load_topology(ROOT / TOPOLOGY_FILE, validate_handlers=False)


def _partitions(topology: Topology, stage: Stage) -> int:
    topics = topology.all_topics()
    return min(topics[topic].partitions for topic in stage.input_topics)


def _stage_of(manifest: Manifest) -> str | None:
    labels: dict[str, str] = manifest["metadata"].get("labels", {})
    return labels.get("streams.dev/stage")


def _containers(workload: Manifest) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return containers


# ----------------------------------------------------------------------------- schemas


def _strict(schema: Any) -> Any:
    """A CRD schema as the API server's pruning sees it: fields it does not declare are
    dropped silently there, so flag them here (additionalProperties: false wherever a
    schema lists properties and does not keep unknown fields)."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        if out.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def _scaled_object_schema() -> dict[str, Any]:
    crd = yaml.safe_load((SCHEMAS / "keda.sh_scaledobjects.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = _strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}, "labels": {"type": "object"}},
        "additionalProperties": False,
    }
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return schema


def _trigger_keys() -> dict[str, dict[str, dict[str, Any]]]:
    scalers: dict[str, dict[str, dict[str, Any]]] = json.loads(
        (SCHEMAS / "keda-trigger-metadata.json").read_text()
    )["scalers"]
    return scalers


def _trigger_problems(trigger: dict[str, Any]) -> Iterator[str]:
    keys = _trigger_keys().get(trigger["type"])
    if keys is None:
        yield f"no metadata keys known for trigger type {trigger['type']}"
        return
    given: dict[str, str] = trigger["metadata"]
    for name in given:
        base = name.removesuffix("FromEnv")
        if name in keys:
            continue
        if name != base and base in keys and keys[base]["from_env"]:
            continue
        yield f"{trigger['type']} trigger: unknown metadata key {name}"
    for name, spec in keys.items():
        if spec["required"] and name not in given and f"{name}FromEnv" not in given:
            yield f"{trigger['type']} trigger: missing required metadata key {name}"
        if "enum" in spec and name in given and given[name] not in spec["enum"]:
            yield f"{trigger['type']} trigger: {name}={given[name]} not in {spec['enum']}"


def test_every_kubernetes_manifest_is_schema_valid() -> None:
    checked = 0
    for manifest in _manifests():
        if manifest["apiVersion"].startswith("keda.sh/"):
            continue
        try:
            kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{manifest['kind']} {manifest['metadata']['name']}: {exc.message}")
        checked += 1
    assert checked >= 8


def test_every_scaled_object_is_valid_against_kedas_crd_and_scalers() -> None:
    schema = _scaled_object_schema()
    scaled = _of_kind("ScaledObject")
    assert scaled
    for manifest in scaled:
        assert manifest["apiVersion"] == "keda.sh/v1alpha1"
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest), key=str)
        assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
        for trigger in manifest["spec"]["triggers"]:
            assert list(_trigger_problems(trigger)) == [], manifest["metadata"]["name"]


def test_the_schema_checks_reject_what_they_should() -> None:
    scaled = _of_kind("ScaledObject")[0]
    typo = json.loads(json.dumps(scaled))
    typo["spec"]["maxReplicas"] = typo["spec"].pop("maxReplicaCount")
    assert list(jsonschema.Draft7Validator(_scaled_object_schema()).iter_errors(typo))
    trigger = {"type": "kafka", "metadata": {"consumerGroup": "g", "lagTreshold": "5"}}
    assert set(_trigger_problems(trigger)) == {
        "kafka trigger: unknown metadata key lagTreshold",
        "kafka trigger: missing required metadata key bootstrapServers",
    }
    deployment = json.loads(json.dumps(_of_kind("Deployment")[0]))
    _containers(deployment)[0]["comand"] = ["streams"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


# ----------------------------------------------------------------------------- topology


def test_one_workload_and_one_scaled_object_per_stage() -> None:
    topology = _topology()
    workloads = {_stage_of(m): m for m in _of_kind("Deployment", "StatefulSet") if _stage_of(m)}
    scaled = {_stage_of(m): m for m in _of_kind("ScaledObject")}
    assert set(workloads) == set(topology.stages)
    assert set(scaled) == set(topology.stages)
    for name, stage in topology.stages.items():
        workload = workloads[name]
        # Exactly-once stages fence by a stable worker id: a StatefulSet's pod names.
        expected = "StatefulSet" if stage.delivery == "exactly_once" else "Deployment"
        assert workload["kind"] == expected, name
        target = scaled[name]["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == (expected, workload["metadata"]["name"])
        (container,) = _containers(workload)
        command = container["command"]
        assert command[:5] == ["streams", "worker", TOPOLOGY_FILE, "--stage", name]
        assert command[command.index("--metrics-host") + 1] == "0.0.0.0"
        if stage.delivery == "exactly_once":
            assert command[command.index("--worker-id") + 1] == "$(POD_NAME)"


def test_replicas_are_bounded_by_the_stage_partition_count() -> None:
    topology = _topology()
    for manifest in _of_kind("ScaledObject"):
        stage = topology.stages[str(_stage_of(manifest))]
        spec = manifest["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["maxReplicaCount"] <= _partitions(topology, stage), stage.name


def test_stages_scale_on_each_lanes_kafka_lag_and_on_oldest_queued_age() -> None:
    topology = _topology()
    known = defined_sample_names()
    for manifest in _of_kind("ScaledObject"):
        stage = topology.stages[str(_stage_of(manifest))]
        triggers = manifest["spec"]["triggers"]
        kafka = [t["metadata"] for t in triggers if t["type"] == "kafka"]
        assert {t["consumerGroup"] for t in kafka} == {stage.consumer_group}
        assert sorted(t["topic"] for t in kafka) == sorted(stage.input_topics)
        assert all(int(t["lagThreshold"]) > 0 for t in kafka)
        (age,) = [t for t in triggers if t["type"] == "prometheus"]
        query = age["metadata"]["query"]
        assert series_names(query) <= known, query
        assert "age_seconds" in query and f'stage="{stage.name}"' in query
        assert 0 < float(age["metadata"]["threshold"]) < stage.max_queue_age_s


def test_kafka_triggers_read_the_bootstrap_variable_the_workload_gets() -> None:
    config = {m["metadata"]["name"]: m["data"] for m in _of_kind("ConfigMap")}
    for manifest in _of_kind("ScaledObject"):
        (workload,) = [
            m
            for m in _of_kind("Deployment", "StatefulSet")
            if m["metadata"]["name"] == manifest["spec"]["scaleTargetRef"]["name"]
        ]
        (container,) = _containers(workload)
        variables = {
            key
            for source in container.get("envFrom", [])
            for key in config[source["configMapRef"]["name"]]
        }
        for trigger in manifest["spec"]["triggers"]:
            if trigger["type"] == "kafka":
                assert trigger["metadata"]["bootstrapServersFromEnv"] in variables


def test_intake_has_a_deployment_and_a_service_and_the_monitor_runs() -> None:
    deployments = {
        m["metadata"]["labels"]["app.kubernetes.io/component"]: m for m in _of_kind("Deployment")
    }
    services = _of_kind("Service")
    for component in ("intake", "monitor"):
        workload = deployments[component]
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        service = [s for s in services if s["spec"]["selector"] == pod_labels]
        assert len(service) == 1, component
        port_names = {p["name"] for c in _containers(workload) for p in c["ports"]}
        assert {p["targetPort"] for p in service[0]["spec"]["ports"]} <= port_names
    (intake,) = _containers(deployments["intake"])
    assert intake["command"][:3] == ["streams", "intake", TOPOLOGY_FILE]
    assert intake["readinessProbe"]["httpGet"]["path"] == "/healthz"
    (monitor,) = _containers(deployments["monitor"])
    assert monitor["command"][:5] == ["streams", "monitor", TOPOLOGY_FILE, "--serve", "9400"]
    assert monitor["command"][5:] == ["--host", "0.0.0.0"]


def test_variables_used_in_commands_are_defined() -> None:
    for workload in _of_kind("Deployment", "StatefulSet"):
        for container in _containers(workload):
            used = set(re.findall(r"\$\((\w+)\)", " ".join(container["command"])))
            defined = {env["name"] for env in container.get("env", [])}
            assert used <= defined, workload["metadata"]["name"]


def _streams_commands() -> list[list[str]]:
    return [
        container["command"]
        for workload in _of_kind("Deployment", "StatefulSet")
        for container in _containers(workload)
        if container["command"][0] == "streams"
    ]


def test_every_streams_command_is_a_real_cli_entry_point_with_its_options() -> None:
    runner = CliRunner()
    commands = _streams_commands()
    assert len(commands) >= 5
    for command in commands:
        result = runner.invoke(app, [command[1], "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (command, result.output)
        for option in (part for part in command if part.startswith("--")):
            assert option in result.output, (command, option)


# ----------------------------------------------------------------------------- rendering


def _render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_render", ROOT / "deploy" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifests_are_what_render_makes_of_the_example_topology(tmp_path: Path) -> None:
    _render_module().render(ROOT / TOPOLOGY_FILE, tmp_path)
    rendered = {p.name: p.read_text() for p in (tmp_path / "k8s").glob("*.yaml")}
    committed = {p.name: p.read_text() for p in K8S.glob("*.yaml")}
    assert rendered.keys() == committed.keys()
    for name, text in rendered.items():
        assert committed[name] == text, f"deploy/k8s/{name} drifted: run deploy/render.py"


def test_kustomization_lists_every_manifest_file() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in _manifest_files())


def test_containers_run_without_privileges_and_the_intake_survives_drains() -> None:
    for workload in _of_kind("Deployment", "StatefulSet"):
        for container in _containers(workload):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, workload["metadata"]["name"]
            assert security["capabilities"]["drop"] == ["ALL"]
    (budget,) = _of_kind("PodDisruptionBudget")
    (intake,) = [
        m
        for m in _of_kind("Deployment")
        if m["metadata"]["labels"]["app.kubernetes.io/component"] == "intake"
    ]
    assert budget["spec"]["selector"] == intake["spec"]["selector"]
    assert budget["spec"]["minAvailable"] < intake["spec"]["replicas"]
