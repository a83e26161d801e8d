"""What `streams dlq replay` (and `streams escalations replay`) sends for each dead letter
(escalation), and what it learned: the replay's
run request (the dead run's tenant, lane, priority, deadline, trace context and payload),
its idempotency key, which dead letters are skipped and why, and the printed results.

Owns those rules; must not do I/O (streams.operate.replay does) or decide admission (the
intake does).

Why a derived idempotency key: the intake collapses a repeated key into the first run of
the key for `dedupe_window_s` whatever became of that run, so a replay under the dead
run's own key would be answered "collapsed" into the dead run, and nothing would run
again. The replay's key is the original key (or, for a run without one, its run id) plus
the dead letter's place, `<key>~replay:<partition>:<offset>`: distinct from the dead
run's, the same every time the same dead letter is replayed, so the intake itself
collapses a second replay of it into the first (within its window), even if the command
died before recording it.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from streams.events import TaskEvent
from streams.inspect.dead_letters import DeadLetterEntry
from streams.intake.requests import MAX_IDEMPOTENCY_KEY_LEN, Decision, RunRequest

#: What became of one dead letter: the intake's outcomes, and the command's own.
ReplayOutcome = Literal[
    "accepted",
    "delayed",
    "downgraded",
    "collapsed",
    "rejected",
    "already_replayed",  # an earlier replay of it was admitted (W.replays says so)
    "skipped",  # cannot be replayed through the intake (reason says why)
    "invalid",  # the intake refused the request itself (4xx)
    "unknown",  # sent, not acknowledged: it may have been admitted; replay again to learn
    "unavailable",  # the intake or the broker did not answer: nothing was admitted
    "would_replay",  # --dry-run
]
#: Outcomes after which a dead letter counts as replayed (never sent again).
ADMITTED: frozenset[str] = frozenset({"accepted", "delayed", "downgraded", "collapsed"})
#: Outcomes that leave a chosen dead letter not replayed (exit status 3).
NOT_DONE: frozenset[str] = frozenset({"rejected", "invalid", "unknown", "unavailable", "skipped"})


@dataclass(frozen=True, slots=True)
class ReplayItem:
    """What a replay needs of one record it may send again: a dead letter
    (``of_dead_letter``) or an escalation (streams.operate.escalation_entries)."""

    id: str  # its place in its topic, "partition:offset"
    run_id: str | None
    event: TaskEvent | None  # the run's task event, when its bytes decode
    stage: str | None  # where it died or was escalated; None: the record did not decode
    at_ms: int  # when it died or was escalated (the replay log keeps it)
    problem: str | None  # why stage or event is missing
    kind: Literal["dlq", "escalations"] = "dlq"  # its command, for the hints

    @classmethod
    def of_dead_letter(cls, entry: DeadLetterEntry) -> ReplayItem:
        letter = entry.letter
        return cls(
            id=entry.id,
            run_id=entry.run_id,
            event=entry.event,
            stage=None if letter is None else letter.stage,
            at_ms=0 if letter is None else letter.dead_at_ms,
            problem=entry.decode_problem if letter is None else entry.event_problem,
        )


def as_item(entry: DeadLetterEntry | ReplayItem) -> ReplayItem:
    return entry if isinstance(entry, ReplayItem) else ReplayItem.of_dead_letter(entry)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    entry_id: str  # the dead letter's place in its topic, "partition:offset"
    original_run_id: str | None
    outcome: ReplayOutcome
    reason: str
    run_id: str | None = None  # the replay's run (the existing one when collapsed)
    idempotency_key: str | None = None
    retry_after_s: float | None = None
    lane: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.entry_id,
            "original_run_id": self.original_run_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "run_id": self.run_id,
            "idempotency_key": self.idempotency_key,
            "retry_after_s": self.retry_after_s,
            "lane": self.lane,
        }


def replay_key(event: TaskEvent, partition: int, offset: int) -> str:
    """The replay's idempotency key (see the module's docstring); an original key too long
    to take the suffix within the intake's limit is shortened to its SHA-256 prefix."""
    suffix = f"~replay:{partition}:{offset}"
    base = event.idempotency_key or event.run_id
    if len(base) + len(suffix) > MAX_IDEMPOTENCY_KEY_LEN:
        base = "sha256-" + hashlib.sha256(base.encode()).hexdigest()[:40]
    return base + suffix


