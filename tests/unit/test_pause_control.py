"""PauseControl: local bound, downstream pressure (urgent up to the hard bound), lanes."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest

from streams.policy.downstream import PressureSignal
from streams.runtime.buffers import PartitionBuffer
from streams.runtime.pause_control import PauseControl
from streams.runtime.pauses import PauseSet
from streams.runtime.pressure_feed import PressureSnapshot
from streams.topology import Topology, parse_topology
from streams.types import Lane, Record, TopicPartition

H = "tests.integration.handlers:noop"
NOW = 1_000_000.0
URGENT = TopicPartition("wf.plan.urgent", 0)
STANDARD = TopicPartition("wf.plan.standard", 0)


def _topology(**plan: Any) -> Topology:
    stages = {
        "plan": {
            "handler": H,
            "downstream": ["act"],
            "concurrency": 2,
            "partition_buffer": 10,
            "pressure": {"lag": {"pause": 100, "resume": 50}, "min_dwell_s": 0},
            **plan,
        },
        "act": {"handler": H, "max_lag": 500},
    }
    data = {"workflow": "wf", "lanes": ["urgent", "standard"], "stages": stages}
    return parse_topology(data, "wf.yaml", validate_handlers=False)


def _control(**plan: Any) -> tuple[PauseControl, PauseSet, dict[TopicPartition, PartitionBuffer]]:
    topology = _topology(**plan)
    pauses = PauseSet()
    control = PauseControl(topology, topology.stages["plan"], pauses)
    buffers: dict[TopicPartition, PartitionBuffer] = {}
    lanes: tuple[tuple[TopicPartition, Lane], ...] = ((URGENT, "urgent"), (STANDARD, "standard"))
    for tp, lane in lanes:
        buffers[tp] = PartitionBuffer(tp, lane, 10)
        control.assign(tp)
    return control, pauses, buffers


_OFFSETS = itertools.count()


def _fill(buffer: PartitionBuffer, n: int) -> None:
    for _ in range(n):
        i = next(_OFFSETS)  # offsets only grow, also across a test's clear() and refill
        buffer.accept(Record(buffer.tp.topic, 0, i, f"k{i}".encode(), b"", 0), None)


def _snapshot(act_lag: int) -> PressureSnapshot:
    signal = PressureSignal("act", act_lag, 0.0, None, NOW)
    return PressureSnapshot(signals={"act": signal})


def _reasons(pauses: PauseSet, tp: TopicPartition) -> set[str]:
    return set(pauses.reasons(tp))


def test_a_full_partition_alone_pauses_and_resumes_below_its_low_water_mark() -> None:
    control, pauses, buffers = _control()
    _fill(buffers[STANDARD], 10)
    control.update(buffers, 0, _snapshot(0), {}, NOW, 0.0)
    assert _reasons(pauses, STANDARD) == {"local_bound"}
    assert _reasons(pauses, URGENT) == set()
    buffers[STANDARD].waiting.clear()
    control.update(buffers, 0, _snapshot(0), {}, NOW, 1.0)
    assert _reasons(pauses, STANDARD) == set()


def test_downstream_lag_pauses_standard_while_urgent_flows_until_the_hard_bound() -> None:
    control, pauses, buffers = _control()
    control.update(buffers, 0, _snapshot(150), {}, NOW, 0.0)  # over pause (100), under max_lag
    assert control.stage_paused and control.last_reason
    assert "downstream" in _reasons(pauses, STANDARD)
    assert "downstream" not in _reasons(pauses, URGENT)
    control.update(buffers, 0, _snapshot(600), {}, NOW, 1.0)  # act at its max_lag (500)
    assert "downstream" in _reasons(pauses, URGENT)
    control.update(buffers, 0, _snapshot(10), {}, NOW, 2.0)  # below resume (50)
    assert not control.stage_paused
    assert _reasons(pauses, STANDARD) == _reasons(pauses, URGENT) == set()


def test_what_this_worker_sent_since_the_reading_counts_as_downstream_lag() -> None:
    control, _, buffers = _control()
    snapshot = PressureSnapshot(
        signals={"act": PressureSignal("act", 60, 0.0, None, NOW)}, sent_marks={"act": 1000}
    )
    control.update(buffers, 0, snapshot, {"act": 1000}, NOW, 0.0)
    assert not control.stage_paused  # 60 read, nothing sent since
    control.update(buffers, 0, snapshot, {"act": 1050}, NOW, 1.0)
    assert control.stage_paused  # 60 + 50 sent since the reading > 100


def test_a_lower_lane_pauses_while_a_higher_lane_has_backlog_at_the_cap() -> None:
    control, pauses, buffers = _control()
    _fill(buffers[URGENT], 3)
    control.update(buffers, 2, _snapshot(0), {}, NOW, 0.0)  # 2 in flight = concurrency
    assert _reasons(pauses, STANDARD) == {"lane"}
    control.update(buffers, 1, _snapshot(0), {}, NOW, 1.0)  # below the cap: no need
    assert _reasons(pauses, STANDARD) == set()


def test_a_background_stage_pauses_every_lane_and_says_it_yields() -> None:
    topology = parse_topology(
        {
            "workflow": "wf",
            "lanes": ["urgent", "standard"],
            "stages": {
                "plan": {"handler": H},
                "enrich": {
                    "handler": H,
                    "background": True,
                    "input_topic": "wf.completed",
                    "yields_to": ["plan"],
                    "pressure": {"lag": {"pause": 100, "resume": 50}, "min_dwell_s": 0},
                },
            },
        },
        "wf.yaml",
        validate_handlers=False,
    )
    pauses = PauseSet()
    control = PauseControl(topology, topology.stages["enrich"], pauses)
    tp = TopicPartition("wf.completed", 0)
    lane: Lane = "urgent"  # even work that arrived urgent waits for the foreground
    buffers = {tp: PartitionBuffer(tp, lane, 10)}
    control.assign(tp)
    signal = PressureSignal("plan", 500, 0.0, None, NOW)
    control.update(buffers, 0, PressureSnapshot(signals={"plan": signal}), {}, NOW, 0.0)
    assert _reasons(pauses, tp) == {"yield_to_foreground"}


def test_a_partition_assigned_during_a_stage_pause_starts_paused() -> None:
    control, pauses, buffers = _control()
    control.update(buffers, 0, _snapshot(150), {}, NOW, 0.0)
    late = TopicPartition("wf.plan.standard", 1)
    control.assign(late)
    assert _reasons(pauses, late) == {"downstream"}


LOGGER = "streams.runtime.pause_log"


def _lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= level]


def test_a_pause_held_for_100_updates_logs_one_line_with_its_cause_and_readings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    control, _, buffers = _control()
    for i in range(100):  # the lag moves on every update, the pause holds
        control.update(buffers, 0, _snapshot(150 + i), {}, NOW, 0.5 * i)
    assert control.stage_paused
    (line,) = _lines(caplog)
    assert line.startswith("stage plan paused (downstream): act.lag=150>=100")
    assert "act lag 150, oldest age 0 s, p95 n/a" in line


def test_a_resume_logs_one_line_with_how_long_the_stage_was_paused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    control, _, buffers = _control()
    for i in range(20):
        control.update(buffers, 0, _snapshot(150), {}, NOW, 0.5 * i)
    caplog.clear()
    for i in range(20, 40):
        control.update(buffers, 0, _snapshot(10), {}, NOW, 0.5 * i)  # below resume (50)
    assert not control.stage_paused
    (line,) = _lines(caplog)
    assert line.startswith("stage plan resumed (downstream) after 10.0 s paused")
    assert "act lag 10" in line


def test_a_change_of_cause_while_paused_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    control, _, buffers = _control()
    control.update(buffers, 0, _snapshot(150), {}, NOW, 0.0)
    stale = PressureSnapshot(signals={"act": None})  # the reading goes missing
    for i in range(1, 50):
        control.update(buffers, 0, stale, {}, NOW, float(i))
    assert control.stage_paused
    paused, changed, urgent = _lines(caplog)  # each once, in 50 updates
    assert paused.startswith("stage plan paused (downstream): act.lag=150>=100")
    assert changed.startswith("stage plan still paused (downstream), now by act.missing")
    assert urgent == "stage plan: urgent lane paused too: act has no reading"


def test_a_flapping_local_bound_logs_no_info_line_per_flap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    control, _, buffers = _control()
    for i in range(200):  # fill to the bound, drain, fill, ... every update
        buffers[STANDARD].waiting.clear()
        _fill(buffers[STANDARD], 10 if i % 2 == 0 else 0)
        control.update(buffers, 0, _snapshot(0), {}, NOW, 0.1 * i)
    assert len(_lines(caplog, logging.INFO)) <= 1
    debug = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.DEBUG]
    assert len(debug) == 200  # one per change of one partition, for whoever turns it on
