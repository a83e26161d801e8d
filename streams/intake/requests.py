"""What a caller submits and what it learns back: the intake's request and decision types.

Owns their validation rules that do not depend on capacity; must not do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.errors import StreamsError
from streams.policy.admission import AdmissionDecision, AdmissionOutcome, ReasonCode
from streams.types import Lane

MAX_TENANT_LEN = 200
MAX_IDEMPOTENCY_KEY_LEN = 200


class InvalidRequest(StreamsError):
    """The request itself is wrong (not the system's capacity): HTTP 4xx, nothing published.

    `status` is the HTTP status that fits; `field` names the offending part of the body.
    """

    def __init__(self, status: int, field: str, problem: str) -> None:
        self.status = status
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


@dataclass(frozen=True, slots=True)
class RunRequest:
    tenant: str
    payload: bytes
    lane: Lane = "standard"
    idempotency_key: str | None = None
    deadline_ms: int | None = None
    priority: int = 0
    trace_context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """What happened to a request. run_id is set unless rejected; for collapsed it is the
    existing run's id. due_at_ms is set when delayed; retry_after_s when rejected."""

    outcome: AdmissionOutcome
    reason: ReasonCode
    lane: Lane
    requested_lane: Lane
    run_id: str | None = None
    due_at_ms: int | None = None
    retry_after_s: float | None = None
    forecast_wait_s: float | None = None
    #: For collapsed: the existing run's state (queued, delayed, completed, dead_lettered,
    #: escalated), whatever happened to it since it was submitted.
    run_state: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "run_id": self.run_id,
            "lane": self.lane,
            "requested_lane": self.requested_lane,
            "due_at_ms": self.due_at_ms,
            "retry_after_s": self.retry_after_s,
            "forecast_wait_s": self.forecast_wait_s,
            "run_state": self.run_state,
        }


def decision_of(
    verdict: AdmissionDecision,
    requested_lane: Lane,
    *,
    run_id: str | None = None,
    due_at_ms: int | None = None,
) -> Decision:
    return Decision(
        verdict.outcome,
        verdict.reason,
        verdict.lane,
        requested_lane,
        run_id,
        due_at_ms,
        verdict.retry_after_s,
        verdict.forecast_wait_s,
    )


def collapsed_into(
    run_id: str, lane: Lane, requested_lane: Lane, run_state: str | None = None
) -> Decision:
    """A duplicate's answer: the existing run `run_id`, in its lane, and its state."""
    return Decision(
        "collapsed", "duplicate", lane, requested_lane, run_id=run_id, run_state=run_state
    )


def check_request(request: RunRequest, lanes: tuple[Lane, ...]) -> None:
    """Raise InvalidRequest (422) for a request no capacity could make valid."""
    if not request.tenant or not request.tenant.strip():
        raise InvalidRequest(422, "tenant", "is required")
    if len(request.tenant) > MAX_TENANT_LEN:
        raise InvalidRequest(422, "tenant", f"longer than {MAX_TENANT_LEN} characters")
    if request.lane not in lanes:
        raise InvalidRequest(
            422, "lane", f"unknown lane {request.lane!r} (this workflow has {', '.join(lanes)})"
        )
    key = request.idempotency_key
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY_LEN):
        raise InvalidRequest(
            422, "idempotency_key", f"must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"
        )
