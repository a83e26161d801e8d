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


def test_promtool_flags_a_family_that_breaks_the_conventions() -> None:
    assert "no help text" in check_metrics("# TYPE streams_x_seconds gauge\nstreams_x_seconds 1\n")
