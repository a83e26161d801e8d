"""The intake's Prometheus metrics, on an injected registry: decisions by workflow, lane,
tenant class and outcome; decision latency; queued runs and oldest queued age per lane;
run ledger entries skipped as damaged.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.types import LANES, Lane

DECISION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class IntakeMetrics:
    def __init__(self, registry: CollectorRegistry, workflow: str) -> None:
        self._workflow = workflow
        self._decisions = Counter(
            "streams_intake_decisions_total",
            "Admission decisions, by lane asked for, tenant class, outcome and reason.",
            ["workflow", "lane", "tenant_class", "outcome", "reason"],
            registry=registry,
        )
        self._latency = Histogram(
            "streams_intake_decision_seconds",
            "Time from a request's arrival to its decision, broker acknowledgement included.",
            ["workflow"],
            buckets=DECISION_BUCKETS,
            registry=registry,
        )
        self._queued = Gauge(
            "streams_intake_queued_runs",
            "Admitted runs not yet finished, expired or dead-lettered, per lane.",
            ["workflow", "lane"],
            registry=registry,
        )
        self._oldest = Gauge(
            "streams_intake_oldest_queued_age_seconds",
            "Age of the oldest admitted, unfinished run per lane.",
            ["workflow", "lane"],
            registry=registry,
        )
        self._saturated = Gauge(
            "streams_intake_saturated",
            "1 while the workflow is at its saturation point (lanes follow their policy).",
            ["workflow"],
            registry=registry,
        )
        self._damaged = Counter(
            "streams_intake_ledger_damaged_entries_total",
            "Run ledger entries skipped because their bytes are no run state (each logged: "
            "the 1st, 101st, ...). Entries waiting for the schema registry are not counted.",
            ["workflow"],
            registry=registry,
        )
        self._damaged_child = self._damaged.labels(workflow)  # 0 from the start
        self._damaged_seen = 0
        # labels() takes a lock and builds a key on every call: keep the children. Label
        # sets are few (lanes x tenant classes x outcome/reason pairs).
        self._decision_children: dict[tuple[str, str, str, str], Any] = {}
        self._latency_child = self._latency.labels(workflow)

    def decided(
        self, lane: Lane, tenant_class: str, outcome: str, reason: str, seconds: float
    ) -> None:
        labels = (lane, tenant_class, outcome, reason)
        child = self._decision_children.get(labels)
        if child is None:
            child = self._decisions.labels(self._workflow, *labels)
            self._decision_children[labels] = child
        child.inc()
        self._latency_child.observe(seconds)

    def set_queue(
        self, queued_by_lane: dict[Lane, int], oldest_age_s: dict[Lane, float], saturated: bool
    ) -> None:
        for lane in LANES:
            self._queued.labels(self._workflow, lane).set(queued_by_lane.get(lane, 0))
            self._oldest.labels(self._workflow, lane).set(oldest_age_s.get(lane, 0.0))
        self._saturated.labels(self._workflow).set(1 if saturated else 0)

    def set_ledger(self, damaged_entries: int) -> None:
        """The view's count of damaged ledger entries so far (it only grows)."""
        if damaged_entries > self._damaged_seen:
            self._damaged_child.inc(damaged_entries - self._damaged_seen)
            self._damaged_seen = damaged_entries
