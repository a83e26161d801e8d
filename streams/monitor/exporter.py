"""The monitor's HTTP side: Prometheus series built from the latest snapshot, the same
snapshot as JSON, and the status page, on one port.

Owns the series names and labels of the monitor (listed in README "Monitor") and the
HTTP server; must not read Kafka (the run loop hands it snapshots). The series are
computed from the broker, so they exist for every stage whether or not a worker runs.
They are built at scrape time from one snapshot (a custom collector), so a stage or
partition that disappears leaves no stale series behind.

Ages are exported as ages, like the workers' gauges (streams.metrics), with the
reading's own timestamp beside them (``streams_monitor_reading_timestamp_seconds``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from streams.errors import MetricsPortUnavailable
from streams.monitor.model import BREAKER_SEVERITY, MonitorSnapshot
from streams.monitor.page import render_page
from streams.policy.group_status import SEVERITY

_PARTITION = ["workflow", "stage", "lane", "topic", "partition"]
_STATUSES = (*SEVERITY, "UNKNOWN")
_STAGE_GAUGES = (
    ("streams_monitor_in_flight", "Handler calls in flight over a stage's live workers."),
    ("streams_monitor_concurrency_limit", "Handler-call limit summed over live workers."),
    ("streams_monitor_workers_alive", "Workers of a stage whose pressure report is fresh."),
    ("streams_monitor_max_queue_age_seconds", "The stage's max_queue_age_s (topology)."),
)
_REVIEW_GAUGES = (
    ("streams_monitor_review_pending", "Reviews pending at a review stage (W.reviews)."),
    ("streams_monitor_review_max_pending", "A review stage's max_pending per worker (topology)."),
    (
        "streams_monitor_review_room",
        "Pending reviews a review stage holds at most now: max_pending x live workers "
        "(one worker's room when none is alive).",
    ),
    (
        "streams_monitor_review_oldest_pending_age_seconds",
        "Age of a review stage's oldest pending review (W.reviews); 0 with none pending.",
    ),
    ("streams_monitor_review_max_wait_seconds", "A review stage's max_wait_s (topology)."),
    (
        "streams_monitor_review_clear_rate",
        "Reviews people decided per second at a review stage over its rate window (W.reviews).",
    ),
)


class MonitorCollector(Collector):
    """Yields the monitor's series from the snapshot last passed to ``update`` (nothing
    before the first). ``update`` and scrapes may run on different threads."""

    def __init__(self) -> None:
        self._snapshot: MonitorSnapshot | None = None

    def update(self, snapshot: MonitorSnapshot) -> None:
        self._snapshot = snapshot  # one reference swap: a scrape sees one whole snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot
        if s is None:
            return
        wf = s.workflow
        lag = GaugeMetricFamily(
            "streams_monitor_lag_records",
            "Consumer-group lag per partition (log-end minus committed offset), from the broker.",
            labels=_PARTITION,
        )
        time_lag = GaugeMetricFamily(
            "streams_monitor_time_lag_seconds",
            "Seconds behind per partition, interpolated from sampled log-end offsets "
            "(a lower bound until the monitor's history covers the backlog).",
            labels=_PARTITION,
        )
        oldest = GaugeMetricFamily(
            "streams_monitor_oldest_queued_age_seconds",
            "Age of the first uncommitted record per partition (its broker timestamp), "
            "fetched or not, paused or not; 0 without lag.",
            labels=_PARTITION,
        )
        lane_lag = GaugeMetricFamily(
            "streams_monitor_lane_lag_records",
            "A stage's lag per lane (sum over the lane's partitions).",
            labels=["workflow", "stage", "lane"],
        )
        lane_oldest = GaugeMetricFamily(
            "streams_monitor_lane_oldest_queued_age_seconds",
            "A stage's oldest queued age per lane (max over the lane's partitions).",
            labels=["workflow", "stage", "lane"],
        )
        lane_time_lag = GaugeMetricFamily(
            "streams_monitor_lane_time_lag_seconds",
            "A stage's time lag per lane (max over the lane's partitions).",
            labels=["workflow", "stage", "lane"],
        )
        part_status = GaugeMetricFamily(
            "streams_monitor_partition_status",
            "Burrow status of a partition: 1 for the current status, 0 for the others.",
            labels=["workflow", "stage", "topic", "partition", "status"],
        )
        paused = GaugeMetricFamily(
            "streams_monitor_partition_paused",
            "1 for each reason a live worker holds a partition paused for.",
            labels=["workflow", "stage", "topic", "partition", "reason"],
        )
        group = GaugeMetricFamily(
            "streams_monitor_group_status",
            "Status of a stage's consumer group (worst partition, ERR on a dead-letter storm, "
            "UNKNOWN when unread): 1 for the current status, 0 for the others.",
            labels=["workflow", "stage", "status"],
        )
        stage_gauges = [
            GaugeMetricFamily(name, doc, labels=["workflow", "stage"])
            for name, doc in _STAGE_GAUGES
        ]
        dead = CounterMetricFamily(
            "streams_monitor_dead_letters",
            "Dead letters read from the dead-letter topic since this monitor started "
            "(it first re-reads the last minutes), by stage and reason.",
            labels=["workflow", "stage", "reason"],
        )
        decided = CounterMetricFamily(
            "streams_monitor_decisions",
            "Intake decisions read from the decisions topic since this monitor started, "
            "by outcome and reason.",
            labels=["workflow", "outcome", "reason"],
        )
        retries = CounterMetricFamily(
            "streams_monitor_retries",
            "Retries read from the retry-tier topics since this monitor started (it first "
            "re-reads the last minutes), by stage, tier (seconds) and reason.",
            labels=["workflow", "stage", "tier", "reason"],
        )
        escalations = CounterMetricFamily(
            "streams_monitor_escalations",
            "Escalations read from the escalations topic since this monitor started (it first "
            "re-reads the last minutes), by stage and reason.",
            labels=["workflow", "stage", "reason"],
        )
        review_gauges = [
            GaugeMetricFamily(name, doc, labels=["workflow", "stage"])
            for name, doc in _REVIEW_GAUGES
        ]
        breakers = GaugeMetricFamily(
            "streams_monitor_tool_breakers",
            "Live workers whose circuit breaker of a tool is in each state (closed, open, "
            "half_open), from the workers' pressure reports.",
            labels=["workflow", "tool", "state"],
        )
        for tool in s.tools:
            if tool.breakers:  # every state, 0 included, like the workers' breaker gauge
                for state in BREAKER_SEVERITY:
                    breakers.add_metric([wf, tool.name, state], tool.breakers.get(state, 0))
        admission = GaugeMetricFamily(
            "streams_monitor_admission",
            "1 for the intake's admission state from its newest decision of the last minute "
            "(accepting, delaying, downgrading, rejecting, no decisions).",
            labels=["workflow", "state"],
        )
        for st in s.stages:
            for p in st.partitions:
                labels = [wf, st.stage, p.lane, p.topic, str(p.partition)]
                lag.add_metric(labels, p.lag)
                time_lag.add_metric(labels, p.time_lag_s)
                oldest.add_metric(labels, p.oldest_age_s)
                for status in SEVERITY:
                    part_status.add_metric(
                        [wf, st.stage, p.topic, str(p.partition), status],
                        1.0 if status == p.status else 0.0,
                    )
                for reason in p.paused_by:
                    paused.add_metric([wf, st.stage, p.topic, str(p.partition), reason], 1.0)
            if st.status != "UNKNOWN":
                for lane in st.lanes:
                    lane_lag.add_metric([wf, st.stage, lane.lane], lane.lag)
                    lane_oldest.add_metric([wf, st.stage, lane.lane], lane.oldest_age_s)
                    lane_time_lag.add_metric([wf, st.stage, lane.lane], lane.time_lag_s)
            for each in _STATUSES:
                group.add_metric([wf, st.stage, each], 1.0 if each == st.status else 0.0)
            values = (st.in_flight, st.concurrency, st.workers_alive, st.max_queue_age_s)
            for gauge, value in zip(stage_gauges, values, strict=True):
                gauge.add_metric([wf, st.stage], value)
        for (stage, reason), n in sorted(s.dead_letters_seen.items()):
            dead.add_metric([wf, stage, reason], n)
        for (outcome, reason), n in sorted(s.decisions_seen.items()):
            decided.add_metric([wf, outcome, reason], n)
        for (stage, tier, reason), n in sorted(s.retries_seen.items()):
            retries.add_metric([wf, stage, tier, reason], n)
        for (stage, reason), n in sorted(s.escalations_seen.items()):
            escalations.add_metric([wf, stage, reason], n)
        for r in s.reviews:
            room = r.max_pending * max(1, r.workers_alive)
            review_values = (
                r.pending, r.max_pending, room, r.oldest_pending_age_s, r.max_wait_s,
                r.clear_rate_per_s,
            )  # fmt: skip
            for gauge, value in zip(review_gauges, review_values, strict=True):
                gauge.add_metric([wf, r.stage], value)
        admission.add_metric([wf, s.intake.admission], 1.0)
        reading_at = GaugeMetricFamily(
            "streams_monitor_reading_timestamp_seconds",
            "Wall-clock time of the monitor's latest round of readings.",
            labels=["workflow"],
        )
        reading_at.add_metric([wf], s.measured_at)
        reading_ok = GaugeMetricFamily(
            "streams_monitor_reading_ok",
            "1 when the latest round read every group from the broker, else 0.",
            labels=["workflow"],
        )
        reading_ok.add_metric([wf], 0.0 if s.error else 1.0)
        yield from (lag, time_lag, oldest, lane_lag, lane_oldest, lane_time_lag)
        yield from (part_status, paused, group, *stage_gauges)
        yield from (dead, decided, retries, escalations, *review_gauges, breakers)
        yield from (admission, reading_at, reading_ok)
        yield from _control_families(wf, s.control)


def _control_families(wf: str, control: dict[str, Any] | None) -> Iterator[Metric]:
    """The degradation level and operators' controls (W.control); nothing before the
    topic has been read to its end."""
    if control is None:
        return
    level = GaugeMetricFamily(
        "streams_monitor_degradation_level",
        "1 for the degradation level the workflow is at (forced or computed), 0 for the "
        "ladder's other levels; from W.control.",
        labels=["workflow", "level"],
    )
    for name in control["levels"]:
        level.add_metric([wf, name], 1.0 if name == control["level"] else 0.0)
    forced = GaugeMetricFamily(
        "streams_monitor_degradation_forced",
        "1 while an operator's forced level (streams control degrade) is in force.",
        labels=["workflow"],
    )
    forced.add_metric([wf], 0.0 if control["forced"] is None else 1.0)
    paused = GaugeMetricFamily(
        "streams_monitor_operator_paused",
        "1 for each stage an operator paused (streams control pause).",
        labels=["workflow", "stage"],
    )
    for stage in sorted(control["paused_stages"]):
        paused.add_metric([wf, stage], 1.0)
    forced_open = GaugeMetricFamily(
        "streams_monitor_tool_forced_open",
        "1 for each tool an operator forced open (streams control tool --open).",
        labels=["workflow", "tool"],
    )
    for tool in sorted(control["tools_forced_open"]):
        forced_open.add_metric([wf, tool], 1.0)
    yield from (level, forced, paused, forced_open)


class MonitorServer:
    """GET /metrics (Prometheus), /api/status (the snapshot as JSON), / (the status page).

    Binds ``host`` (default loopback: exposing it is the deployer's explicit choice) on
    ``port`` (0: any free port; ``port`` says which). Serves from daemon threads until
    ``close``. Raises MetricsPortUnavailable when the port cannot be bound.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", *, refresh_s: float = 2.0) -> None:
        self.collector = MonitorCollector()
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        handler = type("_Handler", (_Handler,), {"server_owner": self})
        try:
            self._httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise MetricsPortUnavailable(
                port, host, f"monitor port {port} on {host} cannot be opened: {reason}; "
                "pick another with --serve (0 picks a free one)",
            ) from exc  # fmt: skip
        self._httpd.daemon_threads = True
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self.refresh_s = refresh_s
        self.snapshot: MonitorSnapshot | None = None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="monitor-http", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def update(self, snapshot: MonitorSnapshot) -> None:
        self.snapshot = snapshot
        self.collector.update(snapshot)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)


class _Handler(BaseHTTPRequestHandler):
    server_owner: ClassVar[MonitorServer]

    def do_GET(self) -> None:
        owner = self.server_owner
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(owner.registry))
            return
        snapshot = owner.snapshot
        if path in ("/api/status", "/"):
            if snapshot is None:
                self._send(503, "text/plain; charset=utf-8", b"no reading yet, retry shortly\n")
            elif path == "/api/status":
                body = json.dumps(snapshot.to_dict(), indent=1).encode()
                self._send(200, "application/json", body)
            else:
                page = render_page(snapshot, refresh_s=owner.refresh_s).encode()
                self._send(200, "text/html; charset=utf-8", page)
            return
        self._send(404, "text/plain; charset=utf-8", b"not found: try /, /api/status, /metrics\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # scrapes every few seconds would flood stderr
