"""Every metric family streams defines (worker, tools, intake, monitor) passes
`promtool check metrics`: names, suffixes, units and help text, checked on the families
themselves, so a new metric that breaks Prometheus conventions fails here before any
scrape (tests/integration/test_promtool_metrics.py checks real scrapes)."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from tests.metric_inventory import defined_families, inventory_registry
from tests.promtool import check_metrics

pytestmark = pytest.mark.timeout(60)


def test_every_defined_family_passes_promtool_check_metrics() -> None:
    exposition = generate_latest(inventory_registry()).decode()
    assert exposition.count("# TYPE ") >= len(defined_families())
    assert check_metrics(exposition) == ""


def test_the_inventory_holds_the_retry_escalation_review_and_monitor_families() -> None:
    """Retries and escalations (streams.runtime.retry_metrics), review stages
    (streams.review.metrics) and the monitor's own series of them are in the inventory,
    so the dashboard and alert tests can check queries against them."""
    assert {
        "streams_retries": "counter",
        "streams_retry_budget_exhausted": "counter",
        "streams_escalations": "counter",
        "streams_retries_forwarded": "counter",
        "streams_retry_tier_held_partitions": "gauge",
        "streams_retry_tier_overdue_seconds": "gauge",
        "streams_review_pending": "gauge",
        "streams_review_max_pending": "gauge",
        "streams_review_oldest_pending_age_seconds": "gauge",
        "streams_review_clear_rate": "gauge",
        "streams_review_decisions": "counter",
        "streams_monitor_retries": "counter",
        "streams_monitor_escalations": "counter",
        "streams_monitor_review_pending": "gauge",
        "streams_monitor_review_room": "gauge",
        "streams_monitor_review_oldest_pending_age_seconds": "gauge",
        "streams_monitor_review_max_wait_seconds": "gauge",
        "streams_monitor_review_clear_rate": "gauge",
        "streams_monitor_tool_breakers": "gauge",
        "streams_monitor_degradation_level": "gauge",
        "streams_monitor_degradation_forced": "gauge",
        "streams_monitor_operator_paused": "gauge",
        "streams_monitor_tool_forced_open": "gauge",
    }.items() <= defined_families().items()


def test_promtool_flags_a_family_that_breaks_the_conventions() -> None:
    assert "no help text" in check_metrics("# TYPE streams_x_seconds gauge\nstreams_x_seconds 1\n")
