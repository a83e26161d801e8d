"""Review entries on the wire: one run's state at a review stage, with its codec.

Owns the mapping between ReviewEntry and schemas/review.avsc, and the event headers that
carry a decision downstream. Must not import fastavro (streams.serde owns the wire format)
nor Kafka, nor decide anything (streams.policy.review and streams.review.stage do).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from streams.serde import SchemaStore, Serde
from streams.types import Record

__all__ = [
    "DECISION_HEADER",
    "NOTE_HEADER",
    "REVIEWER_HEADER",
    "REVIEW_SCHEMA",
    "ReviewCodec",
    "ReviewEntry",
    "ReviewState",
    "decision_headers",
]

REVIEW_SCHEMA = "dev.streams.Review"
ReviewState = Literal["pending", "approved", "declined", "timed_out"]
#: Headers of the record a review stage sends downstream (README "Human review").
DECISION_HEADER = "streams.review.decision"  # approve | decline
NOTE_HEADER = "streams.review.note"  # the reviewer's note, when given
REVIEWER_HEADER = "streams.review.by"  # who decided; "timeout" when no one did in time
DECIDED_AT_HEADER = "streams.review.decided_at"  # ms since the epoch, as decimal text
TIMEOUT_REVIEWER = "timeout"


@dataclass(frozen=True, slots=True)
class ReviewEntry:
    workflow: str
    stage: str
    run_id: str
    state: ReviewState
    tenant: str
    lane: str
    admitted_at_ms: int
    deadline_ms: int
    payload: bytes
    #: The parked record (its redelivery finds this entry; a replay is a new record).
    record_topic: str = ""
    record_partition: int = 0
    record_offset: int = -1
    decided_at_ms: int | None = None
    decision: str | None = None
    note: str | None = None
    reviewer: str | None = None

    def holds(self, record: Record) -> bool:
        """Whether this entry is the review of `record` (the same record, redelivered)."""
        return (self.record_topic, self.record_partition, self.record_offset) == (
            record.topic,
            record.partition,
            record.offset,
        )

    def decided(
        self, state: ReviewState, decision: str, *, at_ms: int, note: str | None, reviewer: str
    ) -> ReviewEntry:
        return dataclasses.replace(
            self, state=state, decision=decision, decided_at_ms=at_ms, note=note, reviewer=reviewer
        )

    def to_avro(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "stage": self.stage,
            "run_id": self.run_id,
            "state": self.state,
            "tenant": self.tenant,
            "lane": self.lane,
            "admitted_at": self.admitted_at_ms,
            "deadline": self.deadline_ms,
            "decided_at": self.decided_at_ms,
            "decision": self.decision,
            "note": self.note,
            "reviewer": self.reviewer,
            "payload": self.payload,
            "record_topic": self.record_topic,
            "record_partition": self.record_partition,
            "record_offset": self.record_offset,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> ReviewEntry:
        return cls(
            workflow=d["workflow"],
            stage=d["stage"],
            run_id=d["run_id"],
            state=d["state"],
            tenant=d["tenant"],
            lane=d["lane"],
            admitted_at_ms=d["admitted_at"],
            deadline_ms=d["deadline"],
            decided_at_ms=d["decided_at"],
            decision=d["decision"],
            note=d["note"],
            reviewer=d["reviewer"],
            payload=d["payload"],
            record_topic=d["record_topic"],
            record_partition=d["record_partition"],
            record_offset=d["record_offset"],
        )


class ReviewCodec:
    """ReviewEntry <-> single-object-encoded bytes. Raises what Serde raises."""

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.serde = Serde(SchemaStore() if store is None else store, REVIEW_SCHEMA)

    def encode(self, entry: ReviewEntry) -> bytes:
        return self.serde.encode(entry.to_avro())

    def decode(self, data: bytes) -> ReviewEntry:
        return ReviewEntry.from_avro(self.serde.decode(data))


def decision_headers(entry: ReviewEntry) -> tuple[tuple[str, bytes], ...]:
    """The headers that carry a decided entry's decision on the run's next record."""
    headers = [
        (DECISION_HEADER, (entry.decision or "").encode()),
        (REVIEWER_HEADER, (entry.reviewer or "").encode()),
        (DECIDED_AT_HEADER, str(entry.decided_at_ms or 0).encode()),
    ]
    if entry.note is not None:
        headers.append((NOTE_HEADER, entry.note.encode()))
    return tuple(headers)
