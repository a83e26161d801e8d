"""What a handler sees: the event's stage context, and `emit` to hand work downstream.

Owns the handler-facing API. Emits are collected, not sent: the worker sends them after
the handler returns, so a handler's work is never re-run because a hand-off had to wait.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streams.events import TaskEvent
from streams.types import Lane, Record


@dataclass(frozen=True, slots=True)
class Emit:
    """One record to send once the handler has finished."""

    topic: str
    event: TaskEvent


@dataclass(slots=True)
class HandlerContext:
    """Passed to `handler(event, ctx)`.

    stage / lane / record: where the event came from. deadline_ms: the run's deadline (None
    if it has none); handlers that call slow tools should pass on what is left of it.
    emit(event, lane=None): hand the event (or a changed copy) to every downstream stage,
    or to the workflow's completed topic after the last stage; `lane` moves it to another
    lane (never more urgent than the stage routes allow). Emits are sent after the handler
    returns and only if it succeeds.
    """

    stage: str
    lane: Lane
    record: Record
    deadline_ms: int | None
    now_ms: int
    routes: Mapping[Lane, tuple[str, ...]]  # shared by every context of the stage: read-only
    emits: list[Emit] = field(default_factory=list)

    def emit(self, event: TaskEvent, *, lane: Lane | None = None) -> None:
        target_lane = lane or event.lane
        topics = self.routes.get(target_lane) or self.routes[self.lane]
        for topic in topics:
            self.emits.append(Emit(topic, event))
