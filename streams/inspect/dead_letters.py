"""Dead letters for people: decode a dead-letter record and the task event inside it (as
far as each decodes), filter them, and print them as one line (list) or in full (show).

Owns the decoding fallbacks and the printed forms; must not read Kafka (reading does) or
change a record. A record that is no dead letter, or whose raw bytes are no task event, is
still shown: its bytes as they are.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from streams.errors import StreamsError
from streams.events import DeadLetterCodec, DeadLetterRecord, TaskEvent, TaskEventCodec
from streams.inspect.bytes_view import hex_dump, preview, text_or_none


# Made at first use, not import: a topology file read after the import may name the schema
# registry (README "Schema registry"), which framed records need.
@functools.cache
def _letters() -> DeadLetterCodec:
    return DeadLetterCodec()


@functools.cache
def _events() -> TaskEventCodec:
    return TaskEventCodec()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """One record of the dead-letter topic. ``id`` is its place there ("partition:offset"),
    what `streams dlq show` takes."""

    id: str
    value: bytes
    letter: DeadLetterRecord | None  # None: the record is no dead letter (decode_problem)
    event: TaskEvent | None  # None: no raw value, or it is no task event (event_problem)
    decode_problem: str | None
    event_problem: str | None

    @property
    def run_id(self) -> str | None:
        if self.event is not None:
            return self.event.run_id
        key = self.letter.original_key if self.letter is not None else None
        return text_or_none(key) if key else None


def decode_entry(partition: int, offset: int, value: bytes) -> DeadLetterEntry:
    entry_id = f"{partition}:{offset}"
    try:
        letter = _letters().decode(value)
    except StreamsError as exc:
        return DeadLetterEntry(entry_id, value, None, None, str(exc), None)
    event, event_problem = decode_event(letter.raw_value, "no raw value (a tombstone)")
    return DeadLetterEntry(entry_id, value, letter, event, None, event_problem)


def decode_event(raw: bytes | None, missing: str) -> tuple[TaskEvent | None, str | None]:
    """The task event a record (dead letter, escalation) carries, or why there is none:
    `missing` when it carries no bytes, the decode error when they are no task event."""
    if raw is None:
        return None, missing
    try:
        return _events().decode(raw), None
    except StreamsError as exc:
        return None, str(exc)


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Every given field must match (`streams dlq list`, `streams escalations list`); a
    record that does not decode matches only the empty filter (and --since, by nothing:
    it has no time)."""

    stage: str | None = None
    reason: str | None = None
    run_id: str | None = None
    since_ms: int | None = None

    def fields_match(self, stage: str, reason: str, run_id: str | None, at_ms: int) -> bool:
        return (
            (self.stage is None or stage == self.stage)
            and (self.reason is None or reason == self.reason)
            and (self.run_id is None or run_id == self.run_id)
            and (self.since_ms is None or at_ms >= self.since_ms)
        )

    @property
    def empty(self) -> bool:
        return self == type(self)()


@dataclass(frozen=True, slots=True)
class DeadLetterFilter(RecordFilter):
    """A RecordFilter of dead letters: --since by their time of death."""

    def matches(self, entry: DeadLetterEntry) -> bool:
        letter = entry.letter
        if letter is None:
            return self.empty
        return self.fields_match(letter.stage, letter.reason, entry.run_id, letter.dead_at_ms)


def parse_since(text: str, now: float) -> int:
    """ "30s", "10m", "2h", "1d" ago, or an ISO 8601 instant (with its zone; none: local time), as
    epoch milliseconds. Raises ValueError saying what it takes."""
    match = _DURATION.fullmatch(text.strip())
    if match:
        return int((now - float(match.group(1)) * _UNIT_S[match.group(2)]) * 1000)
    try:
        instant = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration ago (30s, 10m, 2h, 1d) or an ISO 8601 "
            "instant (2026-12-02T01:00:00Z)"
        ) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return int(instant.timestamp() * 1000)


def when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def list_line(entry: DeadLetterEntry) -> str:
    """id, time of death, stage, reason, where it came from, run id, error: one line."""
    letter = entry.letter
    if letter is None:
        return f"{entry.id:<8} undecodable dead-letter record ({len(entry.value)} bytes)"
    where = f"{letter.original_topic}[{letter.original_partition}]@{letter.original_offset}"
    error = f"{letter.error_type or '-'}: {letter.error_message or ''}".rstrip(": ")
    return (
        f"{entry.id:<8} {when(letter.dead_at_ms)}  {letter.stage:<10} {letter.reason:<14} "
        f"{where}  run {entry.run_id or '-'}  {preview(error.encode(), 60)}"
    )


