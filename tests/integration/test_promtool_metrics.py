"""`promtool check metrics` on real scrapes: a `streams worker` process (bound to the host
given with --metrics-host), an intake and a `streams monitor --serve` process, against the
real broker after traffic that touches every outcome the test can cause (emits, a decode
error, an expired record, accepted and rejected runs, lag). Prometheus' own linter must
print nothing.

promtool comes with Debian's `prometheus` package; without it these tests fail and say
what to install (tests/promtool.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from streams.intake.service import Intake
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.testing import publish, publish_raw
from tests.metric_inventory import defined_families
from tests.promtool import check_metrics

from .intake_helpers import http_server
from .metrics_processes import (
    OTHER_LOOPBACK,
    free_port,
    running,
    sample_value,
    scrape,
    streams_argv,
    workflow_file,
)
from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _scrape_until(url: str, done: str, timeout_s: float = 60.0) -> str:
    """Scrape until the exposition has a `done` sample above 0 (or time runs out)."""
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        try:
            text = scrape(url)
        except OSError:
            text = ""  # not listening yet
        if sample_value(text, done) > 0:
            break
        time.sleep(0.5)
    return text


def test_worker_scrape_passes_promtool_check_metrics(
    admin: Admin, bootstrap: str, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology, path = workflow_file(admin, tmp_path)
    topic = f"{topology.workflow}.plan.standard"
    publish(client_config, topic, events(topology, "plan", 20))
    publish(client_config, topic, events(topology, "plan", 2, age_s=120))  # expired
    publish_raw(client_config, topic, [b"\x00not avro"], key=b"poison")  # decode error
    port = free_port(OTHER_LOOPBACK)
    argv = streams_argv("worker", str(path), "--stage", "plan", "--metrics-port", str(port))
    argv += ["--metrics-host", OTHER_LOOPBACK]
    url = f"http://{OTHER_LOOPBACK}:{port}/metrics"
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    with running(argv, tmp_path / "worker.log", env):
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            text = _scrape_until(url, "streams_records_total", timeout_s=5)
            emitted = sample_value(text, "streams_records_total", outcome="emitted")
            if emitted >= 20 and sample_value(text, "streams_dead_letters_total") >= 3:
                break
            time.sleep(0.5)
    assert sample_value(text, "streams_records_total", outcome="emitted") >= 20, text
    assert sample_value(text, "streams_dead_letters_total") >= 3, text
    assert "streams_oldest_queued_age_seconds{" in text
    assert sample_value(text, "streams_tool_breaker_state", tool="crm", state="closed") == 1
    assert check_metrics(text) == ""
    # The worker exposes only families the inventory knows (which the dashboard and alert
    # tests check their queries against).
    exposed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    known = set(defined_families())
    known |= {name + "_created" for name in known}
    assert exposed - known - {f"{n}_total" for n in known} == set()


def test_intake_scrape_passes_promtool_check_metrics(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology, _path = workflow_file(admin, tmp_path)
    intake = Intake(topology, client_config).start()
    try:
        with http_server(intake) as base, httpx.Client(timeout=10) as http:
            url = f"{base}/v1/workflows/{topology.workflow}/runs"
            statuses = [
                http.post(url, json={"tenant": "acme", "payload": {"n": i}}).status_code
                for i in range(8)
            ]
            http.get(f"{base}/v1/workflows/{topology.workflow}/capacity")
            text = http.get(f"{base}/metrics").text
    finally:
        intake.close()
    assert 202 in statuses and 429 in statuses, statuses  # accepted and rejected runs
    assert sample_value(text, "streams_intake_decisions_total", outcome="rejected") >= 1
    assert "streams_intake_oldest_queued_age_seconds{" in text
    assert check_metrics(text) == ""


def test_monitor_scrape_passes_promtool_check_metrics(
    admin: Admin, bootstrap: str, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology, path = workflow_file(admin, tmp_path)
    publish(client_config, f"{topology.workflow}.plan.standard", events(topology, "plan", 10))
    port = free_port(OTHER_LOOPBACK)
    argv = streams_argv("monitor", str(path), "--serve", str(port), "--host", OTHER_LOOPBACK)
    argv += ["--interval", "0.5"]
    url = f"http://{OTHER_LOOPBACK}:{port}/metrics"
    with running(argv, tmp_path / "monitor.log", {"KAFKA_BOOTSTRAP_SERVERS": bootstrap}):
        text = _scrape_until(url, "streams_monitor_lane_lag_records")
    assert sample_value(text, "streams_monitor_lane_lag_records", stage="plan") >= 10, text
    assert check_metrics(text) == ""


def test_the_check_reports_a_bad_exposition() -> None:
    # The checks above pass only if promtool says nothing; make sure it does speak.
    bad = "# TYPE streams_x_count counter\nstreams_x_count 1\n"
    assert "_total" in check_metrics(bad)
