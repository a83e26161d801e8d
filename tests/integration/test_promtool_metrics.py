"""`promtool check metrics` on real scrapes: a `streams worker` process (bound to the host
given with --metrics-host), an intake and a `streams monitor --serve` process, against the
real broker after traffic that touches every outcome the test can cause (emits, a decode
error, an expired record, accepted and rejected runs, lag). Prometheus' own linter must
print nothing.

promtool comes with Debian's `prometheus` package; without it these tests fail and say
what to install (tests/promtool.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from streams.intake.service import Intake
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.testing import publish, publish_raw
from streams.topology import Topology, load_topology
from tests.metric_inventory import defined_families
from tests.promtool import check_metrics

from .intake_helpers import http_server
from .process_helpers import PROC_HANDLER, REPO_ROOT
from .workflows import events

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# Loopback, but not 127.0.0.1: a scrape that works here proves --metrics-host was used.
WORKER_HOST = "127.0.0.2"


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _workflow_file(admin: Admin, directory: Path) -> tuple[Topology, Path]:
    name = f"m{uuid.uuid4().hex[:10]}"
    data = {
        "workflow": name,
        "lanes": ["urgent", "standard"],
        "topic_defaults": {"partitions": 2, "retention_ms": 3_600_000},
        "stages": {
            "plan": {"handler": PROC_HANDLER, "downstream": ["act"], "max_queue_age_s": 60},
            "act": {"handler": PROC_HANDLER},
        },
        "intake": {"max_queued_runs": 5, "max_queued_per_tenant": 5},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    topology = load_topology(path)
    admin.apply(
        TopicWanted(topic, spec.partitions, None, spec.compacted)
        for topic, spec in topology.all_topics().items()
    )
    return topology, path


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def _sample_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def worker_metrics_url(
    admin: Admin, bootstrap: str, tmp_path: Path
) -> Iterator[tuple[Topology, str]]:
    topology, path = _workflow_file(admin, tmp_path)
    port = _free_port(WORKER_HOST)
    log_path = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "streams", "worker", str(path), "--stage", "plan"]
    argv += ["--metrics-port", str(port), "--metrics-host", WORKER_HOST]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        yield topology, f"http://{WORKER_HOST}:{port}/metrics"
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        print(log_path.read_text(errors="replace"))  # shown by pytest when the test fails


def test_worker_scrape_passes_promtool_check_metrics(
    worker_metrics_url: tuple[Topology, str], client_config: ClientConfig
) -> None:
    topology, url = worker_metrics_url
    topic = f"{topology.workflow}.plan.standard"
    publish(client_config, topic, events(topology, "plan", 20))
    publish(client_config, topic, events(topology, "plan", 2, age_s=120))  # expired
    publish_raw(client_config, topic, [b"\x00not avro"], key=b"poison")  # decode error
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        try:
            text = _scrape(url)
        except OSError:
            time.sleep(0.2)  # not listening yet
            continue
        emitted = _sample_value(text, "streams_records_total", outcome="emitted")
        dead = _sample_value(text, "streams_dead_letters_total")
        if emitted >= 20 and dead >= 3:
            break
        time.sleep(0.5)
    assert _sample_value(text, "streams_records_total", outcome="emitted") >= 20, text
    assert _sample_value(text, "streams_dead_letters_total") >= 3, text
    assert "streams_oldest_queued_age_seconds{" in text
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
    topology, _path = _workflow_file(admin, tmp_path)
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
    assert _sample_value(text, "streams_intake_decisions_total", outcome="rejected") >= 1
    assert "streams_intake_oldest_queued_age_seconds{" in text
    assert check_metrics(text) == ""


def test_monitor_scrape_passes_promtool_check_metrics(
    admin: Admin, bootstrap: str, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology, path = _workflow_file(admin, tmp_path)
    publish(client_config, f"{topology.workflow}.plan.standard", events(topology, "plan", 10))
    port = _free_port(WORKER_HOST)
    argv = [sys.executable, "-m", "streams", "monitor", str(path)]
    argv += ["--serve", str(port), "--host", WORKER_HOST, "--interval", "0.5"]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "monitor.log"
    with log_path.open("wb") as log_file:
        monitor = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    text = ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                text = _scrape(f"http://{WORKER_HOST}:{port}/metrics")
            except OSError:
                text = ""
            if _sample_value(text, "streams_monitor_lane_lag_records", stage="plan") >= 10:
                break
            time.sleep(0.5)
    finally:
        monitor.terminate()
        try:
            monitor.wait(30)
        except subprocess.TimeoutExpired:
            monitor.kill()
            monitor.wait(10)
        print(log_path.read_text(errors="replace"))
    assert _sample_value(text, "streams_monitor_lane_lag_records", stage="plan") >= 10, text
    assert check_metrics(text) == ""


def test_the_check_reports_a_bad_exposition() -> None:
    # The two checks above pass only if promtool says nothing; make sure it does speak.
    bad = "# TYPE streams_x_count counter\nstreams_x_count 1\n"
    assert "_total" in check_metrics(bad)
