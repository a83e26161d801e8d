"""The delay path when the first stage's topic refuses a forward: the record is tried again,
then dead-lettered with its raw bytes, and the delayed partition's commits go on; a dead
letter the broker refuses is tried until it lands, never dropped."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from streams.clock import SystemClock
from streams.events import TaskEventCodec, new_task_event
from streams.intake.delay import DELAY_STAGE, DUE_HEADER, DelayForwarder
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.kafka.producer import RecordProducer
from streams.testing import read_dead_letters, read_records
from streams.topology import Topology, parse_topology
from streams.types import TopicPartition

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

#: Smaller than the big event below, larger than the small one (and a batch's overhead).
SMALL_LIMIT = 2048
BACKOFF_S = 0.5  # tries after 0.5 s and 1 s: a step that slept on them would take >= 1 s


def _workflow(admin: Admin, client: ClientConfig, *, small: list[str]) -> Topology:
    """A one-stage workflow on one partition; the topics in `small` (names relative to the
    workflow: "plan.standard", "dlq") refuse records over SMALL_LIMIT bytes."""
    name = f"t{uuid.uuid4().hex[:10]}"
    topology = parse_topology(
        {
            "workflow": name,
            "lanes": ["urgent", "standard"],
            "topic_defaults": {"partitions": 1, "retention_ms": 3_600_000},
            "stages": {"plan": {"handler": "tests.integration.handlers:noop"}},
            "intake": {},
        },
        f"<test {name}>",
    )
    if small:
        raw = AdminClient(client.base())
        futures = raw.create_topics(
            [
                NewTopic(f"{name}.{t}", 1, 1, config={"max.message.bytes": str(SMALL_LIMIT)})
                for t in small
            ]
        )
        for future in futures.values():
            future.result(15)
    admin.apply(
        TopicWanted(topic, spec.partitions, None, spec.compacted)
        for topic, spec in topology.all_topics().items()
    )
    return topology


def _allow_large(client: ClientConfig, topic: str) -> None:
    raw = AdminClient(client.base())
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("max.message.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in raw.incremental_alter_configs([resource]).values():
        future.result(15)


def _publish_delayed(client: ClientConfig, topology: Topology) -> list[tuple[str, bytes]]:
    """A due run too large for the first stage's topic, then a small one: (run id, bytes)."""
    codec = TaskEventCodec()
    producer = RecordProducer(client)
    sent = []
    # Random, so the producer's compression cannot shrink it under the limit.
    big = json.dumps({"blob": os.urandom(4 * SMALL_LIMIT).hex()}).encode()
    for payload in (big, b"{}"):
        event = new_task_event(
            workflow=topology.workflow, stage="plan", tenant="t", lane="standard",
            payload=payload, now_ms=int(time.time() * 1000),
        )  # fmt: skip
        value = codec.encode(event)
        due = ((DUE_HEADER, str(int(time.time() * 1000)).encode()),)
        producer.send(topology.delayed_topic, value, key=event.run_id.encode(), headers=due)
        sent.append((event.run_id, value))
    assert producer.flush(15) == 0
    return sent


@contextmanager
def _forwarder(client: ClientConfig, topology: Topology) -> Iterator[DelayForwarder]:
    forwarder = DelayForwarder(
        client, topology, topology.stages["plan"], SystemClock(),
        forward_attempts=3, backoff_s=BACKOFF_S,
    )  # fmt: skip
    try:
        yield forwarder
    finally:
        forwarder.close()


class _Stepper:
    """Runs step() as the intake's I/O thread does, timing each call."""

    def __init__(self, forwarder: DelayForwarder, admin: Admin, topology: Topology) -> None:
        self.forwarder = forwarder
        self.admin = admin
        self.group = f"{topology.workflow}.intake-delay"
        self.tp = TopicPartition(topology.delayed_topic, 0)
        self.longest_step_s = 0.0

    def committed(self) -> int | None:
        return self.admin.committed_offsets(self.group, [self.tp])[self.tp]

    def run(self, seconds: float, *, until_committed: int | None = None) -> int | None:
        deadline = time.monotonic() + seconds
        next_read = 0.0
        committed = None
        while time.monotonic() < deadline:
            started = time.monotonic()
            self.forwarder.step()
            self.longest_step_s = max(self.longest_step_s, time.monotonic() - started)
            if until_committed is not None and time.monotonic() >= next_read:
                next_read = time.monotonic() + 0.3
                committed = self.committed()
                if committed is not None and committed >= until_committed:
                    return committed
            time.sleep(0.01)
        return committed


def test_a_refused_forward_is_dead_lettered_and_commits_go_on(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = _workflow(admin, client_config, small=["plan.standard"])
    (big_run, big_bytes), (small_run, _) = _publish_delayed(client_config, topology)
    with _forwarder(client_config, topology) as forwarder:
        stepper = _Stepper(forwarder, admin, topology)
        committed = stepper.run(30, until_committed=2)
    assert committed == 2, f"the delayed partition's commits stopped at {committed}"
    [letter] = read_dead_letters(client_config, topology.dead_letter_topic, 1, expect=1)
    assert letter.reason == "forward_failed"
    assert letter.raw_value == big_bytes
    assert letter.original_key == big_run.encode()
    assert (letter.stage, letter.attempts) == (DELAY_STAGE, 3)
    assert letter.error_message
    forwarded = read_records(client_config, f"{topology.workflow}.plan.standard", 1, expect=1)
    assert [r.key for r in forwarded] == [small_run.encode()]
    assert stepper.longest_step_s < 2 * BACKOFF_S, "step() waited for a retry"


def test_a_refused_dead_letter_is_tried_until_it_lands(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = _workflow(admin, client_config, small=["plan.standard", "dlq"])
    (big_run, big_bytes), _ = _publish_delayed(client_config, topology)
    with _forwarder(client_config, topology) as forwarder:
        stepper = _Stepper(forwarder, admin, topology)
        # The forward and its dead letter are both refused: nothing may commit past it.
        held = stepper.run(4, until_committed=1)
        assert held in (None, 0), f"committed past a record with no outcome: {held}"
        assert forwarder.retrying == 1
        _allow_large(client_config, topology.dead_letter_topic)
        committed = stepper.run(45, until_committed=2)
    assert committed == 2
    letters = read_dead_letters(client_config, topology.dead_letter_topic, 1, expect=2, timeout_s=3)
    assert [(x.original_key, x.raw_value) for x in letters] == [(big_run.encode(), big_bytes)]


def test_a_run_in_a_lane_the_first_stage_does_not_take_is_dead_lettered_at_once(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = _workflow(admin, client_config, small=[])  # plan takes urgent and standard
    event = new_task_event(
        workflow=topology.workflow, stage="plan", tenant="t", lane="background",
        payload=b"{}", now_ms=int(time.time() * 1000),
    )  # fmt: skip
    value = TaskEventCodec().encode(event)
    producer = RecordProducer(client_config)
    producer.send(topology.delayed_topic, value, key=event.run_id.encode())  # no due: now
    assert producer.flush(15) == 0
    with _forwarder(client_config, topology) as forwarder:
        committed = _Stepper(forwarder, admin, topology).run(20, until_committed=1)
    assert committed == 1
    [letter] = read_dead_letters(client_config, topology.dead_letter_topic, 1, expect=1)
    assert (letter.reason, letter.raw_value, letter.attempts) == ("forward_failed", value, 0)
    assert letter.error_message is not None and "no lane 'background'" in letter.error_message
