"""Control records on the wire, and the state folded from them.

Owns the mapping between ControlRecord and schemas/control.avsc, the record keys, and
ControlState (latest record per key; what is in force now). Must not import fastavro
(streams.serde owns the wire format) nor Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.policy.degradation import ForcedLevel
from streams.serde import SchemaStore, Serde

CONTROL_SCHEMA = "dev.streams.ControlRecord"
ControlKind = Literal["level", "pause", "tool", "published_level"]
CONTROL_KINDS: tuple[ControlKind, ...] = ("level", "pause", "tool", "published_level")


@dataclass(frozen=True, slots=True)
class ControlRecord:
    """One override (or the published level) with its audit: who, why, when (ms)."""

    workflow: str
    kind: ControlKind
    target: str  # stage (pause) or tool (tool); "" for level and published_level
    active: bool  # False: cleared (resume, tool closed, clear), kept for the audit
    level: str | None
    expires_at_ms: int | None
    who: str
    why: str | None
    at_ms: int

    def __post_init__(self) -> None:
        if self.kind not in CONTROL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CONTROL_KINDS)}, got {self.kind!r}")

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.target}" if self.kind in ("pause", "tool") else self.kind

    def to_avro(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "kind": self.kind,
            "target": self.target,
            "active": self.active,
            "level": self.level,
            "expires_at": self.expires_at_ms,
            "who": self.who,
            "why": self.why,
            "at": self.at_ms,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> ControlRecord:
        return cls(
            workflow=d["workflow"],
            kind=d["kind"],
            target=d["target"],
            active=d["active"],
            level=d["level"],
            expires_at_ms=d["expires_at"],
            who=d["who"],
            why=d["why"],
            at_ms=d["at"],
        )


def forced_level(
    workflow: str,
    level: str,
    *,
    who: str,
    why: str | None,
    at_ms: int,
    expires_at_ms: int | None = None,
    active: bool = True,
) -> ControlRecord:
    return ControlRecord(workflow, "level", "", active, level, expires_at_ms, who, why, at_ms)


def manual_pause(
    workflow: str, stage: str, *, who: str, why: str | None, at_ms: int, active: bool = True
) -> ControlRecord:
    return ControlRecord(workflow, "pause", stage, active, None, None, who, why, at_ms)


def tool_forced_open(
    workflow: str, tool: str, *, who: str, why: str | None, at_ms: int, active: bool = True
) -> ControlRecord:
    return ControlRecord(workflow, "tool", tool, active, None, None, who, why, at_ms)


def published_level(workflow: str, level: str, *, who: str, at_ms: int) -> ControlRecord:
    return ControlRecord(workflow, "published_level", "", True, level, None, who, None, at_ms)


class ControlCodec:
    """ControlRecord <-> single-object-encoded bytes. Raises what Serde raises."""

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.serde = Serde(SchemaStore() if store is None else store, CONTROL_SCHEMA)

    def encode(self, record: ControlRecord) -> bytes:
        return self.serde.encode(record.to_avro())

    def decode(self, data: bytes) -> ControlRecord:
        return ControlRecord.from_avro(self.serde.decode(data))


@dataclass(slots=True)
class ControlState:
    """The latest record of every key of one workflow's control topic. Not thread-safe:
    one reader applies, and hands out copies (see streams.control.follow)."""

    workflow: str | None = None  # None: take whatever workflow the records name
    records: dict[str, ControlRecord] = field(default_factory=dict)

    def apply(self, record: ControlRecord) -> None:
        if self.workflow is None:
            self.workflow = record.workflow
        if record.workflow != self.workflow:
            return  # a record of another workflow (a misconfigured writer) changes nothing
        self.records[record.key] = record

    def forced(self, now: float) -> ForcedLevel | None:
        """The forced level in force at `now` (wall seconds), if any."""
        record = self.records.get("level")
        if record is None or not record.active or record.level is None:
            return None
        expires = None if record.expires_at_ms is None else record.expires_at_ms / 1000
        forced = ForcedLevel(record.level, expires)
        return forced if forced.in_force(now) else None

    def forced_record(self) -> ControlRecord | None:
        record = self.records.get("level")
        return record if record is not None and record.active else None

    def paused_stages(self) -> dict[str, ControlRecord]:
        """Stages paused by hand, with their audit records."""
        return {r.target: r for r in self.records.values() if r.kind == "pause" and r.active}

    def tools_forced_open(self) -> dict[str, ControlRecord]:
        """Tools whose breaker an operator forced open, with their audit records."""
        return {r.target: r for r in self.records.values() if r.kind == "tool" and r.active}

    def published_level(self) -> str | None:
        record = self.records.get("published_level")
        return None if record is None else record.level

    def copy(self) -> ControlState:
        return ControlState(self.workflow, dict(self.records))
