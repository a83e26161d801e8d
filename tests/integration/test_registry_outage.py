"""A worker reading framed records while the schema registry is unreachable, against the
real broker and the registry double over HTTP: the partition holds (paused with reason
``registry_unavailable``, rewound to the record), nothing is dead-lettered, and it resumes
in order once the registry answers; an id the registry says it does not have still
dead-letters as ``decode_error`` with the raw bytes (README "Schema registry"). The same
for the intake's delay path: delayed runs wait out the outage, malformed ones still go to
the dead letters."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.clock import SystemClock
from streams.events import TaskEvent, TaskEventCodec
from streams.intake.delay import DELAY_STAGE, DUE_HEADER, DelayForwarder
from streams.intake.requests import RunRequest
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.producer import RecordProducer
from streams.registry.ids import registered_text, subject_for_topic
from streams.runtime.options import WorkerOptions
from streams.runtime.retries import RETRY_DUE_HEADER, RETRY_STAGE_HEADER, RETRY_TOPIC_HEADER
from streams.runtime.worker import StageWorker
from streams.serde import SchemaStore, StoredSchema
from streams.testing import WorkerThread, publish_raw, read_dead_letters, read_records
from streams.topology import Topology
from streams.types import Record, TopicPartition
from tests.registry_double import RegistryDouble, running_registry

from .intake_helpers import intake_workflow, running_intake
from .workflows import events, make_workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
FAST = WorkerOptions(metrics_port=None, commit_interval_s=0.2, report_interval_s=0.5)
HELD = "registry_unavailable"


class _FixedIds:
    """Frames every record with one id, without asking any registry."""

    def __init__(self, schema_id: int) -> None:
        self.schema_id = schema_id

    def id_for_topic(self, topic: str, schema: StoredSchema) -> int:
        return self.schema_id

    def schema_text(self, schema_id: int) -> str:
        raise AssertionError("the publisher never reads")


def framed(events_: list[TaskEvent], schema_id: int, topic: str) -> list[bytes]:
    codec = TaskEventCodec(SchemaStore(SCHEMAS, registry=_FixedIds(schema_id)))
    return [codec.encode(e, topic=topic) for e in events_]


def single_object(events_: list[TaskEvent]) -> list[bytes]:
    codec = TaskEventCodec(SchemaStore(SCHEMAS, registry=None))
    return [codec.encode(e) for e in events_]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def down_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RegistryDouble, int]]:
    """A registry that holds the TaskEvent schema but is not listening yet (port closed)."""
    double = RegistryDouble()
    port = free_port()
    monkeypatch.setenv("STREAMS_SCHEMA_REGISTRY_URL", f"http://127.0.0.1:{port}")
    yield double, port


def register_task_event(double: RegistryDouble, topic: str) -> int:
    schema = SchemaStore(SCHEMAS, registry=None).current("dev.streams.TaskEvent")
    status, body = double.handle(
        "POST",
        f"/subjects/{subject_for_topic(topic)}/versions",
        {"schema": registered_text(schema)},
    )
    assert status == 200
    return int(body["id"])


class Seen:
    """Run ids in the order the handler saw them, per lane."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_lane: dict[str, list[str]] = {}

    async def __call__(self, event: Any, ctx: Any) -> None:
        with self.lock:
            self.by_lane.setdefault(ctx.lane, []).append(event.run_id)

    def of(self, lane: str) -> list[str]:
        with self.lock:
            return list(self.by_lane.get(lane, ()))


