"""What a handler sees: the event's stage context, and `emit` to hand work downstream.

Owns the handler-facing API. Emits are encoded when made (so a bad event is refused to the
handler that made it) and collected, not sent: the worker sends them after the handler
returns, so a handler's work is never re-run because a hand-off had to wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

from streams.errors import EmitRejected, StreamsError
from streams.events import TaskEvent
from streams.policy.degradation import NORMAL, LevelView
from streams.types import Lane, Record

if TYPE_CHECKING:
    from streams.runtime.emitter import Emitter
    from streams.runtime.tools import ToolBox, ToolCall


class CallTrace(Protocol):
    """The span of a traced handler call (streams.runtime.traced): emits carry its
    context, tool calls become its children."""

    def stamp(self, event: TaskEvent) -> TaskEvent: ...
    def tool(self, call: ToolCall, name: str) -> ToolCall: ...


class Emit(NamedTuple):
    """One encoded record to send once the handler has finished. A tuple: one is built
    per emitted record (a frozen dataclass costs three times as much to build)."""

    topic: str
    value: bytes
    key: bytes
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(slots=True)
class HandlerContext:
    """Passed to `handler(event, ctx)`.

    stage / lane / record: where the event came from (`lane` is the lane it arrived in).
    deadline_ms: the run's deadline (None if it has none); handlers that call slow tools
    should pass on what is left of it. now_ms: when the call was dispatched.

    emit(event, lane=None): hand `event` (or a changed copy, e.g.
    `dataclasses.replace(event, payload=...)`) to every downstream stage, or to the
    workflow's completed topic after the last stage. It is queued in `lane` (default: the
    event's own lane) and carries that lane. A run may be demoted but not promoted above
    the lane it arrived in (unless the stage allows it). An event that cannot be encoded
    or routed raises EmitRejected, and the record is dead-lettered "emit_error" even if
    the handler catches it. Emits are sent after the handler returns, only if it succeeds.

    tool(name): one call through a tool the stage lists (README "Tools"): `async with
    ctx.tool("crm"):`, `await ctx.tool("crm").call(fn, ...)`, or on a handler thread `with
    ctx.tool("crm"):` / `ctx.tool("crm").call_blocking(fn, ...)`. Raises ToolUnavailable
    (breaker open) or ToolSaturated (no slot or token within max_wait_s) before the call is
    made; catch them to take a fallback path.

    degradation: the workflow's degradation level when the call was dispatched (README
    "Degradation"): `ctx.degradation.level` (name), `.index` (0 = the base level),
    `.degraded`, `.forced` (an operator forced it), `.knobs` / `.knob(name, default)` (the
    level's free-form values, e.g. `ctx.degradation.knob("retrieval_k", 10)`).
    """

    stage: str
    lane: Lane
    record: Record
    deadline_ms: int | None
    now_ms: int
    emitter: Emitter
    emits: list[Emit] = field(default_factory=list)
    #: The first refused emit, if any: it decides the record's outcome.
    emit_error: EmitRejected | None = None
    tools: ToolBox | None = None
    #: Set while a traced call runs (README "Tracing"); None when tracing is off.
    trace: CallTrace | None = None
    degradation: LevelView = NORMAL

    def tool(self, name: str) -> ToolCall:
        if self.tools is None:
            raise StreamsError(
                f"stage {self.stage!r} lists no tools; add {name!r} to stages.{self.stage}.tools"
            )
        call = self.tools.call(name)
        return call if self.trace is None else self.trace.tool(call, name)

    def emit(self, event: TaskEvent, *, lane: Lane | None = None) -> None:
        if self.trace is not None:
            event = self.trace.stamp(event)
        try:
            self.emits.extend(self.emitter.build(event, lane, self.lane))
        except EmitRejected as exc:
            if self.emit_error is None:
                self.emit_error = exc
            raise
