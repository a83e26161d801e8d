"""`streams runs get W RUN_ID` against the real broker, read from Kafka with no intake
running: a run queued in the first stage, then in the second, then completed; a run
dead-lettered by the second stage's handler (with its reason); an unknown run (exit 1)."""

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
from streams.intake.service import Intake
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread
from streams.topology import Topology, load_topology

from .intake_helpers import http_server, running_intake
from .process_helpers import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def act(event: Any, ctx: Any) -> None:
    if json.loads(event.payload).get("poison"):
        raise ValueError("poisoned ticket")
    ctx.emit(event)


def workflow(admin: Admin, directory: Path) -> tuple[Topology, Path]:
    name = f"g{uuid.uuid4().hex[:10]}"
    data = {
        "workflow": name,
        "lanes": ["urgent", "standard"],
        "topic_defaults": {"partitions": 2, "retention_ms": 3_600_000},
        "stages": {
            "plan": {"handler": "tests.integration.handlers:noop", "downstream": ["act"]},
            "act": {
                "handler": "tests.integration.test_runs_get:act",
                "dead_letter_limit": {"max_ratio": 1.0, "max_consecutive": None},
            },
        },
        "intake": {"max_queued_runs": 100},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    topology = load_topology(path)
    admin.apply(
        TopicWanted(topic, spec.partitions, None, spec.compacted)
        for topic, spec in topology.all_topics().items()
    )
    return topology, path


def runs_get(env: dict[str, str], path: Path, run_id: str, *more: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "streams", "runs", "get", str(path), run_id, "--json", *more],
        capture_output=True, text=True, timeout=40, env=env, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def submit(topology: Topology, client: ClientConfig, payload: dict[str, Any]) -> str:
    with running_intake(topology, client) as intake:
        decision = intake.submit(
            RunRequest(tenant="acme", payload=json.dumps(payload).encode(), lane="urgent")
        )
    assert decision.outcome == "accepted" and decision.run_id is not None, decision
    return decision.run_id


def wait_state(intake: Intake, run_id: str, state: str) -> None:
    deadline = time.monotonic() + 20
    while (found := intake.status(run_id)) is None or found.state != state:
        assert time.monotonic() < deadline, f"{run_id}: {found}"
        time.sleep(0.05)


def worker(topology: Topology, stage: str, client: ClientConfig) -> WorkerThread:
    options = WorkerOptions(pressure_refresh_s=0.2, report_interval_s=0.5)
    return WorkerThread(StageWorker(topology, stage, client, options=options)).start()


def test_runs_get_says_where_a_run_is_from_kafka_alone(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology, path = workflow(admin, tmp_path)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": client_config.bootstrap_servers}
    good = submit(topology, client_config, {"ticket": 1})

    # No intake and no worker runs: the ledger alone says queued; plan's topic holds it.
    first = runs_get(env, path, good)
    assert (first["state"], first["stage"], first["finished"]) == ("queued", "plan", False)
    assert first["tenant"] == "acme" and first["lane"] == "urgent"

    plan = worker(topology, "plan", client_config)
    try:
        bad = submit(topology, client_config, {"poison": True})
        with running_intake(topology, client_config) as intake:
            deadline = time.monotonic() + 20
            while getattr(intake.status(good, find_stage=True), "stage", None) != "act":
                assert time.monotonic() < deadline, "plan did not pass the run on"
                time.sleep(0.1)
        second = runs_get(env, path, good)
        assert (second["state"], second["stage"]) == ("queued", "act")

        text = subprocess.run(
            [sys.executable, "-m", "streams", "runs", "get", str(path), good],
            capture_output=True, text=True, timeout=40, env=env, cwd=REPO_ROOT, check=False,
        )  # fmt: skip
        assert text.returncode == 0, text.stderr
        assert f"run {good}: queued in stage act" in text.stdout, text.stdout

        acting = worker(topology, "act", client_config)
        try:
            with running_intake(topology, client_config) as intake:
                wait_state(intake, good, "completed")
                wait_state(intake, bad, "dead_lettered")
        finally:
            acting.stop()
    finally:
        plan.stop()

    done = runs_get(env, path, good)
    assert (done["state"], done["finished"], done["stage"]) == ("completed", True, None)
    assert done["finished_at_ms"] >= done["submitted_at_ms"]
    dead = runs_get(env, path, bad)
    assert (dead["state"], dead["reason"]) == ("dead_lettered", "handler_error")
    with running_intake(topology, client_config) as intake, http_server(intake) as url:
        asked = runs_get(env, path, bad, "--intake-url", url)  # the running intake's answer
        assert (asked["state"], asked["reason"]) == ("dead_lettered", "handler_error")
        missing = subprocess.run(
            [sys.executable, "-m", "streams", "runs", "get", str(path), "nope",
             "--intake-url", url],
            capture_output=True, text=True, timeout=40, env=env, cwd=REPO_ROOT, check=False,
        )  # fmt: skip
        assert missing.returncode == 1 and "no run nope" in missing.stderr

    dead_text = subprocess.run(
        [sys.executable, "-m", "streams", "runs", "get", str(path), bad],
        capture_output=True, text=True, timeout=40, env=env, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert "dead_lettered (handler_error)" in dead_text.stdout, dead_text.stdout
    assert f"streams dlq show {path} --run-id {bad}" in dead_text.stdout

    unknown = subprocess.run(
        [sys.executable, "-m", "streams", "runs", "get", str(path), "no-such-run"],
        capture_output=True, text=True, timeout=40, env=env, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert unknown.returncode == 1 and "no run no-such-run" in unknown.stderr
    assert "Traceback" not in unknown.stderr