def test_unreachable_registry_holds_the_partition_then_resumes_in_order(
    admin: Admin, client_config: ClientConfig, down_registry: tuple[RegistryDouble, int]
) -> None:
    double, port = down_registry
    topology = make_workflow(admin, {"plan": {}}, partitions=1)
    standard = f"{topology.workflow}.plan.standard"
    urgent = f"{topology.workflow}.plan.urgent"
    schema_id = register_task_event(double, standard)
    before = events(topology, "plan", 2)
    held = events(topology, "plan", 6)
    fast_lane = events(topology, "plan", 4, lane="urgent")
    # One key: the handler sees the standard lane's records in offset order.
    publish_raw(client_config, standard, single_object(before), key=b"k")
    publish_raw(client_config, standard, framed(held, schema_id, standard), key=b"k")
    publish_raw(client_config, urgent, single_object(fast_lane), key=b"u")
    seen = Seen()
    worker = StageWorker(topology, "plan", client_config, handler=seen, options=FAST)
    running = WorkerThread(worker).start()
    standard_tp = TopicPartition(standard, 0)
    try:
        wait_for(
            lambda: HELD in worker.partitions().get(standard_tp, _NOT_YET).paused_by,
            20,
            "the standard partition to pause for the registry",
        )
        # Only the partition hitting the registry holds: the urgent lane is handled.
        wait_for(lambda: len(seen.of("urgent")) == 4, 20, "the urgent lane to be handled")
        time.sleep(3.0)  # a few retries (1 s, 2 s ...) against the closed port
        assert running.error is None
        assert seen.of("standard") == [e.run_id for e in before]
        assert HELD in worker.partitions()[standard_tp].paused_by
        assert worker.status().paused_by_reason.get(HELD) == 1
        assert HELD not in worker.partitions()[TopicPartition(urgent, 0)].paused_by
        # Nothing past the held record is committed (a restart would read it again).
        committed = admin.committed_offsets(topology.stages["plan"].consumer_group, [standard_tp])
        assert committed[standard_tp] in (None, 0, 1, 2)
        dlq_partitions = topology.all_topics()[topology.dead_letter_topic].partitions
        assert (
            read_records(
                client_config, topology.dead_letter_topic, dlq_partitions, expect=1, timeout_s=1
            )
            == []
        )
        with running_registry(double, port=port):
            wait_for(
                lambda: len(seen.of("standard")) == 8, 45, "the held records after the registry"
            )
            wait_for(
                lambda: not worker.partitions()[standard_tp].paused_by, 10, "the pause to lift"
            )
            assert seen.of("standard") == [e.run_id for e in before + held]
            assert f"GET /schemas/ids/{schema_id}" in double.requests
    finally:
        running.stop()
    assert running.error is None
    assert (
        read_records(
            client_config, topology.dead_letter_topic, dlq_partitions, expect=1, timeout_s=1
        )
        == []
    )


