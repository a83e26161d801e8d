"""Builds small workflows with unique names for integration tests, and creates their topics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from streams.events import TaskEvent, new_task_event
from streams.kafka.admin import Admin, TopicWanted
from streams.topology import Topology, parse_topology
from streams.types import Lane, TopicPartition


def make_workflow(
    admin: Admin,
    stages: dict[str, dict[str, Any]],
    *,
    lanes: list[str] | None = None,
    partitions: int = 3,
    **top: Any,
) -> Topology:
    """A workflow named uniquely for this test; every stage's handler defaults to a no-op
    (tests pass the real handler to the worker). Topics are created before returning."""
    name = f"t{uuid.uuid4().hex[:10]}"
    data: dict[str, Any] = {
        "workflow": name,
        "lanes": lanes or ["urgent", "standard"],
        "topic_defaults": {"partitions": partitions, "retention_ms": 3_600_000},
        "stages": {
            stage: {"handler": "tests.integration.handlers:noop", **spec}
            for stage, spec in stages.items()
        },
        **top,
    }
    topology = parse_topology(data, f"<test {name}>")
    admin.apply(
        TopicWanted(topic, spec.partitions, None, spec.compacted)
        for topic, spec in topology.all_topics().items()
    )
    return topology


def events(
    topology: Topology,
    stage: str,
    count: int,
    *,
    lane: Lane = "standard",
    payload: bytes = b"{}",
    age_s: float = 0.0,
    deadline_in_s: float | None = None,
    run_ids: list[str] | None = None,
) -> list[TaskEvent]:
    now_ms = int((time.time() - age_s) * 1000)
    return [
        new_task_event(
            workflow=topology.workflow,
            stage=stage,
            tenant="tenant-a",
            lane=lane,
            payload=payload,
            now_ms=now_ms,
            deadline_ms=None
            if deadline_in_s is None
            else int(time.time() * 1000 + deadline_in_s * 1000),
            run_id=run_ids[i] if run_ids else None,
        )
        for i in range(count)
    ]


def declared_partitions(topology: Topology, topics: Iterable[str]) -> set[TopicPartition]:
    """The partitions `topics` were created with, from the topology: not read back from the
    broker's metadata, which on a loaded broker can leave out a topic created moments ago
    (a topic-level error such as leader not available) and make every partition look absent."""
    specs = topology.all_topics()
    return {TopicPartition(topic, p) for topic in topics for p in range(specs[topic].partitions)}
