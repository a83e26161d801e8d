"""`streams worker` on a review stage and `streams review` as real processes: a run parked
by the worker is listed over HTTP by the review server, approved there, and continues to
the next stage with the decision in its headers; SIGTERM stops the server with exit 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.review import ReviewDesk
from streams.testing import publish, read_records

from .process_helpers import REPO_ROOT, worker_processes, write_workflow
from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_review_server_and_worker_processes_approve_a_run(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    topology, path = write_workflow(
        admin,
        tmp_path,
        {
            "approve": {"kind": "review", "handler": None, "downstream": ["send"],
                        "review": {"max_pending": 4, "max_wait_s": 40, "on_timeout": "decline"}},
            "send": {},
        },
    )  # fmt: skip
    port = _free_port()
    log_path = tmp_path / "review.log"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PYTHONUNBUFFERED": "1"}
    with worker_processes(bootstrap, tmp_path) as workers, log_path.open("wb") as log_file:
        workers.start(path, "approve")
        server = subprocess.Popen(
            [sys.executable, "-m", "streams", "review", str(path), "--port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            [event] = events(topology, "approve", 1, payload=b'{"refund": 40}')
            publish(
                client_config, topology.stages["approve"].input_topics_by_lane["standard"], [event]
            )
            url = f"http://127.0.0.1:{port}/v1/workflows/{topology.workflow}/reviews"

            def listed() -> dict[str, Any]:
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        return dict(json.load(response))
                except (urllib.error.URLError, ConnectionError):
                    return {"reviews": []}

            deadline = time.monotonic() + 30
            while not listed()["reviews"] and time.monotonic() < deadline:
                time.sleep(0.2)
            shown = listed()
            assert [r["run_id"] for r in shown["reviews"]] == [event.run_id], workers.logs()
            assert shown["stages"][0]["pending"] == 1 and shown["stages"][0]["max_pending"] == 4
            request = urllib.request.Request(
                f"{url}/{event.run_id}",
                data=json.dumps({"decision": "approve", "note": None, "reviewer": "ana"}).encode(),
                method="POST", headers={"content-type": "application/json"},
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=5) as response:
                assert json.load(response)["state"] == "approved"
            with pytest.raises(urllib.error.HTTPError) as again:  # the first decision stands
                urllib.request.urlopen(request, timeout=5)
            assert again.value.code == 409
            again.value.close()
            topic = topology.stages["send"].input_topics_by_lane["standard"]
            [record] = read_records(client_config, topic, 3, expect=1, timeout_s=20)
            assert dict(record.headers)["streams.review.decision"] == b"approve"
            server.send_signal(signal.SIGTERM)
            assert server.wait(15) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(10)


def test_pending_reviews_survive_kill_9_of_the_worker_process(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    topology, path = write_workflow(
        admin,
        tmp_path,
        {
            "approve": {"kind": "review", "handler": None, "downstream": ["send"],
                        "review": {"max_pending": 4, "max_wait_s": 45, "on_timeout": "decline"}},
            "send": {},
        },
    )  # fmt: skip
    runs = events(topology, "approve", 2)
    desk = ReviewDesk(topology, client_config)
    try:
        with worker_processes(bootstrap, tmp_path) as workers:
            first = workers.start(path, "approve")
            publish(
                client_config, topology.stages["approve"].input_topics_by_lane["standard"], runs
            )
            deadline = time.monotonic() + 30
            while len(desk.pending()) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(desk.pending()) == 2, workers.logs()
            deadlines = {r.run_id: r.deadline_ms for r in desk.pending()}
            first.signal(signal.SIGKILL)
            assert first.wait(10) is not None
            workers.start(path, "approve")
            # Nothing is lost: the redelivered records (uncommitted) find their reviews.
            for run in runs:
                desk.decide(run.run_id, "approve", reviewer="ana")
            topic = topology.stages["send"].input_topics_by_lane["standard"]
            records = read_records(client_config, topic, 3, expect=2, timeout_s=40)
            assert sorted(r.key or b"" for r in records) == sorted(r.run_id.encode() for r in runs)
            assert all(dict(r.headers)["streams.review.decision"] == b"approve" for r in records)
            kept = {r.run_id: r.deadline_ms for r in map(desk.get, deadlines) if r is not None}
            assert kept == deadlines  # decided entries keep the original deadline
    finally:
        desk.close()
