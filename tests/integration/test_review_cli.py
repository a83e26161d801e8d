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
from collections.abc import Callable
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


@pytest.mark.timeout(120)
def test_pending_reviews_survive_kill_9_of_the_worker_process_and_decided_ones_go(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    """A run decided before the kill moved on: its entry is tombstoned in W.reviews (once
    committed past and older than rate_window_s), so the restarted worker neither
    resurrects it nor sends it again; the pending ones survive."""
    topology, path = write_workflow(
        admin,
        tmp_path,
        {
            "approve": {"kind": "review", "handler": None, "downstream": ["send"],
                        "review": {"max_pending": 4, "max_wait_s": 45, "on_timeout": "decline",
                                   "rate_window_s": 2}},
            "send": {},
        },
    )  # fmt: skip
    done, *runs = events(topology, "approve", 3)
    lane_topic = topology.stages["approve"].input_topics_by_lane["standard"]
    sent_topic = topology.stages["send"].input_topics_by_lane["standard"]
    desk = ReviewDesk(topology, client_config)
    try:
        with worker_processes(bootstrap, tmp_path) as workers:
            first = workers.start(path, "approve")
            publish(client_config, lane_topic, [done])  # first in its partition
            _until(lambda: len(desk.pending()) == 1, 30, "the first review", workers.logs)
            desk.decide(done.run_id, "approve", reviewer="ana")
            read_records(client_config, sent_topic, 3, expect=1, timeout_s=20)
            # Committed past, the decided entry goes: a tombstone, read back by the desk.
            _until(lambda: desk.get(done.run_id) is None, 20, "its tombstone", workers.logs)
            publish(client_config, lane_topic, runs)
            _until(lambda: len(desk.pending()) == 2, 30, "2 pending reviews", workers.logs)
            deadlines = {r.run_id: r.deadline_ms for r in desk.pending()}
            first.signal(signal.SIGKILL)
            assert first.wait(10) is not None
            workers.start(path, "approve")
            fresh = ReviewDesk(topology, client_config)  # reads W.reviews from its start
            try:
                assert fresh.get(done.run_id) is None  # not resurrected
                assert {r.run_id for r in fresh.pending()} == set(deadlines)
            finally:
                fresh.close()
            # Nothing is lost: the redelivered records (uncommitted) find their reviews.
            for run in runs:
                desk.decide(run.run_id, "approve", reviewer="ana")
            records = read_records(client_config, sent_topic, 3, expect=3, timeout_s=40)
            keys = sorted(r.key or b"" for r in records)
            assert keys == sorted(r.run_id.encode() for r in [done, *runs])  # done once
            assert all(dict(r.headers)["streams.review.decision"] == b"approve" for r in records)
            kept = {r.run_id: r.deadline_ms for r in map(desk.get, deadlines) if r is not None}
            assert kept.items() <= deadlines.items()  # decided entries keep the deadline
            _until(
                lambda: all(desk.get(r) is None for r in deadlines), 20, "tombstones", workers.logs
            )
        assert len(read_records(client_config, sent_topic, 3, expect=4, timeout_s=2)) == 3
    finally:
        desk.close()


def _until(condition: Callable[[], bool], timeout_s: float, what: str, logs: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s: {logs()}"
        time.sleep(0.1)
