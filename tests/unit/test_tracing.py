"""OpenTelemetry traces of runs (streams.tracing, streams.runtime.traced): the W3C
traceparent helpers, which parent a submitted run continues, handler calls as spans whose
emits carry their context, tool calls as child spans; and nothing at all without
opentelemetry. The SDK's in-memory exporter records the spans; no broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streams.events import TaskEvent, TaskEventCodec, new_task_event
from streams.runtime.context import HandlerContext
from streams.runtime.emitter import Emitter
from streams.runtime.handler_runner import is_async_handler
from streams.runtime.tools import ToolBox, ToolRegistry
from streams.runtime.traced import traced_handler
from streams.signals import DeadLetter
from streams.tracing import (
    Tracing,
    parent_carrier,
    parse_traceparent,
    trace_id_of,
)
from streams.types import Record

_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
_SPAN = "00f067aa0ba902b7"
_PARENT = f"00-{_TRACE}-{_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider), exporter
    provider.shutdown()


# ---------------------------------------------------------------- pure helpers
def test_a_w3c_traceparent_parses_and_malformed_ones_do_not() -> None:
    parsed = parse_traceparent(_PARENT)
    assert parsed is not None
    assert (parsed.trace_id, parsed.span_id, parsed.sampled) == (_TRACE, _SPAN, True)
    assert parse_traceparent(f"00-{_TRACE}-{_SPAN}-00") is not None
    for bad in (
        "",
        "00-" + "0" * 32 + f"-{_SPAN}-01",  # all-zero trace id
        f"00-{_TRACE}-" + "0" * 16 + "-01",  # all-zero span id
        f"ff-{_TRACE}-{_SPAN}-01",  # version ff is forbidden
        f"00-{_TRACE[:-1]}-{_SPAN}-01",
        f"00-{_TRACE.upper()}-{_SPAN}-01",  # lower-case hex only
        f"00-{_TRACE}-{_SPAN}-01-extra",  # version 00 has exactly four fields
        f"00-{_TRACE}-{_SPAN}",
    ):
        assert parse_traceparent(bad) is None, bad
    assert trace_id_of({"traceparent": _PARENT}) == _TRACE
    assert trace_id_of({}) is None
    assert trace_id_of({"traceparent": "nonsense"}) is None


def test_the_body_trace_context_wins_over_the_header_when_it_holds_a_valid_traceparent() -> None:
    other = f"00-{'1' * 32}-{'2' * 16}-01"
    header = {"traceparent": other, "tracestate": "h=1"}
    body = {"traceparent": _PARENT, "tenant.tag": "x"}
    assert parent_carrier(header, body) == body
    # Without a usable traceparent in the body, the HTTP request's header continues.
    assert parent_carrier(header, {"traceparent": "garbage"}) == header
    assert parent_carrier(header, {}) == header
    assert parent_carrier({}, {}) == {}


# ---------------------------------------------------------------- handler spans
def _stage_bits(tool: bool = False) -> tuple[Emitter, ToolBox | None]:
    from streams.topology import parse_topology

    data: dict[str, Any] = {
        "workflow": "wf",
        "lanes": ["urgent", "standard"],
        "stages": {
            "plan": {"handler": "topology.example_handlers:plan", "downstream": ["act"]},
            "act": {"handler": "topology.example_handlers:act"},
        },
    }
    if tool:
        data["tools"] = {"crm": {"concurrency": 2}}
        data["stages"]["plan"]["tools"] = ["crm"]
    topology = parse_topology(data, "inline")
    stage = topology.stages["plan"]
    emitter = Emitter(topology, stage, TaskEventCodec(), lambda: int(time.time() * 1000))
    tools = ToolBox(ToolRegistry(topology), stage, "w1") if tool else None
    if tools is not None:
        tools.set_share(1.0)  # this worker holds all of the stage's partitions
    return emitter, tools


def _event(trace_context: dict[str, str] | None = None, age_s: float = 2.0) -> TaskEvent:
    return new_task_event(
        workflow="wf",
        stage="plan",
        tenant="acme",
        lane="standard",
        payload=b"{}",
        now_ms=int((time.time() - age_s) * 1000),
        trace_context=trace_context,
    )


def _ctx(emitter: Emitter, tools: ToolBox | None = None) -> HandlerContext:
    record = Record("wf.plan.standard", 2, 17, b"k", b"v", 0, ())
    return HandlerContext(
        "plan", "standard", record, None, int(time.time() * 1000), emitter, tools=tools
    )


def _emitted_trace_context(ctx: HandlerContext) -> dict[str, str]:
    (emit,) = ctx.emits
    return dict(TaskEventCodec().decode(emit.value).trace_context)


def test_an_async_handler_call_is_a_span_continuing_the_event_trace_and_its_emits_carry_it(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    emitter, _ = _stage_bits()

    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        ctx.emit(event)

    wrapped = traced_handler(handler, tracing, workflow="wf", timeout_s=30.0)
    assert is_async_handler(wrapped)
    ctx = _ctx(emitter)
    event = _event({"traceparent": _PARENT, "custom": "kept"})
    asyncio.run(wrapped(event, ctx))  # type: ignore[arg-type]

    (span,) = exporter.get_finished_spans()
    assert span.name == "process wf.plan"
    assert span.kind is SpanKind.CONSUMER
    assert span.context is not None and span.parent is not None
    assert format(span.context.trace_id, "032x") == _TRACE
    assert format(span.parent.span_id, "016x") == _SPAN
    attrs = dict(span.attributes or {})
    assert attrs["streams.stage"] == "plan"
    assert attrs["streams.lane"] == "standard"
    assert attrs["streams.attempt"] == 0
    assert attrs["streams.outcome"] == "ok"
    assert attrs["streams.run_id"] == event.run_id
    assert 1.5 < float(attrs["streams.queue_age_s"]) < 30  # type: ignore[arg-type]
    assert attrs["messaging.destination.name"] == "wf.plan.standard"
    # The next stage continues from this call's span, not from its parent.
    carried = _emitted_trace_context(ctx)
    parsed = parse_traceparent(carried["traceparent"])
    assert parsed is not None
    assert parsed.trace_id == _TRACE
    assert parsed.span_id == format(span.context.span_id, "016x")
    assert carried["custom"] == "kept"


def test_a_plain_handler_without_a_trace_starts_one_and_a_signal_is_its_outcome(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    emitter, _ = _stage_bits()

    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        ctx.emit(event)
        raise DeadLetter("no such customer")

    wrapped = traced_handler(handler, tracing, workflow="wf", timeout_s=30.0)
    assert not is_async_handler(wrapped)
    ctx = _ctx(emitter)
    with pytest.raises(DeadLetter):
        wrapped(_event(), ctx)
    (span,) = exporter.get_finished_spans()
    assert span.parent is None  # a new trace: the event carried none
    assert dict(span.attributes or {})["streams.outcome"] == "dead_letter"
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise SystemExit("a hostile __str__")


def test_a_handler_exception_that_cannot_be_printed_is_raised_on_unchanged(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    emitter, _ = _stage_bits()

    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        raise _Unprintable()

    with pytest.raises(_Unprintable):
        traced_handler(handler, tracing, workflow="wf", timeout_s=30.0)(_event(), _ctx(emitter))
    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes or {})["streams.outcome"] == "handler_error"
    assert span.status.status_code is StatusCode.ERROR


def test_a_plain_handler_returning_a_coroutine_still_reaches_the_runner(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, _ = spans
    emitter, _ = _stage_bits()

    async def inner() -> None:
        pass

    def handler(event: TaskEvent, ctx: HandlerContext) -> Any:
        return inner()

    wrapped = traced_handler(handler, tracing, workflow="wf", timeout_s=30.0)
    result: Any = wrapped(_event(), _ctx(emitter))
    assert asyncio.iscoroutine(result)  # the runner closes it and says `async def`
    result.close()


def test_a_tool_call_is_a_child_span_of_the_handler_call(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    emitter, tools = _stage_bits(tool=True)

    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        async with ctx.tool("crm"):
            pass
        await ctx.tool("crm").call(lambda: 1)
        with pytest.raises(KeyError):
            await ctx.tool("crm").call(_raise_key_error)

    wrapped = traced_handler(handler, tracing, workflow="wf", timeout_s=30.0)
    asyncio.run(wrapped(_event({"traceparent": _PARENT}), _ctx(emitter, tools)))  # type: ignore[arg-type]
    finished: list[ReadableSpan] = list(exporter.get_finished_spans())
    handler_span = next(s for s in finished if s.name == "process wf.plan")
    tool_spans = [s for s in finished if s.name == "tool crm"]
    assert len(tool_spans) == 3
    assert handler_span.context is not None
    for span in tool_spans:
        assert span.parent is not None
        assert span.parent.span_id == handler_span.context.span_id
        assert span.kind is SpanKind.CLIENT
        assert dict(span.attributes or {})["streams.tool"] == "crm"
    assert [s.status.status_code for s in tool_spans] == [
        StatusCode.UNSET,
        StatusCode.UNSET,
        StatusCode.ERROR,
    ]


def test_a_blocking_tool_call_is_a_child_span_too(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    emitter, tools = _stage_bits(tool=True)

    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        with ctx.tool("crm"):
            pass
        ctx.tool("crm").call_blocking(lambda: None)

    traced_handler(handler, tracing, workflow="wf", timeout_s=30.0)(_event(), _ctx(emitter, tools))
    finished = list(exporter.get_finished_spans())
    handler_span = next(s for s in finished if s.name == "process wf.plan")
    assert handler_span.context is not None
    children = [s for s in finished if s.name == "tool crm"]
    assert len(children) == 2
    assert all(
        s.parent is not None and s.parent.span_id == handler_span.context.span_id for s in children
    )


def _raise_key_error() -> None:
    raise KeyError("gone")


def test_the_intake_submission_continues_the_caller_trace_and_hands_the_run_its_own(
    spans: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    with tracing.submission(
        "wf", tenant="acme", lane="urgent", header={"traceparent": _PARENT}, body={"k": "v"}
    ) as submission:
        carried = submission.trace_context
        submission.decided("accepted", "ok", "run-1")
    (span,) = exporter.get_finished_spans()
    assert span.name == "submit wf"
    assert span.kind is SpanKind.SERVER
    assert span.parent is not None and format(span.parent.span_id, "016x") == _SPAN
    attrs = dict(span.attributes or {})
    assert (attrs["streams.outcome"], attrs["streams.run_id"]) == ("accepted", "run-1")
    parsed = parse_traceparent(carried["traceparent"])
    assert span.context is not None and parsed is not None
    assert parsed.trace_id == _TRACE
    assert parsed.span_id == format(span.context.span_id, "016x")
    assert carried["k"] == "v"


def test_without_a_tracer_provider_the_handler_is_not_wrapped() -> None:
    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        pass

    assert traced_handler(handler, None, workflow="wf", timeout_s=1.0) is handler


def test_without_opentelemetry_installed_tracing_is_off_and_nothing_breaks() -> None:
    # A fresh interpreter in which `import opentelemetry` fails, as on an install without
    # the otel extra: streams imports, reports tracing off, and the worker's handler is
    # the user's own function.
    script = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "import streams.tracing as t\n"
        "assert t.configured_tracing() is None\n"
        "assert t.current_trace_context() == {}\n"
        "from streams.runtime.traced import traced_handler\n"
        "def h(event, ctx): pass\n"
        "assert traced_handler(h, t.configured_tracing(), workflow='w', timeout_s=1) is h\n"
        "import streams.runtime.worker, streams.intake.http\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_with_the_api_but_no_provider_set_tracing_is_off() -> None:
    # opentelemetry-api alone records nothing: streams does not pay for no-op spans.
    script = (
        "import streams.tracing as t\n"
        "assert t.configured_tracing() is None\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "assert t.configured_tracing() is not None\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
