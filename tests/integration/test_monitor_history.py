"""`streams monitor --once --json` reads dead letters and intake decisions from their
topics: a real intake decides (accepts, then rejects a full tenant), a real worker whose
handler always raises dead-letters everything, and the monitor shows the dead letters per
minute by reason, ERR at the storm rate, and the admission state with its reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.intake.requests import RunRequest
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish
from streams.topology import Topology, load_topology

from .intake_helpers import running_intake
from .process_helpers import REPO_ROOT
from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def always_fails(event: Any, ctx: Any) -> None:
    raise RuntimeError("the model said no")


def write(admin: Admin, directory: Path) -> tuple[Topology, Path]:
    name = f"h{uuid.uuid4().hex[:10]}"
    data = {
        "workflow": name,
        "lanes": ["urgent", "standard"],
        "topic_defaults": {"partitions": 2, "retention_ms": 3_600_000},
        "stages": {
            "plan": {
                "handler": "tests.integration.test_monitor_history:always_fails",
                # The valve would stop the worker; this test wants the storm itself.
                "dead_letter_limit": {"max_ratio": 1.0, "max_consecutive": None},
            }
        },
        "intake": {"max_queued_per_tenant": 3},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    topology = load_topology(path)
    admin.apply(
        TopicWanted(topic, spec.partitions, None, spec.compacted)
        for topic, spec in topology.all_topics().items()
    )
    return topology, path


def test_dead_letters_by_reason_storm_and_admission_from_their_topics(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology, path = write(admin, tmp_path)
    with running_intake(topology, client_config) as intake:
        outcomes = [intake.submit(RunRequest("tenant-a", b"{}")).outcome for _ in range(5)]
    assert outcomes == ["accepted"] * 3 + ["rejected"] * 2
    publish(client_config, f"{topology.workflow}.plan.standard", events(topology, "plan", 10))

    options = WorkerOptions(pressure_refresh_s=0.2, report_interval_s=0.5)
    worker = StageWorker(topology, "plan", client_config, options=options)
    running = WorkerThread(worker).start()
    try:
        spec = topology.stages["plan"]
        deadline = time.monotonic() + 30
        while True:
            parts = admin.partitions_of(spec.input_topics)
            ends = admin.end_offsets(parts)
            done = admin.committed_offsets(spec.consumer_group, parts)
            if sum(ends[tp] - (done.get(tp) or 0) for tp in parts) == 0:
                break
            assert time.monotonic() < deadline, "plan did not dead-letter its 13 records"
            time.sleep(0.1)
    finally:
        running.stop()

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": client_config.bootstrap_servers}
    done_run = subprocess.run(
        [sys.executable, "-m", "streams", "monitor", str(path), "--once", "--json",
         "--storm", "5", "--sample-for", "1"],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert done_run.returncode == 0, done_run.stderr
    snapshot = json.loads(done_run.stdout)
    plan = snapshot["stages"][0]
    assert plan["dead_letters_per_min"] == {"handler_error": 13.0}
    assert plan["status"] == "ERR" and "dead-letter storm" in plan["why"]
    assert plan["lag"] == 0
    assert snapshot["dead_letters_per_min"] == {"handler_error": 13.0}
    assert {"stage": "plan", "reason": "handler_error", "count": 13} in snapshot[
        "dead_letters_seen"
    ]
    intake_view = snapshot["intake"]
    assert intake_view["decisions_per_min"] == {"accepted": 3.0, "rejected": 2.0}
    assert intake_view["admission"] == "rejecting"
    assert intake_view["admission_reason"] == "tenant_full"
