"""Escalations for people (`streams escalations list|show|replay`): decode a record of
W.escalations and the task event inside it (as far as each decodes), filter them, and
print them as one line (list) or in full (show).

Owns the escalation's decoding fallbacks and printed forms; must not read Kafka
(streams.inspect.reading does) or replay (streams.operate.replay does, with the same
machinery as dead letters: ``replay_item`` says what it needs of an escalation).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from streams.errors import StreamsError
from streams.escalations import EscalationCodec, EscalationRecord
from streams.events import TaskEvent
from streams.inspect.bytes_view import hex_dump, preview
from streams.inspect.dead_letters import (
    RecordFilter,
    decode_event,
    event_or_bytes,
    headers_line,
    when,
)
from streams.operate.replay_plan import ReplayItem


@functools.cache
def _escalations() -> EscalationCodec:
    """Made at first use: a topology file read after the import may name the registry."""
    return EscalationCodec()


@dataclass(frozen=True, slots=True)
class EscalationEntry:
    """One record of the escalations topic; ``id`` is its place there ("partition:offset")."""

    id: str
    value: bytes
    escalation: EscalationRecord | None  # None: not an escalation (decode_problem)
    event: TaskEvent | None  # None: no event bytes, or they are no task event (event_problem)
    decode_problem: str | None
    event_problem: str | None

    @property
    def run_id(self) -> str | None:
        if self.event is not None:
            return self.event.run_id
        return self.escalation.run_id if self.escalation is not None else None


def decode_escalation(partition: int, offset: int, value: bytes) -> EscalationEntry:
    entry_id = f"{partition}:{offset}"
    try:
        escalation = _escalations().decode(value)
    except StreamsError as exc:
        return EscalationEntry(entry_id, value, None, None, str(exc), None)
    event, event_problem = decode_event(escalation.event, "no event bytes")
    return EscalationEntry(entry_id, value, escalation, event, None, event_problem)


@dataclass(frozen=True, slots=True)
class EscalationFilter(RecordFilter):
    """A RecordFilter of escalations: --since by when they were escalated."""

    def matches(self, entry: EscalationEntry) -> bool:
        e = entry.escalation
        if e is None:
            return self.empty
        return self.fields_match(e.stage, e.reason, entry.run_id, e.escalated_at_ms)


def replay_item(entry: EscalationEntry) -> ReplayItem:
    """What `streams escalations replay` sends for this escalation, like a dead letter's."""
    e = entry.escalation
    return ReplayItem(
        id=entry.id,
        run_id=entry.run_id,
        event=entry.event,
        stage=None if e is None else e.stage,
        at_ms=0 if e is None else e.escalated_at_ms,
        problem=entry.decode_problem if e is None else entry.event_problem,
        kind="escalations",
    )


def list_line(entry: EscalationEntry) -> str:
    """id, when, stage, reason, attempts, run id, note or error: one line."""
    e = entry.escalation
    if e is None:
        return f"{entry.id:<8} undecodable escalation record ({len(entry.value)} bytes)"
    why = e.note or f"{e.error_type or '-'}: {e.error_message or ''}".rstrip(": ")
    return (
        f"{entry.id:<8} {when(e.escalated_at_ms)}  {e.stage:<10} {e.reason:<17} "
        f"attempts {e.attempts}  run {entry.run_id or '-'}  {preview(why.encode(), 60)}"
    )


def show_text(entry: EscalationEntry) -> str:
    """Everything an escalation holds, the task event decoded when it decodes, its bytes
    as a hex dump when it does not."""
    e = entry.escalation
    if e is None:
        return (
            f"escalation {entry.id}: not an Escalation record ({entry.decode_problem})\n"
            f"{hex_dump(entry.value)}"
        )
    lines = [
        f"escalation {entry.id}",
        f"  workflow: {e.workflow}",
        f"  stage: {e.stage}",
        f"  reason: {e.reason}",
        f"  note: {e.note or '-'}",
        f"  escalated at: {when(e.escalated_at_ms)} ({e.escalated_at_ms})",
        f"  attempts: {e.attempts}",
        f"  error: {e.error_type or '-'}: {e.error_message or ''}",
        f"  from: {e.original_topic}[{e.original_partition}]@{e.original_offset}",
        headers_line(e.original_headers),
    ]
    lines += event_or_bytes(entry.event, e.event, "event", entry.event_problem)
    return "\n".join(lines)


def entry_dict(entry: EscalationEntry) -> dict[str, object]:
    """The JSON form of `streams escalations list --json` (event bytes left out: `show`
    prints them)."""
    e = entry.escalation
    data: dict[str, object] = {"id": entry.id, "run_id": entry.run_id}
    if e is None:
        data["decode_problem"] = entry.decode_problem
        return data
    data.update(
        stage=e.stage,
        reason=e.reason,
        note=e.note,
        escalated_at_ms=e.escalated_at_ms,
        attempts=e.attempts,
        error_type=e.error_type,
        error_message=e.error_message,
        original_topic=e.original_topic,
        original_partition=e.original_partition,
        original_offset=e.original_offset,
        event_bytes=len(e.event or b""),
        event_problem=entry.event_problem,
    )
    return data
