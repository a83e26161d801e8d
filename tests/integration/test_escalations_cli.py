"""`streams escalations list|show|replay W` against the real broker: runs a real worker
retried and then escalated are listed with their stage, reason and note (filters as for
dead letters), shown with their task event decoded, and replayed back through the
intake's admission as new runs keyed by the escalation, recorded on W.replays, so a
second replay sends nothing again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.events import TaskEventCodec
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.testing import read_records
from streams.topology import Topology

from .escalated_runs import ESCALATION_NOTE, escalated_runs
from .process_helpers import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True, text=True, timeout=50, env=env, cwd=REPO_ROOT, check=False,
    )  # fmt: skip


def act_inputs(client: ClientConfig, topology: Topology) -> dict[str, bytes | None]:
    """run id -> idempotency key of every event on act's input topics."""
    codec = TaskEventCodec()
    found: dict[str, bytes | None] = {}
    for topic in topology.stages["act"].input_topics:
        spec = topology.all_topics()[topic]
        for record in read_records(client, topic, spec.partitions, expect=10**6, timeout_s=1.5):
            event = codec.decode(record.value or b"")
            found[event.run_id] = (event.idempotency_key or "").encode()
    return found


def test_list_show_and_replay_escalations_through_admission_once(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology, path, sent = escalated_runs(admin, client_config, tmp_path, 4)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": client_config.bootstrap_servers}
    originals = {e.run_id for e in sent}

    listed = cli(env, "escalations", "list", str(path), "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert {e["run_id"] for e in entries} == originals
    assert {(e["stage"], e["reason"], e["note"], e["attempts"]) for e in entries} == {
        ("act", "escalated", ESCALATION_NOTE, 2)
    }
    assert all(e["error_type"] == "streams.signals.Escalate" for e in entries), entries

    one = sorted(originals)[0]
    filtered = cli(env, "escalations", "list", str(path), "--run-id", one, "--since", "10m")
    assert filtered.returncode == 0, filtered.stderr
    lines = filtered.stdout.splitlines()
    assert len(lines) == 2 and one in lines[0] and "escalated" in lines[0], lines
    assert lines[-1] == "1 shown of 1 matching, 4 in the topic"
    other = cli(env, "escalations", "list", str(path), "--reason", "retries_exhausted")
    assert other.stdout.splitlines()[-1] == "0 shown of 0 matching, 4 in the topic"
    assert cli(env, "escalations", "list", str(path), "--stage", "plan").stdout.endswith(
        "0 shown of 0 matching, 4 in the topic\n"
    )

    shown = cli(env, "escalations", "show", str(path), "--run-id", one)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert text.startswith("escalation ") and "  reason: escalated" in text, text
    assert f"  note: {ESCALATION_NOTE}" in text and f"    run id: {one}" in text, text
    assert "    payload (2 bytes): {}" in text, text
    nothing = cli(env, "escalations", "show", str(path), "--run-id", "no-such-run")
    assert nothing.returncode == 1 and "no escalation matches" in nothing.stderr

    dry = cli(env, "escalations", "replay", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.count("would replay") == 4
    assert set(act_inputs(client_config, topology)) == originals  # nothing sent

    first = cli(env, "escalations", "replay", str(path), "--rate", "20", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    report = json.loads(first.stdout)
    assert report["counts"] == {"accepted": 4}
    results = report["results"]
    assert {r["original_run_id"] for r in results} == originals
    inputs = act_inputs(client_config, topology)
    for r in results:
        assert r["run_id"] not in originals  # a new run, not collapsed into the escalated one
        assert inputs[r["run_id"]] == r["idempotency_key"].encode()
        assert "~replay:" in r["idempotency_key"]
    recorded = read_records(client_config, f"{topology.workflow}.replays", 1, expect=4)
    assert len(recorded) == 4

    second = cli(env, "escalations", "replay", str(path), "--rate", "20")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.splitlines()[-1] == "4 already replayed"
    assert len(act_inputs(client_config, topology)) == 8  # the 4 runs and their 4 replays