def submitted_event(
    entry: DeadLetterEntry | ReplayItem,
    entry_stage: str,
    *,
    from_entry: bool,
    submissions: Mapping[str, TaskEvent],
) -> TaskEvent | str:
    """The event to submit again for this dead letter (or escalation), or why there is none.

    The intake admits runs into its entry stage only. A dead letter of the entry stage
    holds the submission itself; a later stage's holds that stage's input (an upstream
    handler's output), which the entry stage's handler must not be given: such a run is
    replayed only with `from_entry`, from its submission as the entry topics still hold
    it (`submissions`, by run id), so it starts over from the entry stage."""
    item = as_item(entry)
    noun = "dead-letter" if item.kind == "dlq" else "escalation"
    if item.stage is None:
        return f"not a {noun} record ({item.problem})"
    if item.event is None:
        return f"its bytes are no task event ({item.problem}): see `streams {item.kind} show`"
    if item.stage == entry_stage:
        return item.event
    if not from_entry:
        verb = "died" if item.kind == "dlq" else "escalated"
        return (
            f"{verb} in stage {item.stage}, after the entry stage {entry_stage}: "
            "--from-entry restarts it from its submission"
        )
    submission = submissions.get(item.event.run_id)
    if submission is None:
        return (
            f"its submission is no longer on {entry_stage}'s topics (retention): it cannot "
            "be restarted"
        )
    return submission


def run_request(event: TaskEvent, key: str, deadline_ms: int | None) -> RunRequest:
    """The dead run submitted again: its tenant, lane, priority, trace context and payload
    byte for byte, under the replay's key, with `deadline_ms` (the original one unless
    the operator gave a new one)."""
    return RunRequest(
        tenant=event.tenant,
        payload=event.payload,
        lane=event.lane,
        idempotency_key=key,
        deadline_ms=deadline_ms,
        priority=event.priority,
        trace_context=dict(event.trace_context),
    )


def result_of(entry: DeadLetterEntry | ReplayItem, key: str, decision: Decision) -> ReplayResult:
    return ReplayResult(
        entry.id, entry.run_id, decision.outcome, decision.reason, decision.run_id, key,
        decision.retry_after_s, decision.lane,
    )  # fmt: skip


def counts(results: list[ReplayResult]) -> dict[str, int]:
    return dict(Counter(r.outcome for r in results))


def result_line(result: ReplayResult) -> str:
    origin = f"{result.entry_id:<8} run {result.original_run_id or '-'}"
    outcome = result.outcome
    if outcome in ADMITTED:
        return f"{origin} -> {outcome} ({result.reason}) as run {result.run_id} [{result.lane}]"
    if outcome == "already_replayed":
        return f"{origin} -> already replayed as run {result.run_id}"
    if outcome == "rejected":
        return f"{origin} -> rejected ({result.reason}, retry after {result.retry_after_s} s)"
    if outcome == "would_replay":
        return f"{origin} -> would replay under key {result.idempotency_key}"
    return f"{origin} -> {outcome.replace('_', ' ')}: {result.reason}"


_WORDS = {
    "accepted": "accepted",
    "delayed": "delayed",
    "downgraded": "downgraded",
    "collapsed": "collapsed into an earlier replay",
    "already_replayed": "already replayed",
    "rejected": "rejected",
    "invalid": "refused as invalid",
    "unknown": "outcome unknown",
    "unavailable": "unavailable",
    "skipped": "skipped",
    "would_replay": "would be replayed",
}


def summary_line(results: list[ReplayResult]) -> str:
    counted = counts(results)
    parts = [f"{counted[o]} {_WORDS[o]}" for o in _WORDS if counted.get(o)]
    return ", ".join(parts) or "nothing to replay"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration_s(text: str) -> float:
    """ "30s", "10m", "2h", "1d" as seconds; ValueError saying what it takes."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r}: give a duration above 0 (30s, 10m, 2h, 1d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]
