"""Tool health travels in the stage's pressure reports, for other workers and the monitor."""

from __future__ import annotations

import json

from streams.runtime.pressure_reports import PressureReport, ToolHealth


def test_tool_health_round_trips_and_older_reports_have_none() -> None:
    report = PressureReport(
        stage="act",
        worker="w1",
        p95_latency_s=0.2,
        in_flight=3,
        reported_at=1_700_000_000.0,
        tools=(
            ToolHealth("crm", breaker="open", in_flight=0, waiting=2, concurrency_limit=4),
            ToolHealth("llm", breaker=None, in_flight=3, waiting=0, concurrency_limit=None),
        ),
    )
    back = PressureReport.from_bytes(report.to_bytes())
    assert back == report
    assert back.tool("crm") == report.tools[0] and back.tool("nope") is None
    older = json.loads(report.to_bytes())
    del older["tools"]
    assert PressureReport.from_bytes(json.dumps(older).encode()).tools == ()
