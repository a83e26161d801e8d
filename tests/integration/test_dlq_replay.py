"""`streams dlq replay` against the real broker: dead letters of a failing handler go back
through the intake's admission (a replica of it in the command, or a running intake over
HTTP), at the given rate, within the intake's bound (the refused ones reported, not forced
in), as new runs whose idempotency key is derived from the dead letter (so they do not
collapse into the dead run), recorded on `W.replays`; a second identical replay sends
nothing already admitted again."""

from __future__ import annotations

import dataclasses
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

from streams.events import TaskEvent, TaskEventCodec
from streams.intake.requests import RunRequest
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, read_records
from streams.topology import Topology, load_topology

from .intake_helpers import http_server, running_intake
from .process_helpers import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BOUND = 5  # the intake's max_queued_runs
RATE = 4.0  # replays per second asked for


async def always_fails(event: Any, ctx: Any) -> None:
    raise RuntimeError("the model said no")


def workflow(admin: Admin, directory: Path) -> tuple[Topology, Path]:
    name = f"r{uuid.uuid4().hex[:10]}"
    data = {
        "workflow": name,
        "lanes": ["urgent", "standard"],
        "topic_defaults": {"partitions": 2, "retention_ms": 3_600_000},
        "stages": {
            "plan": {
                "handler": "tests.integration.test_dlq_replay:always_fails",
                "dead_letter_limit": {"max_ratio": 1.0, "max_consecutive": None},
            }
        },
        # Saturation only at the bound itself, and every lane accepts until then: the
        # bound is the only reason a replay is refused here.
        "intake": {
            "max_queued_runs": BOUND,
            "saturation_ratio": 1.0,
            "pressure_saturation_ratio": 1.0,
            "lanes": {
                "urgent": {"on_saturation": "accept"},
                "standard": {"on_saturation": "accept"},
            },
        },
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    topology = load_topology(path)
    admin.apply(
        TopicWanted(topic, spec.partitions, None, spec.compacted)
        for topic, spec in topology.all_topics().items()
    )
    return topology, path


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True, text=True, timeout=50, env=env, cwd=REPO_ROOT, check=False,
    )  # fmt: skip


def dead_runs(
    topology: Topology, client: ClientConfig, count: int, *, key_prefix: str
) -> list[str]:
    """Submit `count` runs through the intake, one at a time (the bound is below `count`),
    each dead-lettered by the failing handler before the next; returns their run ids."""
    worker = StageWorker(topology, "plan", client, options=WorkerOptions(pressure_refresh_s=0.2))
    running = WorkerThread(worker).start()
    run_ids: list[str] = []
    try:
        with running_intake(topology, client) as intake:
            for i in range(count):
                decision = intake.submit(
                    RunRequest(
                        tenant="acme", payload=json.dumps({"ticket": i}).encode(),
                        lane="urgent" if i % 2 else "standard", priority=i,
                        idempotency_key=f"{key_prefix}-{i}",
                    )
                )  # fmt: skip
                assert decision.outcome == "accepted", decision
                assert decision.run_id is not None
                run_ids.append(decision.run_id)
                deadline = time.monotonic() + 20
                while True:
                    status = intake.status(decision.run_id)
                    if status is not None and status.state == "dead_lettered":
                        break
                    assert time.monotonic() < deadline, f"run {i} was not dead-lettered"
                    time.sleep(0.05)
    finally:
        running.stop()
    return run_ids


def entry_events(client: ClientConfig, topology: Topology) -> list[tuple[TaskEvent, int]]:
    """Every event on plan's lane topics, with its broker timestamp (ms)."""
    codec = TaskEventCodec()
    found: list[tuple[TaskEvent, int]] = []
    for topic in topology.stages["plan"].input_topics:
        spec = topology.all_topics()[topic]
        for record in read_records(client, topic, spec.partitions, expect=10**6, timeout_s=1.5):
            assert record.value is not None
            found.append((codec.decode(record.value), record.timestamp_ms))
    return found


