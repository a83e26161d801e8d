"""The retry forwarder of a stage an operator paused (`streams control pause`) forwards
nothing, also on a worker that holds none of the stage's input partitions (another member
of the stage's group has them) but does hold the retry tier: forwarding there would put
retries into a stage the operator stopped. Real broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from streams.control.records import ControlRecord
from streams.control.writer import ControlWriter
from streams.events import TaskEventCodec
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.consumer import GroupConsumer
from streams.kafka.producer import RecordProducer
from streams.runtime.retries import RETRY_DUE_HEADER, RETRY_STAGE_HEADER, RETRY_TOPIC_HEADER
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, read_records
from streams.topology import Topology

from .monitor_helpers import wait_for
from .test_retries import FAST_RETRY
from .workflows import events, make_workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
def input_holder(admin: Admin, client_config: ClientConfig) -> Iterator[tuple[Topology, str]]:
    """A one-partition workflow whose `act` input partition another group member holds
    (it polls, never commits), so a worker started after it gets none of the input."""
    topology = make_workflow(admin, {"act": {"retry": FAST_RETRY}}, partitions=1)
    stage = topology.stages["act"]
    assigned = threading.Event()
    holder = GroupConsumer(
        client_config,
        stage.consumer_group,
        stage.input_topics,
        on_assign=lambda parts: assigned.set() if parts else None,
    )
    stop = threading.Event()

    def hold() -> None:
        while not stop.is_set():
            holder.poll(10, 0.1)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    wait_for(assigned.is_set, 30, "the holder's assignment")
    try:
        yield topology, stage.input_topics_by_lane["standard"]
    finally:
        stop.set()
        thread.join(10)
        holder.close()


def _pause(client: ClientConfig, topology: Topology, active: bool) -> None:
    writer = ControlWriter(topology.control_topic, client)
    try:
        now_ms = int(time.time() * 1000)
        record = ControlRecord(
            topology.workflow, "pause", "act", active, None, None, "ops", None, now_ms
        )
        writer.write(record)
    finally:
        writer.close()


def test_a_stage_paused_by_an_operator_gets_no_forwarded_retries(
    client_config: ClientConfig, input_holder: tuple[Topology, str]
) -> None:
    topology, input_topic = input_holder
    worker = StageWorker(topology, "act", client_config, handler=lambda event, ctx: None)
    thread = WorkerThread(worker).start()
    try:
        _pause(client_config, topology, True)
        wait_for(lambda: "act" in worker.degradation().paused_by_operator, 20, "the pause")
        assert worker.partitions() == {}  # the holder has the input partition
        [event] = events(topology, "act", 1)
        tier = topology.retry_topics[1]
        producer = RecordProducer(client_config)
        headers = (
            (RETRY_STAGE_HEADER, b"act"),
            (RETRY_TOPIC_HEADER, input_topic.encode()),
            (RETRY_DUE_HEADER, str(int(time.time() * 1000)).encode()),
        )
        value = TaskEventCodec().encode(event, topic=tier)
        producer.send(tier, value, key=event.run_id.encode(), headers=headers)
        assert producer.flush(10.0) == 0
        # Due at once, and the stage's lag is 0: only the operator's pause holds it.
        time.sleep(6.0)
        assert read_records(client_config, input_topic, 1, expect=1, timeout_s=1.0) == []
        _pause(client_config, topology, False)
        [back] = read_records(client_config, input_topic, 1, expect=1, timeout_s=20)
        assert back.key == event.run_id.encode()
    finally:
        thread.stop()
    assert thread.error is None
