"""The intake learns how runs with retries end: a run that recovers on retry completes, a
run escalated to people (the escalations topic, not a dead letter) ends "escalated", and
the intake's queue drains either way."""

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
from streams.testing import WorkerThread

from .intake_helpers import intake_workflow, running_intake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def _act(event: Any, ctx: Any) -> None:
    request = json.loads(event.payload)
    if request.get("escalate"):
        raise Escalate("refund above limit")
    if event.attempt == 0:
        raise ConnectionError("flaky CRM")
    ctx.emit(event)


def test_the_intake_sees_escalated_and_retried_runs_end(
    admin: Admin, client_config: ClientConfig
) -> None:
    retry = {"tiers": [1], "base_s": 0.2, "cap_s": 1, "retry_on": ["ConnectionError"]}
    topology = intake_workflow(admin, {}, act={"retry": retry})
    worker = WorkerThread(
        StageWorker(
            topology,
            "act",
            client_config,
            handler=_act,
            options=WorkerOptions(pressure_refresh_s=0.2),
        )
    ).start()
    try:
        with running_intake(topology, client_config) as intake:
            runs: dict[str, bool] = {}
            for i in range(6):
                payload = json.dumps({"escalate": i < 2}).encode()
                decision = intake.submit(RunRequest(tenant="t", payload=payload))
                assert decision.outcome == "accepted" and decision.run_id is not None
                runs[decision.run_id] = i < 2
            deadline = time.monotonic() + 30
            states: dict[str, Any] = {}
            while time.monotonic() < deadline:
                states = {run: intake.status(run) for run in runs}
                if all(
                    s is not None and s.state not in ("queued", "undecided")
                    for s in states.values()
                ):
                    break
                time.sleep(0.2)
            queued = sum(intake.capacity().queued_by_lane.values())
    finally:
        worker.stop()
    assert worker.error is None
    for run, escalate in runs.items():
        status = states[run]
        assert status is not None
        assert status.state == ("escalated" if escalate else "completed"), status
        if escalate:
            assert status.reason == "escalated"
    assert queued == 0
