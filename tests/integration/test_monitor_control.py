"""The monitor shows the workflow's degradation level and what operators set (README
"Operator controls"), read from W.control alone (no worker runs): a forced level with who,
why and until when, a manual pause of a stage and a tool forced open, in the snapshot's
JSON, the terminal table and heartbeat, the Prometheus series and the status page."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from streams.control.records import forced_level, manual_pause, tool_forced_open
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.monitor.collector import WorkflowReader
from streams.monitor.exporter import MonitorServer
from streams.monitor.view import heartbeat_line
from tests.promtool import check_metrics

from .monitor_helpers import sorted_labels
from .test_degradation import NEVER, now_ms, workflow, write
from .test_monitor_signals import read_until, table_text

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_the_monitor_shows_the_level_forced_by_whom_manual_pauses_and_forced_open_tools(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology = workflow(
        admin,
        tmp_path,
        {"act": {"tools": ["crm"], "downstream": ["enrich"]}, "enrich": {}},
        tools={"crm": {}},
        degradation={
            "levels": {"lean": {"when": NEVER}, "essential": {"when": NEVER}},
        },
    )
    wf = topology.workflow
    until_ms = now_ms() + 1_800_000
    write(
        client_config,
        topology,
        forced_level(wf, "essential", who="ana", why="incident 42", at_ms=now_ms(),
                     expires_at_ms=until_ms),
        manual_pause(wf, "enrich", who="bo", why="backfill later", at_ms=now_ms()),
        tool_forced_open(wf, "crm", who="ana", why="crm vendor outage", at_ms=now_ms()),
    )  # fmt: skip

    reader = WorkflowReader(topology, client_config)
    try:
        snapshot = read_until(
            reader,
            lambda s: s.control is not None and s.control["level"] == "essential",
            "the forced level",
        )
    finally:
        reader.close()
    data = json.loads(json.dumps(snapshot.to_dict()))
    control = data["control"]
    assert control["level"] == "essential"
    assert control["forced"]["level"] == "essential"
    assert control["forced"]["who"] == "ana" and control["forced"]["why"] == "incident 42"
    assert control["forced"]["expires_at_ms"] == until_ms
    assert control["paused_stages"]["enrich"]["who"] == "bo"
    assert control["paused_stages"]["enrich"]["why"] == "backfill later"
    assert control["tools_forced_open"]["crm"]["why"] == "crm vendor outage"
    assert control["levels"] == ["normal", "lean", "essential"]

    table = table_text(snapshot, width=120)
    assert "level essential (forced by ana until" in table, table
    assert "incident 42" in table, table
    assert "paused by operators: enrich (bo: backfill later)" in table, table
    assert "tools forced open: crm (ana: crm vendor outage)" in table, table
    assert "level essential" in heartbeat_line(snapshot)

    server = MonitorServer(0, refresh_s=60)
    try:
        server.update(snapshot)
        exposition = generate_latest(server.registry).decode()
        with urllib.request.urlopen(server.url + "/", timeout=10) as response:
            page = response.read().decode()
    finally:
        server.close()
    assert check_metrics(exposition) == ""
    metrics = sorted_labels(exposition)
    for level, value in (("normal", "0.0"), ("lean", "0.0"), ("essential", "1.0")):
        assert (
            f'streams_monitor_degradation_level{{level="{level}",workflow="{wf}"}} {value}'
            in metrics
        ), metrics
    assert f'streams_monitor_degradation_forced{{workflow="{wf}"}} 1.0' in metrics, metrics
    assert f'streams_monitor_operator_paused{{stage="enrich",workflow="{wf}"}} 1.0' in metrics, (
        metrics
    )
    assert f'streams_monitor_tool_forced_open{{tool="crm",workflow="{wf}"}} 1.0' in metrics, metrics
    assert "Degradation" in page and "essential" in page and "incident 42" in page, page
    assert "backfill later" in page and "crm vendor outage" in page, page


def test_no_control_records_reads_as_the_base_level(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology = workflow(
        admin, tmp_path, {"act": {}}, degradation={"levels": {"lean": {"when": NEVER}}}
    )
    reader = WorkflowReader(topology, client_config)
    try:
        deadline = time.monotonic() + 20
        snapshot = reader.read()
        while snapshot.control is None and time.monotonic() < deadline:
            time.sleep(0.3)
            snapshot = reader.read()
    finally:
        reader.close()
    assert snapshot.control is not None, snapshot
    assert snapshot.control["level"] == "normal" and snapshot.control["forced"] is None
    assert snapshot.control["paused_stages"] == {} and snapshot.control["tools_forced_open"] == {}
    assert "level normal" in table_text(snapshot, width=120)
