"""The monitor's pure parts: per-minute counts, a stage's view from readings (lag, time lag,
oldest age from the first uncommitted record, pauses, workers, status), the intake view,
the terminal table at 80 columns, the heartbeat line, the status page and the Prometheus
series. Fake times, no broker."""

from __future__ import annotations

import io
import json

from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from streams.kafka.lag_reader import GroupLag, PartitionLag
from streams.monitor.counts import RecentCounts
from streams.monitor.exporter import MonitorCollector
from streams.monitor.model import DecisionSeen, MonitorSnapshot
from streams.monitor.page import render_page
from streams.monitor.stage_view import intake_view, stage_view, worker_views
from streams.monitor.view import heartbeat_line, render_table
from streams.policy.group_status import OffsetSample
from streams.runtime.pressure_reports import PausedPartition, PressureReport
from streams.topology import Topology, parse_topology
from streams.types import TopicPartition

NOW = 1_700_000_100.0


def topology() -> Topology:
    return parse_topology(
        {
            "workflow": "wf",
            "lanes": ["urgent", "standard"],
            "stages": {
                "plan": {"handler": "x:y", "downstream": ["act"], "concurrency": 8},
                "act": {"handler": "x:y", "max_queue_age_s": 120},
            },
        },
        "<test>",
        validate_handlers=False,
    )


def tp(stage: str, lane: str, p: int) -> TopicPartition:
    return TopicPartition(f"wf.{stage}.{lane}", p)


def report(worker: str, at: float, *paused: PausedPartition, in_flight: int = 2) -> PressureReport:
    return PressureReport(
        stage="plan", worker=worker, p95_latency_s=0.2, in_flight=in_flight, reported_at=at,
        pressure_paused=bool(paused), concurrency=8, paused=paused,
    )  # fmt: skip


def test_recent_counts_per_minute_and_bounded() -> None:
    counts: RecentCounts[str] = RecentCounts(keep_s=300, max_events=5)
    for at in (NOW - 90, NOW - 30, NOW - 10, NOW - 1):
        counts.add("timeout", at)
    counts.add("expired", NOW - 5)
    assert counts.per_minute(NOW) == {"timeout": 3.0, "expired": 1.0}
    counts.add("expired", NOW)  # a sixth event: the oldest goes
    assert counts.per_minute(NOW + 30) == {"timeout": 2.0, "expired": 2.0}
    assert counts.per_minute(NOW + 1000) == {}
    assert len(counts) <= 5


def test_pressure_reports_round_trip_and_read_old_ones() -> None:
    r = report("w1", NOW, PausedPartition("wf.plan.standard", 1, ("downstream", "lane")))
    assert PressureReport.from_bytes(r.to_bytes()) == r
    old = PressureReport.from_bytes(
        json.dumps(
            {
                "stage": "plan",
                "worker": "w0",
                "p95_latency_s": None,
                "in_flight": 1,
                "reported_at": NOW,
            }
        ).encode()
    )
    assert old.concurrency is None and old.paused == ()


def plan_view() -> MonitorSnapshot:
    t = topology()
    std = [tp("plan", "standard", p) for p in range(2)]
    urg = tp("plan", "urgent", 0)
    lag = GroupLag(
        "wf.plan",
        (
            PartitionLag(std[0], end_offset=40, committed=10, lag=30, oldest_age_s=12.0),
            PartitionLag(std[1], end_offset=5, committed=5, lag=0, oldest_age_s=0.0),
            PartitionLag(urg, end_offset=3, committed=None, lag=3, oldest_age_s=1.0),
        ),
        measured_at=NOW,
    )
    windows = {
        std[0]: [OffsetSample(NOW - 20, 10, 35), OffsetSample(NOW, 10, 40)],
        std[1]: [OffsetSample(NOW, 5, 5)],
        urg: [OffsetSample(NOW - 20, None, 3), OffsetSample(NOW, None, 3)],
    }
    reports = [
        report("w1", NOW - 1, PausedPartition(std[0].topic, 0, ("downstream",))),
        report("w2", NOW - 60, PausedPartition(std[1].topic, 1, ("local_bound",))),  # gone
    ]
    plan = stage_view(
        t.stages["plan"],
        lag,
        windows,
        first_record_ms={std[0]: int((NOW - 45) * 1000)},
        reports=reports,
        dead_letters_per_min={"timeout": 2.0},
        now=NOW,
        storm_per_min=60.0,
    )
    act = stage_view(
        t.stages["act"], None, {}, first_record_ms={}, reports=[], dead_letters_per_min={},
        now=NOW, storm_per_min=60.0,
    )  # fmt: skip
    decisions = [
        DecisionSeen("accepted", "admitted", NOW - 30),
        DecisionSeen("rejected", "workflow_full", NOW - 2),
    ]
    return MonitorSnapshot(
        workflow="wf",
        measured_at=NOW,
        error=None,
        stages=(plan, act),
        workers=worker_views(reports, now=NOW, fresh_within_s={"plan": 5.0}),
        intake=intake_view(decisions, now=NOW),
        dead_letters_per_min={"timeout": 2.0},
        dead_letters_seen={("plan", "timeout"): 7},
        decisions_seen={("rejected", "workflow_full"): 3},
    )


