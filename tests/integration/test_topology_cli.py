"""`streams topology validate|apply` against the real broker: idempotent, grows, never shrinks."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from streams.cli import app
from streams.kafka.admin import Admin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _write(path: Path, workflow: str, partitions: int) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "workflow": workflow,
                "lanes": ["urgent", "standard"],
                "topic_defaults": {"partitions": partitions, "retention_ms": 3_600_000},
                "stages": {"plan": {"handler": "topology.example_handlers:plan"}},
            }
        )
    )
    return path


def _eventually_partitions(admin: Admin, topic: str, count: int, within_s: float = 15.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if admin.partition_counts().get(topic) == count:
            return True
        time.sleep(0.2)
    return False


def test_apply_creates_then_reports_unchanged_grows_and_refuses_to_shrink(
    tmp_path: Path, bootstrap: str, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    workflow = f"cli{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    file = _write(tmp_path / "wf.yaml", workflow, 2)

    first = runner.invoke(app, ["topology", "apply", str(file)])
    assert first.exit_code == 0, first.output
    assert f"create          {workflow}.plan.urgent: 2 partitions" in first.output
    assert admin.partition_counts()[f"{workflow}.plan.standard"] == 2

    again = runner.invoke(app, ["topology", "apply", str(file)])
    assert again.exit_code == 0
    assert "create" not in again.output
    assert f"unchanged       {workflow}.plan.urgent" in again.output

    _write(file, workflow, 4)
    grown = runner.invoke(app, ["topology", "apply", str(file)])
    assert grown.exit_code == 0
    assert f"add_partitions  {workflow}.plan.urgent: 2 -> 4" in grown.output
    # The controller has the new partitions; the broker's metadata may show them a moment
    # later (seen once on a loaded CI run: 2 partitions right after the grow).
    assert _eventually_partitions(admin, f"{workflow}.plan.urgent", 4)

    _write(file, workflow, 3)
    shrink = runner.invoke(app, ["topology", "apply", str(file)])
    assert shrink.exit_code == 1
    assert "refused_shrink" in shrink.output
    assert admin.partition_counts()[f"{workflow}.plan.urgent"] == 4
    admin.delete_topics(n for n in admin.partition_counts() if n.startswith(workflow))


def test_validate_names_the_file_and_key_of_a_mistake(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "workflow: w\n"
        "stages:\n"
        "  plan:\n"
        "    handler: topology.example_handlers:plan\n"
        "    concurency: 3\n"
    )
    result = CliRunner().invoke(app, ["topology", "validate", str(bad)])
    assert result.exit_code == 1
    assert "bad.yaml: stages.plan.concurency: unknown key" in result.output
    assert "Traceback" not in result.output

    good = CliRunner().invoke(app, ["topology", "validate", "topology/example.yaml"])
    assert good.exit_code == 0, good.output
    assert "workflow triage is valid" in good.output
