"""The inventory of metrics streams defines: every family the worker, the intake and the
monitor register, and the sample names each exposes. Tests check the dashboard, the alert
rules and the KEDA queries against it, so a renamed metric breaks a test, not a graph.

Owns building that list from the real metric classes on a private registry; must not
hard-code metric names (the classes are the source of truth).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from streams.intake.metrics import IntakeMetrics
from streams.metrics import LagMetrics, WorkerMetrics

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

# Families registered by optional packages that land separately (the monitor's exporter):
# each entry names a module and a function that registers its families on a registry.
_OPTIONAL_DEFINERS = (("streams.monitor.metrics", "define_metrics"),)


def _optional_definers() -> list[Callable[[CollectorRegistry], object]]:
    found: list[Callable[[CollectorRegistry], object]] = []
    for module_name, function_name in _OPTIONAL_DEFINERS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        definer = getattr(module, function_name, None)
        if callable(definer):
            found.append(definer)
    return found


def defined_families() -> dict[str, str]:
    """Family name -> Prometheus type, for every metric streams defines."""
    registry = CollectorRegistry()
    WorkerMetrics(registry, stage="inventory", workflow="inventory")
    LagMetrics(registry, workflow="inventory")
    IntakeMetrics(registry, workflow="inventory")
    for define in _optional_definers():
        define(registry)
    return {family.name: family.type for family in registry.collect()}


def defined_sample_names() -> set[str]:
    """Every series name a query may use: counters as NAME_total, histogram parts, gauges."""
    return {
        name + suffix
        for name, kind in defined_families().items()
        for suffix in _SUFFIXES.get(kind, ("",))
    }
