"""Chaos: the broker loses its data (wiped, restarted on the same port, the workflow's topics
created again) under a running intake. What the intake held of the queue is then no longer
true: /healthz must say so (503 with the reason) and submissions must not be decided on the
stale ledger."""

from __future__ import annotations

import time

import httpx
import pytest

from streams.config import Settings
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.kafka.local_broker import LocalBroker
from tests.integration.intake_helpers import http_server, intake_workflow, running_intake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_an_intake_whose_ledger_was_wiped_is_unhealthy_and_decides_nothing(
    own_broker: Settings,
) -> None:
    broker = LocalBroker(own_broker)
    state, _ = broker.start()
    port = int(state.bootstrap.rsplit(":", 1)[1])
    client = ClientConfig(state.bootstrap, client_id="chaos-wipe")
    try:
        topology = intake_workflow(Admin(client), {})
        with running_intake(topology, client) as intake, http_server(intake) as base:
            url = f"{base}/v1/workflows/{topology.workflow}/runs"
            with httpx.Client(timeout=20) as http:
                for i in range(5):  # queued: no worker runs the stage
                    answer = http.post(url, json={"tenant": "t", "payload": {"i": i}})
                    assert answer.status_code == 202, answer.text
                healthy = http.get(f"{base}/healthz")
                assert healthy.status_code == 200, healthy.text
                broker.stop()
                broker.start(port=port, fresh=True)
                Admin(client).apply(
                    TopicWanted(topic, spec.partitions, None, spec.compacted)
                    for topic, spec in topology.all_topics().items()
                )
                # Once the broker answers again, health must not come back on a stale ledger.
                deadline = time.monotonic() + 60
                seen: list[tuple[int, str]] = []
                while time.monotonic() < deadline:
                    health = http.get(f"{base}/healthz")
                    seen.append((health.status_code, health.text))
                    if health.status_code == 503 and (
                        "went back" in health.text or "cluster id changed" in health.text
                    ):
                        break
                    time.sleep(0.5)
                else:
                    raise AssertionError(f"healthz never reported the lost ledger: {seen[-3:]}")
                assert health.headers["retry-after"]
                assert intake.capacity_feed.latest().readable  # the broker itself is fine
                time.sleep(2.0)
                assert http.get(f"{base}/healthz").status_code == 503  # and it stays unhealthy
                refused = http.post(url, json={"tenant": "t", "payload": {}})
                assert refused.status_code == 503, refused.text
                assert "cluster id changed" in refused.json()["reason"]
    finally:
        broker.stop()