def test_replay_goes_through_admission_at_the_rate_within_the_bound_and_only_once(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology, path = workflow(admin, tmp_path)
    originals = dead_runs(topology, client_config, BOUND + 3, key_prefix="ticket")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": client_config.bootstrap_servers}

    # No worker runs now: replayed runs stay queued, so the bound holds the 6th one out.
    first = cli(env, "dlq", "replay", str(path), "--rate", str(RATE), "--json")
    assert first.returncode == 3, first.stdout + first.stderr  # some were refused
    report = json.loads(first.stdout)
    results = report["results"]
    assert [r["original_run_id"] for r in results] == originals  # oldest first
    admitted = [r for r in results if r["outcome"] == "accepted"]
    refused = [r for r in results if r["outcome"] == "rejected"]
    assert len(admitted) == BOUND and len(refused) == 3, results
    assert {r["reason"] for r in refused} == {"workflow_full"}
    assert all(r["retry_after_s"] is not None for r in refused)
    assert report["counts"] == {"accepted": BOUND, "rejected": 3}
    # New runs (the intake names runs), not collapsed into the dead ones by their keys.
    assert all(r["run_id"] not in originals for r in admitted)
    assert len({r["run_id"] for r in admitted}) == BOUND

    replayed = {e.run_id: (e, ts) for e, ts in entry_events(client_config, topology)}
    assert len(replayed) == BOUND + 3 + BOUND
    for number, result in enumerate(results[:BOUND]):
        event, _ = replayed[result["run_id"]]
        original, _ = replayed[result["original_run_id"]]
        assert (event.tenant, event.lane, event.priority, event.payload) == (
            original.tenant, original.lane, original.priority, original.payload,
        )  # fmt: skip
        assert event.idempotency_key == result["idempotency_key"]
        assert event.idempotency_key is not None
        assert event.idempotency_key.startswith(f"ticket-{number}~replay:")
    # The pace: BOUND sends at RATE/s take (BOUND - 1) / RATE seconds at least.
    stamps = sorted(replayed[r["run_id"]][1] for r in admitted)
    spread_s = (stamps[-1] - stamps[0]) / 1000
    assert (BOUND - 1) / RATE * 0.9 <= spread_s <= (BOUND - 1) / RATE + 5.0, spread_s

    # Recorded: one entry per dead letter tried, on the workflow's replays topic.
    recorded = read_records(client_config, f"{topology.workflow}.replays", 1, expect=BOUND + 3)
    assert len(recorded) == BOUND + 3

    # The same command again: the admitted ones are not sent again; the refused are tried
    # again (and refused again: the bound is still full).
    second = cli(env, "dlq", "replay", str(path), "--rate", "20", "--json")
    assert second.returncode == 3, second.stdout + second.stderr
    again = json.loads(second.stdout)
    assert again["counts"] == {"already_replayed": BOUND, "rejected": 3}
    assert {r["run_id"] for r in again["results"] if r["outcome"] == "already_replayed"} == {
        r["run_id"] for r in admitted
    }
    assert len(entry_events(client_config, topology)) == BOUND + 3 + BOUND

    text = cli(env, "dlq", "replay", str(path), "--rate", "20")
    assert "already replayed" in text.stdout and "rejected (workflow_full" in text.stdout
    assert "5 already replayed, 3 rejected" in text.stdout.splitlines()[-1]


def test_replay_over_http_to_a_running_intake_with_filters(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology, path = workflow(admin, tmp_path)
    originals = dead_runs(topology, client_config, 2, key_prefix="order")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": client_config.bootstrap_servers}
    with running_intake(topology, client_config) as intake, http_server(intake) as url:
        dry = cli(env, "dlq", "replay", str(path), "--run-id", originals[1], "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "would replay" in dry.stdout and originals[1] in dry.stdout
        assert len(entry_events(client_config, topology)) == 2  # nothing sent

        done = cli(
            env, "dlq", "replay", str(path), "--run-id", originals[1], "--intake-url", url,
            "--reason", "handler_error", "--stage", "plan", "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        (result,) = json.loads(done.stdout)["results"]
        assert result["outcome"] == "accepted" and result["original_run_id"] == originals[1]
        status = intake.status(result["run_id"])
        assert status is not None and status.state == "queued"
        events = {e.run_id: e for e, _ in entry_events(client_config, topology)}
        assert events[result["run_id"]].idempotency_key == result["idempotency_key"]
        # Over HTTP the payload travels as JSON: the intake publishes it compact.
        replayed, original = events[result["run_id"]], events[originals[1]]
        assert json.loads(replayed.payload) == json.loads(original.payload)
        assert replayed.payload == json.dumps({"ticket": 1}, separators=(",", ":")).encode()

        other = cli(env, "dlq", "replay", str(path), "--stage", "act")
        assert other.returncode == 1 and "no dead letter matches" in other.stderr


async def plan_marks(event: TaskEvent, ctx: Any) -> None:
    """plan's output differs from its input, as a real stage's does."""
    ctx.emit(dataclasses.replace(event, payload=b'{"planned": true}'))


def test_a_run_dead_after_the_entry_stage_restarts_from_its_submission_only_when_asked(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    name = f"r{uuid.uuid4().hex[:10]}"
    data = {
        "workflow": name,
        "lanes": ["urgent", "standard"],
        "topic_defaults": {"partitions": 2, "retention_ms": 3_600_000},
        "stages": {
            "plan": {
                "handler": "tests.integration.test_dlq_replay:plan_marks",
                "downstream": ["act"],
            },
            "act": {
                "handler": "tests.integration.test_dlq_replay:always_fails",
                "dead_letter_limit": {"max_ratio": 1.0, "max_consecutive": None},
            },
        },
        "intake": {"max_queued_runs": 50},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    topology = load_topology(path)
    admin.apply(
        TopicWanted(topic, spec.partitions, None, spec.compacted)
        for topic, spec in topology.all_topics().items()
    )
    options = WorkerOptions(pressure_refresh_s=0.2)
    workers = [
        WorkerThread(StageWorker(topology, stage, client_config, options=options)).start()
        for stage in ("plan", "act")
    ]
    try:
        with running_intake(topology, client_config) as intake:
            decision = intake.submit(
                RunRequest(tenant="acme", payload=b'{"ticket": 9}', idempotency_key="t-9")
            )
            assert decision.run_id is not None
            deadline = time.monotonic() + 20
            while (found := intake.status(decision.run_id)) is None or not found.finished:
                assert time.monotonic() < deadline, found
                time.sleep(0.05)
            assert found.state == "dead_lettered"
    finally:
        for worker in workers:
            worker.stop()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": client_config.bootstrap_servers}

    # act's dead letter holds plan's output: not a submission, so not replayed by default.
    plain = cli(env, "dlq", "replay", str(path), "--json")
    assert plain.returncode == 3, plain.stdout + plain.stderr
    (skipped,) = json.loads(plain.stdout)["results"]
    assert skipped["outcome"] == "skipped" and "--from-entry" in skipped["reason"]

    restarted = cli(env, "dlq", "replay", str(path), "--from-entry", "--json")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    (result,) = json.loads(restarted.stdout)["results"]
    assert result["outcome"] == "accepted" and result["original_run_id"] == decision.run_id
    events = {e.run_id: e for e, _ in entry_events(client_config, topology)}
    replayed = events[result["run_id"]]
    assert replayed.payload == b'{"ticket": 9}'  # the submission, not plan's output
    assert replayed.idempotency_key is not None
    assert replayed.idempotency_key.startswith("t-9~replay:")
