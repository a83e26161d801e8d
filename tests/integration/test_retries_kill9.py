"""kill -9 of a `streams worker` while its retries wait in a tier: the restarted worker
forwards and finishes every one of them (none lost; at-least-once may duplicate)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.testing import publish
from tests.integration.process_helpers import TopicReader, worker_processes, write_workflow
from tests.integration.workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

COUNT = 40


def test_kill9_while_retries_are_pending_loses_none(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    stage = {
        "handler": "tests.integration.retry_handlers:retry_first_attempt",
        "retry": {"tiers": [3, 30], "cap_s": 30, "budget": {"ratio": 1.0, "min_retries": 100}},
    }
    topology, path = write_workflow(admin, tmp_path, {"act": stage}, partitions=2)
    sent = events(topology, "act", COUNT)
    wanted = {e.run_id.encode() for e in sent}
    tier_topic = topology.retry_topics[3]
    with (
        worker_processes(bootstrap, tmp_path) as workers,
        TopicReader(client_config, tier_topic, 2) as tier,
        TopicReader(client_config, topology.completed_topic, 2) as done,
    ):
        first = workers.start(path, "act")
        publish(client_config, f"{topology.workflow}.act.standard", sent)
        assert tier.wait_until(lambda r: len(r.records) >= COUNT, 30), workers.logs()
        done.poll(0.0)
        finished_before = {r.key for r in done.records}
        first.signal(signal.SIGKILL)
        assert first.wait(10) is not None
        killed_at = time.monotonic()
        # Each retry was due 3 s after its write: most are still in the tier when it dies.
        second = workers.start(path, "act")
        ok = done.wait_until(lambda r: wanted <= {rec.key for rec in r.records}, 40)
        assert ok, (
            f"missing {len(wanted - {rec.key for rec in done.records})} runs\n{workers.logs()}"
        )
        assert second.alive
    assert len(finished_before) < COUNT  # the kill really came while retries were pending
    assert time.monotonic() - killed_at < 45
