"""A stage's handler as traced calls: each call a span (streams.tracing) whose context its
emits carry, and whose ctx.tool calls are child spans.

Owns the wrapping of the handler and of ToolCall for tracing; must not import
opentelemetry (streams.tracing does) nor decide outcomes (the span's `streams.outcome` is
streams.policy.outcome's classification of the call, as the worker makes it). With tracing
off the handler is returned as it is: the per-record path does not change at all.
"""

from __future__ import annotations

import dataclasses
import time
from types import TracebackType

from streams.events import TaskEvent
from streams.policy.outcome import dead_letter_reason
from streams.runtime.context import HandlerContext
from streams.runtime.handler_runner import Handler, is_async_handler
from streams.runtime.tools import ToolCall
from streams.tracing import HandlerSpan, ToolSpan, Tracing

__all__ = ["CallTrace", "TracedToolCall", "traced_handler"]


def traced_handler(
    handler: Handler, tracing: Tracing | None, *, workflow: str, timeout_s: float
) -> Handler:
    """`handler` itself when `tracing` is None; else a handler of the same kind (async or
    plain, so the runner runs it the same way) that makes each call a span."""
    if tracing is None:
        return handler

    if is_async_handler(handler):

        async def traced_async(event: TaskEvent, ctx: HandlerContext) -> None:
            started = time.monotonic()
            with tracing.handler_call(
                f"process {workflow}.{ctx.stage}", event.trace_context, _attributes(event, ctx)
            ) as span:
                ctx.trace = CallTrace(tracing, span)
                try:
                    await handler(event, ctx)  # type: ignore[misc]
                except BaseException as exc:
                    span.outcome = _outcome(ctx, exc, started, timeout_s)
                    raise
                span.outcome = _outcome(ctx, None, started, timeout_s)

        return traced_async

    def traced_plain(event: TaskEvent, ctx: HandlerContext) -> object:
        started = time.monotonic()
        with tracing.handler_call(
            f"process {workflow}.{ctx.stage}", event.trace_context, _attributes(event, ctx)
        ) as span:
            ctx.trace = CallTrace(tracing, span)
            try:
                # Returned as is: an awaitable from a plain function is the runner's to refuse.
                result = handler(event, ctx)
            except BaseException as exc:
                span.outcome = _outcome(ctx, exc, started, timeout_s)
                raise
            span.outcome = _outcome(ctx, None, started, timeout_s)
            return result

    return traced_plain  # type: ignore[return-value]


class CallTrace:
    """What HandlerContext needs of the call's span: the context its emits carry, and
    tool calls made child spans."""

    __slots__ = ("_span", "_tracing")

    def __init__(self, tracing: Tracing, span: HandlerSpan) -> None:
        self._tracing = tracing
        self._span = span

    def stamp(self, event: TaskEvent) -> TaskEvent:
        """`event` carrying this call's context (its other trace_context keys kept)."""
        if not isinstance(event, TaskEvent):
            return event  # the emitter refuses it and says why
        carried = self._span.trace_context
        if event.trace_context == carried:
            return event
        return dataclasses.replace(event, trace_context={**event.trace_context, **carried})

    def tool(self, call: ToolCall, name: str) -> ToolCall:
        return TracedToolCall(call, self._tracing, name)


class TracedToolCall(ToolCall):
    """A ToolCall whose call is a span: it wraps the call ctx.tool made and forwards every
    form to it (call() and call_blocking() go through these methods). It holds none of
    ToolCall's own state, so a form added to ToolCall must be forwarded here too."""

    __slots__ = ("_inner", "_name", "_span", "_tracer")

    def __init__(self, inner: ToolCall, tracing: Tracing, name: str) -> None:  # a proxy
        self._inner = inner
        self._tracer = tracing
        self._name = name
        self._span: ToolSpan | None = None

    @property
    def waited_s(self) -> float:
        return self._inner.waited_s

    @property
    def timeout_s(self) -> float:
        return self._inner.timeout_s

    async def __aenter__(self) -> ToolCall:
        span = self._span = self._tracer.start_tool(self._name)
        try:
            await self._inner.__aenter__()
        except BaseException as exc:  # refused (breaker, saturated) before the call
            span.end(exc, self._inner.waited_s)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._span is not None, "async with ctx.tool(...) was not entered"
        try:
            await self._inner.__aexit__(exc_type, exc, tb)
        except BaseException as raised:  # ToolTimeout
            self._span.end(raised, self._inner.waited_s)
            raise
        self._span.end(exc, self._inner.waited_s)

    def __enter__(self) -> ToolCall:
        span = self._span = self._tracer.start_tool(self._name)
        try:
            self._inner.__enter__()
        except BaseException as exc:
            span.end(exc, self._inner.waited_s)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._span is not None, "with ctx.tool(...) was not entered"
        try:
            self._inner.__exit__(exc_type, exc, tb)
        finally:
            self._span.end(exc, self._inner.waited_s)


def _attributes(event: TaskEvent, ctx: HandlerContext) -> dict[str, str | int | float]:
    record = ctx.record
    return {
        "streams.workflow": event.workflow,
        "streams.stage": ctx.stage,
        "streams.lane": ctx.lane,
        "streams.attempt": event.attempt,
        "streams.run_id": event.run_id,
        "streams.tenant": event.tenant,
        # How long the record waited in the stage's queue before this call was dispatched.
        "streams.queue_age_s": max(0.0, (ctx.now_ms - event.enqueued_at_ms) / 1000),
        "messaging.system": "kafka",
        "messaging.destination.name": record.topic,
        "messaging.destination.partition.id": str(record.partition),
        "messaging.kafka.offset": record.offset,
    }


def _outcome(
    ctx: HandlerContext, error: BaseException | None, started: float, timeout_s: float
) -> str:
    """The worker's classification of this call (timed out: ran past the stage's timeout,
    the runner cancelling it or reporting it late)."""
    if time.monotonic() - started >= timeout_s:
        status = "timeout"
    else:
        status = "ok" if error is None else "error"
    reason = dead_letter_reason(status, error, ctx.emit_error is not None)  # type: ignore[arg-type]
    return "ok" if reason is None else reason
