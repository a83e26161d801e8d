"""WorkerMetrics.set_dead_letter_valve: one series per valve state, and the window ratio."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from streams.metrics import WorkerMetrics
from streams.policy.dlq_valve import DeadLetterLimit, DeadLetterValve


def test_the_valve_state_and_ratio_are_exported() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, stage="act", workflow="wf")
    valve = DeadLetterValve(DeadLetterLimit())
    for i in range(100):
        valve.record(i % 10 < 3)
    metrics.set_dead_letter_valve(valve.state, valve.ratio())
    labels = {"workflow": "wf", "stage": "act"}

    def state(name: str) -> float | None:
        return registry.get_sample_value("streams_dead_letter_valve", {**labels, "state": name})

    assert (state("ok"), state("warning"), state("tripped")) == (0.0, 1.0, 0.0)
    assert registry.get_sample_value("streams_dead_letter_ratio", labels) == 0.3
    metrics.set_dead_letter_valve("ok", None)
    assert (state("ok"), state("warning")) == (1.0, 0.0)
    assert registry.get_sample_value("streams_dead_letter_ratio", labels) == 0.0
