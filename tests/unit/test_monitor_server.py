"""The monitor's HTTP server over real loopback HTTP (no broker): before the first reading,
after it, unknown paths, and a port that is taken."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from streams.errors import MetricsPortUnavailable
from streams.monitor.exporter import MonitorServer
from streams.monitor.model import IntakeView, MonitorSnapshot

from .test_monitor_views import plan_view

pytestmark = pytest.mark.timeout(30)


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        exc.close()
        return exc.code, exc.headers["Content-Type"], body


def test_serves_metrics_json_and_page_from_the_latest_snapshot() -> None:
    server = MonitorServer(0, refresh_s=3)
    try:
        code, _, body = get(server.url + "/api/status")
        assert code == 503 and "no reading yet" in body
        code, _, body = get(server.url + "/metrics")
        assert code == 200 and "streams_monitor_lag_records" not in body

        server.update(plan_view())
        code, kind, body = get(server.url + "/metrics")
        assert code == 200 and kind.startswith("text/plain")
        assert 'streams_monitor_lag_records{lane="standard",partition="0",stage="plan"' in body
        code, kind, body = get(server.url + "/api/status")
        assert code == 200 and kind == "application/json"
        assert json.loads(body)["stages"][0]["paused"] == {"downstream": 1}
        code, kind, body = get(server.url + "/")
        assert code == 200 and kind.startswith("text/html")
        assert '<meta http-equiv="refresh" content="3">' in body and "downstream" in body
        code, _, body = get(server.url + "/nothing")
        assert code == 404 and "/api/status" in body

        # A stage that leaves the snapshot leaves the exposition with it.
        empty = MonitorSnapshot(
            "wf", 0.0, None, (), (), IntakeView({}, {}, "no decisions", None, None), {}
        )
        server.update(empty)
        assert "streams_monitor_lag_records{" not in get(server.url + "/metrics")[2]
    finally:
        server.close()


def test_a_taken_port_is_a_one_line_error() -> None:
    first = MonitorServer(0)
    try:
        with pytest.raises(MetricsPortUnavailable, match=rf"monitor port {first.port}.*--serve"):
            MonitorServer(first.port)
    finally:
        first.close()
