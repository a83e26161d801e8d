"""What a workflow's history topics have said, counted record by record: dead letters by
stage and reason, intake decisions, retries by stage, tier and reason (the retry-tier
records' ``streams.retry.*`` headers), escalations by stage and reason, and the review
stages' latest entries.

Owns decoding those records and counting them (per minute over the last minutes, and
since the monitor started); must not read Kafka (the collector hands it records) or
clocks (each record carries its own time, so a restarted monitor that re-reads the last
minutes counts them again correctly).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from streams.errors import StreamsError
from streams.escalations import EscalationCodec
from streams.events import DeadLetterCodec
from streams.monitor.counts import RecentCounts
from streams.monitor.model import DecisionSeen
from streams.monitor.reviews import ReviewLedger
from streams.review.records import ReviewCodec
from streams.runtime.retries import REASON_HEADER, RETRY_STAGE_HEADER
from streams.serde import SchemaStore, Serde
from streams.topology import Topology
from streams.types import Record

K = TypeVar("K", bound=Hashable)


class _StageRecord(Protocol):
    """What a dead letter and an escalation both say: whose, where, and why."""

    @property
    def workflow(self) -> str: ...
    @property
    def stage(self) -> str: ...
    @property
    def reason(self) -> str: ...


_Staged = TypeVar("_Staged", bound=_StageRecord)

#: The intake's decision records (streams.intake.service.DECISION_SCHEMA; named here so the
#: monitor does not load the intake service to read its audit trail).
DECISION_SCHEMA = "dev.streams.AdmissionDecisionRecord"


@dataclass(frozen=True, slots=True)
class FollowedTopic:
    """A topic the collector follows and who counts its records. ``recent``: read from
    ``keep_s`` ago (an event log); otherwise whole (a compacted state topic)."""

    topic: str
    count: Callable[[Record], None]
    recent: bool = True


class WorkflowHistory:
    def __init__(self, topology: Topology, keep_s: float) -> None:
        self._workflow = topology.workflow
        self._keep_s = keep_s
        self._tier_of = {topic: str(tier) for tier, topic in topology.retry_topics.items()}
        self._letters = DeadLetterCodec()
        self._escalation_codec = EscalationCodec()
        self._review_codec = ReviewCodec()
        self._decision_serde = Serde(SchemaStore(), DECISION_SCHEMA)
        self.dead: RecentCounts[tuple[str, str]] = RecentCounts(keep_s)
        self.dead_seen: dict[tuple[str, str], int] = {}
        self.decisions: deque[DecisionSeen] = deque(maxlen=100_000)
        self.decisions_seen: dict[tuple[str, str], int] = {}
        self.retries: RecentCounts[tuple[str, str, str]] = RecentCounts(keep_s)
        self.retries_seen: dict[tuple[str, str, str], int] = {}
        self.escalations: RecentCounts[tuple[str, str]] = RecentCounts(keep_s)
        self.escalations_seen: dict[tuple[str, str], int] = {}
        self.reviews = ReviewLedger(topology.workflow)

    def topics(self, topology: Topology) -> tuple[FollowedTopic, ...]:
        """Every history topic of the workflow with its counter."""
        return (
            FollowedTopic(topology.dead_letter_topic, self.dead_letter),
            FollowedTopic(topology.decisions_topic, self.decision),
            *(FollowedTopic(topic, self.retry) for topic in topology.retry_topics.values()),
            FollowedTopic(topology.escalations_topic, self.escalation),
            FollowedTopic(topology.reviews_topic, self.review, recent=False),
        )

    def dead_letter(self, record: Record) -> None:
        seen = self._stage_reason(record, self._letters.decode, lambda d: d.dead_at_ms)
        if seen is not None:
            self.dead.add(*seen)
            _count(self.dead_seen, seen[0])

    def decision(self, record: Record) -> None:
        if record.value is None:
            return
        try:
            decoded = self._decision_serde.decode(record.value)
        except StreamsError:
            return  # a foreign record on the audit topic says nothing about admission
        if decoded.get("workflow") != self._workflow:
            return
        decided = decoded.get("decided_at")
        at = (
            decided.timestamp()
            if isinstance(decided, datetime)
            else (decided if isinstance(decided, int) else record.timestamp_ms) / 1000.0
        )
        seen = DecisionSeen(str(decoded.get("outcome")), str(decoded.get("reason")), at)
        self.decisions.append(seen)
        _count(self.decisions_seen, (seen.outcome, seen.reason))
        while self.decisions and self.decisions[0].at < at - self._keep_s:
            self.decisions.popleft()

    def retry(self, record: Record) -> None:
        """A retry waiting in its tier: the stage and reason are in its headers (the
        worker's Retrier writes them), the time is when it was written."""
        headers = dict(record.headers)
        stage, reason = headers.get(RETRY_STAGE_HEADER), headers.get(REASON_HEADER)
        key = (
            _text(stage) or "?",
            self._tier_of.get(record.topic, "?"),
            _text(reason) or "unknown",
        )
        self.retries.add(key, record.timestamp_ms / 1000.0)
        _count(self.retries_seen, key)

    def escalation(self, record: Record) -> None:
        seen = self._stage_reason(
            record, self._escalation_codec.decode, lambda e: e.escalated_at_ms
        )
        if seen is not None:
            self.escalations.add(*seen)
            _count(self.escalations_seen, seen[0])

    def _stage_reason(
        self, record: Record, decode: Callable[[bytes], _Staged], at_ms: Callable[[_Staged], int]
    ) -> tuple[tuple[str, str], float] | None:
        """A dead letter's or escalation's (stage, reason) and when (seconds), ("?",
        "undecodable") at its write time when it does not decode; None for a tombstone or
        another workflow's record (one topic may serve several workflows)."""
        if record.value is None:
            return None
        try:
            decoded = decode(record.value)
        except StreamsError:
            return ("?", "undecodable"), record.timestamp_ms / 1000.0
        if decoded.workflow != self._workflow:
            return None
        return (decoded.stage, decoded.reason), at_ms(decoded) / 1000.0

    def review(self, record: Record) -> None:
        if record.value is None:
            if record.key is not None:  # a tombstone: the run has no review any more
                self.reviews.forget(record.key.decode(errors="replace"))
            return
        try:
            self.reviews.add(self._review_codec.decode(record.value))
        except StreamsError:
            return  # an unreadable entry; the review book logs it where it matters


def _text(value: bytes | None) -> str | None:
    return value.decode(errors="replace") if value else None


def _count(seen: dict[K, int], key: K) -> None:
    seen[key] = seen.get(key, 0) + 1


def split_per_min(
    per_min: dict[tuple[str, str, str], float], stage: str | None
) -> tuple[dict[str, float], dict[str, float]]:
    """A stage's retries per minute (every stage's: None) by reason and by tier, from
    (stage, tier, reason)."""
    by_reason: dict[str, float] = {}
    by_tier: dict[str, float] = {}
    for (s, tier, reason), n in per_min.items():
        if stage is None or s == stage:
            by_reason[reason] = by_reason.get(reason, 0.0) + n
            by_tier[tier] = by_tier.get(tier, 0.0) + n
    return by_reason, by_tier
