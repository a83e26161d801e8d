"""A run's trace across the intake and three stages, against the real broker: the HTTP
request's traceparent is continued by the intake's span, each stage's handler call is a
child of the previous one, a tool call is a child of its handler's, and a dead letter
keeps the run's context. Spans land in the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streams.events import TaskEventCodec
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.runtime.tools import ToolRegistry
from streams.runtime.worker import StageWorker
from streams.signals import DeadLetter
from streams.testing import WorkerThread, read_dead_letters, read_events
from streams.tracing import parse_traceparent, trace_id_of

from .intake_helpers import http_server, running_intake
from .workflows import make_workflow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

_CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
_CLIENT_SPAN = "b7ad6b7169203331"

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    # The process's provider is set once (OpenTelemetry refuses to replace it), before any
    # worker or intake is built: they look for it when they start.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    yield _EXPORTER
    _EXPORTER.clear()


def _spans_of(exporter: InMemorySpanExporter, workflow: str) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.name.startswith((f"submit {workflow}", f"process {workflow}."))
        or (s.name.startswith("tool ") and s.parent is not None)
    ]


def _hex_span(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


def _parent_hex(span: ReadableSpan) -> str | None:
    return None if span.parent is None else format(span.parent.span_id, "016x")


def test_one_run_through_three_stages_is_one_trace_with_each_stage_a_child_of_the_last(
    admin: Admin, client_config: ClientConfig, exporter: InMemorySpanExporter
) -> None:
    topology = make_workflow(
        admin,
        {
            "plan": {"downstream": ["research"]},
            "research": {"downstream": ["act"]},
            "act": {"tools": ["crm"]},
        },
        partitions=1,
        lanes=["urgent", "standard", "background"],
        tools={"crm": {"concurrency": 4}},
        intake={},
    )
    wf = topology.workflow

    async def forward(event: Any, ctx: Any) -> None:
        ctx.emit(event)

    def act(event: Any, ctx: Any) -> None:  # a plain function: a handler thread
        if event.payload == b'{"fail":true}':
            raise DeadLetter("customer unknown")
        ctx.tool("crm").call_blocking(lambda: None)
        ctx.emit(event)

    tools = ToolRegistry(topology)
    workers = [
        WorkerThread(StageWorker(topology, name, client_config, handler=h, tools=tools)).start()
        for name, h in (("plan", forward), ("research", forward), ("act", act))
    ]
    try:
        with (
            running_intake(topology, client_config) as intake,
            http_server(intake) as base,
            httpx.Client(timeout=10) as http,
        ):
            url = f"{base}/v1/workflows/{wf}/runs"
            header = {"traceparent": f"00-{_CLIENT_TRACE}-{_CLIENT_SPAN}-01"}
            good = http.post(url, json={"tenant": "acme", "payload": {"n": 1}}, headers=header)
            assert good.status_code == 202, good.text
            # No traceparent anywhere: the intake starts the run's own trace.
            failing = http.post(url, json={"tenant": "acme", "payload": {"fail": True}})
            assert failing.status_code == 202, failing.text
            # A trace_context that is no mapping of strings is refused as without tracing.
            for bad in ([1], {"traceparent": 7}, "00-abc"):
                refused = http.post(url, json={"tenant": "a", "payload": {}, "trace_context": bad})
                assert refused.status_code == 422, (bad, refused.text)
                assert refused.json()["field"] == "trace_context"
        done = read_events(client_config, topology.completed_topic, 1, expect=1, timeout_s=60)
        dead = read_dead_letters(client_config, topology.dead_letter_topic, 6, expect=1)
    finally:
        for worker in workers:
            worker.stop()
    assert all(w.error is None for w in workers)
    assert [e.run_id for e in done] == [good.json()["run_id"]]

    deadline = time.monotonic() + 10  # the spans ended before the records were sent
    spans = _spans_of(exporter, wf)
    while len(spans) < 9 and time.monotonic() < deadline:
        time.sleep(0.1)
        spans = _spans_of(exporter, wf)
    by_run: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        run_id = (span.attributes or {}).get("streams.run_id")
        if isinstance(run_id, str):
            by_run.setdefault(run_id, []).append(span)

    good_spans = {s.name: s for s in by_run[good.json()["run_id"]]}
    assert set(good_spans) == {f"submit {wf}", f"process {wf}.plan", f"process {wf}.research",
                               f"process {wf}.act"}  # fmt: skip
    submit, plan = good_spans[f"submit {wf}"], good_spans[f"process {wf}.plan"]
    research, act_span = good_spans[f"process {wf}.research"], good_spans[f"process {wf}.act"]
    # One trace, the caller's: every span in it.
    assert {format(s.context.trace_id, "032x") for s in good_spans.values() if s.context} == {
        _CLIENT_TRACE
    }
    assert _parent_hex(submit) == _CLIENT_SPAN
    assert _parent_hex(plan) == _hex_span(submit)
    assert _parent_hex(research) == _hex_span(plan)
    assert _parent_hex(act_span) == _hex_span(research)
    tool_spans = [s for s in exporter.get_finished_spans() if _parent_hex(s) == _hex_span(act_span)]
    assert [s.name for s in tool_spans] == ["tool crm"]
    for span, stage in ((plan, "plan"), (research, "research"), (act_span, "act")):
        attrs = dict(span.attributes or {})
        assert attrs["streams.stage"] == stage
        assert attrs["streams.lane"] == "standard"
        assert attrs["streams.attempt"] == 0
        assert attrs["streams.outcome"] == "ok"
        assert isinstance(attrs["streams.queue_age_s"], float)
    assert dict(submit.attributes or {})["streams.outcome"] == "accepted"
    # The completed record still carries the run's trace, from its last handler call.
    assert trace_id_of(done[0].trace_context) == _CLIENT_TRACE

    failed_run = failing.json()["run_id"]
    failed_spans = {s.name: s for s in by_run[failed_run]}
    failed_act = failed_spans[f"process {wf}.act"]
    assert dict(failed_act.attributes or {})["streams.outcome"] == "dead_letter"
    run_trace = {format(s.context.trace_id, "032x") for s in failed_spans.values() if s.context}
    assert len(run_trace) == 1 and run_trace != {_CLIENT_TRACE}
    assert failed_spans[f"submit {wf}"].parent is None  # the run's own trace starts there
    # The dead letter keeps the run's context: in its raw bytes and in its headers.
    (letter,) = dead
    assert letter.raw_value is not None
    kept = TaskEventCodec().decode(letter.raw_value).trace_context
    assert trace_id_of(kept) in run_trace
    parsed = parse_traceparent(kept["traceparent"])
    assert parsed is not None
    assert parsed.span_id == _hex_span(failed_spans[f"process {wf}.research"])
    headers = {k: v for k, v in letter.original_headers}
    assert headers["trace.traceparent"] == kept["traceparent"].encode()


def test_a_retry_is_a_sibling_attempt_under_the_same_parent_and_an_escalation_keeps_the_context(
    admin: Admin, client_config: ClientConfig, exporter: InMemorySpanExporter
) -> None:
    from streams.escalations import EscalationCodec
    from streams.signals import Escalate, Retry
    from streams.testing import publish, read_records

    from .workflows import events

    retry = {"tiers": [1], "base_s": 0.2, "cap_s": 1, "budget": {"ratio": 1.0, "min_retries": 100}}
    topology = make_workflow(
        admin, {"plan": {"downstream": ["act"]}, "act": {"retry": retry}}, partitions=1
    )
    wf = topology.workflow
    flaky, escalated = events(topology, "plan", 2)
    parent = {"traceparent": f"00-{_CLIENT_TRACE}-{_CLIENT_SPAN}-01"}
    flaky = dataclasses.replace(flaky, trace_context=parent)

    async def forward(event: Any, ctx: Any) -> None:
        ctx.emit(event)

    async def act(event: Any, ctx: Any) -> None:
        if event.run_id == escalated.run_id:
            raise Escalate("a person must approve")
        if event.attempt == 0:
            raise Retry(after_s=0.0, reason="try again")
        ctx.emit(event)

    workers = [
        WorkerThread(StageWorker(topology, name, client_config, handler=h)).start()
        for name, h in (("plan", forward), ("act", act))
    ]
    try:
        publish(client_config, f"{wf}.plan.standard", [flaky, escalated])
        done = read_events(client_config, topology.completed_topic, 1, expect=1, timeout_s=60)
        raised = read_records(client_config, topology.escalations_topic, 3, expect=1, timeout_s=30)
    finally:
        for worker in workers:
            worker.stop()
    assert all(w.error is None for w in workers)
    assert [e.run_id for e in done] == [flaky.run_id]

    spans = [s for s in exporter.get_finished_spans() if s.name.startswith(f"process {wf}.")]
    plan_span = next(
        s for s in spans
        if s.name.endswith(".plan") and (s.attributes or {}).get("streams.run_id") == flaky.run_id
    )  # fmt: skip
    attempts = sorted(
        (s for s in spans
         if s.name.endswith(".act") and (s.attributes or {}).get("streams.run_id") == flaky.run_id),
        key=lambda s: int((s.attributes or {})["streams.attempt"]),  # type: ignore[arg-type]
    )  # fmt: skip
    assert [dict(s.attributes or {})["streams.attempt"] for s in attempts] == [0, 1]
    assert [dict(s.attributes or {})["streams.outcome"] for s in attempts] == [
        "retry_requested",
        "ok",
    ]
    # Both attempts continue the run's trace from the same parent: the plan call.
    assert {_parent_hex(s) for s in attempts} == {_hex_span(plan_span)}
    assert {format(s.context.trace_id, "032x") for s in attempts if s.context} == {_CLIENT_TRACE}
    # The escalation holds the consumed event byte for byte: its context included.
    (record,) = raised
    escalation = EscalationCodec().decode(record.value or b"")
    assert escalation.event is not None
    kept = TaskEventCodec().decode(escalation.event).trace_context
    escalated_plan = next(
        s for s in spans
        if s.name.endswith(".plan")
        and (s.attributes or {}).get("streams.run_id") == escalated.run_id
    )  # fmt: skip
    parsed = parse_traceparent(kept["traceparent"])
    assert parsed is not None and parsed.span_id == _hex_span(escalated_plan)
