"""`streams --schema-registry URL topology apply` against the real broker and the registry
double over HTTP: registers every subject, then refuses an incompatible schema change
before touching anything, with an error naming the subject and the incompatibility."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from streams.cli import app
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.registry.settings import forget_adopted_registry
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish, read_records
from streams.topology import load_topology
from tests.registry_double import RegistryDouble, running_registry

from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[RegistryDouble]:
    with running_registry() as double:
        # --schema-registry writes this variable; monkeypatch puts the old value back.
        monkeypatch.setenv("STREAMS_SCHEMA_REGISTRY_URL", "http://127.0.0.1:9/unused")
        yield double


def _write(path: Path, workflow: str, registry_url: str | None = None) -> Path:
    stages = {
        "plan": {"handler": "topology.example_handlers:plan", "downstream": ["act"]},
        "act": {"handler": "topology.example_handlers:act"},
    }
    data: dict[str, Any] = {"workflow": workflow, "stages": stages}
    if registry_url is not None:
        data["schema_registry"] = {"url": registry_url}
    path.write_text(yaml.safe_dump(data))
    return path


async def forward(event: Any, ctx: Any) -> None:
    ctx.emit(event)


def test_apply_registers_subjects_then_refuses_an_incompatible_change(
    tmp_path: Path,
    bootstrap: str,
    admin: Admin,
    registry: RegistryDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    workflow = f"reg{uuid.uuid4().hex[:8]}"
    file = _write(tmp_path / "wf.yaml", workflow)
    runner = CliRunner()
    argv = ["--schema-registry", registry.url, "topology", "apply", str(file)]

    first = runner.invoke(app, argv)
    assert first.exit_code == 0, first.output
    subject = f"{workflow}.act.standard-value"
    assert f"registered      {subject}: dev.streams.TaskEvent@" in first.output
    assert subject in registry.versions

    again = runner.invoke(app, argv)
    assert again.exit_code == 0, again.output
    assert f"unchanged       {subject}" in again.output

    # TaskEvent v-next with a required field and no default: BACKWARD-incompatible.
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    raw = json.loads((schemas / "task_event.avsc").read_text())
    raw["fields"].append({"name": "cost_center", "type": "string"})
    (schemas / "task_event.avsc").write_text(json.dumps(raw))
    monkeypatch.setenv("STREAMS_SCHEMAS_DIR", str(schemas))
    versions_before = {s: list(v) for s, v in registry.versions.items()}
    stale_file = _write(tmp_path / "wf2.yaml", workflow)
    refused = runner.invoke(
        app, ["--schema-registry", registry.url, "topology", "apply", str(stale_file)]
    )
    assert refused.exit_code == 1
    error = refused.output.strip().splitlines()[-1]
    assert error.startswith("error: schema for subject ")
    assert "-value" in error and "cost_center" in error and "BACKWARD" in error
    assert registry.versions == versions_before  # nothing registered


def test_apply_without_registry_registers_nothing(
    tmp_path: Path, bootstrap: str, registry: RegistryDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.delenv("STREAMS_SCHEMA_REGISTRY_URL")
    file = _write(tmp_path / "wf.yaml", f"reg{uuid.uuid4().hex[:8]}")
    result = CliRunner().invoke(app, ["topology", "apply", str(file)])
    assert result.exit_code == 0, result.output
    assert "-value" not in result.output
    assert registry.requests == []


def test_a_topology_file_that_names_the_registry_needs_no_flag(
    tmp_path: Path,
    bootstrap: str,
    admin: Admin,
    client_config: ClientConfig,
    registry: RegistryDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`schema_registry.url` in the file: `topology apply` registers the subjects and a
    worker that reads the file frames its emits with the registered id, with neither
    --schema-registry nor the variable set."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.delenv("STREAMS_SCHEMA_REGISTRY_URL")
    workflow = f"reg{uuid.uuid4().hex[:8]}"
    file = _write(tmp_path / "wf.yaml", workflow, registry_url=registry.url)
    try:
        applied = CliRunner().invoke(app, ["topology", "apply", str(file)])
        assert applied.exit_code == 0, applied.output
        subject = f"{workflow}.act.standard-value"
        assert f"registered      {subject}: dev.streams.TaskEvent@" in applied.output
        assert subject in registry.versions

        topology = load_topology(file, validate_handlers=False)
        sent = events(topology, "plan", 5)
        publish(client_config, f"{workflow}.plan.standard", sent)
        worker = StageWorker(
            topology, "plan", client_config, handler=forward, options=WorkerOptions(metrics_port=0)
        )
        running = WorkerThread(worker).start()
        partitions = topology.stages["act"].topic_spec.partitions
        out = read_records(client_config, f"{workflow}.act.standard", partitions, expect=len(sent))
        running.stop()
        assert running.error is None
        task_event_id = registry.versions[subject][-1]  # what apply registered
        assert [r.value[:1] for r in out if r.value is not None] == [b"\x00"] * len(sent)
        assert {int.from_bytes(r.value[1:5], "big") for r in out if r.value} == {task_event_id}
    finally:
        forget_adopted_registry()  # the process adopted the file's registry
