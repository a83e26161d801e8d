"""The review stages' queues as the monitor sees them: every run's latest entry in the
compacted W.reviews topic, summed up per review stage.

Owns folding entries into that latest state and the per-stage views; must not read Kafka
or clocks (the collector passes entries and ``now``), nor decide anything about a review
(streams.review and streams.policy.review do).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streams.monitor.model import ReviewView
from streams.review.records import TIMEOUT_REVIEWER, ReviewEntry
from streams.topology import Stage


@dataclass(frozen=True, slots=True)
class _Latest:
    stage: str
    pending: bool
    admitted_at_ms: int
    decided_at_ms: int | None
    by_person: bool


class ReviewLedger:
    """The latest entry of each run of one workflow, as small values (the topic keeps
    decided entries for good; only what the views need is kept)."""

    def __init__(self, workflow: str) -> None:
        self._workflow = workflow
        self._latest: dict[str, _Latest] = {}

    def add(self, entry: ReviewEntry) -> None:
        if entry.workflow != self._workflow:
            return
        known = self._latest.get(entry.run_id)
        if (
            known is not None
            and not known.pending
            and entry.state == "pending"
            and known.admitted_at_ms >= entry.admitted_at_ms
        ):
            return  # as the review book reads it: a late pending write does not reopen a run
        self._latest[entry.run_id] = _Latest(
            stage=entry.stage,
            pending=entry.state == "pending",
            admitted_at_ms=entry.admitted_at_ms,
            decided_at_ms=entry.decided_at_ms,
            by_person=entry.state in ("approved", "declined")
            and entry.reviewer != TIMEOUT_REVIEWER,
        )

    def forget(self, run_id: str) -> None:
        self._latest.pop(run_id, None)

    def views(
        self, stages: Iterable[Stage], *, now: float, workers_alive: Mapping[str, int]
    ) -> tuple[ReviewView, ...]:
        """One view per review stage in ``stages``; ``workers_alive`` by stage name."""
        views = []
        for stage in stages:
            config = stage.review
            if config is None:
                continue
            mine = [e for e in self._latest.values() if e.stage == stage.name]
            pending = [e.admitted_at_ms for e in mine if e.pending]
            since_ms = (now - config.rate_window_s) * 1000
            cleared = sum(
                1
                for e in mine
                if e.by_person and e.decided_at_ms is not None and e.decided_at_ms > since_ms
            )
            oldest = max(0.0, now - min(pending) / 1000) if pending else 0.0
            workers = workers_alive.get(stage.name, 0)
            views.append(
                ReviewView(
                    stage=stage.name,
                    pending=len(pending),
                    max_pending=config.max_pending,
                    workers_alive=workers,
                    full=len(pending) >= config.max_pending * max(1, workers),
                    oldest_pending_age_s=oldest,
                    max_wait_s=config.max_wait_s,
                    over_max_wait=oldest > config.max_wait_s,
                    clear_rate_per_s=cleared / config.rate_window_s,
                    rate_window_s=config.rate_window_s,
                )
            )
        return tuple(views)
