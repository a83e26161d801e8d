"""OpenTelemetry traces of runs: the intake's submission span, a span per handler call and
per tool call, and the W3C trace context carried in the TaskEvent envelope between them.

Owns every use of opentelemetry, which is an optional import (`pip install streams[otel]`);
must not decide outcomes, touch Kafka, or cost anything when tracing is off. Tracing is on
when opentelemetry-api imports and the process has set a TracerProvider before the worker
or intake is built (`configured_tracing()`); otherwise callers get None and skip every
tracing step with one None check (with the API alone, spans would record nothing anyway).

How a run's trace flows:
    HTTP request (traceparent header, or the body's trace_context)
      └─ "submit W" (intake, SERVER) ── its context goes into the run's trace_context
           └─ "process W.S" (each handler call, CONSUMER) ── emits carry its context
                ├─ "tool T" (each ctx.tool call, CLIENT)
                └─ "process W.next" ... (the next stage, continuing from the emit)
A retry re-enters its stage with the context it had, so each attempt is a sibling span
under the same parent; a dead letter keeps the record's bytes and headers, context included.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

try:
    from opentelemetry import context as _otel_context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # the otel extra is not installed: tracing is off
    _trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

__all__ = [
    "HandlerSpan",
    "Submission",
    "TraceParent",
    "Tracing",
    "configured_tracing",
    "current_trace_context",
    "parent_carrier",
    "parse_traceparent",
    "trace_id_of",
]

_INSTRUMENTATION = "streams"
# W3C Trace Context, version 00: version-traceid-parentid-flags, lower-case hex. Later
# versions may append fields after the flags; version ff is invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


class TraceParent(NamedTuple):
    trace_id: str
    span_id: str
    sampled: bool


def parse_traceparent(value: object) -> TraceParent | None:
    """The fields of a W3C `traceparent`, or None if it is not a valid one."""
    if not isinstance(value, str):
        return None  # a request body's trace_context is checked later, not trusted here
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"}:
        return None
    if set(span_id) == {"0"}:
        return None
    return TraceParent(trace_id, span_id, bool(int(flags, 16) & 1))


def trace_id_of(trace_context: Mapping[str, str]) -> str | None:
    """The trace id a trace context (a TaskEvent's, a dead letter's) belongs to."""
    parsed = parse_traceparent(trace_context.get("traceparent", ""))
    return None if parsed is None else parsed.trace_id


def parent_carrier(header: Mapping[str, str], body: Mapping[str, str]) -> Mapping[str, str]:
    """Which context a submitted run continues: the body's trace_context when it holds a
    valid traceparent (the caller chose it for this run), else the HTTP request's headers
    (what an instrumented HTTP client sends from its current span)."""
    chosen = body if parse_traceparent(body.get("traceparent", "")) is not None else header
    # Only text reaches the propagator: a body's values are not checked yet.
    return {k: v for k, v in chosen.items() if isinstance(k, str) and isinstance(v, str)}


def current_trace_context() -> dict[str, str]:
    """The caller's current span as a trace_context mapping (empty when tracing is off):
    for Python API callers who want a run to continue their trace."""
    if _trace is None:
        return {}
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return carrier


def configured_tracing() -> Tracing | None:
    """A Tracing on the process's TracerProvider, or None when opentelemetry is not
    installed or no provider was set (then nothing is traced and nothing is paid)."""
    if _trace is None:
        return None
    provider = _trace.get_tracer_provider()
    if isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider):
        return None
    return Tracing(provider)


@dataclass(slots=True)
class HandlerSpan:
    """The span of one handler call while it runs (see Tracing.handler_call).

    trace_context: what the call's emits carry (the event's own keys, with this span as
    the parent); outcome: set by the caller before the span ends."""

    span: Span
    trace_context: Mapping[str, str]
    outcome: str = "ok"


@dataclass(slots=True)
class Submission:
    """The intake's span for one submission: `trace_context` goes on the run."""

    span: Span
    trace_context: dict[str, str] = field(default_factory=dict)

    def decided(self, outcome: str, reason: str, run_id: str | None) -> None:
        self.span.set_attribute("streams.outcome", outcome)
        self.span.set_attribute("streams.reason", reason)
        if run_id is not None:
            self.span.set_attribute("streams.run_id", run_id)


class Tracing:
    """Makes streams' spans on one TracerProvider. Thread-safe (the SDK's tracer is)."""

    def __init__(self, provider: TracerProvider) -> None:
        assert _trace is not None, "Tracing needs opentelemetry-api"
        self._tracer = provider.get_tracer(_INSTRUMENTATION)

    @contextmanager
    def handler_call(
        self,
        name: str,
        parent: Mapping[str, str],
        attributes: Mapping[str, str | int | float],
    ) -> Iterator[HandlerSpan]:
        """A CONSUMER span `name`, child of the context in `parent` (a new trace if it has
        none), current on this thread or task while the block runs. An exception leaving
        the block is recorded on the span (status ERROR) and raised on."""
        context = _propagate.extract(parent)
        with self._tracer.start_as_current_span(
            name,
            context=context,
            kind=_trace.SpanKind.CONSUMER,
            attributes=dict(attributes),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            carrier: dict[str, str] = dict(parent)
            _propagate.inject(carrier)  # the span just made current
            call = HandlerSpan(span, carrier)
            try:
                yield call
            except BaseException as exc:
                _record_error(span, exc)
                raise
            finally:
                span.set_attribute("streams.outcome", call.outcome)

    def start_tool(self, tool: str) -> ToolSpan:
        """A CLIENT span for one ctx.tool call, child of the current (handler) span, and
        made current until ToolSpan.end: what the tool's client library traces nests in it."""
        span = self._tracer.start_span(
            f"tool {tool}", kind=_trace.SpanKind.CLIENT, attributes={"streams.tool": tool}
        )
        token = _otel_context.attach(_trace.set_span_in_context(span))
        return ToolSpan(span, token)

    @contextmanager
    def submission(
        self,
        workflow: str,
        *,
        tenant: str,
        lane: str,
        header: Mapping[str, str],
        body: Mapping[str, str],
    ) -> Iterator[Submission]:
        """A SERVER span for one run submitted to the intake, continuing parent_carrier(
        header, body); Submission.trace_context is the body's mapping with this span as the
        parent, to store on the run so its first stage continues from here."""
        context = _propagate.extract(parent_carrier(header, body))
        with self._tracer.start_as_current_span(
            f"submit {workflow}",
            context=context,
            kind=_trace.SpanKind.SERVER,
            attributes={"streams.workflow": workflow, "streams.tenant": tenant,
                        "streams.lane": lane},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:  # fmt: skip
            carrier = dict(body)
            _propagate.inject(carrier)
            submission = Submission(span, carrier)
            try:
                yield submission
            except BaseException as exc:
                _record_error(span, exc)
                raise


class ToolSpan:
    """One tool call's open span; end() it exactly once, on the thread or task that
    started it (it restores the context that was current before)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span, token: Any) -> None:
        self._span = span
        self._token = token

    def end(self, error: BaseException | None, waited_s: float) -> None:
        span = self._span
        span.set_attribute("streams.tool.waited_s", waited_s)
        if error is not None:
            _record_error(span, error)
        _otel_context.detach(self._token)
        span.end()


def _record_error(span: Span, error: BaseException) -> None:
    try:
        span.record_exception(error)
    except BaseException:  # handler code may raise exceptions whose __str__ raises
        span.add_event("exception", {"exception.type": type(error).__qualname__})
    span.set_status(_trace.Status(_trace.StatusCode.ERROR, f"{type(error).__name__}"))
