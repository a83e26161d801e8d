"""Whether a record a faust agent is about to be handed may reach it: it must decode as a
TaskEvent and must not have expired. Owns the conversion of faust's Message into streams'
Record and the refusal reasons; must not send anything (the stage dead-letters refusals)
nor read a clock (callers pass wall time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from faust.types import Message

from streams.errors import SerdeError, StreamsError
from streams.events import TaskEvent, TaskEventCodec
from streams.policy.expiry import expiry_reason
from streams.types import Record

Refusal = Literal["expired", "decode_error"]


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Refusal
    error: StreamsError


def to_record(message: Message) -> Record:
    """Faust's consumed message as streams' Record (faust's timestamp is in seconds)."""
    headers = message.headers or ()
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        int(message.timestamp * 1000),
        tuple((str(name), bytes(value or b"")) for name, value in pairs),
    )


def admit(
    record: Record, codec: TaskEventCodec, *, max_queue_age_s: float, now: float
) -> TaskEvent | Refused:
    """The decoded event, or why the agent must never see it."""
    if record.value is None:
        return Refused(
            "decode_error", SerdeError("record has no value (a tombstone is not a task event)")
        )
    try:
        event = codec.decode(record.value)
    except SerdeError as exc:
        return Refused("decode_error", exc)
    which = expiry_reason(
        enqueued_ms=event.enqueued_at_ms,
        deadline_ms=event.deadline_ms,
        max_queue_age_s=max_queue_age_s,
        now=now,
    )
    if which is None:
        return event
    text = "deadline passed" if which == "deadline" else "queue age over max_queue_age_s"
    return Refused("expired", StreamsError(text))
