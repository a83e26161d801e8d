"""Which outcome a finished handler call gets: the one rule, for every status and error.

Owns the mapping from (how the call ended, what it raised, whether an emit was refused) to
"success" or a dead-letter reason. Pure: no Kafka, no clock, no logging.

    refused before it started (expired at start)   -> expired
    an emit was refused (even if the handler went on) -> emit_error
    ran past its timeout                            -> timeout
    raised DeadLetter(reason)                       -> dead_letter
    raised Retry(...)                               -> retry_requested  (until retry tiers)
    raised Escalate(reason)                         -> escalated        (until escalations)
    raised ToolUnavailable / ToolSaturated / ToolTimeout (ctx.tool, uncaught)
                                                    -> tool_unavailable / tool_saturated /
                                                       tool_timeout     (until retry tiers)
    raised anything else, BaseException included    -> handler_error
    returned                                        -> success (its emits, or done)
"""

from __future__ import annotations

from typing import Literal

from streams.errors import ToolSaturated, ToolTimeout, ToolUnavailable
from streams.signals import DeadLetter, Escalate, Retry
from streams.types import DeadLetterReason

CallStatus = Literal["ok", "error", "timeout", "refused"]


def dead_letter_reason(
    status: CallStatus, error: BaseException | None, emit_refused: bool
) -> DeadLetterReason | None:
    """None for a success; otherwise why the record is dead-lettered."""
    if status == "refused":
        return "expired"
    if emit_refused:
        return "emit_error"
    if status == "ok":
        return None
    if status == "timeout":
        return "timeout"
    if isinstance(error, DeadLetter):
        return "dead_letter"
    if isinstance(error, Retry):
        return "retry_requested"
    if isinstance(error, Escalate):
        return "escalated"
    if isinstance(error, ToolUnavailable):
        return "tool_unavailable"
    if isinstance(error, ToolSaturated):
        return "tool_saturated"
    if isinstance(error, ToolTimeout):
        return "tool_timeout"
    return "handler_error"
