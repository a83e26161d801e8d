"""The quick end-to-end run behind `streams demo`: the example workflow on the local broker,
N task events through every foreground stage, counts printed.

Owns nothing but the script; everything it runs is the library as users run it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from streams.config import Settings
from streams.events import new_task_event
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.kafka.cluster import ensure_bootstrap
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish, read_dead_letters, read_records
from streams.topology import Topology, parse_topology
from streams.types import Lane

EXAMPLE = Path(__file__).resolve().parents[2] / "topology" / "example.yaml"


@dataclass(frozen=True, slots=True)
class QuickDemoResult:
    bootstrap: str
    workflow: str
    published: int
    completed: int
    dead_lettered: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.completed + self.dead_lettered == self.published

    def summary(self) -> str:
        rate = self.completed / self.seconds if self.seconds else 0.0
        verdict = "OK" if self.ok else "INCOMPLETE"
        return (
            f"streams demo on {self.bootstrap} (workflow {self.workflow})\n"
            f"  published      {self.published:>8}\n"
            f"  completed      {self.completed:>8}\n"
            f"  dead-lettered  {self.dead_lettered:>8}\n"
            f"  wall time      {self.seconds:>8.1f} s  ({rate:,.0f} runs/s end to end)\n"
            f"  {verdict}: every published run finished or was dead-lettered"
        )


def demo_topology(source: Path = EXAMPLE) -> Topology:
    """The example workflow under a fresh name, so each demo run starts from empty topics."""
    data = yaml.safe_load(source.read_text())
    data["workflow"] = f"demo-{uuid.uuid4().hex[:6]}"
    return parse_topology(data, str(source))


def run_quick_demo(settings: Settings, *, events: int = 2000) -> QuickDemoResult:
    bootstrap = ensure_bootstrap(settings)
    client = ClientConfig(bootstrap_servers=bootstrap, client_id="streams-demo")
    topology = demo_topology()
    Admin(client).apply(
        TopicWanted(name, spec.partitions, spec.retention_ms, spec.compacted)
        for name, spec in topology.all_topics().items()
    )
    options = WorkerOptions(shutdown_grace_s=10.0)
    workers = [
        WorkerThread(StageWorker(topology, stage.name, client, options=options)).start()
        for stage in topology.stages.values()
        if not stage.background
    ]
    started = time.monotonic()
    entry = topology.entry_stages[0]
    now_ms = int(time.time() * 1000)
    by_lane: dict[Lane, list[object]] = {}
    for i in range(events):
        lane: Lane = "urgent" if i % 5 == 0 else "standard"
        by_lane.setdefault(lane, []).append(
            new_task_event(
                workflow=topology.workflow,
                stage=entry.name,
                tenant=f"tenant-{i % 3}",
                lane=lane,
                payload=b'{"ticket": "printer on fire"}',
                now_ms=now_ms,
            )
        )
    for lane, lane_events in by_lane.items():
        publish(client, entry.input_topics_by_lane[lane], lane_events)  # type: ignore[arg-type]
    partitions = topology.topic_defaults.partitions
    completed = read_records(
        client, topology.completed_topic, partitions, expect=events, timeout_s=120
    )
    seconds = time.monotonic() - started
    dead = read_dead_letters(
        client, topology.dead_letter_topic, partitions, expect=events - len(completed), timeout_s=5
    )
    for worker in workers:
        worker.stop()
    return QuickDemoResult(bootstrap, topology.workflow, events, len(completed), len(dead), seconds)
