"""The monitor shows retries, escalations and review queues, read from Kafka alone (no
worker runs while it reads): a real worker retries every run once through the 1 s tier
and then escalates it, and W.reviews holds a review stage's pending and decided entries.
The snapshot (its JSON), the terminal table, the Prometheus series (promtool-clean) and
the status page rendered in headless Chromium must each show them."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from rich.console import Console

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.monitor import fmt
from streams.monitor.collector import WorkflowReader
from streams.monitor.exporter import MonitorServer
from streams.monitor.model import MonitorSnapshot
from streams.monitor.view import heartbeat_line, render_table
from streams.review.records import ReviewCodec, ReviewEntry, ReviewState
from streams.testing import publish_raw
from streams.topology import Topology
from tests.promtool import check_metrics

from .browser import headless_chromium
from .escalated_runs import escalated_runs
from .monitor_helpers import sorted_labels, wait_for
from .test_review import review_flow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def table_text(snapshot: MonitorSnapshot, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(
        render_table(snapshot)
    )
    return " ".join(out.getvalue().split())


def read_until(reader: WorkflowReader, done: Any, what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        snapshot = reader.read()
        if done(snapshot):
            return snapshot
        assert time.monotonic() < deadline, f"the monitor never saw {what}: {snapshot}"
        time.sleep(0.3)


def test_retries_and_escalations_per_minute_by_reason_with_no_worker_running(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology, _, _ = escalated_runs(admin, client_config, tmp_path, 6, send={})

    reader = WorkflowReader(topology, client_config)
    try:
        snapshot = read_until(
            reader,
            lambda s: s.escalations_per_min.get("escalated") == 6.0,
            "six escalations",
        )
    finally:
        reader.close()
    data = json.loads(json.dumps(snapshot.to_dict()))
    act = next(s for s in data["stages"] if s["stage"] == "act")
    assert act["retries_per_min"] == {"handler_error": 6.0}
    assert act["retries_per_min_by_tier"] == {"1": 6.0}
    assert act["escalations_per_min"] == {"escalated": 6.0}
    send = next(s for s in data["stages"] if s["stage"] == "send")
    assert send["retries_per_min"] == {} and send["escalations_per_min"] == {}
    assert data["retries_per_min"] == {"handler_error": 6.0}
    assert data["escalations_per_min"] == {"escalated": 6.0}
    assert {"stage": "act", "tier": "1", "reason": "handler_error", "count": 6} in data[
        "retries_seen"
    ]
    assert data["escalations_seen"] == [{"stage": "act", "reason": "escalated", "count": 6}]

    table = table_text(snapshot)
    assert "retries/min: act handler_error 6 (tier 1s 6)" in table, table
    assert "escalations/min: act escalated 6" in table, table
    line = heartbeat_line(snapshot)
    assert "retries/min 6" in line and "escalations/min 6" in line, line

    server = MonitorServer(0)
    try:
        server.update(snapshot)
        exposition = generate_latest(server.registry).decode()
    finally:
        server.close()
    assert check_metrics(exposition) == ""
    metrics = sorted_labels(exposition)
    wf = topology.workflow
    assert (
        f'streams_monitor_retries_total{{reason="handler_error",stage="act",tier="1",'
        f'workflow="{wf}"}} 6.0' in metrics
    ), metrics
    assert (
        f'streams_monitor_escalations_total{{reason="escalated",stage="act",workflow="{wf}"}} 6.0'
        in metrics
    ), metrics


def entry(
    topology: Topology,
    run_id: str,
    state: ReviewState,
    *,
    admitted_ago_s: float,
    decided_ago_s: float | None = None,
    reviewer: str | None = None,
) -> ReviewEntry:
    now_ms = int(time.time() * 1000)
    decision = {"approved": "approve", "declined": "decline", "timed_out": "decline"}
    return ReviewEntry(
        workflow=topology.workflow,
        stage="approve",
        run_id=run_id,
        state=state,
        tenant="tenant-a",
        lane="standard",
        admitted_at_ms=now_ms - int(admitted_ago_s * 1000),
        deadline_ms=now_ms - int(admitted_ago_s * 1000) + 30_000,
        payload=b"{}",
        decided_at_ms=None if decided_ago_s is None else now_ms - int(decided_ago_s * 1000),
        decision=decision.get(state),
        reviewer=reviewer,
    )


def test_review_queue_pending_oldest_age_and_clear_rate_from_w_reviews(
    admin: Admin, client_config: ClientConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # draft -> approve (review: at most 3 pending, 30 s to decide) -> send
    topology = review_flow(admin, max_pending=3, max_wait_s=30)
    codec = ReviewCodec()
    entries = [
        entry(topology, "r-old", "pending", admitted_ago_s=50),
        entry(topology, "r-mid", "pending", admitted_ago_s=20),
        entry(topology, "r-new", "pending", admitted_ago_s=5),
        entry(topology, "r-yes", "approved", admitted_ago_s=40, decided_ago_s=10, reviewer="ana"),
        entry(topology, "r-no", "declined", admitted_ago_s=40, decided_ago_s=8, reviewer="bo"),
        entry(topology, "r-late", "timed_out", admitted_ago_s=90, decided_ago_s=60,
              reviewer="timeout"),
        # A run reviewed again: its latest entry (decided) is the one that counts.
        entry(topology, "r-again", "pending", admitted_ago_s=70),
        entry(topology, "r-again", "declined", admitted_ago_s=70, decided_ago_s=1, reviewer="cy"),
    ]  # fmt: skip
    for e in entries:
        publish_raw(client_config, topology.reviews_topic, [codec.encode(e)], key=e.run_id.encode())

    reader = WorkflowReader(topology, client_config)
    try:
        snapshot = read_until(
            reader, lambda s: s.reviews and s.reviews[0].pending == 3, "three pending reviews"
        )
    finally:
        reader.close()
    data = json.loads(json.dumps(snapshot.to_dict()))
    (review,) = data["reviews"]
    assert review["stage"] == "approve"
    assert review["pending"] == 3 and review["max_pending"] == 3
    assert review["full"] is True  # 3 pending of 3 (no worker: one worker's room)
    oldest_age = snapshot.measured_at - entries[0].admitted_at_ms / 1000
    assert review["oldest_pending_age_s"] == pytest.approx(oldest_age, abs=0.01), review
    assert review["max_wait_s"] == 30.0
    assert review["over_max_wait"] is True
    # People decided three in the rate window (600 s); the timeout does not count.
    assert review["clear_rate_per_s"] == pytest.approx(3 / 600)

    table = table_text(snapshot)
    shown = fmt.age(oldest_age)
    assert f"review approve: 3/3 pending (full), oldest {shown} > max wait 30s" in table, table
    assert "clearing 0.005/s" in table, table
    assert "review approve 3/3" in heartbeat_line(snapshot)

    server = MonitorServer(0, refresh_s=60)
    try:
        server.update(snapshot)
        exposition = generate_latest(server.registry).decode()
        assert check_metrics(exposition) == ""
        metrics = sorted_labels(exposition)
        wf = topology.workflow
        series = {
            "streams_monitor_review_pending": "3.0",
            "streams_monitor_review_max_pending": "3.0",
            "streams_monitor_review_max_wait_seconds": "30.0",
        }
        for name, value in series.items():
            assert f'{name}{{stage="approve",workflow="{wf}"}} {value}' in metrics, metrics
        age = re.search(
            rf'streams_monitor_review_oldest_pending_age_seconds\{{stage="approve",'
            rf'workflow="{wf}"\}} (\S+)',
            metrics,
        )
        assert age and float(age.group(1)) == pytest.approx(oldest_age, abs=0.01)
        rate = re.search(
            rf'streams_monitor_review_clear_rate\{{stage="approve",workflow="{wf}"\}} (\S+)',
            metrics,
        )
        assert rate and float(rate.group(1)) == pytest.approx(3 / 600)

        from selenium.webdriver.common.by import By

        with headless_chromium(monkeypatch) as browser:

            def page_loaded() -> bool:
                browser.get(server.url + "/")
                return bool(browser.find_elements(By.CSS_SELECTOR, "table#reviews"))

            wait_for(page_loaded, 20, "the status page's review table")
            row = browser.find_element(By.CSS_SELECTOR, 'table#reviews tr[data-review="approve"]')
            cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
            assert cells[0] == "approve"
            assert cells[1] == "3 / 3 (full)", cells
            assert cells[2] == shown, cells
            assert cells[3] == "30s" and cells[4] == "0.005/s", cells
            assert "over max wait" in row.text
    finally:
        server.close()


def test_status_page_shows_retries_and_escalations_per_stage(
    admin: Admin, client_config: ClientConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A person reads each stage's retries and escalations per minute off the page."""
    from selenium.webdriver.common.by import By

    topology, _, _ = escalated_runs(admin, client_config, tmp_path, 4)
    reader = WorkflowReader(topology, client_config)
    server = MonitorServer(0, refresh_s=60)
    try:
        server.update(
            read_until(reader, lambda s: s.escalations_per_min.get("escalated") == 4.0, "four")
        )
        with headless_chromium(monkeypatch) as browser:
            browser.get(server.url + "/")
            act = browser.find_element(By.CSS_SELECTOR, 'tr[data-stage="act"]')
            assert act.find_element(By.CSS_SELECTOR, "td.retries").text == "handler_error 4"
            assert act.find_element(By.CSS_SELECTOR, "td.escalations").text == "escalated 4"
    finally:
        server.close()
        reader.close()