def test_an_id_the_registry_does_not_have_is_still_dead_lettered(
    admin: Admin, client_config: ClientConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = make_workflow(admin, {"plan": {}}, partitions=1)
    topic = f"{topology.workflow}.plan.standard"
    good = events(topology, "plan", 3)
    with running_registry() as double:
        monkeypatch.setenv("STREAMS_SCHEMA_REGISTRY_URL", double.url)
        unknown = framed(events(topology, "plan", 1), 999, topic)
        publish_raw(client_config, topic, single_object(good[:1]), key=b"k")
        publish_raw(client_config, topic, unknown, key=b"poison")
        publish_raw(client_config, topic, single_object(good[1:]), key=b"k")
        seen = Seen()
        worker = StageWorker(topology, "plan", client_config, handler=seen, options=FAST)
        running = WorkerThread(worker).start()
        dlq_partitions = topology.all_topics()[topology.dead_letter_topic].partitions
        try:
            dead = read_dead_letters(
                client_config, topology.dead_letter_topic, dlq_partitions, expect=1
            )
            wait_for(lambda: len(seen.of("standard")) == 3, 20, "the good records")
            assert not worker.partitions()[TopicPartition(topic, 0)].paused_by
        finally:
            running.stop()
    assert running.error is None
    assert seen.of("standard") == [e.run_id for e in good]
    assert len(dead) == 1
    assert dead[0].reason == "decode_error"
    assert dead[0].raw_value == unknown[0]
    assert dead[0].original_offset == 1
    assert "999" in (dead[0].error_message or "")


class _NotYet:
    paused_by: frozenset[str] = frozenset()


_NOT_YET: Any = _NotYet()


FORWARDER_LOG = "streams.runtime.retry_forwarder"
FAST_RETRY: dict[str, Any] = {
    "tiers": [1],
    "base_s": 0.2,
    "cap_s": 1,
    "retry_on": ["ConnectionError"],
    "budget": {"ratio": 1.0, "min_retries": 100},
}


def test_a_due_retry_waits_for_the_registry_instead_of_being_skipped(
    admin: Admin,
    client_config: ClientConfig,
    down_registry: tuple[RegistryDouble, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """...and says so once when the outage begins and once when it ends, naming its length."""
    caplog.set_level(logging.WARNING, logger=FORWARDER_LOG)
    double, port = down_registry
    topology = make_workflow(admin, {"plan": {"retry": FAST_RETRY}}, partitions=1)
    standard = f"{topology.workflow}.plan.standard"
    tier = topology.retry_topics[1]
    schema_id = register_task_event(double, tier)
    retry = events(topology, "plan", 1)
    producer = RecordProducer(client_config)
    producer.send(
        tier,
        framed(retry, schema_id, tier)[0],
        key=retry[0].run_id.encode(),
        headers=(
            (RETRY_STAGE_HEADER, b"plan"),
            (RETRY_TOPIC_HEADER, standard.encode()),
            (RETRY_DUE_HEADER, str(int(time.time() * 1000) - 1000).encode()),
        ),
    )
    assert producer.flush(30.0) == 0
    seen = Seen()
    worker = StageWorker(topology, "plan", client_config, handler=seen, options=FAST)
    running = WorkerThread(worker).start()
    try:
        time.sleep(4.0)  # due, but its schema id needs the registry, which is down
        assert running.error is None
        assert seen.of("standard") == []
        with running_registry(double, port=port):
            wait_for(lambda: seen.of("standard") == [retry[0].run_id], 30, "the retry")
    finally:
        running.stop()
    assert running.error is None
    lines = [r.getMessage() for r in caplog.records if r.name == FORWARDER_LOG]
    waits = [line for line in lines if "wait for the schema registry" in line]
    answered = [line for line in lines if "the schema registry answered after" in line]
    assert len(waits) == 1, lines
    assert len(answered) == 1, lines


# ------------------------------------------------------------- the intake's delay path
DELAY_LOG = "streams.intake.delay"


def held(
    client: ClientConfig, topology: Topology, topic: str, expect: int, timeout_s: float = 1.5
) -> list[Record]:
    """What `topic` holds, read raw (nothing needs the registry to read it)."""
    partitions = topology.all_topics()[topic].partitions
    return read_records(client, topic, partitions, expect=expect, timeout_s=timeout_s)


def publish_delayed(client: ClientConfig, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    """Records as the intake writes them to the delayed topic, due now: (key, value)."""
    producer = RecordProducer(client)
    due = ((DUE_HEADER, str(int(time.time() * 1000)).encode()),)
    for key, value in values:
        producer.send(topic, value, key=key, headers=due)
    assert producer.flush(30.0) == 0


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == DELAY_LOG and "registry" in r.getMessage() and r.levelno >= logging.WARNING
    ]


def test_a_delayed_run_waits_out_a_registry_outage_then_enters_the_first_stage(
    admin: Admin,
    client_config: ClientConfig,
    down_registry: tuple[RegistryDouble, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Requests delayed at the door; the registry goes down while they sit in the delayed
    topic. Forwarding them needs the first stage's topic's schema id, which this intake has
    not asked for yet: they wait (no dead letter, none lost) and go on when it answers."""
    caplog.set_level(logging.INFO, logger=DELAY_LOG)
    double, port = down_registry
    topology = intake_workflow(
        admin,
        {"max_queued_runs": 10, "saturation_ratio": 0.2,
         "lanes": {"standard": {"on_saturation": "delay", "delay_s": 1.0}}},
    )  # fmt: skip
    standard = f"{topology.workflow}.plan.standard"
    with running_intake(topology, client_config) as intake:
        with running_registry(double, port=port):
            for _ in range(2):  # the lane fills: standard runs are delayed from here on
                first = intake.submit(RunRequest("t", b"{}", lane="urgent"))
                assert first.outcome == "accepted"
            delayed = [intake.submit(RunRequest("t", b"{}")) for _ in range(3)]
        assert [d.outcome for d in delayed] == ["delayed"] * 3
        # Down now, before they are due; past their due time they wait for the registry.
        due_s = max(d.due_at_ms or 0 for d in delayed) / 1000
        time.sleep(max(0.0, due_s - time.time()) + 4.0)
        assert held(client_config, topology, standard, 1) == []
        assert held(client_config, topology, topology.dead_letter_topic, 1) == []
        with running_registry(double, port=port):
            forwarded = held(client_config, topology, standard, 3, 45)
    assert sorted(r.key or b"" for r in forwarded) == sorted(
        (d.run_id or "").encode() for d in delayed
    )
    assert held(client_config, topology, topology.dead_letter_topic, 1) == []
    lines = outage_lines(caplog)
    assert len(lines) == 2, lines  # one when the outage began, one when it ended
    assert "answered" in lines[1]


def test_a_delayed_run_this_replica_cannot_decode_yet_is_not_dead_lettered(
    admin: Admin,
    client_config: ClientConfig,
    down_registry: tuple[RegistryDouble, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Delayed runs another replica wrote (framed with a schema id this intake has never
    seen) meet a registry outage: they wait and reach the first stage when it is back;
    bytes that are no task event are still dead-lettered at once, with the raw bytes."""
    caplog.set_level(logging.INFO, logger=DELAY_LOG)
    double, port = down_registry
    topology = make_workflow(admin, {"plan": {}}, intake={}, partitions=3)
    delayed_topic, dlq = topology.delayed_topic, topology.dead_letter_topic
    standard = f"{topology.workflow}.plan.standard"
    # Registered straight in the double: nothing in this process has the id cached.
    schema_id = register_task_event(double, delayed_topic)
    runs = events(topology, "plan", 3)
    garbage = b"not a task event"
    with running_intake(topology, client_config):
        with running_registry(double, port=port):
            publish_delayed(client_config, delayed_topic, [(b"bad", garbage)])
            [letter] = read_dead_letters(
                client_config, dlq, topology.all_topics()[dlq].partitions, expect=1
            )
        assert (letter.reason, letter.raw_value, letter.stage) == (
            "decode_error", garbage, DELAY_STAGE,
        )  # fmt: skip
        values = framed(runs, schema_id, delayed_topic)
        keyed = [(e.run_id.encode(), v) for e, v in zip(runs, values, strict=True)]
        publish_delayed(client_config, delayed_topic, keyed)
        time.sleep(4.0)  # due, but reading them needs the registry, which is down
        assert len(held(client_config, topology, dlq, 2)) == 1, "dead-lettered in the outage"
        assert held(client_config, topology, standard, 1) == []
        with running_registry(double, port=port):
            forwarded = held(client_config, topology, standard, 3, 45)
            assert f"GET /schemas/ids/{schema_id}" in double.requests
    assert sorted(r.key or b"" for r in forwarded) == sorted(e.run_id.encode() for e in runs)
    assert len(held(client_config, topology, dlq, 2)) == 1
    lines = outage_lines(caplog)
    assert len(lines) == 2, lines  # one per outage, not one per record or partition
    assert "answered" in lines[1]


def test_delayed_runs_held_for_the_registry_move_with_a_rebalance_and_are_not_lost(
    admin: Admin, client_config: ClientConfig, down_registry: tuple[RegistryDouble, int]
) -> None:
    """Two replicas' delay forwarders: while every delayed partition waits for the
    registry, the second joins and takes partitions from the first; the new owner holds
    them too (read again from the last commit), and when the registry answers every run
    reaches the first stage, none is dead-lettered, and the commits reach the end."""
    double, port = down_registry
    topology = make_workflow(admin, {"plan": {}}, intake={}, partitions=2)
    delayed_topic, entry = topology.delayed_topic, topology.stages["plan"]
    schema_id = register_task_event(double, delayed_topic)
    runs = events(topology, "plan", 8)
    values = framed(runs, schema_id, delayed_topic)
    publish_delayed(
        client_config,
        delayed_topic,
        [(e.run_id.encode(), v) for e, v in zip(runs, values, strict=True)],
    )
    tps = [TopicPartition(delayed_topic, p) for p in range(2)]
    ends = admin.end_offsets(tps)
    assert all(ends[tp] > 0 for tp in tps), f"the keys left a partition empty: {ends}"
    forwarders: list[DelayForwarder] = []

    def step_all(seconds: float, until: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for forwarder in forwarders:
                forwarder.step()
            if until():
                return True
            time.sleep(0.01)
        return False

    try:
        forwarders.append(DelayForwarder(client_config, topology, entry, SystemClock()))
        first = forwarders[0]
        assert step_all(30, lambda: first.waiting_for_registry == 2), "both partitions held"
        forwarders.append(DelayForwarder(client_config, topology, entry, SystemClock()))
        second = forwarders[1]
        moved = step_all(
            45, lambda: first.waiting_for_registry == 1 and second.waiting_for_registry == 1
        )
        assert moved, (first.waiting_for_registry, second.waiting_for_registry)
        group = f"{topology.workflow}.intake-delay"
        assert all(o in (None, 0) for o in admin.committed_offsets(group, tps).values())
        standard = f"{topology.workflow}.plan.standard"
        with running_registry(double, port=port):

            def all_committed() -> bool:
                committed = admin.committed_offsets(group, tps)
                return all(committed[tp] == ends[tp] for tp in tps)

            assert step_all(60, all_committed), admin.committed_offsets(group, tps)
        assert first.waiting_for_registry == second.waiting_for_registry == 0
    finally:
        for forwarder in forwarders:
            forwarder.close()
    forwarded = held(client_config, topology, standard, len(runs) + 1, 5)
    assert {r.key for r in forwarded} == {e.run_id.encode() for e in runs}
    assert held(client_config, topology, topology.dead_letter_topic, 1) == []
