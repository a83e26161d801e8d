"""The monitor shows a tool's breaker from the workers' pressure reports, read from Kafka:
a real worker whose CRM fails opens its breaker, and the monitor's snapshot (its JSON),
terminal table and status page say crm's breaker is open in that worker."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from streams.events import TaskEvent
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.monitor.collector import WorkflowReader
from streams.monitor.exporter import MonitorCollector
from streams.monitor.page import render_page
from streams.monitor.view import render_table
from streams.runtime.options import WorkerOptions
from streams.runtime.tools import ToolRegistry
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish

from .monitor_helpers import sorted_labels
from .tool_handlers import CrmDown
from .workflows import events, make_workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_the_monitor_shows_an_open_breaker(admin: Admin, client_config: ClientConfig) -> None:
    topology = make_workflow(
        admin,
        {"act": {"tools": ["crm"], "concurrency": 2}},
        tools={
            "crm": {
                "concurrency": 3,
                "failure_errors": ["tests.integration.tool_handlers:CrmDown"],
                # Stays open for the whole test once it opens.
                "breaker": {"window": 4, "minimum_calls": 4, "open_s": 120},
            }
        },
    )

    async def crm(event: TaskEvent) -> None:
        await asyncio.sleep(0.01)
        raise CrmDown("503")

    async def handler(event: TaskEvent, ctx: Any) -> None:
        await ctx.tool("crm").call(crm, event)
        ctx.emit(event)

    publish(client_config, topology.stages["act"].input_topics_by_lane["standard"],
            events(topology, "act", 50))  # fmt: skip
    worker = StageWorker(
        topology, "act", client_config, handler=handler, tools=ToolRegistry(topology),
        options=WorkerOptions(report_interval_s=0.5),
    )  # fmt: skip
    running = WorkerThread(worker).start()
    reader = WorkflowReader(topology, client_config)
    try:
        deadline = time.monotonic() + 40
        while True:
            snapshot = reader.read()
            crm_view = next((t for t in snapshot.tools if t.name == "crm"), None)
            if crm_view is not None and crm_view.breakers.get("open"):
                break
            assert time.monotonic() < deadline, f"the monitor never saw crm open: {snapshot.tools}"
            time.sleep(0.3)
    finally:
        reader.close()
        running.stop()
    assert running.error is None
    assert crm_view.breakers == {"open": 1} and crm_view.stages == ("act",)
    assert crm_view.workers == 1 and crm_view.concurrency_limit == 3

    data = json.loads(json.dumps(snapshot.to_dict()))
    assert [(t["name"], t["breakers"]) for t in data["tools"]] == [("crm", {"open": 1})]
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=False, color_system=None).print(
        render_table(snapshot)
    )
    assert "tools: crm breaker open 1" in " ".join(out.getvalue().split())
    assert '<td class="STOP">open 1</td>' in render_page(snapshot)
    # The exporter counts the live workers in each breaker state, from the broker.
    collector = MonitorCollector()
    collector.update(snapshot)
    registry = CollectorRegistry()
    registry.register(collector)
    metrics = sorted_labels(generate_latest(registry).decode())
    wf = topology.workflow
    assert f'streams_monitor_tool_breakers{{state="open",tool="crm",workflow="{wf}"}} 1.0' in (
        metrics
    ), metrics
