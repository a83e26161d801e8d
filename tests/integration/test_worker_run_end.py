"""A run that ends at a middle stage is finished for the intake: returning without emitting
writes it to the completed topic, an escalation dead-letters it, and the intake's queue
drains either way."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from streams import Escalate
from streams.intake.requests import RunRequest
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, read_dead_letters, read_records
from streams.types import DeliveryMode

from .intake_helpers import intake_workflow, running_intake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

FINISHED_AT = "streams.finished_at_stage"


async def _act(event: Any, ctx: Any) -> None:
    request = json.loads(event.payload)
    if request.get("escalate"):
        raise Escalate("refund above limit")  # a dead letter: it ends the run too
    if not request.get("stop"):
        ctx.emit(event)  # the others go on to the last stage


async def _enrich(event: Any, ctx: Any) -> None:
    pass


def _wait(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_runs_ending_at_a_middle_stage_release_the_intake(
    admin: Admin, client_config: ClientConfig, delivery: DeliveryMode
) -> None:
    topology = intake_workflow(
        admin,
        {},
        plan={"downstream": ["act", "enrich"]},
        act={"downstream": ["reply"], "delivery": delivery},
        reply={},
        # Background work beside the run: its end is not the run's end.
        enrich={"background": True},
    )
    handlers = {"act": _act, "enrich": _enrich}
    workers = [
        WorkerThread(
            StageWorker(
                topology,
                name,
                client_config,
                handler=handlers.get(name),
                options=WorkerOptions(worker_id=f"{name}-1", pressure_refresh_s=0.2),
            )
        ).start()
        for name in ("plan", "act", "reply", "enrich")
    ]
    try:
        with running_intake(topology, client_config) as intake:
            stopped, through, escalated = set[str](), set[str](), set[str]()
            for i in range(10):
                stop, escalate = i % 2 == 0 and i < 8, i >= 8
                payload = json.dumps({"stop": stop, "escalate": escalate}).encode()
                decision = intake.submit(RunRequest(tenant="t", payload=payload))
                assert decision.outcome == "accepted", decision
                assert decision.run_id is not None
                (escalated if escalate else stopped if stop else through).add(decision.run_id)
            drained = _wait(lambda: sum(intake.capacity().queued_by_lane.values()) == 0, 30)
            queued = intake.capacity().queued_by_tenant
    finally:
        for worker in workers:
            worker.stop()
    assert all(w.error is None for w in workers), [w.error for w in workers]
    assert drained, f"the intake still counts runs as queued: {queued}"
    # One more than expected: a second completion of any run (or one from the background
    # stage) would show; the workers have stopped, so everything is written by now.
    completed = read_records(client_config, topology.completed_topic, 3, expect=9, timeout_s=8)
    by_run = {r.key.decode(): r for r in completed if r.key is not None}
    assert set(by_run) == stopped | through
    assert len(completed) == 8, [(r.key, r.headers) for r in completed]
    for run_id in stopped:
        assert (FINISHED_AT, b"act") in by_run[run_id].headers
    for run_id in through:
        assert all(k != FINISHED_AT for k, _ in by_run[run_id].headers)
    letters = read_dead_letters(client_config, topology.dead_letter_topic, 3, expect=2)
    assert {(x.original_key, x.reason) for x in letters} == {
        (run_id.encode(), "escalated") for run_id in escalated
    }
