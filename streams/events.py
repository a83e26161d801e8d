"""Typed records on the wire: TaskEvent (the envelope) and DeadLetterRecord, with their codecs.

Owns the mapping between these frozen dataclasses and the Avro dicts of schemas/*.avsc.
Must not import fastavro (streams.serde owns the wire format) nor Kafka.

Python names carry units (``created_at_ms``); the Avro fields do not (``created_at``,
typed timestamp-millis). Timestamps are int milliseconds since the epoch, UTC.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

from streams import task_event_body
from streams.serde import SchemaStore, Serde
from streams.task_event_body import Splice
from streams.types import DeadLetterReason, Lane, Record

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "TASK_EVENT_SCHEMA",
    "DeadLetterCodec",
    "DeadLetterRecord",
    "TaskEvent",
    "TaskEventCodec",
    "error_text",
    "new_task_event",
]

TASK_EVENT_SCHEMA = "dev.streams.TaskEvent"
DEAD_LETTER_SCHEMA = "dev.streams.DeadLetter"

_EMPTY: Mapping[str, str] = MappingProxyType({})


class _Decoded:
    """Where a decoded event's fields sit in the bytes it was decoded from, so restaging
    it for the next stage copies them instead of encoding them (streams.task_event_body).
    A slot of a base class, not a dataclass field: asdict, fields and replace never see
    it. Only TaskEventCodec.decode sets it (unset: read it with getattr and a default); a
    copy through dataclasses.replace, which may change any field, starts without it, and
    with_stage keeps it: a restage rewrites every field with_stage changes."""

    __slots__ = ("_splice",)
    _splice: Splice


@dataclass(frozen=True, slots=True)
class TaskEvent(_Decoded):
    """One unit of work in a stage's queue. ``payload`` is the workflow's own bytes
    (UTF-8 JSON by convention); streams never looks inside it."""

    run_id: str
    workflow: str
    stage: str
    tenant: str
    lane: Lane
    created_at_ms: int
    enqueued_at_ms: int
    payload: bytes
    priority: int = 0
    idempotency_key: str | None = None
    attempt: int = 0
    deadline_ms: int | None = None
    # Read-only view so the frozen event cannot change underneath a holder; left out of the
    # hash because mappings are unhashable.
    trace_context: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)

    def __post_init__(self) -> None:
        if type(self.trace_context) is not MappingProxyType:
            object.__setattr__(self, "trace_context", MappingProxyType(dict(self.trace_context)))

    def to_avro(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "stage": self.stage,
            "tenant": self.tenant,
            "lane": self.lane,
            "priority": self.priority,
            "idempotency_key": self.idempotency_key,
            "attempt": self.attempt,
            "created_at": self.created_at_ms,
            "enqueued_at": self.enqueued_at_ms,
            "deadline": self.deadline_ms,
            "trace_context": dict(self.trace_context),
            "payload": self.payload,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> TaskEvent:
        return cls(
            run_id=d["run_id"],
            workflow=d["workflow"],
            stage=d["stage"],
            tenant=d["tenant"],
            lane=cast(Lane, d["lane"]),
            created_at_ms=d["created_at"],
            enqueued_at_ms=d["enqueued_at"],
            payload=d["payload"],
            priority=d["priority"],
            idempotency_key=d["idempotency_key"],
            attempt=d["attempt"],
            deadline_ms=d["deadline"],
            # The decoded dict is ours alone: wrap it without copying.
            trace_context=MappingProxyType(d["trace_context"]),
        )

    def with_stage(self, stage: str, enqueued_at_ms: int) -> TaskEvent:
        """The event as queued for ``stage``. ``attempt`` restarts at 0: retries are counted
        per stage, so one stage's failures do not spend the next stage's retry budget."""
        # Copy the slots directly: dataclasses.replace re-runs __init__ and __post_init__,
        # and this runs once per record on the poll thread.
        copy = object.__new__(TaskEvent)
        for name in _TASK_EVENT_SLOTS:
            object.__setattr__(copy, name, getattr(self, name))
        object.__setattr__(copy, "stage", stage)
        object.__setattr__(copy, "enqueued_at_ms", enqueued_at_ms)
        object.__setattr__(copy, "attempt", 0)
        splice = getattr(self, "_splice", None)
        if splice is not None:
            object.__setattr__(copy, "_splice", splice)
        return copy

    def staged_avro(
        self, stage: str, enqueued_at_ms: int, lane: Lane | None = None
    ) -> dict[str, Any]:
        """``with_stage(stage, enqueued_at_ms).to_avro()`` without the intermediate copy;
        ``lane`` (if given) is the lane it is queued in."""
        avro = self.to_avro()
        avro["stage"], avro["enqueued_at"], avro["attempt"] = stage, enqueued_at_ms, 0
        if lane is not None:
            avro["lane"] = lane
        return avro


_TASK_EVENT_SLOTS = tuple(f.name for f in dataclasses.fields(TaskEvent))
# The slot setters in task_event_body.BodyFields' order.
_BODY_SETTERS: tuple[Any, ...] = tuple(
    getattr(TaskEvent, name).__set__
    for name in (
        "run_id", "workflow", "stage", "tenant", "lane", "priority", "idempotency_key",
        "attempt", "created_at_ms", "enqueued_at_ms", "deadline_ms", "trace_context",
        "payload", "_splice",
    )
)  # fmt: skip
_new_event = object.__new__


def new_task_event(
    *,
    workflow: str,
    stage: str,
    tenant: str,
    lane: Lane,
    payload: bytes,
    now_ms: int,
    priority: int = 0,
    idempotency_key: str | None = None,
    deadline_ms: int | None = None,
    trace_context: Mapping[str, str] | None = None,
    run_id: str | None = None,
) -> TaskEvent:
    """A first-attempt event for a new run, created and enqueued at ``now_ms``.

    ``run_id`` defaults to a fresh uuid4 hex; pass one to continue an existing run.
    """
    return TaskEvent(
        run_id=uuid.uuid4().hex if run_id is None else run_id,
        workflow=workflow,
        stage=stage,
        tenant=tenant,
        lane=lane,
        created_at_ms=now_ms,
        enqueued_at_ms=now_ms,
        payload=payload,
        priority=priority,
        idempotency_key=idempotency_key,
        deadline_ms=deadline_ms,
        trace_context=_EMPTY if trace_context is None else trace_context,
    )


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A consumed record that reached no other outcome, kept byte for byte for replay."""

    original_topic: str
    original_partition: int
    original_offset: int
    original_timestamp_ms: int
    original_key: bytes | None
    raw_value: bytes | None
    original_headers: tuple[tuple[str, bytes | None], ...]
    reason: DeadLetterReason
    error_type: str | None
    error_message: str | None
    stage: str
    workflow: str
    attempts: int
    dead_at_ms: int

    @classmethod
    def for_record(
        cls,
        record: Record,
        *,
        reason: DeadLetterReason,
        stage: str,
        workflow: str,
        attempts: int,
        dead_at_ms: int,
        error: BaseException | None = None,
    ) -> DeadLetterRecord:
        """Dead-letter ``record``; ``error`` (if any) gives error_type and error_message."""
        return cls(
            original_topic=record.topic,
            original_partition=record.partition,
            original_offset=record.offset,
            original_timestamp_ms=record.timestamp_ms,
            original_key=record.key,
            raw_value=record.value,
            original_headers=tuple(record.headers),
            reason=reason,
            error_type=None if error is None else _qualified_name(type(error)),
            error_message=None if error is None else error_text(error),
            stage=stage,
            workflow=workflow,
            attempts=attempts,
            dead_at_ms=dead_at_ms,
        )

    def to_avro(self) -> dict[str, Any]:
        return {
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "original_timestamp": self.original_timestamp_ms,
            "original_key": self.original_key,
            "raw_value": self.raw_value,
            "original_headers": [{"key": k, "value": v} for k, v in self.original_headers],
            "reason": self.reason,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "stage": self.stage,
            "workflow": self.workflow,
            "attempts": self.attempts,
            "dead_at": self.dead_at_ms,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> DeadLetterRecord:
        return cls(
            original_topic=d["original_topic"],
            original_partition=d["original_partition"],
            original_offset=d["original_offset"],
            original_timestamp_ms=d["original_timestamp"],
            original_key=d["original_key"],
            raw_value=d["raw_value"],
            original_headers=tuple((h["key"], h["value"]) for h in d["original_headers"]),
            reason=cast(DeadLetterReason, d["reason"]),
            error_type=d["error_type"],
            error_message=d["error_message"],
            stage=d["stage"],
            workflow=d["workflow"],
            attempts=d["attempts"],
            dead_at_ms=d["dead_at"],
        )


class TaskEventCodec:
    """TaskEvent <-> single-object-encoded bytes. Raises what Serde raises; thread-safe.

    ``store`` defaults to the schemas found by ``default_schemas_dir()``.
    """

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.serde = Serde(SchemaStore() if store is None else store, TASK_EVENT_SCHEMA)
        # The hand-written body reader knows one layout: another current schema (a user's
        # schemas directory) is read and written by fastavro alone.
        self._by_hand = self.serde.schema.fingerprint == task_event_body.BODY_FINGERPRINT
        self._stage_bytes: dict[str, bytes] = {}

    def encode(self, event: TaskEvent, *, topic: str | None = None) -> bytes:
        """``topic``: where the bytes go; with a schema registry configured, naming it
        selects the Confluent wire format (see streams.serde)."""
        if self._by_hand:
            data = self._by_hand_from(
                event, topic, event.stage, event.lane, event.attempt, event.enqueued_at_ms
            )
            if data is not None:
                return data
        return self.serde.encode(event.to_avro(), topic=topic)

    def _by_hand_from(
        self,
        event: TaskEvent,
        topic: str | None,
        stage: object,
        lane: object,
        attempt: object,
        enqueued_at_ms: object,
    ) -> bytes | None:
        """The event's bytes written by hand with these four fields, or None (fastavro's)."""
        return task_event_body.encoded_body(
            self.serde.header_for(topic), event.run_id, event.workflow, stage, event.tenant,
            lane, event.priority, event.idempotency_key, attempt, event.created_at_ms,
            enqueued_at_ms, event.deadline_ms, event.trace_context, event.payload,
        )  # fmt: skip

    def encode_for_stage(
        self,
        event: TaskEvent,
        stage: str,
        enqueued_at_ms: int,
        lane: Lane | None = None,
        *,
        topic: str | None = None,
    ) -> bytes:
        """The bytes of ``event.with_stage(stage, enqueued_at_ms)`` (queued in ``lane`` if
        given), without building that copy (this runs once per emitted record). An event
        this codec decoded is restaged from its own bytes: only the fields that change are
        encoded."""
        splice = getattr(event, "_splice", None)
        if splice is not None and type(enqueued_at_ms) is int:
            index = task_event_body.LANE_INDEX.get(event.lane if lane is None else lane)
            encoded = self._stage_bytes.get(stage)
            if encoded is None and type(stage) is str and len(self._stage_bytes) < 1024:
                encoded = self._stage_bytes.setdefault(stage, task_event_body.encoded_string(stage))
            if index is not None and encoded is not None:
                try:
                    return task_event_body.restaged_body(
                        self.serde.header_for(topic), splice, encoded, index, enqueued_at_ms
                    )
                except ValueError:
                    pass  # out of a long's range: the encoder below says so, naming it
        elif self._by_hand:  # built or replaced (no splice): every field written by hand
            data = self._by_hand_from(
                event, topic, stage, event.lane if lane is None else lane, 0, enqueued_at_ms
            )
            if data is not None:
                return data
        return self.serde.encode(event.staged_avro(stage, enqueued_at_ms, lane), topic=topic)

    def decode(self, data: bytes) -> TaskEvent:
        if self._by_hand:
            start = self.serde.current_body_start(data)
            if start is not None:
                fields = task_event_body.read_body(data, start)
                if fields is not None:
                    return _event_from_body(fields)
        return TaskEvent.from_avro(self.serde.decode(data))


def _event_from_body(fields: task_event_body.BodyFields) -> TaskEvent:
    """A TaskEvent from the hand-read fields, set slot by slot: the dataclass's frozen
    __init__ costs more than reading the body did."""
    event = _new_event(TaskEvent)
    for setter, value in zip(_BODY_SETTERS, fields, strict=True):
        setter(event, value)
    return event


class DeadLetterCodec:
    """DeadLetterRecord <-> single-object-encoded bytes. Raises what Serde raises; thread-safe."""

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.serde = Serde(SchemaStore() if store is None else store, DEAD_LETTER_SCHEMA)

    def encode(self, letter: DeadLetterRecord, *, topic: str | None = None) -> bytes:
        return self.serde.encode(letter.to_avro(), topic=topic)

    def decode(self, data: bytes) -> DeadLetterRecord:
        return DeadLetterRecord.from_avro(self.serde.decode(data))


#: Dead letters keep this much of an error's message (a handler can raise anything).
_MAX_ERROR_CHARS = 4_000


def error_text(error: BaseException, limit: int = _MAX_ERROR_CHARS) -> str:
    """str(error), safely: user code may raise exceptions whose __str__ raises (anything,
    SystemExit included) or returns megabytes, and this runs on the worker's threads."""
    try:
        text = str(error)
    except BaseException:
        return f"<unprintable {type(error).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _qualified_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
