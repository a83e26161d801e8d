"""Workers with a schema registry configured, against the real broker and the registry
double over HTTP (no real registry runs here; README "Schema registry" says why)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.events import TaskEventCodec
from streams.intake.requests import RunRequest
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.operate.schema_subjects import apply_subjects
from streams.registry import RegistryClient, RegistryIds
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.serde import SchemaStore
from streams.testing import WorkerThread, publish, publish_raw, read_events, read_records
from tests.registry_double import RegistryDouble, running_registry

from .intake_helpers import intake_workflow, running_intake
from .workflows import events, make_workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[RegistryDouble]:
    with running_registry() as double:
        monkeypatch.setenv("STREAMS_SCHEMA_REGISTRY_URL", double.url)
        yield double


async def forward(event: Any, ctx: Any) -> None:
    ctx.emit(event)


def run_plan_to_act(admin: Admin, client_config: ClientConfig, count: int) -> tuple[Any, list[Any]]:
    topology = make_workflow(admin, {"plan": {"downstream": ["act"]}, "act": {}}, partitions=1)
    sent = events(topology, "plan", count)
    publish(client_config, f"{topology.workflow}.plan.standard", sent)
    worker = StageWorker(
        topology, "plan", client_config, handler=forward, options=WorkerOptions(metrics_port=0)
    )
    running = WorkerThread(worker).start()
    out = read_records(client_config, f"{topology.workflow}.act.standard", 1, expect=count)
    running.stop()
    assert running.error is None
    assert len(out) == count
    return topology, out


def test_worker_round_trip_writes_registered_ids(
    admin: Admin, client_config: ClientConfig, registry: RegistryDouble
) -> None:
    topology, out = run_plan_to_act(admin, client_config, 20)
    act_topic = f"{topology.workflow}.act.standard"
    client = RegistryClient(registry.url)
    assert f"{act_topic}-value" in client.subjects()
    task_event_id = client.lookup(
        f"{act_topic}-value", registry.texts[min(registry.texts)]
    )  # the only schema registered so far
    assert task_event_id is not None
    for record in out:
        assert record.value is not None
        assert record.value[:1] == b"\x00"
        assert int.from_bytes(record.value[1:5], "big") == task_event_id
    # A consumer that has never seen the id resolves it through the registry.
    fresh = TaskEventCodec(SchemaStore(SCHEMAS, registry=RegistryIds(client)))
    before = len(registry.requests)
    decoded = [fresh.decode(r.value) for r in out if r.value is not None]
    assert {e.stage for e in decoded} == {"act"}
    assert f"GET /schemas/ids/{task_event_id}" in registry.requests[before:]


def test_worker_reads_both_formats_during_migration(
    admin: Admin, client_config: ClientConfig, registry: RegistryDouble
) -> None:
    topology = make_workflow(admin, {"plan": {"downstream": ["act"]}, "act": {}}, partitions=1)
    topic = f"{topology.workflow}.plan.standard"
    old = events(topology, "plan", 5)
    single = TaskEventCodec(SchemaStore(SCHEMAS, registry=None))
    publish_raw(client_config, topic, [single.encode(e) for e in old[:1]], key=b"k")
    for event in old[1:]:
        publish_raw(client_config, topic, [single.encode(event)], key=event.run_id.encode())
    new = events(topology, "plan", 5)
    publish(client_config, topic, new)  # framed: the registry is configured
    worker = StageWorker(
        topology, "plan", client_config, handler=forward, options=WorkerOptions(metrics_port=0)
    )
    running = WorkerThread(worker).start()
    out = read_events(client_config, f"{topology.workflow}.act.standard", 1, expect=10)
    running.stop()
    assert running.error is None
    assert sorted(e.run_id for e in out) == sorted(e.run_id for e in old + new)


def test_apply_then_worker_uses_the_applied_ids(
    admin: Admin, client_config: ClientConfig, registry: RegistryDouble
) -> None:
    topology = make_workflow(admin, {"plan": {"downstream": ["act"]}, "act": {}}, partitions=1)
    client = RegistryClient(registry.url)
    done = apply_subjects(client, topology, SchemaStore(SCHEMAS, registry=None))
    ids = {c.subject: c.schema_id for c in done}
    publish(client_config, f"{topology.workflow}.plan.standard", events(topology, "plan", 3))
    worker = StageWorker(
        topology, "plan", client_config, handler=forward, options=WorkerOptions(metrics_port=0)
    )
    running = WorkerThread(worker).start()
    out = read_records(client_config, f"{topology.workflow}.act.standard", 1, expect=3)
    running.stop()
    assert running.error is None
    wanted = ids[f"{topology.workflow}.act.standard-value"]
    assert [int.from_bytes((r.value or b"")[1:5], "big") for r in out] == [wanted] * 3


def test_without_a_registry_records_stay_single_object(
    admin: Admin, client_config: ClientConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMS_SCHEMA_REGISTRY_URL", raising=False)
    _, out = run_plan_to_act(admin, client_config, 5)
    assert all((r.value or b"")[:2] == b"\xc3\x01" for r in out)


FAST_RETRY: dict[str, Any] = {
    "tiers": [1],
    "base_s": 0.2,
    "cap_s": 1,
    "retry_on": ["ConnectionError"],
    "budget": {"ratio": 1.0, "min_retries": 100},
}


def test_retries_go_through_the_tier_framed(
    admin: Admin, client_config: ClientConfig, registry: RegistryDouble
) -> None:
    topology = make_workflow(
        admin, {"plan": {"downstream": ["act"], "retry": FAST_RETRY}, "act": {}}, partitions=1
    )
    sent = events(topology, "plan", 5)

    async def flaky(event: Any, ctx: Any) -> None:
        if event.attempt == 0:
            raise ConnectionError("crm flaked")
        ctx.emit(event)

    publish(client_config, f"{topology.workflow}.plan.standard", sent)
    worker = WorkerThread(
        StageWorker(
            topology, "plan", client_config, handler=flaky, options=WorkerOptions(metrics_port=0)
        )
    ).start()
    done = read_events(client_config, f"{topology.workflow}.act.standard", 1, expect=5)
    tier = read_records(client_config, topology.retry_topics[1], 1, expect=5, timeout_s=5)
    worker.stop()
    assert worker.error is None
    assert sorted(e.run_id for e in done) == sorted(e.run_id for e in sent)
    assert len(tier) == 5 and all((r.value or b"")[:1] == b"\x00" for r in tier)
    assert f"{topology.retry_topics[1]}-value" in RegistryClient(registry.url).subjects()


def test_intake_admits_runs_framed_into_the_first_stage(
    admin: Admin, client_config: ClientConfig, registry: RegistryDouble
) -> None:
    topology = intake_workflow(admin, {"max_queued_runs": 100})
    with running_intake(topology, client_config) as intake:
        decisions = [intake.submit(RunRequest("tenant-a", b"{}")) for _ in range(3)]
    assert {d.outcome for d in decisions} == {"accepted"}
    topic = f"{topology.workflow}.plan.standard"
    records = read_records(client_config, topic, 3, expect=3)
    assert len(records) == 3 and all((r.value or b"")[:1] == b"\x00" for r in records)
    codec = TaskEventCodec(SchemaStore(SCHEMAS, registry=RegistryIds(RegistryClient(registry.url))))
    admitted = {codec.decode(r.value).run_id for r in records if r.value is not None}
    assert admitted == {d.run_id for d in decisions}
