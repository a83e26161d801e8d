"""What a handler may raise on purpose to choose its record's outcome.

Owns the named control-flow signals; must not hold errors (those live in streams.errors)
nor decide anything (the worker's outcome classification does).

    HandlerSignal
    ├── DeadLetter(reason)                 give up on this record: dead-letter it now
    ├── Retry(after_s=None, reason=...)    try this record again later
    └── Escalate(reason)                   hand this run to a person

With a stage retry policy (README "Retries and escalations"), Retry goes to a retry tier
and Escalate to the workflow's escalations topic; without one, both dead-letter the record
(reason "retry_requested" / "escalated" and the signal's own text), so no signal is ever
silently ignored. Any other exception a handler raises is "handler_error" (or retried, if
the policy's retry_on names it).
"""

from __future__ import annotations

__all__ = ["DeadLetter", "Escalate", "HandlerSignal", "Retry"]


class HandlerSignal(Exception):
    """Base of the signals; `reason` is a short text that ends up in the dead letter."""

    def __init__(self, reason: str) -> None:
        if not isinstance(reason, str) or not reason:
            raise TypeError("a handler signal needs a non-empty reason string")
        self.reason = reason
        super().__init__(reason)


class DeadLetter(HandlerSignal):
    """The record cannot be processed: dead-letter it at once, never retried."""


class Retry(HandlerSignal):
    """The record may succeed later; `after_s` asks for at least that delay (None: the
    stage's retry policy decides)."""

    def __init__(self, after_s: float | None = None, reason: str = "retry requested") -> None:
        if after_s is not None and not (after_s >= 0):
            raise ValueError(f"Retry(after_s=...) must be >= 0, got {after_s!r}")
        self.after_s = after_s
        super().__init__(reason)


class Escalate(HandlerSignal):
    """A person must look at this run (the handler cannot decide it)."""
