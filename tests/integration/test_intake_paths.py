"""Intake paths that need moving parts: pressure reaching the door, deadline forecasts from
a draining first stage, the delay path, a broker outage, and the served API contract."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams.config import Settings, load_settings
from streams.intake import http as intake_http
from streams.intake.service import Intake
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.local_broker import LocalBroker
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish, read_records

from .intake_helpers import http_server, intake_workflow, running_intake
from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FAST = WorkerOptions(pressure_refresh_s=0.2, report_interval_s=0.3)


def _url(base: str, intake: Intake) -> str:
    return f"{base}/v1/workflows/{intake.topology.workflow}/runs"


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_pressure_from_downstream_tightens_admission_at_the_door(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = intake_workflow(
        admin,
        {"max_queued_runs": 10, "saturation_ratio": 0.8, "pressure_saturation_ratio": 0.2,
         "lanes": {"standard": {"on_saturation": "delay", "delay_s": 60}}},
        plan={"downstream": ["act"],
              "pressure": {"lag": {"pause": 10, "resume": 5}, "min_dwell_s": 0.5}},
        act={"max_lag": 100},
    )  # fmt: skip
    publish(client_config, f"{topology.workflow}.act.standard", events(topology, "act", 20))
    worker = WorkerThread(StageWorker(topology, "plan", client_config, options=FAST)).start()
    try:
        with running_intake(topology, client_config) as intake, http_server(intake) as base:
            _wait(lambda: intake.capacity().first_stage.pressure_paused, 15, "pressure report")
            assert intake.capacity().state == "open"
            with httpx.Client(timeout=10) as http:
                answers = [
                    http.post(_url(base, intake), json={"tenant": "t", "payload": {}}).json()
                    for _ in range(4)
                ]
            report = intake.capacity()
    finally:
        worker.stop()
    assert [a["outcome"] for a in answers] == ["accepted", "accepted", "delayed", "delayed"]
    assert answers[2]["reason"] == "downstream_pressure"
    assert answers[2]["due_at_ms"] > time.time() * 1000 + 30_000
    assert report.state == "saturated"
    assert "downstream pressure" in report.why


def test_a_deadline_the_queue_cannot_meet_is_rejected_at_the_door(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = intake_workflow(admin, {}, plan={"concurrency": 2})

    async def slow(event: Any, ctx: Any) -> None:
        await asyncio.sleep(0.05)  # 2 at a time: about 40 runs/s

    publish(client_config, f"{topology.workflow}.plan.standard", events(topology, "plan", 600))
    worker = WorkerThread(
        StageWorker(topology, "plan", client_config, handler=slow, options=FAST)
    ).start()
    try:
        with running_intake(topology, client_config) as intake, http_server(intake) as base:
            _wait(lambda: intake.capacity().first_stage.drain_rate_per_s, 20, "a drain rate")
            now_ms = int(time.time() * 1000)
            with httpx.Client(timeout=10) as http:
                hopeless = http.post(
                    _url(base, intake),
                    json={"tenant": "t", "payload": {}, "deadline_ms": now_ms + 2000},
                )
                roomy = http.post(
                    _url(base, intake),
                    json={"tenant": "t", "payload": {}, "deadline_ms": now_ms + 3_600_000},
                )
    finally:
        worker.stop()
    assert hopeless.status_code == 429, hopeless.text
    assert hopeless.json()["reason"] == "deadline_unmeetable"
    assert hopeless.json()["forecast_wait_s"] > 2
    assert roomy.status_code == 202


def test_a_delayed_run_enters_the_first_stage_when_due(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = intake_workflow(
        admin,
        {"max_queued_runs": 4, "saturation_ratio": 0.5,
         "lanes": {"standard": {"on_saturation": "delay", "delay_s": 1.5}}},
    )  # fmt: skip
    with running_intake(topology, client_config) as intake, http_server(intake) as base:
        with httpx.Client(timeout=10) as http:
            for _ in range(2):
                first = http.post(
                    _url(base, intake), json={"tenant": "t", "lane": "urgent", "payload": {}}
                )
                assert first.json()["outcome"] == "accepted"
            delayed = http.post(_url(base, intake), json={"tenant": "t", "payload": {"late": 1}})
        assert delayed.status_code == 202
        body = delayed.json()
        assert body["outcome"] == "delayed"
        records = read_records(
            client_config, f"{topology.workflow}.plan.standard", 3, expect=1, timeout_s=10
        )
    assert len(records) == 1
    assert records[0].key == body["run_id"].encode()
    assert records[0].timestamp_ms >= body["due_at_ms"] - 50  # not before it was due


def test_a_broker_outage_gets_503_and_never_a_false_accept(tmp_path: Path) -> None:
    shared = load_settings()
    if shared.bootstrap_servers:
        pytest.skip("needs a local broker of its own to stop")
    own = Settings(bootstrap_servers=None, home=tmp_path, cache_dir=shared.jar_cache.parent)
    broker = LocalBroker(own)
    state, _ = broker.start()
    client = ClientConfig(state.bootstrap)
    try:
        topology = intake_workflow(Admin(client), {})
        with (
            running_intake(topology, client, ack_timeout_s=2.0) as intake,
            http_server(intake) as base,
        ):
            with httpx.Client(timeout=20) as http:
                ok = http.post(_url(base, intake), json={"tenant": "t", "payload": {}})
                assert ok.status_code == 202
                broker.stop()
                down = http.post(_url(base, intake), json={"tenant": "t", "payload": {}})
            assert down.status_code == 503, down.text
            assert down.json()["error"] == "unavailable"
            # Only the run accepted before the outage counts as queued.
            assert intake.capacity().queued_by_tenant == {"t": 1}
    finally:
        broker.stop()


def test_the_served_openapi_document_matches_the_service(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = intake_workflow(admin, {})
    with (
        running_intake(topology, client_config) as intake,
        http_server(intake) as base,
        httpx.Client(timeout=10) as http,
    ):
        doc = http.get(f"{base}/openapi.json").json()
        http.post(_url(base, intake), json={"tenant": "t", "payload": {}})
        capacity = http.get(f"{base}/v1/workflows/{topology.workflow}/capacity").json()
        health = http.get(f"{base}/healthz")
        metrics = http.get(f"{base}/metrics").text
    post = doc["paths"]["/v1/workflows/{workflow}/runs"]["post"]
    assert set(post["responses"]) == {
        *("200", "202", "400", "404", "405", "413", "415", "422", "429", "503")
    }
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == intake_http._FIELDS
    assert set(schema["required"]) == {"tenant", "payload"}
    assert "Retry-After" in post["responses"]["429"]["headers"]
    assert capacity["queued_by_lane"]["standard"] == 1
    assert capacity["state"] == "open" and capacity["why"]
    assert set(capacity["oldest_queued_age_s"]) == {"standard"}
    assert health.status_code == 200
    assert 'streams_intake_decisions_total{lane="standard",outcome="accepted"' in metrics
