"""Metrics land under the right names and labels in an injected registry, and are served."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.kafka.lag_reader import GroupLag, PartitionLag
from streams.metrics import LagMetrics, WorkerMetrics, serve_metrics
from streams.types import TopicPartition

BASE = {"workflow": "wf", "stage": "plan"}
TP = TopicPartition("plan.in", 3)
TP_LABELS = {**BASE, "topic": "plan.in", "partition": "3"}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> WorkerMetrics:
    return WorkerMetrics(registry, stage="plan", workflow="wf")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_counters_start_at_zero_and_count(
    registry: CollectorRegistry, metrics: WorkerMetrics
) -> None:
    assert value(registry, "streams_records_total", **BASE, outcome="done") == 0.0
    assert value(registry, "streams_rebalances_total", **BASE, kind="lost") == 0.0
    metrics.record_outcome("done")
    metrics.record_outcome("emitted", count=3)
    metrics.record_outcome("dead_lettered", dead_letter_reason="expired")
    metrics.count_decode_error()
    metrics.count_commit()
    metrics.count_commit()
    metrics.count_rebalance("revoke")
    assert value(registry, "streams_records_total", **BASE, outcome="done") == 1.0
    assert value(registry, "streams_records_total", **BASE, outcome="emitted") == 3.0
    assert value(registry, "streams_records_total", **BASE, outcome="dead_lettered") == 1.0
    assert value(registry, "streams_dead_letters_total", **BASE, reason="expired") == 1.0
    assert value(registry, "streams_decode_errors_total", **BASE) == 1.0
    assert value(registry, "streams_commits_total", **BASE) == 2.0
    assert value(registry, "streams_rebalances_total", **BASE, kind="revoke") == 1.0


def test_dead_letter_reason_goes_with_dead_lettered_only(metrics: WorkerMetrics) -> None:
    with pytest.raises(ValueError):
        metrics.record_outcome("dead_lettered")
    with pytest.raises(ValueError):
        metrics.record_outcome("done", dead_letter_reason="timeout")


def test_histograms_use_base_units_and_buckets(
    registry: CollectorRegistry, metrics: WorkerMetrics
) -> None:
    metrics.observe_handler(0.0008)
    metrics.observe_handler(90.0)
    metrics.observe_age_at_completion(42.0)
    name = "streams_handler_latency_seconds"
    assert value(registry, f"{name}_bucket", **BASE, le="0.001") == 1.0
    assert value(registry, f"{name}_bucket", **BASE, le="120.0") == 2.0
    assert value(registry, f"{name}_count", **BASE) == 2.0
    assert value(registry, f"{name}_sum", **BASE) == pytest.approx(90.0008)
    assert value(registry, "streams_age_at_completion_seconds_count", **BASE) == 1.0


def test_gauges_of_the_worker(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    metrics.set_in_flight(4)
    metrics.set_concurrency_limit(20)
    metrics.set_downstream("act", lag=120, oldest_age_s=8.5)
    assert value(registry, "streams_in_flight", **BASE) == 4.0
    assert value(registry, "streams_concurrency_limit", **BASE) == 20.0
    assert value(registry, "streams_downstream_lag_records", **BASE, downstream_stage="act") == 120
    labels = {**BASE, "downstream_stage": "act"}
    assert value(registry, "streams_downstream_oldest_age_seconds", **labels) == 8.5


def test_partition_state(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    metrics.set_partition_state(TP, "urgent", buffered=7, bound=50, oldest_age_s=1.5, lag=30)
    assert value(registry, "streams_buffered_records", **TP_LABELS) == 7.0
    assert value(registry, "streams_buffer_bound_records", **TP_LABELS) == 50.0
    assert value(registry, "streams_lag_records", **TP_LABELS) == 30.0
    age = "streams_oldest_queued_age_seconds"
    assert value(registry, age, **TP_LABELS, lane="urgent") == 1.5
    # A partition whose lane changes is not reported under both lanes.
    metrics.set_partition_state(TP, "standard", buffered=0, bound=50, oldest_age_s=0.0, lag=0)
    assert value(registry, age, **TP_LABELS, lane="urgent") is None
    assert value(registry, age, **TP_LABELS, lane="standard") == 0.0


def test_pause_state_and_events(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    paused = "streams_partition_paused"
    metrics.set_paused(TP, "local_bound")
    assert value(registry, paused, **TP_LABELS, reason="local_bound") == 1.0
    assert value(registry, paused, **TP_LABELS, reason="downstream") == 0.0
    metrics.set_paused(TP, "local_bound")  # still paused: no second event
    metrics.set_paused(TP, "downstream")  # reason changes while paused: no event
    assert value(registry, paused, **TP_LABELS, reason="local_bound") == 0.0
    assert value(registry, paused, **TP_LABELS, reason="downstream") == 1.0
    metrics.set_paused(TP, None)
    assert value(registry, paused, **TP_LABELS, reason="downstream") == 0.0
    pauses = "streams_pause_events_total"
    resumes = "streams_resume_events_total"
    assert value(registry, pauses, **BASE, reason="local_bound") == 1.0
    assert value(registry, pauses, **BASE, reason="downstream") == 0.0
    assert value(registry, resumes, **BASE, reason="downstream") == 1.0
    assert value(registry, resumes, **BASE, reason="local_bound") == 0.0


def test_stalled_count_follows_flags(registry: CollectorRegistry, metrics: WorkerMetrics) -> None:
    other = TopicPartition("plan.in", 4)
    metrics.set_stalled(TP, True)
    metrics.set_stalled(other, True)
    metrics.set_stalled(other, True)
    assert value(registry, "streams_stalled_partitions", **BASE) == 2.0
    assert value(registry, "streams_partition_stalled", **TP_LABELS) == 1.0
    metrics.set_stalled(TP, False)
    assert value(registry, "streams_partition_stalled", **TP_LABELS) == 0.0
    assert value(registry, "streams_stalled_partitions", **BASE) == 1.0


def test_forget_partition_removes_its_series(
    registry: CollectorRegistry, metrics: WorkerMetrics
) -> None:
    kept = TopicPartition("plan.in", 0)
    kept_labels = {**BASE, "topic": "plan.in", "partition": "0"}
    for tp in (TP, kept):
        metrics.set_partition_state(tp, "standard", buffered=1, bound=9, oldest_age_s=2, lag=5)
        metrics.set_paused(tp, "lane")
        metrics.set_stalled(tp, True)
    metrics.forget_partition(TP)
    for name in (
        "streams_buffered_records",
        "streams_buffer_bound_records",
        "streams_lag_records",
        "streams_partition_stalled",
    ):
        assert value(registry, name, **TP_LABELS) is None, name
        assert value(registry, name, **kept_labels) is not None, name
    assert (
        value(registry, "streams_oldest_queued_age_seconds", **TP_LABELS, lane="standard") is None
    )
    assert value(registry, "streams_partition_paused", **TP_LABELS, reason="lane") is None
    assert value(registry, "streams_partition_paused", **kept_labels, reason="lane") == 1.0
    assert value(registry, "streams_stalled_partitions", **BASE) == 1.0
    metrics.forget_partition(TP)  # forgetting twice is harmless
    # Re-assigned later: it starts fetching, so no stale resume event is counted.
    metrics.set_paused(TP, None)
    assert value(registry, "streams_resume_events_total", **BASE, reason="lane") == 0.0


def test_two_stages_share_one_registry(registry: CollectorRegistry) -> None:
    plan = WorkerMetrics(registry, stage="plan", workflow="wf")
    act = WorkerMetrics(registry, stage="act", workflow="wf")
    plan.record_outcome("done")
    act.record_outcome("done", count=2)
    assert (
        value(registry, "streams_records_total", workflow="wf", stage="plan", outcome="done") == 1
    )
    assert value(registry, "streams_records_total", workflow="wf", stage="act", outcome="done") == 2


def test_nothing_lands_in_the_global_registry(registry: CollectorRegistry) -> None:
    from prometheus_client import REGISTRY

    WorkerMetrics(registry, stage="isolated", workflow="wf").record_outcome("done")
    labels = {"workflow": "wf", "stage": "isolated", "outcome": "done"}
    assert REGISTRY.get_sample_value("streams_records_total", labels) is None


def test_lag_metrics_follow_readings(registry: CollectorRegistry) -> None:
    lag_metrics = LagMetrics(registry, workflow="wf")
    p0, p1 = TopicPartition("act.in", 0), TopicPartition("act.in", 1)
    first = GroupLag(
        "wf.act",
        (PartitionLag(p0, 10, 4, 6, 3.5), PartitionLag(p1, 5, None, 5, 9.0)),
        measured_at=1_700_000_000.0,
    )
    lag_metrics.observe("act", first)
    labels0 = {"workflow": "wf", "stage": "act", "topic": "act.in", "partition": "0"}
    labels1 = {**labels0, "partition": "1"}
    assert value(registry, "streams_group_lag_records", **labels0) == 6.0
    assert value(registry, "streams_group_lag_records", **labels1) == 5.0
    assert value(registry, "streams_group_oldest_age_seconds", **labels1) == 9.0
    measured = "streams_group_lag_measured_timestamp_seconds"
    assert value(registry, measured, workflow="wf", stage="act") == 1_700_000_000.0
    # A later reading without partition 1 drops its series.
    lag_metrics.observe("act", GroupLag("wf.act", (PartitionLag(p0, 12, 12, 0, 0.0),), 1.7e9 + 5))
    assert value(registry, "streams_group_lag_records", **labels0) == 0.0
    assert value(registry, "streams_group_lag_records", **labels1) is None
    lag_metrics.forget_stage("act")
    assert value(registry, "streams_group_lag_records", **labels0) is None
    assert value(registry, measured, workflow="wf", stage="act") is None


def test_serve_metrics_over_http_on_loopback(
    registry: CollectorRegistry, metrics: WorkerMetrics
) -> None:
    metrics.record_outcome("emitted", count=5)
    port = serve_metrics(registry, 0)
    assert port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        body = response.read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    emitted = (("outcome", "emitted"), ("stage", "plan"), ("workflow", "wf"))
    assert samples[("streams_records_total", emitted)] == 5.0
    assert "# TYPE streams_handler_latency_seconds histogram" in body


def test_lock_free_histogram_buckets_are_le_and_cumulative_in_the_exposition(
    registry: CollectorRegistry, metrics: WorkerMetrics
) -> None:
    for seconds in (0.001, 0.0011, 0.3, 500.0):  # a value on a bound counts in that bucket
        metrics.observe_handler(seconds)
    name = "streams_handler_latency_seconds"
    assert value(registry, f"{name}_bucket", **BASE, le="0.001") == 1.0
    assert value(registry, f"{name}_bucket", **BASE, le="0.0025") == 2.0
    assert value(registry, f"{name}_bucket", **BASE, le="0.5") == 3.0
    assert value(registry, f"{name}_bucket", **BASE, le="120.0") == 3.0
    assert value(registry, f"{name}_bucket", **BASE, le="+Inf") == 4.0
    text = generate_latest(registry).decode()
    assert f"# TYPE {name} histogram" in text
    assert "# TYPE streams_records_total counter" in text
    assert 'streams_records_total{outcome="done",stage="plan",workflow="wf"} 0.0' in text
