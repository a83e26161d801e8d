"""Counter and histogram families for per-record metrics, updated without locks.

prometheus_client takes a lock per inc() and two per observe(); on the poll loop, once or
twice per record, that was 5 % of a passthrough worker's time (py-spy). These families keep
plain Python numbers that one thread (the poll loop) updates, and build the exposition at
scrape time through the public custom-collector API. Under the GIL a scrape from another
thread reads each number whole; it may see one observation in a bucket and not yet in the
sum, which the next scrape corrects. Not for metrics updated from several threads.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "LocalCounterChild",
    "LocalCounterFamily",
    "LocalHistogramChild",
    "LocalHistogramFamily",
]


class LocalCounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


class LocalHistogramChild:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        # counts[i]: observations in (bounds[i-1], bounds[i]]; the last slot is +Inf.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left finds the first bound >= value: Prometheus buckets are "le".
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value


Child = TypeVar("Child", LocalCounterChild, LocalHistogramChild)


class _Family(Collector, Generic[Child]):
    """Children by label values, made on first use by `new_child`; registered at once."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        new_child: Callable[[], Child],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._new_child: Callable[[], Child] = new_child
        self._children: dict[tuple[str, ...], Child] = {}
        registry.register(self)

    def labels(self, *values: str) -> Child:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            child = self._children.setdefault(values, self._new_child())
        return child

    def _items(self) -> list[tuple[tuple[str, ...], Child]]:
        return list(self._children.items())  # a copy: the poll loop may add a child


class LocalCounterFamily(_Family[LocalCounterChild]):
    """A counter family (exported as NAME_total) with lock-free children."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry, LocalCounterChild)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._items():
            family.add_metric(values, child.value)
        yield family


class LocalHistogramFamily(_Family[LocalHistogramChild]):
    """A histogram family (NAME_bucket, NAME_sum, NAME_count) with lock-free children."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        if list(buckets) != sorted(set(buckets)):
            raise ValueError(f"{name}: buckets must be distinct and ascending")
        self._bounds = tuple(float(b) for b in buckets)
        super().__init__(
            name, documentation, labelnames, registry, lambda: LocalHistogramChild(self._bounds)
        )

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._items():
            counts, total = list(child.counts), child.sum
            cumulative, buckets = 0, []
            for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), float(cumulative)))  # type: ignore[no-untyped-call]
            family.add_metric(values, buckets, total)
        yield family
