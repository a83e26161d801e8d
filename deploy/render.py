"""Renders a workflow's deployment files from its topology: the per-stage Prometheus
thresholds the alert rules compare against, and the Kubernetes manifests (a workload and a
KEDA ScaledObject per stage, the intake, the monitor).

Owns turning topology values (bounds, partition counts, delivery) into those files; must
not talk to Kafka or a cluster. The files in deploy/ are this script's output for
topology/example.yaml, and tests/unit/test_k8s_manifests.py fails when they drift:

    .venv/bin/python deploy/render.py topology/example.yaml     # rewrites deploy/...

For your own workflow, render into a directory of your choice with --out.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from anywhere in the repository

from streams.topology import Stage, Topology, load_topology  # noqa: E402

#: The image docker-compose builds (Dockerfile); kustomization.yaml's `images:` renames it.
IMAGE = "streams:latest"
METRICS_PORT = 9400
INTAKE_PORT = 8080
#: The Prometheus KEDA asks for a stage's oldest queued age (edit for your cluster).
PROMETHEUS_URL = "http://prometheus.monitoring.svc:9090"
#: Scale out when a stage's oldest record has used this share of its max_queue_age_s:
#: a record past the max is dead-lettered, so capacity must arrive well before it.
AGE_TARGET_SHARE = 0.25
CONFIG_MAP = "streams-kafka"

Manifest = dict[str, Any]


def stage_partitions(topology: Topology, stage: Stage) -> int:
    """How many consumers can hold a partition of every lane at once: the fewest
    partitions among the stage's input topics. More replicas than this leave a worker
    without work on some lane (KEDA's kafka scaler caps at the partition count too)."""
    topics = topology.all_topics()
    return min(topics[topic].partitions for topic in stage.input_topics)


def _name(topology: Topology, stage: str) -> str:
    return f"{topology.workflow}-{stage}".replace("_", "-")


def _labels(topology: Topology, component: str, stage: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "streams",
        "app.kubernetes.io/component": component,
        "streams.dev/workflow": topology.workflow,
    }
    if stage is not None:
        labels["streams.dev/stage"] = stage
    return labels


def _scrape_annotations(port: int) -> dict[str, str]:
    # The convention most Prometheus Kubernetes scrape configs follow (pod annotations).
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }


def _container(name: str, command: list[str], port: int, *, probe_path: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": IMAGE,
        "command": command,
        "envFrom": [{"configMapRef": {"name": CONFIG_MAP}}],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": probe_path, "port": "http"}, "periodSeconds": 10},
        "livenessProbe": {
            "httpGet": {"path": probe_path, "port": "http"},
            "periodSeconds": 20,
            "failureThreshold": 6,
        },
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        # streams needs no privilege: it talks to Kafka and serves one HTTP port.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def config_map(topology: Topology) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "labels": _labels(topology, "config")},
        # Every streams process reads the cluster from here; KEDA's kafka trigger reads the
        # same variable from the workload's container (bootstrapServersFromEnv).
        "data": {"KAFKA_BOOTSTRAP_SERVERS": "kafka.kafka.svc:9092"},
    }


def stage_workload(topology: Topology, stage: Stage, topology_path: str) -> list[Manifest]:
    """A Deployment for an at-least-once stage; a StatefulSet (and its headless Service)
    for an exactly-once stage, whose transactional producer fences by a stable worker id:
    pod `act-0` restarted is `act-0` again, so it fences its crashed predecessor."""
    name = _name(topology, stage.name)
    labels = _labels(topology, "stage", stage.name)
    command = ["streams", "worker", topology_path, "--stage", stage.name]
    command += ["--metrics-port", str(METRICS_PORT), "--metrics-host", "0.0.0.0"]
    exactly_once = stage.delivery == "exactly_once"
    if exactly_once:
        command += ["--worker-id", "$(POD_NAME)"]
    container = _container("worker", command, METRICS_PORT, probe_path="/metrics")
    if exactly_once:
        container["env"] = [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ]
    pod = {
        "metadata": {"labels": labels, "annotations": _scrape_annotations(METRICS_PORT)},
        "spec": {
            # The worker drains in-flight handler calls for up to shutdown_grace_s (30 s)
            # after SIGTERM, then commits: give it that and a margin before SIGKILL.
            "terminationGracePeriodSeconds": 45,
            "containers": [container],
        },
    }
    spec: dict[str, Any] = {"replicas": 1, "selector": {"matchLabels": labels}, "template": pod}
    if not exactly_once:
        return [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "labels": labels},
                "spec": spec,
            }
        ]
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "clusterIP": "None",
            "selector": labels,
            "ports": [{"name": "http", "port": METRICS_PORT, "targetPort": "http"}],
        },
    }
    spec |= {"serviceName": name, "podManagementPolicy": "Parallel"}
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }
    return [headless, statefulset]


