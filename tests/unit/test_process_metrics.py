"""The merged endpoint of `streams worker --processes N`: two children's expositions
become one valid exposition (one HELP/TYPE per family, every sample labelled with its
child, promtool finds nothing), and the collector scrapes real loopback endpoints,
leaving out and counting as down a child that does not answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from streams.metrics import WorkerMetrics
from streams.runtime.process_metrics import (
    PROCESSES_FAMILY,
    GroupCollector,
    group_registry,
    merge_expositions,
)
from tests.promtool import check_metrics

pytestmark = pytest.mark.timeout(60)


def _child(records: float, limit: float) -> CollectorRegistry:
    """A child's registry: the real worker families, plus a counter and a gauge we set."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, stage="plan", workflow="w")
    metrics.set_concurrency_limit(int(limit))
    Counter("streams_test_items", 'Items "seen" \\ counted.', ["kind"], registry=registry).labels(
        "a"
    ).inc(records)
    Gauge("streams_test_level", "A level.", registry=registry).set(limit)
    return registry


def _text(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def _merged_text(texts: dict[str, str]) -> str:
    class Merged(Collector):
        def collect(self) -> Iterator[Metric]:
            return iter(merge_expositions(texts))

    return generate_latest(Merged()).decode()


def test_two_children_merge_into_one_valid_exposition_with_the_process_label() -> None:
    texts = {"0": _text(_child(3, 8)), "1": _text(_child(5, 16))}
    merged = _merged_text(texts)

    type_lines = [line for line in merged.splitlines() if line.startswith("# TYPE ")]
    help_lines = [line for line in merged.splitlines() if line.startswith("# HELP ")]
    assert len(type_lines) == len(set(type_lines)) and len(help_lines) == len(set(help_lines))
    assert len(type_lines) == texts["0"].count("# TYPE ")  # the same families as one child
    assert check_metrics(merged) == ""

    samples = [s for f in text_string_to_metric_families(merged) for s in f.samples]
    assert samples and all(s.labels.get("process") in ("0", "1") for s in samples)
    by = {(s.name, s.labels["process"]): s.value for s in samples if "kind" in s.labels}
    assert by[("streams_test_items_total", "0")] == 3
    assert by[("streams_test_items_total", "1")] == 5
    levels = {s.labels["process"]: s.value for s in samples if s.name == "streams_test_level"}
    assert levels == {"0": 8, "1": 16}
    assert 'Items "seen" \\\\ counted.' in merged  # help text escaped as it came


def test_a_childs_own_process_label_is_replaced() -> None:
    text = '# TYPE streams_x gauge\nstreams_x{process="9",stage="a"} 1\n'
    (family,) = merge_expositions({"0": text})
    assert [s.labels for s in family.samples] == [{"process": "0", "stage": "a"}]


def test_text_that_does_not_parse_is_an_error() -> None:
    with pytest.raises(ValueError):
        merge_expositions({"0": "streams_x{ 1\n"})


@pytest.fixture
def child_ports(tmp_path: Path) -> Iterator[list[Path]]:
    """Two port files: child 0 serves a real endpoint, child 1 names a closed port."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=_child(2, 4))
    closed, closed_thread = start_http_server(0, addr="127.0.0.1", registry=CollectorRegistry())
    closed.shutdown()
    closed.server_close()
    closed_thread.join(5)
    files = [tmp_path / "0.port", tmp_path / "1.port"]
    files[0].write_text(str(server.server_port))
    files[1].write_text(str(closed.server_port))
    try:
        yield files
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_collector_counts_a_silent_child_down_and_leaves_it_out(
    child_ports: list[Path], tmp_path: Path
) -> None:
    missing = tmp_path / "2.port"  # not written yet: a child still starting
    text = generate_latest(
        group_registry(GroupCollector([*child_ports, missing], timeout_s=1.0))
    ).decode()
    assert check_metrics(text) == ""
    assert f'{PROCESSES_FAMILY}{{state="up"}} 1.0' in text
    assert f'{PROCESSES_FAMILY}{{state="down"}} 2.0' in text
    processes = {
        s.labels.get("process")
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if f.name != PROCESSES_FAMILY
    }
    assert processes == {"0"}
    assert 'streams_test_level{process="0"} 4.0' in text


def test_registering_the_collector_scrapes_nothing(tmp_path: Path) -> None:
    class Counting(GroupCollector):
        scrapes = 0

        def collect(self) -> Iterator[Metric]:
            Counting.scrapes += 1
            return super().collect()

    group_registry(Counting([tmp_path / "0.port"]))
    assert Counting.scrapes == 0
