"""The inventory of metrics streams defines: every family the worker (its tools, retries,
escalations and degradation level included; a review stage's worker too), the intake and the monitor
register, and the sample names each exposes. Tests check the dashboard, the alert rules
and the KEDA queries against it, so a renamed metric breaks a test, not a graph.

Owns building that list from the real metric classes on a private registry; must not
hard-code metric names (the classes are the source of truth).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from streams.intake.metrics import IntakeMetrics
from streams.metrics import LagMetrics, ToolMetrics, WorkerMetrics
from streams.monitor.exporter import MonitorCollector
from streams.monitor.model import IntakeView, MonitorSnapshot
from streams.policy.degradation import Ladder, LevelSpec
from streams.review.metrics import ReviewMetrics
from streams.runtime.degradation_metrics import DegradationMetrics
from streams.runtime.process_metrics import processes_family
from streams.runtime.retry_metrics import RetryMetrics

# The sample names Prometheus stores for one family of each type (prometheus_client also
# exports *_created for counters and histograms).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def _monitor_families(registry: CollectorRegistry) -> None:
    # The monitor's collector yields every family from any snapshot, an empty one too.
    collector = MonitorCollector()
    collector.update(
        MonitorSnapshot(
            workflow="inventory",
            measured_at=0.0,
            error=None,
            stages=(),
            workers=(),
            intake=IntakeView({}, {}, "no decisions", None, None),
            dead_letters_per_min={},
            # Read W.control: the level and operator-control families appear.
            control={
                "level": "normal",
                "levels": ["normal"],
                "forced": None,
                "paused_stages": {},
                "tools_forced_open": {},
            },
        )
    )
    registry.register(collector)


class _Supervisor(Collector):
    def collect(self) -> Iterator[Metric]:
        yield processes_family(up=0, down=0)


def inventory_registry() -> CollectorRegistry:
    """A registry holding every family streams defines (most without samples)."""
    registry = CollectorRegistry()
    WorkerMetrics(registry, stage="inventory", workflow="inventory")
    LagMetrics(registry, workflow="inventory")
    IntakeMetrics(registry, workflow="inventory")
    ToolMetrics(registry, "inventory", readings=list, buckets=(1.0,))
    RetryMetrics(registry, workflow="inventory", stage="inventory")
    ReviewMetrics(
        registry, workflow="inventory", stage="review", max_pending=1,
        pending=lambda: 0, oldest_age_s=lambda now: 0.0, clear_rate_per_s=lambda now: 0.0,
    )  # fmt: skip
    DegradationMetrics(registry, "inventory", Ladder((LevelSpec("normal"),)))
    _monitor_families(registry)
    # A `--processes N` supervisor's own family (its children's are the worker's above).
    registry.register(_Supervisor())
    return registry


def defined_families() -> dict[str, str]:
    """Family name -> Prometheus type, for every metric streams defines."""
    return {family.name: family.type for family in inventory_registry().collect()}


def defined_sample_names() -> set[str]:
    """Every series name a query may use: counters as NAME_total, histogram parts, gauges."""
    return {
        name + suffix
        for name, kind in defined_families().items()
        for suffix in _SUFFIXES.get(kind, ("",))
    }
