"""The monitor's snapshot: what one round of readings says about a workflow, as frozen
values, and its JSON shape (``to_dict``).

Owns the snapshot's shape; must not read Kafka or compute anything but the JSON form.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from streams.policy.group_status import GroupStatus

#: A stage whose group could not be read this round has no status to give.
StageStatus = GroupStatus | Literal["UNKNOWN"]


@dataclass(frozen=True, slots=True)
class PartitionView:
    topic: str
    partition: int
    lane: str
    end_offset: int
    committed: int | None
    lag: int
    #: Seconds behind, interpolated from sampled end offsets (kafka-lag-exporter's way).
    time_lag_s: float
    #: Age of the first uncommitted record (its broker timestamp); the time lag where it
    #: could not be read; 0 without lag. Counts fetched, paused and unfetched records alike.
    oldest_age_s: float
    status: GroupStatus
    why: str
    paused_by: tuple[str, ...]  # reasons, from live workers' reports


@dataclass(frozen=True, slots=True)
class LaneView:
    lane: str
    topic: str
    lag: int
    time_lag_s: float
    oldest_age_s: float
    status: StageStatus
    paused_partitions: int


@dataclass(frozen=True, slots=True)
class StageView:
    stage: str
    group: str
    background: bool
    status: StageStatus
    why: str
    lag: int
    time_lag_s: float
    oldest_age_s: float
    max_queue_age_s: float
    in_flight: int
    concurrency: int  # summed over live workers
    workers_alive: int
    paused: dict[str, int]  # reason -> partitions paused for it
    dead_letters_per_min: dict[str, float]  # reason -> per minute, last 60 s
    lanes: tuple[LaneView, ...]
    partitions: tuple[PartitionView, ...]
    #: Read from the retry-tier topics (their streams.retry.* headers), last 60 s:
    #: reason -> per minute, and tier (seconds, as text) -> per minute.
    retries_per_min: dict[str, float] = field(default_factory=dict)
    retries_per_min_by_tier: dict[str, float] = field(default_factory=dict)
    #: Read from W.escalations, last 60 s: reason -> per minute.
    escalations_per_min: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PausedAt:
    topic: str
    partition: int
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class WorkerView:
    stage: str
    worker: str
    alive: bool  # reported within its stage's pressure.stale_after_s
    reported_ago_s: float
    in_flight: int
    concurrency: int | None
    p95_latency_s: float | None
    paused: tuple[PausedAt, ...]


#: Breaker states from the worst: what a tool's row shows first.
BREAKER_SEVERITY = ("open", "half_open", "closed")


@dataclass(frozen=True, slots=True)
class ToolView:
    """One tool over the live workers that report it (README "Tools"): a breaker is per
    worker process, so each state counts the workers in it; slots and calls add up."""

    name: str
    stages: tuple[str, ...]
    workers: int
    breakers: dict[str, int]  # state -> live workers in it; empty: the tool has no breaker
    in_flight: int
    waiting: int
    concurrency_limit: int | None  # summed slots; None: some worker has no ceiling

    @property
    def worst_breaker(self) -> str | None:
        return next((s for s in BREAKER_SEVERITY if self.breakers.get(s)), None)


@dataclass(frozen=True, slots=True)
class ReviewView:
    """One review stage's queue, from its latest entries in W.reviews (README "Human
    review"): the runs pending now, and the decisions people made in the rate window."""

    stage: str
    pending: int
    max_pending: int  # per worker (the topology's review.max_pending)
    workers_alive: int
    #: pending >= max_pending x live workers (one worker's room when none is alive).
    full: bool
    oldest_pending_age_s: float  # 0 with nothing pending
    max_wait_s: float
    over_max_wait: bool  # the oldest pending review is past max_wait_s (nobody timed it out)
    clear_rate_per_s: float  # decisions by people per second over rate_window_s
    rate_window_s: float


@dataclass(frozen=True, slots=True)
class DecisionSeen:
    """One intake decision read from the decisions topic."""

    outcome: str
    reason: str
    at: float  # wall seconds (decided_at)


@dataclass(frozen=True, slots=True)
class IntakeView:
    decisions_per_min: dict[str, float]  # outcome -> per minute, last 60 s
    reasons_per_min: dict[str, float]  # "outcome/reason" -> per minute
    #: From the newest decision of the last minute: accepting, delaying, downgrading,
    #: rejecting; "no decisions" when the intake decided nothing in that minute.
    admission: str
    admission_reason: str | None
    last_decision_at: float | None


@dataclass(frozen=True, slots=True)
class MonitorSnapshot:
    workflow: str
    measured_at: float
    error: str | None  # why this round's readings are missing or partial
    stages: tuple[StageView, ...]
    workers: tuple[WorkerView, ...]
    intake: IntakeView
    dead_letters_per_min: dict[str, float]  # reason -> per minute, whole workflow
    #: Counted since this monitor started (Prometheus counters): (stage, reason) and
    #: (outcome, reason).
    dead_letters_seen: dict[tuple[str, str], int] = field(default_factory=dict)
    decisions_seen: dict[tuple[str, str], int] = field(default_factory=dict)
    tools: tuple[ToolView, ...] = ()  # from live workers' pressure reports
    #: Whole workflow, last 60 s: retries by reason and by tier, escalations by reason.
    retries_per_min: dict[str, float] = field(default_factory=dict)
    retries_per_min_by_tier: dict[str, float] = field(default_factory=dict)
    escalations_per_min: dict[str, float] = field(default_factory=dict)
    #: Counted since this monitor started: (stage, tier, reason) and (stage, reason).
    retries_seen: dict[tuple[str, str, str], int] = field(default_factory=dict)
    escalations_seen: dict[tuple[str, str], int] = field(default_factory=dict)
    reviews: tuple[ReviewView, ...] = ()  # one per review stage of the topology
    #: The degradation level and operators' controls from W.control (None until the topic
    #: is read): streams.control.state.ControlView.to_json() plus "levels", the ladder's.
    control: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["retries_seen"] = [
            {"stage": s, "tier": t, "reason": r, "count": n}
            for (s, t, r), n in self.retries_seen.items()
        ]
        data["escalations_seen"] = [
            {"stage": s, "reason": r, "count": n} for (s, r), n in self.escalations_seen.items()
        ]
        data["dead_letters_seen"] = [
            {"stage": s, "reason": r, "count": n} for (s, r), n in self.dead_letters_seen.items()
        ]
        data["decisions_seen"] = [
            {"outcome": o, "reason": r, "count": n} for (o, r), n in self.decisions_seen.items()
        ]
        return data
