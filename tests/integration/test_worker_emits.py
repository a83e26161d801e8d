"""What a handler emits, against the real broker: events that cannot be encoded end as
dead letters (the worker keeps running), and the lane rule (demote yes, promote no)."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish, read_dead_letters, read_events

from .workflows import events, make_workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_an_event_that_cannot_be_encoded_is_dead_lettered_emit_error_and_the_rest_flow(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(admin, {"plan": {}}, partitions=1)
    bad = events(topology, "plan", 3, payload=b"bad")
    swallowed = events(topology, "plan", 2, payload=b"swallow")
    good = events(topology, "plan", 5)

    def handler(event: Any, ctx: Any) -> None:
        if event.payload == b"bad":
            ctx.emit(dataclasses.replace(event, priority=2**40))  # not an Avro int
        elif event.payload == b"swallow":
            # A handler that hides the failure: the record still fails.
            with contextlib.suppress(Exception):
                ctx.emit(dataclasses.replace(event, payload="text, not bytes"))
        else:
            ctx.emit(event)

    publish(client_config, f"{topology.workflow}.plan.standard", bad + swallowed + good)
    worker = WorkerThread(StageWorker(topology, "plan", client_config, handler=handler)).start()
    out = read_events(client_config, topology.completed_topic, 1, expect=5)
    dead = read_dead_letters(client_config, topology.dead_letter_topic, 6, expect=5)
    alive = worker.thread.is_alive()
    worker.stop()
    assert alive and worker.error is None
    assert sorted(e.run_id for e in out) == sorted(e.run_id for e in good)
    assert sorted(d.reason for d in dead) == ["emit_error"] * 5
    assert {d.original_offset for d in dead} == {0, 1, 2, 3, 4}
    assert all("cannot be encoded" in (d.error_message or "") for d in dead)


def test_emit_lane_moves_the_run_and_a_promotion_is_refused(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(admin, {"plan": {"downstream": ["act"]}, "act": {}}, partitions=1)
    demoted = events(topology, "plan", 3, lane="urgent", payload=b"demote")
    promoted = events(topology, "plan", 2, lane="standard", payload=b"promote")

    def handler(event: Any, ctx: Any) -> None:
        ctx.emit(event, lane="standard" if event.payload == b"demote" else "urgent")

    publish(client_config, f"{topology.workflow}.plan.urgent", demoted)
    publish(client_config, f"{topology.workflow}.plan.standard", promoted)
    worker = WorkerThread(StageWorker(topology, "plan", client_config, handler=handler)).start()
    at_act = read_events(client_config, f"{topology.workflow}.act.standard", 1, expect=3)
    urgent = read_events(
        client_config, f"{topology.workflow}.act.urgent", 1, expect=1, timeout_s=3.0
    )
    dead = read_dead_letters(client_config, topology.dead_letter_topic, 6, expect=2)
    worker.stop()
    assert worker.error is None
    assert sorted(e.run_id for e in at_act) == sorted(e.run_id for e in demoted)
    # The event says the lane it is queued in, so act routes it on from there.
    assert {e.lane for e in at_act} == {"standard"}
    assert urgent == []  # a standard run never reaches act's urgent lane
    assert sorted(d.reason for d in dead) == ["emit_error", "emit_error"]
    assert all("cannot be promoted" in (d.error_message or "") for d in dead)
