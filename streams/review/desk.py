"""The review desk: the Python API reviewers (and the review server) list and decide with.

Owns the rules of a person's decision: only a pending review can be decided, approve or
decline, the first decision stands. Must not complete runs (the review stage's worker does,
when it reads the decision from W.reviews) nor serve HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from streams.errors import StreamsError
from streams.kafka.client_config import ClientConfig
from streams.review.book import ReviewBook
from streams.review.records import TIMEOUT_REVIEWER, ReviewEntry
from streams.topology import Topology

__all__ = ["ReviewDesk", "ReviewNotPending", "ReviewStats"]

DECISIONS = ("approve", "decline")


class ReviewNotPending(StreamsError):
    """The run has no pending review (unknown, decided or timed out: the first outcome
    stands)."""


@dataclass(frozen=True, slots=True)
class ReviewStats:
    stage: str
    pending: int
    max_pending: int
    oldest_pending_age_s: float
    clear_rate_per_s: float  # people's decisions per second over the policy's window


class ReviewDesk:
    """ReviewDesk(topology, client): reads W.reviews at once (start is implied); close()."""

    def __init__(self, topology: Topology, client: ClientConfig) -> None:
        self.topology = topology
        self._book = ReviewBook(topology, client).start()

    def close(self) -> None:
        self._book.close()

    def pending(self, stage: str | None = None) -> list[ReviewEntry]:
        """Pending reviews (of `stage`, or every review stage), oldest first."""
        return self._book.pending(stage)

    def get(self, run_id: str) -> ReviewEntry | None:
        return self._book.get(run_id)

    def stats(self) -> list[ReviewStats]:
        now = time.time()
        return [
            ReviewStats(
                stage=name,
                pending=len(self._book.pending(name)),
                max_pending=stage.review.max_pending,
                oldest_pending_age_s=self._book.oldest_age_s(name, now=now),
                clear_rate_per_s=self._book.clear_rate_per_s(name, now=now),
            )
            for name, stage in self.topology.stages.items()
            if stage.review is not None
        ]

    def decide(
        self, run_id: str, decision: str, *, note: str | None = None, reviewer: str
    ) -> ReviewEntry:
        """Record a person's decision (written to W.reviews, acknowledged); the stage's
        worker continues the run. Raises ValueError for a bad decision or reviewer,
        ReviewNotPending when the run is not pending."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be approve or decline, got {decision!r}")
        if not reviewer or reviewer == TIMEOUT_REVIEWER:
            raise ValueError(f"reviewer must name a person (not empty, not {TIMEOUT_REVIEWER!r})")
        entry = self._book.get(run_id)
        if entry is None or entry.state != "pending":
            state = "unknown" if entry is None else entry.state
            raise ReviewNotPending(f"run {run_id} has no pending review ({state})")
        decided = entry.decided(
            "approved" if decision == "approve" else "declined",
            decision,
            at_ms=int(time.time() * 1000),
            note=note,
            reviewer=reviewer,
        )
        self._book.write(decided)
        return decided