def test_stage_view_from_readings() -> None:
    plan = plan_view().stages[0]
    assert plan.lag == 33
    standard = next(lane for lane in plan.lanes if lane.lane == "standard")
    assert standard.lag == 30
    assert standard.time_lag_s == 12.0
    # The first uncommitted record is 45 s old: older than the time-lag estimate says.
    assert standard.oldest_age_s == 45.0
    urgent = next(lane for lane in plan.lanes if lane.lane == "urgent")
    assert urgent.oldest_age_s == 1.0  # no peek: falls back to the time-lag estimate
    assert plan.workers_alive == 1  # w2 reported a minute ago: gone, its pause not shown
    assert plan.in_flight == 2 and plan.concurrency == 8
    assert plan.paused == {"downstream": 1}
    by_tp = {(p.topic, p.partition): p for p in plan.partitions}
    assert by_tp[("wf.plan.standard", 0)].paused_by == ("downstream",)
    assert by_tp[("wf.plan.standard", 0)].status == "STALL"
    assert by_tp[("wf.plan.standard", 1)].paused_by == ()
    assert plan.status == "STALL"
    assert plan.dead_letters_per_min == {"timeout": 2.0}


def test_a_stage_never_read_is_unknown_not_ok() -> None:
    act = plan_view().stages[1]
    assert act.status == "UNKNOWN" and act.lag == 0 and act.partitions == ()


def test_a_stage_without_input_topics_is_unknown_not_ok() -> None:
    t = topology()
    view = stage_view(
        t.stages["act"], GroupLag("wf.act", (), NOW), {}, first_record_ms={}, reports=[],
        dead_letters_per_min={}, now=NOW, storm_per_min=60.0,
    )  # fmt: skip
    assert view.status == "UNKNOWN" and "topology apply" in view.why
    assert {lane.status for lane in view.lanes} == {"UNKNOWN"}


def test_dead_letter_storm_makes_err() -> None:
    t = topology()
    act_lag = GroupLag(
        "wf.act", (PartitionLag(tp("act", "standard", 0), 5, 5, 0, 0.0),), measured_at=NOW
    )
    view = stage_view(
        t.stages["act"], act_lag, {}, first_record_ms={}, reports=[],
        dead_letters_per_min={"handler_error": 50.0, "timeout": 20.0}, now=NOW,
        storm_per_min=60.0,
    )  # fmt: skip
    assert view.status == "ERR"


def test_intake_view_says_what_the_latest_decision_says() -> None:
    intake = plan_view().intake
    assert intake.decisions_per_min == {"accepted": 1.0, "rejected": 1.0}
    assert intake.admission == "rejecting"
    assert intake.admission_reason == "workflow_full"
    assert intake_view([], now=NOW).admission == "no decisions"


def test_json_is_plain_data() -> None:
    data = json.loads(json.dumps(plan_view().to_dict()))
    assert data["stages"][0]["stage"] == "plan"
    assert data["stages"][0]["partitions"][0]["paused_by"] == ["downstream"]
    assert data["intake"]["admission"] == "rejecting"
    assert {w["worker"]: w["alive"] for w in data["workers"]} == {"w1": True, "w2": False}


def test_table_is_readable_at_80_columns() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=False, color_system=None)
    console.print(render_table(plan_view()))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "plan" in text and "STALL" in text and "downstream" in text and "45s" in text
    assert "rejecting" in text


def test_heartbeat_line_names_each_stage() -> None:
    line = heartbeat_line(plan_view())
    assert "\n" not in line
    assert "plan STALL lag 33" in line and "act UNKNOWN" in line and "paused downstream" in line


def test_status_page_refreshes_and_shows_pauses_and_ages() -> None:
    page = render_page(plan_view(), refresh_s=2)
    assert '<meta http-equiv="refresh" content="2">' in page
    assert "downstream" in page and "45s" in page and "STALL" in page
    assert "<script" not in page  # no build step, nothing to run


def test_prometheus_series_from_the_snapshot() -> None:
    registry = CollectorRegistry()
    collector = MonitorCollector()
    registry.register(collector)
    collector.update(plan_view())
    text = generate_latest(registry).decode()
    get = registry.get_sample_value
    labels = {"workflow": "wf", "stage": "plan", "lane": "standard",
              "topic": "wf.plan.standard", "partition": "0"}  # fmt: skip
    assert get("streams_monitor_lag_records", labels) == 30
    assert get("streams_monitor_time_lag_seconds", labels) == 12.0
    assert get("streams_monitor_oldest_queued_age_seconds", labels) == 45.0
    paused = {k: v for k, v in labels.items() if k != "lane"} | {"reason": "downstream"}
    assert get("streams_monitor_partition_paused", paused) == 1
    status = {"workflow": "wf", "stage": "plan", "status": "STALL"}
    assert get("streams_monitor_group_status", status) == 1
    assert get("streams_monitor_group_status", status | {"status": "OK"}) == 0
    assert get("streams_monitor_workers_alive", {"workflow": "wf", "stage": "plan"}) == 1
    assert get("streams_monitor_max_queue_age_seconds", {"workflow": "wf", "stage": "act"}) == 120
    decided = {"workflow": "wf", "outcome": "rejected", "reason": "workflow_full"}
    assert get("streams_monitor_decisions_total", decided) == 3
    dead = {"workflow": "wf", "stage": "plan", "reason": "timeout"}
    assert get("streams_monitor_dead_letters_total", dead) == 7
    assert get("streams_monitor_admission", {"workflow": "wf", "state": "rejecting"}) == 1
    assert "streams_monitor_reading_timestamp_seconds" in text
