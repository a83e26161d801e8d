"""One metrics endpoint for a `streams worker --processes N` group: the supervisor scrapes
each child's loopback endpoint when it is scraped itself and serves the union, every
sample labelled with its child (`process="0"`), plus `streams_worker_processes{state}`.

Owns the merge (pure: expositions in, families out) and the scrape of the children; must
not start or stop processes (streams.runtime.process_group does).

Scrape-and-merge, not prometheus_client's multiprocess mode: that mode needs
PROMETHEUS_MULTIPROC_DIR set before import and changes what every gauge means (it sums or
picks across pids), and the workers' lock-free families (streams.metric_families) have no
multiprocess form. Here each child keeps its own registry and its own semantics; the
label keeps their series apart, and sum() by the other labels gives the group's.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = [
    "PROCESSES_FAMILY",
    "PROCESS_LABEL",
    "GroupCollector",
    "group_registry",
    "merge_expositions",
    "merge_families",
]

PROCESS_LABEL = "process"
PROCESSES_FAMILY = "streams_worker_processes"
_PROCESSES_HELP = (
    "Worker processes of this `streams worker --processes N` group by state: up answered "
    "this scrape, down did not (dead, restarting, not yet listening or too slow)"
)


def merge_expositions(texts: Mapping[str, str], label: str = PROCESS_LABEL) -> list[Metric]:
    """The families of every exposition in `texts` (child name -> text format), merged as
    merge_families does. Raises ValueError on text that does not parse."""
    return merge_families(
        {child: list(text_string_to_metric_families(text)) for child, text in texts.items()},
        label,
    )


def merge_families(
    children: Mapping[str, Iterable[Metric]], label: str = PROCESS_LABEL
) -> list[Metric]:
    """One family per name across `children` (child name -> its families), with the
    first child's help and type (every child runs the same code), each sample labelled
    `label`=child name."""
    merged: dict[str, Metric] = {}
    for child, families in children.items():
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type)
            elif into.type != family.type:
                continue  # cannot happen between copies of one program; never mix types
            for sample in family.samples:
                # A child's own label of that name (none today) is replaced: two series
                # that differ only by it would collide in the merge anyway.
                labels = {**sample.labels, label: child}
                into.add_sample(sample.name, labels, sample.value, sample.timestamp)
    return list(merged.values())


def processes_family(up: int, down: int) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PROCESSES_FAMILY, _PROCESSES_HELP, labels=["state"])
    family.add_metric(["up"], up)
    family.add_metric(["down"], down)
    return family


def _scrape(port: int, timeout_s: float) -> list[Metric]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body: bytes = response.read()
    return list(text_string_to_metric_families(body.decode("utf-8")))


class GroupCollector(Collector):
    """Collects the group's metrics at scrape time, from the children whose port files
    (written by streams.runtime.process_child) name a port that answers, with an
    exposition that parses, within timeout_s; the others count as down. Called from the
    metrics server's threads; reads only the files and the children's endpoints."""

    def __init__(self, port_files: Sequence[Path], *, timeout_s: float = 2.0) -> None:
        if not port_files:
            raise ValueError("a group has at least one process")
        self._port_files = tuple(port_files)
        self._timeout_s = timeout_s

    def describe(self) -> list[Metric]:
        return []  # registering must not scrape the children

    def collect(self) -> Iterator[Metric]:
        # In parallel: one slow child costs the scrape timeout_s once, not once per child.
        with ThreadPoolExecutor(max_workers=len(self._port_files)) as pool:
            answers = list(pool.map(self._read_child, self._port_files))
        children = {str(i): fams for i, fams in enumerate(answers) if fams is not None}
        yield processes_family(len(children), len(answers) - len(children))
        yield from merge_families(children)

    def _read_child(self, port_file: Path) -> list[Metric] | None:
        try:
            return _scrape(int(port_file.read_text(encoding="ascii")), self._timeout_s)
        except (OSError, ValueError):  # not written yet, not answering, or not parseable
            return None


def group_registry(collector: GroupCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
