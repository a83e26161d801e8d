"""The README's example handlers (topology/example_handlers.py) on real workers: a plan that
changes the payload and demotes simple runs, signals that choose dead-letter outcomes."""

from __future__ import annotations

import json

import pytest

from streams import ClientConfig, StageWorker
from streams.kafka.admin import Admin
from streams.testing import WorkerThread, publish, read_dead_letters, read_events

from .workflows import events, make_workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_the_example_handlers_run_as_the_readme_says(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(
        admin,
        {
            "plan": {"handler": "topology.example_handlers:plan", "downstream": ["act"]},
            "act": {"handler": "topology.example_handlers:act"},
        },
        partitions=1,
    )
    simple = events(topology, "plan", 2, lane="urgent", payload=b'{"ticket": 1, "simple": true}')
    hard = events(topology, "plan", 2, lane="urgent", payload=b'{"ticket": 2}')
    no_ticket = events(topology, "plan", 1, lane="urgent", payload=b"{}")
    busy = events(topology, "plan", 1, lane="urgent", payload=b'{"ticket": 3, "crm_busy": true}')
    publish(client_config, f"{topology.workflow}.plan.urgent", simple + hard + no_ticket + busy)
    workers = [
        WorkerThread(StageWorker(topology, stage, client_config)).start()
        for stage in ("plan", "act")
    ]
    done = read_events(client_config, topology.completed_topic, 1, expect=4)
    dead = read_dead_letters(client_config, topology.dead_letter_topic, 1, expect=2)
    for worker in workers:
        worker.stop()
        assert worker.error is None
    lanes = {e.run_id: e.lane for e in done}
    assert lanes == {
        **{e.run_id: "standard" for e in simple},
        **{e.run_id: "urgent" for e in hard},
    }
    assert all(json.loads(e.payload)["steps"][-1] == "reply" for e in done)
    assert sorted((d.stage, d.reason, d.error_message) for d in dead) == [
        ("act", "retry_requested", "CRM rate limit"),
        ("plan", "dead_letter", "no ticket in the request"),
    ]
