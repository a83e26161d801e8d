"""The intake over real HTTP on loopback, against the real broker."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.testing import read_events, read_records

from .intake_helpers import http_server, intake_workflow, published, running_intake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _runs_url(base: str, workflow: str) -> str:
    return f"{base}/v1/workflows/{workflow}/runs"


def test_bad_requests_get_a_4xx_with_a_json_reason_and_publish_nothing(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    schema = tmp_path / "ticket.avsc"
    schema.write_text(
        json.dumps(
            {"type": "record", "name": "Ticket", "fields": [{"name": "subject", "type": "string"}]}
        )
    )
    topology = intake_workflow(admin, {"max_body_bytes": 2048, "payload_schema": str(schema)})
    wf = topology.workflow
    with running_intake(topology, client_config) as intake, http_server(intake) as base:
        url = _runs_url(base, wf)
        good = {"tenant": "acme", "payload": {"subject": "printer"}}
        cases = [
            (url.replace(wf, "nope"), {"json": good}, 404, "unknown_workflow"),
            (
                url,
                {"content": b"{", "headers": {"content-type": "application/json"}},
                400,
                "malformed_json",
            ),
            (
                url,
                {"content": json.dumps(good), "headers": {"content-type": "text/plain"}},
                415,
                "unsupported_media_type",
            ),
            (url, {"json": {**good, "payload": {"subject": "x" * 4000}}}, 413, "body_too_large"),
            (url, {"json": {"payload": {"subject": "a"}}}, 422, "invalid_request"),
            (url, {"json": {**good, "lane": "express"}}, 422, "invalid_request"),
            (url, {"json": {**good, "payload": {"subject": 7}}}, 422, "invalid_request"),
            (url, {"json": {**good, "surprise": 1}}, 422, "invalid_request"),
        ]
        with httpx.Client(timeout=10) as http:
            for target, kwargs, status, code in cases:
                response = http.post(target, **kwargs)  # type: ignore[arg-type]
                assert response.status_code == status, (kwargs, response.text)
                body = response.json()
                assert body["error"] == code
                assert body["reason"]
            fields = [
                http.post(url, json=bad).json().get("field")
                for bad in (
                    {"payload": {"subject": "a"}},
                    {**good, "lane": "express"},
                    {**good, "payload": {"subject": 7}},
                )
            ]
            assert fields == ["tenant", "lane", "payload"]
    entry = topology.stages["plan"]
    topics = [
        *entry.input_topics,
        topology.runs_topic,
        topology.decisions_topic,
    ]
    assert published(client_config, topology, topics) == 0


def test_accepted_run_is_on_the_first_stage_and_a_duplicate_collapses_into_it(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = intake_workflow(admin, {})
    wf = topology.workflow
    run = {"tenant": "acme", "lane": "urgent", "idempotency_key": "ticket-42", "payload": {"n": 1}}
    with (
        running_intake(topology, client_config) as one,
        running_intake(topology, client_config) as two,
        http_server(one) as base_one,
        http_server(two) as base_two,
        httpx.Client(timeout=10) as http,
    ):
        first = http.post(_runs_url(base_one, wf), json=run)
        assert first.status_code == 202, first.text
        accepted = first.json()
        assert accepted["outcome"] == "accepted"
        assert accepted["lane"] == "urgent"
        again = http.post(_runs_url(base_two, wf), json=run)  # the other replica
        assert again.status_code == 200, again.text
        assert again.json()["outcome"] == "collapsed"
        assert again.json()["run_id"] == accepted["run_id"]
    events = read_events(client_config, f"{wf}.plan.urgent", 3, expect=1, timeout_s=5)
    assert [e.run_id for e in events] == [accepted["run_id"]]
    assert events[0].payload == b'{"n":1}'
    decisions = read_records(client_config, topology.decisions_topic, 3, expect=2, timeout_s=5)
    assert len(decisions) == 2
