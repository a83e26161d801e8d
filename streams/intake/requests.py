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
#: What the TaskEvent schema can hold (schemas/task_event.avsc): priority is an Avro int,
#: the deadline an Avro long (timestamp-millis).
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
DEADLINE_MS_RANGE = (-(2**63), 2**63 - 1)
#: The largest task event the intake's producer can send: librdkafka's default
#: message.max.bytes. A larger one fails at send, after its reservation was written.
MAX_EVENT_BYTES = 1_000_000
#: Room kept for the event's other fields (run id, workflow and stage names, times, the
#: schema header) and the record's key.
_ENVELOPE_BYTES = 2_048


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
    """Raise InvalidRequest (422) for a request no capacity could make valid: everything
    the ledger entry and the task event must hold is checked here, before anything is
    written (types, lengths, Avro's int and long ranges, strings that are Unicode text).

    The payload is opaque bytes here (its encoding is the workflow's); the HTTP layer
    and the payload schema check what it says.
    """
    tenant = request.tenant
    if not isinstance(tenant, str) or not tenant.strip():
        raise InvalidRequest(422, "tenant", "is required: a non-blank string")
    if len(tenant) > MAX_TENANT_LEN:
        raise InvalidRequest(422, "tenant", f"longer than {MAX_TENANT_LEN} characters")
    _check_text("tenant", tenant)
    if not isinstance(request.lane, str) or request.lane not in lanes:
        raise InvalidRequest(
            422, "lane", f"unknown lane {request.lane!r} (this workflow has {', '.join(lanes)})"
        )
    key = request.idempotency_key
    if key is not None:
        if not isinstance(key, str) or not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LEN:
            raise InvalidRequest(
                422, "idempotency_key", f"must be a string of 1 to {MAX_IDEMPOTENCY_KEY_LEN} "
                "characters",
            )  # fmt: skip
        _check_text("idempotency_key", key)
    _check_int("priority", request.priority, PRIORITY_RANGE, "an integer")
    if request.deadline_ms is not None:
        _check_int("deadline_ms", request.deadline_ms, DEADLINE_MS_RANGE, "epoch milliseconds")
    trace = request.trace_context
    if not isinstance(trace, Mapping):
        raise InvalidRequest(422, "trace_context", "must map strings to strings")
    for name, value in trace.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidRequest(422, "trace_context", "must map strings to strings")
        _check_text("trace_context", name)
        _check_text("trace_context", value)
    if not isinstance(request.payload, bytes):
        raise InvalidRequest(422, "payload", "must be bytes")
    size = _event_bytes(request)
    if size > MAX_EVENT_BYTES:
        raise InvalidRequest(
            413, "payload", f"the run's event would be about {size} bytes, over the "
            f"{MAX_EVENT_BYTES} a Kafka record may have",
        )  # fmt: skip


def _event_bytes(request: RunRequest) -> int:
    """An upper bound of the encoded event's size (Avro adds a few bytes per field)."""
    texts = [request.tenant, request.idempotency_key or ""]
    texts.extend(request.trace_context)
    texts.extend(request.trace_context.values())
    # UTF-8 takes at most 4 bytes a character, and 10 covers each length prefix.
    return len(request.payload) + _ENVELOPE_BYTES + sum(4 * len(t) + 10 for t in texts)


def _check_text(field_name: str, value: str) -> None:
    """Avro strings are UTF-8: a lone surrogate (JSON's \\udXXX escape allows one) is
    not text and cannot be encoded."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        raise InvalidRequest(
            422, field_name, f"has a lone surrogate (U+{code:04X}): not Unicode text"
        ) from None


def _check_int(field_name: str, value: object, bounds: tuple[int, int], what: str) -> None:
    low, high = bounds
    # bool is an int to Python, not to the caller; a float (1.0, NaN) is not an integer.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(422, field_name, f"must be {what} (a whole number)")
    if not low <= value <= high:
        raise InvalidRequest(422, field_name, f"must be {what} in [{low}, {high}]")
