"""The worker's metrics endpoint binds a configurable host: loopback unless told otherwise
(docker-compose and Kubernetes pass 0.0.0.0 so Prometheus can scrape the worker)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Gauge
from typer.testing import CliRunner

from streams.cli import app
from streams.errors import MetricsPortUnavailable
from streams.metrics import serve_metrics
from streams.runtime.options import WorkerOptions


def test_worker_options_bind_loopback_by_default() -> None:
    assert WorkerOptions().metrics_host == "127.0.0.1"


def test_worker_command_takes_a_metrics_host() -> None:
    result = CliRunner().invoke(app, ["worker", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--metrics-host" in result.output


@pytest.mark.timeout(10)
def test_metrics_served_on_the_host_asked_for_only() -> None:
    # 127.0.0.2 is loopback on Linux but not 127.0.0.1: a server bound to it is reachable
    # there and refused on 127.0.0.1, which shows the host was really used for the bind.
    registry = CollectorRegistry()
    Gauge("streams_bind_host_probe", "Marks this test's server.", registry=registry).set(1)
    port = serve_metrics(registry, 0, addr="127.0.0.2")
    with urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=5) as response:
        assert b"streams_bind_host_probe" in response.read()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as other:
            body = other.read()  # another process may own that port on 127.0.0.1
    except urllib.error.URLError:
        body = b""  # refused: nothing listens there
    assert b"streams_bind_host_probe" not in body


def test_a_host_that_cannot_be_bound_says_which_option_to_fix() -> None:
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is never a local address.
    with pytest.raises(MetricsPortUnavailable) as caught:
        serve_metrics(CollectorRegistry(), 0, addr="192.0.2.1")
    assert "--metrics-host" in str(caught.value)
