"""Prometheus families of retries and escalations at one stage worker.

Owns their names and labels; must not decide anything (streams.policy.retry does) nor
read Kafka. Registered on the worker's registry, labelled like the worker's own families.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

_BASE = ["workflow", "stage"]


class RetryMetrics:
    """retries by tier and reason, budget refusals by scope, escalations by reason,
    forwarded retries by tier, and per tier: partitions held and how overdue their head is."""

    def __init__(self, registry: CollectorRegistry, *, workflow: str, stage: str) -> None:
        self._base = (workflow, stage)
        self._retries = Counter(
            "streams_retries",
            "Failed records written to a retry tier, by tier (seconds) and failure reason.",
            [*_BASE, "tier", "reason"],
            registry=registry,
        )
        self._budget_exhausted = Counter(
            "streams_retry_budget_exhausted",
            "Retries refused by a budget, by scope (stage, tool, run).",
            [*_BASE, "scope"],
            registry=registry,
        )
        self._escalations = Counter(
            "streams_escalations",
            "Runs handed to people (the escalations topic), by reason.",
            [*_BASE, "reason"],
            registry=registry,
        )
        self._forwarded = Counter(
            "streams_retries_forwarded",
            "Due retries moved back into the stage's input, by tier.",
            [*_BASE, "tier"],
            registry=registry,
        )
        self._held = Gauge(
            "streams_retry_tier_held_partitions",
            "Retry-tier partitions held by the forwarder: not_due (head not due yet) or "
            "stage_bound (the stage's input is paused or at its max_lag).",
            [*_BASE, "tier", "why"],
            registry=registry,
        )
        self._overdue = Gauge(
            "streams_retry_tier_overdue_seconds",
            "How long the oldest due retry of a tier has waited past its due time (0: none).",
            [*_BASE, "tier"],
            registry=registry,
        )

    def count_retry(self, tier_s: int, reason: str) -> None:
        self._retries.labels(*self._base, str(tier_s), reason).inc()

    def count_budget_exhausted(self, scope: str) -> None:
        self._budget_exhausted.labels(*self._base, scope).inc()

    def count_escalation(self, reason: str) -> None:
        self._escalations.labels(*self._base, reason).inc()

    def count_forwarded(self, tier_s: int) -> None:
        self._forwarded.labels(*self._base, str(tier_s)).inc()

    def set_tier(self, tier_s: int, *, not_due: int, stage_bound: int, overdue_s: float) -> None:
        tier = str(tier_s)
        self._held.labels(*self._base, tier, "not_due").set(not_due)
        self._held.labels(*self._base, tier, "stage_bound").set(stage_bound)
        self._overdue.labels(*self._base, tier).set(overdue_s)
