"""Escalation records on the wire: runs handed to people, with their codec.

Owns the mapping between EscalationRecord and schemas/escalation.avsc. Must not import
fastavro (streams.serde owns the wire format) nor Kafka, nor decide when to escalate
(streams.policy.retry does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.events import error_text
from streams.serde import SchemaStore, Serde
from streams.signals import Escalate
from streams.types import Record

__all__ = ["ESCALATION_SCHEMA", "EscalationCodec", "EscalationRecord"]

ESCALATION_SCHEMA = "dev.streams.Escalation"


@dataclass(frozen=True, slots=True)
class EscalationRecord:
    workflow: str
    run_id: str
    stage: str
    attempts: int
    reason: str
    note: str | None
    error_type: str | None
    error_message: str | None
    original_topic: str
    original_partition: int
    original_offset: int
    original_headers: tuple[tuple[str, bytes | None], ...]
    event: bytes | None
    escalated_at_ms: int

    @classmethod
    def for_record(
        cls,
        record: Record,
        *,
        workflow: str,
        run_id: str,
        stage: str,
        attempts: int,
        reason: str,
        error: BaseException | None,
        escalated_at_ms: int,
    ) -> EscalationRecord:
        """Escalate the run of `record`; an Escalate signal's text becomes the note."""
        note = error.reason if isinstance(error, Escalate) else None
        return cls(
            workflow=workflow,
            run_id=run_id,
            stage=stage,
            attempts=attempts,
            reason=reason,
            note=note,
            error_type=None if error is None else _qualified_name(type(error)),
            error_message=None if error is None else error_text(error),
            original_topic=record.topic,
            original_partition=record.partition,
            original_offset=record.offset,
            original_headers=tuple(record.headers),
            event=record.value,
            escalated_at_ms=escalated_at_ms,
        )

    def to_avro(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "run_id": self.run_id,
            "stage": self.stage,
            "attempts": self.attempts,
            "reason": self.reason,
            "note": self.note,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "original_headers": [{"key": k, "value": v} for k, v in self.original_headers],
            "event": self.event,
            "escalated_at": self.escalated_at_ms,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> EscalationRecord:
        return cls(
            workflow=d["workflow"],
            run_id=d["run_id"],
            stage=d["stage"],
            attempts=d["attempts"],
            reason=d["reason"],
            note=d["note"],
            error_type=d["error_type"],
            error_message=d["error_message"],
            original_topic=d["original_topic"],
            original_partition=d["original_partition"],
            original_offset=d["original_offset"],
            original_headers=tuple((h["key"], h["value"]) for h in d["original_headers"]),
            event=d["event"],
            escalated_at_ms=d["escalated_at"],
        )


class EscalationCodec:
    """EscalationRecord <-> single-object-encoded bytes. Raises what Serde raises."""

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.serde = Serde(SchemaStore() if store is None else store, ESCALATION_SCHEMA)

    def encode(self, escalation: EscalationRecord) -> bytes:
        return self.serde.encode(escalation.to_avro())

    def decode(self, data: bytes) -> EscalationRecord:
        return EscalationRecord.from_avro(self.serde.decode(data))


def _qualified_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
