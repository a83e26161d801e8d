"""The run ledger over a run's whole life: a finished run still collapses its duplicates
for the window (measured from submission) and says how it ended; finished runs are
recorded in the ledger, so a restarted intake knows them even after the completion topics
lost them; closed windows end in tombstones; run status answers from all of this."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from streams.intake.requests import RunRequest
from streams.intake.service import Intake
from streams.intake.state import RUN_STATE_SCHEMA
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.serde import SchemaStore, Serde
from streams.testing import WorkerThread, read_records
from streams.topology import Topology

from .intake_helpers import http_server, intake_workflow, running_intake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
FAST = WorkerOptions(pressure_refresh_s=0.2, report_interval_s=0.3)


async def _emit(event: Any, ctx: Any) -> None:
    ctx.emit(event)


def _wait_until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _queued(intake: Intake) -> int:
    return sum(intake.capacity().queued_by_lane.values())


def _ledger(client: ClientConfig, topology: Topology) -> dict[str, dict[str, Any] | None]:
    """The ledger's last word per run id (None: a tombstone)."""
    serde = Serde(SchemaStore(), RUN_STATE_SCHEMA)
    last: dict[str, dict[str, Any] | None] = {}
    for record in read_records(client, topology.runs_topic, 1, expect=10**9, timeout_s=2.0):
        assert record.key is not None
        last[record.key.decode()] = None if record.value is None else serde.decode(record.value)
    return last


def test_a_retry_after_the_run_finished_still_collapses_and_says_how_it_ended(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = intake_workflow(admin, {})
    worker = WorkerThread(
        StageWorker(topology, "plan", client_config, handler=_emit, options=FAST)
    ).start()
    try:
        with running_intake(topology, client_config) as intake:
            request = RunRequest(tenant="t", payload=b"{}", idempotency_key="once")
            first = intake.submit(request)
            assert first.outcome == "accepted" and first.run_id is not None
            _wait_until(lambda: _queued(intake) == 0, 30, "the run to finish")
            again = intake.submit(request)
            assert (again.outcome, again.run_id) == ("collapsed", first.run_id)
            assert again.run_state == "completed"
            status = intake.status(first.run_id)
            assert status is not None and status.state == "completed" and status.finished
    finally:
        worker.stop()


def test_a_restarted_intake_knows_finished_runs_after_the_completion_topics_lost_them(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = intake_workflow(admin, {})
    worker = WorkerThread(
        StageWorker(topology, "plan", client_config, handler=_emit, options=FAST)
    ).start()
    try:
        with running_intake(topology, client_config) as intake:
            run_ids = [
                intake.submit(RunRequest(tenant="t", payload=b"{}")).run_id for _ in range(5)
            ]
            _wait_until(lambda: _queued(intake) == 0, 30, "the runs to finish")
            # Their ends reach the ledger within a cycle of the intake's I/O thread.
            _wait_until(
                lambda: all(
                    (e := _ledger(client_config, topology).get(r or "")) is not None
                    and e["state"] == "finished"
                    for r in run_ids
                ),
                15,
                "the finished entries in the ledger",
            )
    finally:
        worker.stop()
    # Retention took the completions (the topic emptied, as after its retention ran out).
    admin.delete_topics([topology.completed_topic])
    _wait_until(
        lambda: topology.completed_topic not in admin.partition_counts(), 30, "the deletion"
    )
    spec = topology.all_topics()[topology.completed_topic]
    admin.apply([TopicWanted(topology.completed_topic, spec.partitions, None, spec.compacted)])
    with running_intake(topology, client_config) as restarted:
        assert _queued(restarted) == 0, restarted.capacity()
        for run_id in run_ids:
            assert run_id is not None
            status = restarted.status(run_id)
            assert status is not None and status.state == "completed"


def test_finished_runs_are_tombstoned_when_their_collapse_window_closes(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = intake_workflow(admin, {"dedupe_window_s": 2})
    worker = WorkerThread(
        StageWorker(topology, "plan", client_config, handler=_emit, options=FAST)
    ).start()
    try:
        with running_intake(topology, client_config) as intake:
            request = RunRequest(tenant="t", payload=b"{}", idempotency_key="k")
            first = intake.submit(request)
            assert first.run_id is not None
            _wait_until(lambda: _queued(intake) == 0, 30, "the run to finish")
            _wait_until(
                lambda: (
                    first.run_id in _ledger(client_config, topology)
                    and _ledger(client_config, topology)[first.run_id or ""] is None
                ),
                20,
                "the tombstone",
            )
            assert intake.status(first.run_id) is None
            fresh = intake.submit(request)  # the window is over: a new run
            assert fresh.outcome == "accepted" and fresh.run_id != first.run_id
    finally:
        worker.stop()


def test_run_status_finds_the_stage_a_queued_run_is_in(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = intake_workflow(admin, {}, plan={"downstream": ["act"]}, act={})
    worker = WorkerThread(  # plan runs; act does not: runs wait at act
        StageWorker(topology, "plan", client_config, handler=_emit, options=FAST)
    ).start()
    try:
        with running_intake(topology, client_config) as intake:
            decision = intake.submit(RunRequest(tenant="t", payload=b"{}"))
            assert decision.run_id is not None
            run_id = decision.run_id

            def at_act() -> bool:
                status = intake.status(run_id, find_stage=True)
                return status is not None and status.stage == "act"

            _wait_until(at_act, 30, "the run to reach act")
            status = intake.status(run_id)
            assert status is not None and status.state == "queued" and status.stage is None
    finally:
        worker.stop()


def test_run_status_over_http(admin: Admin, client_config: ClientConfig) -> None:
    topology = intake_workflow(admin, {})  # no worker: the run stays queued at plan
    with running_intake(topology, client_config) as intake, http_server(intake) as base:
        runs = f"{base}/v1/workflows/{topology.workflow}/runs"
        with httpx.Client(timeout=20) as http:
            accepted = http.post(runs, json={"tenant": "acme", "payload": {}})
            assert accepted.status_code == 202
            run_id = accepted.json()["run_id"]
            answer = http.get(f"{runs}/{run_id}")
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert (body["state"], body["tenant"], body["stage"]) == ("queued", "acme", "plan")
            assert body["finished"] is False and body["age_s"] >= 0
            missing = http.get(f"{runs}/no-such-run")
            assert missing.status_code == 404
            assert missing.json()["error"] == "unknown_run"
