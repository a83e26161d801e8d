"""A run's status as callers and operators see it (GET /v1/workflows/W/runs/{run_id},
Intake.status), built from what the ledger book holds. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from streams.intake.finished_runs import FinishedRun
from streams.intake.ledger_book import LedgerEntry
from streams.types import Lane

RunState = Literal["undecided", "queued", "delayed", "completed", "dead_lettered", "escalated"]


@dataclass(frozen=True, slots=True)
class RunStatus:
    """`state`: undecided (its submission is still being decided, or its outcome is being
    settled after an unacknowledged write), queued (admitted, somewhere in the workflow's
    stages, not finished), delayed (admitted, enters the first stage at `due_at_ms`),
    completed, dead_lettered (`reason` says why) or escalated (handed to people)."""

    run_id: str
    state: RunState
    tenant: str
    lane: Lane
    submitted_at_ms: int
    age_s: float  # since submission; for a finished run, how long it took
    deadline_ms: int | None
    due_at_ms: int | None = None
    finished_at_ms: int | None = None
    reason: str | None = None
    #: For a queued run, when asked for: the furthest stage on its path whose input holds
    #: its event (None: not looked up, or not found).
    stage: str | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at_ms is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "finished": self.finished,
            "tenant": self.tenant,
            "lane": self.lane,
            "submitted_at_ms": self.submitted_at_ms,
            "age_s": self.age_s,
            "deadline_ms": self.deadline_ms,
            "due_at_ms": self.due_at_ms,
            "finished_at_ms": self.finished_at_ms,
            "reason": self.reason,
            "stage": self.stage,
        }


def furthest_stage(path_order: dict[str, int], found_in: list[str]) -> str | None:
    """The stage furthest along the workflow (by `path_order`, its depth from the entry
    stage) among those whose input holds the run's event."""
    return max(found_in, key=lambda s: path_order.get(s, -1), default=None)


def run_status(found: LedgerEntry | FinishedRun, now_ms: int) -> RunStatus:
    if isinstance(found, FinishedRun):
        return RunStatus(
            run_id=found.run_id,
            state=found.outcome,
            tenant=found.tenant,
            lane=found.lane,
            submitted_at_ms=found.at_ms,
            age_s=max(0.0, (found.finished_ms - found.at_ms) / 1000),
            deadline_ms=found.deadline_ms,
            finished_at_ms=found.finished_ms,
            reason=found.reason,
        )
    state: RunState = "undecided" if found.phase == "reserved" else found.phase
    return RunStatus(
        run_id=found.run_id,
        state=state,
        tenant=found.tenant,
        lane=found.lane,
        submitted_at_ms=found.at_ms,
        age_s=max(0.0, (now_ms - found.at_ms) / 1000),
        deadline_ms=found.deadline_ms,
        due_at_ms=found.due_ms if found.phase == "delayed" else None,
    )
