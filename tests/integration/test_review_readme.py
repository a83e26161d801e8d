"""The README's "Human review" examples run: its curl session lists a parked review and
approves it through a review server, and its Python example (ReviewDesk) approves one,
against the real broker and a running review worker (the run continues both times)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.review import ReviewDesk, ReviewServer, review_worker
from streams.testing import WorkerThread, publish

from .monitor_helpers import wait_for
from .process_helpers import REPO_ROOT, start, workers, write_workflow
from .test_review import FAST, sent
from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

__all__ = ["workers"]  # the fixture, used by name

SECTION = (REPO_ROOT / "README.md").read_text(encoding="utf-8").split("### Human review", 1)[1]
SECTION = SECTION.split("\n### ", 1)[0]


def _block(language: str) -> str:
    [block] = re.findall(rf"```{language}\n(.*?)```", SECTION, re.S)
    return str(block)


def test_the_readme_review_examples_run(
    admin: Admin,
    client_config: ClientConfig,
    bootstrap: str,
    tmp_path: Path,
    workers: list[WorkerThread],
) -> None:
    topology, path = write_workflow(
        admin,
        tmp_path,
        {
            "draft": {"downstream": ["approve"]},
            "approve": {"kind": "review", "handler": None, "downstream": ["send"],
                        "review": {"max_pending": 4, "max_wait_s": 60, "on_timeout": "decline"}},
            "send": {},
        },
    )  # fmt: skip
    start(workers, review_worker(topology, "approve", client_config, options=FAST))
    server = ReviewServer(topology, client_config, host="127.0.0.1", port=0).start()
    desk = ReviewDesk(topology, client_config)
    try:
        lane = topology.stages["approve"].input_topics_by_lane["standard"]
        publish(client_config, lane, events(topology, "approve", 1))
        wait_for(lambda: len(desk.pending()) == 1, 20, "a pending review")
        shell = _block("sh").replace("http://127.0.0.1:8095", server.url)
        shell = shell.replace("/workflows/triage/", f"/workflows/{topology.workflow}/")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", shell], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        assert '"state":"approved"' in done.stdout.replace(" ", ""), done.stdout
        wait_for(lambda: len(sent(client_config, topology, 1)) == 1, 20, "the run sent on")

        publish(client_config, lane, events(topology, "approve", 1))
        wait_for(lambda: len(desk.pending()) == 1, 20, "another pending review")
        python = _block("python")
        python = python.replace('"topology/triage.yaml"', repr(str(path)))
        python = python.replace('"127.0.0.1:9092"', repr(bootstrap))
        exec(compile(python, "README.md", "exec"), {})
        wait_for(lambda: desk.pending() == [], 20, "the review decided in Python")
        assert len(sent(client_config, topology, 2)) == 2
    finally:
        desk.close()
        server.close()