def scaled_object(topology: Topology, stage: Stage) -> Manifest:
    """KEDA scales the stage on the Kafka lag of each lane topic and on its oldest queued
    age (the monitor's series, computed from the broker, so it exists while no worker
    runs); KEDA takes the largest replica count any trigger asks for."""
    partitions = stage_partitions(topology, stage)
    name = _name(topology, stage.name)
    kind = "StatefulSet" if stage.delivery == "exactly_once" else "Deployment"
    # At max_lag (the stage's own bound) the lag triggers ask for every replica.
    lag_threshold = max(1, stage.max_lag // partitions)
    triggers: list[dict[str, Any]] = [
        {
            "type": "kafka",
            "name": f"lag-{topic.replace('.', '-')}",
            "metadata": {
                "bootstrapServersFromEnv": "KAFKA_BOOTSTRAP_SERVERS",
                "consumerGroup": stage.consumer_group,
                "topic": topic,
                "lagThreshold": str(lag_threshold),
                # streams consumers start a new group at the earliest offset; count lag
                # the same way.
                "offsetResetPolicy": "earliest",
            },
        }
        for topic in stage.input_topics
    ]
    age_target = stage.max_queue_age_s * AGE_TARGET_SHARE
    query = (
        f'max(streams_monitor_lane_oldest_queued_age_seconds{{workflow="{topology.workflow}",'
        f'stage="{stage.name}"}})'
    )
    triggers.append(
        {
            "type": "prometheus",
            "name": "oldest-queued-age",
            # Value, not AverageValue: an age does not add up across replicas.
            "metricType": "Value",
            "metadata": {
                "serverAddress": PROMETHEUS_URL,
                "query": query,
                "threshold": _number(age_target),
            },
        }
    )
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": _labels(topology, "autoscaler", stage.name)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": name},
            # Never to zero: an idle worker still publishes the pressure reports that
            # upstream stages and the intake read.
            "minReplicaCount": 1,
            "maxReplicaCount": partitions,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    # Every scale step is a consumer-group rebalance: scale down slowly.
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": 300,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        }
                    }
                }
            },
            "triggers": triggers,
        },
    }


def intake(topology: Topology, topology_path: str) -> list[Manifest]:
    name = _name(topology, "intake")
    labels = _labels(topology, "intake")
    command = ["streams", "intake", topology_path, "--host", "0.0.0.0"]
    command += ["--port", str(INTAKE_PORT), "--replica-id", "$(POD_NAME)"]
    container = _container("intake", command, INTAKE_PORT, probe_path="/healthz")
    container["env"] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    pod = {
        "metadata": {"labels": labels, "annotations": _scrape_annotations(INTAKE_PORT)},
        "spec": {"terminationGracePeriodSeconds": 30, "containers": [container]},
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            # Replicas share one view through the run ledger (README "Intake"): any count
            # keeps the bounds.
            "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": pod},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": INTAKE_PORT, "targetPort": "http"}],
            },
        },
        {
            # Node drains take one intake replica at a time: the door stays open.
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "labels": labels},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}},
        },
    ]


def monitor(topology: Topology, topology_path: str) -> list[Manifest]:
    name = _name(topology, "monitor")
    labels = _labels(topology, "monitor")
    command = ["streams", "monitor", topology_path, "--serve", str(METRICS_PORT)]
    command += ["--host", "0.0.0.0"]  # loopback by default: Prometheus and KEDA scrape it
    container = _container("monitor", command, METRICS_PORT, probe_path="/metrics")
    pod = {
        "metadata": {"labels": labels, "annotations": _scrape_annotations(METRICS_PORT)},
        "spec": {"containers": [container]},
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            # One is enough: the monitor is stateless and reads everything from Kafka.
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": pod},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": METRICS_PORT, "targetPort": "http"}],
            },
        },
    ]


def k8s_files(topology: Topology, topology_path: str) -> dict[str, list[Manifest]]:
    """File name -> the manifests it holds, for deploy/k8s/."""
    files = {"config.yaml": [config_map(topology)]}
    for stage in topology.stages.values():
        files[f"stage-{stage.name}.yaml"] = [
            *stage_workload(topology, stage, topology_path),
            scaled_object(topology, stage),
        ]
    files["intake.yaml"] = intake(topology, topology_path)
    files["monitor.yaml"] = monitor(topology, topology_path)
    return files


def kustomization(files: list[str]) -> Manifest:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": files,
        # Point this at the image you pushed: `docker build -t REGISTRY/streams:TAG .`
        "images": [{"name": "streams", "newName": "streams", "newTag": "latest"}],
    }


def thresholds(topology: Topology) -> Manifest:
    """Recording rules that hold each stage's bounds as series, so one generic alert rule
    compares every stage's age and lag with its own max (and knows which stages exist)."""
    rules: list[dict[str, Any]] = []
    for stage in topology.stages.values():
        labels = {"workflow": topology.workflow, "stage": stage.name}
        rules.append(
            {
                "record": "streams:stage_max_queue_age_seconds",
                "expr": f"vector({_number(stage.max_queue_age_s)})",
                "labels": labels,
            }
        )
        rules.append(
            {
                "record": "streams:stage_max_lag_records",
                "expr": f"vector({stage.max_lag})",
                "labels": labels,
            }
        )
    return {"groups": [{"name": f"streams-thresholds-{topology.workflow}", "rules": rules}]}


def _number(value: float) -> str:
    return str(int(value)) if value == math.floor(value) else str(value)


class _PlainDumper(yaml.SafeDumper):
    """No &anchors / *aliases for shared dicts: manifests are read by people and kubectl."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(documents: list[Manifest], header: str) -> str:
    body = "---\n".join(
        yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False, width=100) for doc in documents
    )
    return header + body


def render(topology_file: Path, out: Path) -> list[Path]:
    """Write every rendered file under `out` (its prometheus/ and k8s/ folders)."""
    topology = load_topology(topology_file, validate_handlers=False)
    try:
        shown = topology_file.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        shown = topology_file.as_posix()
    header = f"# Rendered by deploy/render.py from {shown}; edit that, then render again.\n"
    written: list[Path] = []

    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)

    write(out / "prometheus" / "thresholds.yml", _dump([thresholds(topology)], header))
    files = k8s_files(topology, shown)
    for file_name, documents in files.items():
        write(out / "k8s" / file_name, _dump(documents, header))
    write(out / "k8s" / "kustomization.yaml", _dump([kustomization(list(files))], header))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("topology", type=Path, help="the workflow's topology YAML")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "deploy", help="target folder")
    args = parser.parse_args(argv)
    for path in render(args.topology, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
