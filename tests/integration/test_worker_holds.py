"""When the worker must hold work instead of burning it, against the real broker: records
that expire while waiting in the runner for a slot, a producer queue that is full, a
worker that cannot open (nothing left running)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from streams.errors import ConfigError, StreamsError
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish, read_dead_letters, read_events

from .workflows import events, make_workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_a_record_that_expires_while_waiting_for_a_slot_never_reaches_the_handler(
    admin: Admin, client_config: ClientConfig
) -> None:
    # Concurrency 1: the first record holds the only slot for 3 s, while the second one is
    # already dispatched (it waits in the runner for the slot) and its deadline passes.
    topology = make_workflow(admin, {"plan": {"concurrency": 1}}, partitions=1)
    slow = events(topology, "plan", 1, payload=b"slow")
    doomed = events(topology, "plan", 1, deadline_in_s=1.5)
    ran: list[str] = []

    async def handler(event: Any, ctx: Any) -> None:
        import asyncio

        ran.append(event.run_id)
        if event.payload == b"slow":
            await asyncio.sleep(3.0)
        ctx.emit(event)

    publish(client_config, f"{topology.workflow}.plan.standard", slow + doomed)
    worker = WorkerThread(StageWorker(topology, "plan", client_config, handler=handler)).start()
    out = read_events(client_config, topology.completed_topic, 1, expect=1)
    dead = read_dead_letters(client_config, topology.dead_letter_topic, 6, expect=1)
    worker.stop()
    assert worker.error is None
    assert [e.run_id for e in out] == [slow[0].run_id]
    assert ran == [slow[0].run_id]  # the handler never saw the expired record
    assert [(d.reason, d.attempts) for d in dead] == [("expired", 0)]


def test_a_full_producer_queue_holds_dispatch_and_nothing_is_lost(
    admin: Admin, client_config: ClientConfig
) -> None:
    # A producer queue of 30 messages that only drains every 6 s (linger): each record
    # fans out to 10 messages, so the queue is full most of the time. It used to block the
    # poll thread for 5 s, then crash the worker with ProducerQueueFull.
    topology = make_workflow(admin, {"plan": {}}, partitions=1)
    sent = events(topology, "plan", 12)

    def handler(event: Any, ctx: Any) -> None:
        for _ in range(10):
            ctx.emit(event)

    tight = client_config.with_extra({"queue.buffering.max.messages": 30, "linger.ms": 6000})
    publish(client_config, f"{topology.workflow}.plan.standard", sent)
    worker = WorkerThread(StageWorker(topology, "plan", tight, handler=handler)).start()
    out = read_events(client_config, topology.completed_topic, 1, expect=120, timeout_s=90)
    alive = worker.thread.is_alive()
    worker.stop()
    assert alive and worker.error is None
    assert len(out) == 120
    assert sorted({e.run_id for e in out}) == sorted(e.run_id for e in sent)


def test_a_worker_that_cannot_open_leaves_nothing_running(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(admin, {"plan": {}}, partitions=1)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    before = set(threading.enumerate())
    worker = StageWorker(topology, "plan", client_config, options=WorkerOptions(metrics_port=port))
    try:
        with pytest.raises(StreamsError, match=f"{port}.*already in use"):
            worker.run()
    finally:
        taken.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and set(threading.enumerate()) - before:
        time.sleep(0.1)
    left = [t.name for t in set(threading.enumerate()) - before]
    assert left == []


def test_exactly_once_needs_a_stable_worker_id(admin: Admin, client_config: ClientConfig) -> None:
    topology = make_workflow(admin, {"plan": {"delivery": "exactly_once"}}, partitions=1)
    with pytest.raises(ConfigError, match="worker-id"):
        StageWorker(topology, "plan", client_config)
    StageWorker(topology, "plan", client_config, options=WorkerOptions(worker_id="w1"))
