"""`streams dlq list|show` and `streams tail` against the real broker: a real worker
dead-letters task events (its handler raises) and bytes that are no task event; the CLI
lists, filters and shows them (decoded, or their raw bytes), and tail prints records as
they pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish, publish_raw
from streams.topology import Topology, load_topology

from .process_helpers import REPO_ROOT
from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

GARBAGE = b"\x00\xff not a task event"


def workflow(admin: Admin, directory: Path) -> tuple[Topology, Path]:
    name = f"i{uuid.uuid4().hex[:10]}"
    data = {
        "workflow": name,
        "lanes": ["urgent", "standard"],
        "topic_defaults": {"partitions": 2, "retention_ms": 3_600_000},
        "stages": {
            "plan": {
                "handler": "tests.integration.test_monitor_history:always_fails",
                "dead_letter_limit": {"max_ratio": 1.0, "max_consecutive": None},
            }
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
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO_ROOT, check=False,
    )  # fmt: skip


def test_dlq_list_filters_and_show_decodes_or_prints_raw_bytes_and_tail_follows(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology, path = workflow(admin, tmp_path)
    wf = topology.workflow
    sent = events(topology, "plan", 4, payload=b'{"ticket": 7}')
    publish(client_config, f"{wf}.plan.standard", sent)
    publish_raw(client_config, f"{wf}.plan.standard", [GARBAGE], key=b"garbage-key")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": client_config.bootstrap_servers}

    # tail follows plan's input from now on: started first, it must print only the 2 later ones.
    follower = subprocess.Popen(
        [sys.executable, "-m", "streams", "tail", str(path), "--stage", "plan", "--count", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        assert follower.stderr is not None
        assert "following" in follower.stderr.readline()
        later = events(topology, "plan", 2, lane="urgent")
        worker = StageWorker(
            topology, "plan", client_config,
            options=WorkerOptions(pressure_refresh_s=0.2, report_interval_s=0.5),
        )  # fmt: skip
        running = WorkerThread(worker).start()
        try:
            publish(client_config, f"{wf}.plan.urgent", later)
            out, _ = follower.communicate(timeout=30)
            assert follower.returncode == 0
            lines = out.strip().splitlines()
            assert len(lines) == 2
            assert {e.run_id for e in later} == {
                line.split(" run ")[1].split()[0] for line in lines
            }
            assert all(f"{wf}.plan.urgent[" in line and "tenant-a" in line for line in lines)
            spec = topology.stages["plan"]
            deadline = time.monotonic() + 30
            while True:
                parts = admin.partitions_of(spec.input_topics)
                ends = admin.end_offsets(parts)
                done = admin.committed_offsets(spec.consumer_group, parts)
                if sum(ends[tp] - (done.get(tp) or 0) for tp in parts) == 0:
                    break
                assert time.monotonic() < deadline, "plan did not dead-letter its 7 records"
                time.sleep(0.1)
        finally:
            running.stop()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate(timeout=10)

    listed = cli(env, "dlq", "list", str(path))
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.strip().splitlines()
    assert rows[-1] == "7 shown of 7 matching, 7 in the topic", rows
    assert (
        sum("handler_error" in r for r in rows) == 6 and sum("decode_error" in r for r in rows) == 1
    )

    as_json = cli(env, "dlq", "list", str(path), "--reason", "handler_error", "--json")
    entries = json.loads(as_json.stdout)
    assert {e["run_id"] for e in entries} == {e.run_id for e in sent + later}
    assert all(e["error_message"] == "the model said no" for e in entries)

    one = entries[0]
    shown = cli(env, "dlq", "show", str(path), one["id"])
    assert shown.returncode == 0, shown.stderr
    assert f"run id: {one['run_id']}" in shown.stdout and "the model said no" in shown.stdout
    assert "payload (" in shown.stdout and "tenant: tenant-a" in shown.stdout

    raw = cli(env, "dlq", "show", str(path), "--reason", "decode_error")
    assert raw.returncode == 0, raw.stderr
    assert "not a task event" in raw.stdout and "|.. not a task ev|" in raw.stdout  # hex dump
    assert "key: garbage-key" in raw.stdout

    assert cli(env, "dlq", "show", str(path), "--stage", "nope").returncode == 1
    since = cli(env, "dlq", "list", str(path), "--since", "yesterday")
    assert since.returncode == 1 and "10m" in since.stderr and "Traceback" not in since.stderr
