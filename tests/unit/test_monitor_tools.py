"""The monitor shows the tools' health from the workers' pressure reports: per tool, its
breaker states over the live workers (a gone worker's last report does not count), calls
running and waiting against the slots; in the JSON, the terminal table, the heartbeat line
and the status page. Fake times, no broker."""

from __future__ import annotations

import io
import json
from dataclasses import replace

from rich.console import Console

from streams.monitor.page import render_page
from streams.monitor.stage_view import tool_views
from streams.monitor.view import heartbeat_line, render_table
from streams.runtime.pressure_reports import PressureReport, ToolHealth

from .test_monitor_views import NOW, plan_view


def report(worker: str, at: float, *tools: ToolHealth, stage: str = "act") -> PressureReport:
    return PressureReport(
        stage=stage, worker=worker, p95_latency_s=0.1, in_flight=1, reported_at=at,
        concurrency=8, tools=tools,
    )  # fmt: skip


REPORTS = [
    report("w1", NOW - 1, ToolHealth("crm", "open", 0, 3, 4), ToolHealth("llm", None, 2, 0, None)),
    report("w2", NOW - 2, ToolHealth("crm", "closed", 2, 1, 4)),
    report("w3", NOW - 90, ToolHealth("crm", "open", 4, 9, 4)),  # gone: not counted
    report("p1", NOW - 1, ToolHealth("crm", "half_open", 1, 0, 2), stage="plan"),
]


def test_tool_views_add_up_live_workers_per_tool() -> None:
    views = {v.name: v for v in tool_views(REPORTS, now=NOW, fresh_within_s={"act": 5.0})}
    crm = views["crm"]
    assert crm.breakers == {"open": 1, "closed": 1, "half_open": 1}
    assert (crm.in_flight, crm.waiting, crm.concurrency_limit) == (3, 4, 10)
    assert crm.stages == ("act", "plan") and crm.workers == 3
    assert crm.worst_breaker == "open"
    llm = views["llm"]
    assert llm.breakers == {} and llm.concurrency_limit is None and llm.worst_breaker is None


def test_json_table_heartbeat_and_page_show_breakers() -> None:
    snapshot = replace(plan_view(), tools=tool_views(REPORTS, now=NOW, fresh_within_s={"act": 5.0}))
    data = json.loads(json.dumps(snapshot.to_dict()))
    crm = next(t for t in data["tools"] if t["name"] == "crm")
    assert crm["breakers"] == {"open": 1, "closed": 1, "half_open": 1} and crm["waiting"] == 4

    out = io.StringIO()
    Console(file=out, width=80, force_terminal=False, color_system=None).print(
        render_table(snapshot)
    )
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "tools: crm breaker open 1, half_open 1, closed 1; 3 running, 4 waiting / 10" in (
        " ".join(text.split())
    )
    assert "llm no breaker; 2 running, 0 waiting" in " ".join(text.split())

    assert "tool crm open" in heartbeat_line(snapshot)
    assert "llm" not in heartbeat_line(snapshot)  # nothing to say about a healthy tool

    page = render_page(snapshot)
    assert '<table id="tools">' in page
    assert 'data-tool="crm"' in page and '<td class="STOP">open 1' in page


def test_no_tools_no_tools_line() -> None:
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=False, color_system=None).print(
        render_table(plan_view())
    )
    assert "tools:" not in out.getvalue()
    assert "no tool has reported" in render_page(plan_view())
