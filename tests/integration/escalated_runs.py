"""A workflow whose runs were retried once and then escalated by a real worker, for the
tests of what reads W.escalations and the retry tiers (the monitor, `streams escalations`).

Owns that scene: the worker runs only until every run is escalated, so what reads the
topics afterwards reads Kafka alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streams.events import TaskEvent
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.runtime.worker import StageWorker
from streams.signals import Escalate
from streams.testing import WorkerThread, publish, read_records
from streams.topology import Topology

from .process_helpers import write_workflow
from .workflows import events

#: Every failure goes to the 1 s tier; the second attempt escalates.
RETRY_THEN_ESCALATE: dict[str, Any] = {
    "tiers": [1, 3],
    "base_s": 0.2,
    "cap_s": 1,
    "retry_on": ["ConnectionError"],
    "max_attempts": 3,
    "on_exhausted": "escalate",
    "budget": {"ratio": 1.0, "min_retries": 100},
}
ESCALATION_NOTE = "a person must look at this"


async def flaky_then_escalate(event: Any, ctx: Any) -> None:
    if event.attempt == 0:
        raise ConnectionError("crm flaked")
    raise Escalate(ESCALATION_NOTE)


def escalated_runs(
    admin: Admin, client: ClientConfig, directory: Path, count: int, **stages: dict[str, Any]
) -> tuple[Topology, Path, list[TaskEvent]]:
    """Stage `act` (the entry stage; plus `stages`) ran `count` runs: each retried once
    through the 1 s tier with reason handler_error, then escalated (reason escalated). The
    topology is written to `directory` as YAML (for the CLI) with its topics created; the
    worker is stopped when this returns. Returns the topology, its file and the runs."""
    topology, path = write_workflow(
        admin,
        directory,
        {
            "act": {
                "handler": "tests.integration.escalated_runs:flaky_then_escalate",
                "retry": RETRY_THEN_ESCALATE,
            },
            **{
                s: {"handler": "tests.integration.handlers:noop", **spec}
                for s, spec in stages.items()
            },
        },
        lanes=["urgent", "standard"],
        partitions=2,
        intake={"entry_stage": "act", "max_queued_runs": 100},
    )
    sent = events(topology, "act", count)
    publish(client, topology.stages["act"].input_topics_by_lane["standard"], sent)
    worker = StageWorker(topology, "act", client, handler=flaky_then_escalate)
    running = WorkerThread(worker).start()
    try:
        escalations = topology.all_topics()[topology.escalations_topic].partitions
        read_records(client, topology.escalations_topic, escalations, expect=count, timeout_s=30)
    finally:
        running.stop()
    assert running.error is None
    return topology, path, sent