def show_text(entry: DeadLetterEntry) -> str:
    """Everything a dead letter holds, the task event decoded when it decodes, the raw bytes
    as text or a hex dump when it does not."""
    letter = entry.letter
    if letter is None:
        return (
            f"dead letter {entry.id}: not a DeadLetter record ({entry.decode_problem})\n"
            f"{hex_dump(entry.value)}"
        )
    lines = [
        f"dead letter {entry.id}",
        f"  workflow: {letter.workflow}",
        f"  stage: {letter.stage}",
        f"  reason: {letter.reason}",
        f"  dead at: {when(letter.dead_at_ms)} ({letter.dead_at_ms})",
        f"  attempts: {letter.attempts}",
        f"  error: {letter.error_type or '-'}: {letter.error_message or ''}",
        f"  from: {letter.original_topic}[{letter.original_partition}]@{letter.original_offset}"
        f" written {when(letter.original_timestamp_ms)}",
        f"  key: {short(letter.original_key)}",
        headers_line(letter.original_headers),
    ]
    lines += event_or_bytes(entry.event, letter.raw_value, "raw value", entry.event_problem)
    return "\n".join(lines)


def headers_line(headers: Sequence[tuple[str, bytes | None]]) -> str:
    """A record's original headers, each value as text when it is short text."""
    return "  headers: " + (", ".join(f"{k}={short(v)}" for k, v in headers) or "-")


def event_or_bytes(
    event: TaskEvent | None, raw: bytes | None, what: str, problem: str | None
) -> list[str]:
    """The task event a record carries in full, or, when its bytes (`what`) are none,
    why, and the bytes as a hex dump."""
    if event is not None:
        return event_lines(event)
    raw = raw or b""
    return [
        f"  {what} ({len(raw)} bytes), not a task event: {problem}",
        *("    " + row for row in hex_dump(raw).splitlines()),
    ]


def event_lines(event: TaskEvent) -> list[str]:
    """A task event in full, indented under its record (dead letter, escalation): the
    payload as text when it is text, else a hex dump."""
    deadline = "-" if event.deadline_ms is None else when(event.deadline_ms)
    lines = [
        "  task event:",
        f"    run id: {event.run_id}",
        f"    tenant: {event.tenant}",
        f"    lane: {event.lane}",
        f"    priority: {event.priority}",
        f"    idempotency key: {event.idempotency_key or '-'}",
        f"    attempt: {event.attempt}",
        f"    created: {when(event.created_at_ms)}; enqueued: {when(event.enqueued_at_ms)}",
        f"    deadline: {deadline}",
        "    trace context: "
        + (", ".join(f"{k}={v}" for k, v in event.trace_context.items()) or "-"),
    ]
    text = text_or_none(event.payload)
    if text is not None:
        lines.append(f"    payload ({len(event.payload)} bytes): {text}")
    else:
        lines.append(f"    payload ({len(event.payload)} bytes):")
        lines += ["      " + row for row in hex_dump(event.payload).splitlines()]
    return lines


def short(data: bytes | None) -> str:
    if data is None:
        return "-"
    text = text_or_none(data)
    return text if text is not None and len(text) <= 120 else f"<{len(data)} bytes>"


def entry_dict(entry: DeadLetterEntry) -> dict[str, object]:
    """The JSON form of `streams dlq list --json`: the dead letter's fields (raw bytes
    left out: `show` prints them), its run id, and why something did not decode."""
    letter = entry.letter
    data: dict[str, object] = {"id": entry.id, "run_id": entry.run_id}
    if letter is None:
        data["decode_problem"] = entry.decode_problem
        return data
    data.update(
        stage=letter.stage,
        reason=letter.reason,
        dead_at_ms=letter.dead_at_ms,
        attempts=letter.attempts,
        error_type=letter.error_type,
        error_message=letter.error_message,
        original_topic=letter.original_topic,
        original_partition=letter.original_partition,
        original_offset=letter.original_offset,
        raw_bytes=len(letter.raw_value or b""),
        event_problem=entry.event_problem,
    )
    return data
