"""Prometheus families of a review stage's worker (README "Human review").

Owns their names and labels; must not decide anything (streams.policy.review and
streams.review.stage do) nor read Kafka. Gauges are read at scrape time: pending is this
worker's (sum over workers), the oldest age and clear rate are the stage's, from W.reviews
(take the max over workers, not the sum).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

_BASE = ["workflow", "stage"]


class ReviewMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        workflow: str,
        stage: str,
        max_pending: int,
        pending: Callable[[], int],
        oldest_age_s: Callable[[float], float],
        clear_rate_per_s: Callable[[float], float],
    ) -> None:
        base = (workflow, stage)
        gauges = {
            "streams_review_pending": (
                "Reviews this worker holds pending (each a run in flight).",
                lambda: float(pending()),
            ),
            "streams_review_max_pending": (
                "The review stage's max_pending (per worker).",
                lambda: float(max_pending),
            ),
            "streams_review_oldest_pending_age_seconds": (
                "Age of the stage's oldest pending review (W.reviews).",
                lambda: oldest_age_s(time.time()),
            ),
            "streams_review_clear_rate": (
                "Decisions people made per second at the stage, over the policy's window.",
                lambda: clear_rate_per_s(time.time()),
            ),
        }
        for name, (doc, read) in gauges.items():
            Gauge(name, doc, _BASE, registry=registry).labels(*base).set_function(read)
        self._decisions = Counter(
            "streams_review_decisions",
            "Reviews this worker completed, by outcome (approve, decline, escalate) and by "
            "whom (person, timeout).",
            [*_BASE, "outcome", "by"],
            registry=registry,
        )
        self._base = base

    def decided(self, outcome: str, *, by_person: bool) -> None:
        self._decisions.labels(*self._base, outcome, "person" if by_person else "timeout").inc()
