"""Degradation and operator controls against the real broker: a queue age crossing a
level's threshold moves every worker and the intake to it within a second and back after
the dwell; a level's pause_stages stops a background stage; require_review sends a record
to the review stage first; a forced level and a manual pause survive a worker restart;
`streams control` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams.control.records import forced_level, manual_pause
from streams.control.writer import ControlWriter
from streams.events import TaskEvent
from streams.intake.requests import RunRequest
from streams.intake.service import Intake
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.review import ReviewDesk, review_worker
from streams.runtime.context import HandlerContext
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.serde import SchemaStore, Serde
from streams.testing import WorkerThread, publish, read_records
from streams.topology import Topology

from .monitor_helpers import wait_for
from .process_helpers import start, workers, write_workflow
from .workflows import events

__all__ = ["workers"]  # the fixture, used by name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FAST = WorkerOptions(pressure_refresh_s=0.2, report_interval_s=0.3, shutdown_grace_s=1.0)
REPO_ROOT = Path(__file__).resolve().parents[2]
NOOP = "tests.integration.handlers:noop"
NEVER = {"oldest_age_s": {"enter": 100_000, "exit": 1}}  # a level reached only when forced


def workflow(admin: Admin, tmp_path: Path, stages: dict[str, Any], **top: Any) -> Topology:
    """A uniquely named workflow, written to tmp_path/<name>.yaml (the CLI reads it), with
    its topics created."""
    topology, _path = write_workflow(
        admin, tmp_path, stages, lanes=["urgent", "standard"], partitions=2, handler=NOOP, **top
    )
    return topology


class Calls:
    """A handler that records what it saw: run id, review decision header, level."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None, str]] = []
        self._lock = threading.Lock()

    def __call__(self, event: TaskEvent, ctx: HandlerContext) -> None:
        decision = next(
            (v.decode() for k, v in ctx.record.headers if k == "streams.review.decision"), None
        )
        with self._lock:
            self.seen.append((event.run_id, decision, ctx.degradation.level))

    def count(self) -> int:
        # Not __len__: an empty Calls would be falsy, and StageWorker's `handler or the
        # topology's` would take the topology's handler instead.
        with self._lock:
            return len(self.seen)


def write(client: ClientConfig, topology: Topology, *records: Any) -> None:
    writer = ControlWriter(topology.control_topic, client)
    try:
        for record in records:
            writer.write(record)
    finally:
        writer.close()


def paused_for(worker: StageWorker, reason: str) -> bool:
    parts = worker.partitions()
    return bool(parts) and all(reason in p.paused_by for p in parts.values())


def now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- the ladder


def test_queue_age_moves_every_worker_and_the_intake_within_a_second_and_back_after_the_dwell(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread], tmp_path: Path
) -> None:
    dwell_s = 3.0
    topology = workflow(
        admin,
        tmp_path,
        {"plan": {"downstream": ["act"]}, "act": {}},
        degradation={
            "min_dwell_s": dwell_s,
            "levels": {
                "lean": {
                    "when": {"oldest_age_s": {"stage": "plan", "enter": 2, "exit": 1}},
                    "knobs": {"model": "small"},
                    "intake": {"lanes": {"standard": "reject"}},
                }
            },
        },
    )
    acts = [start(workers, StageWorker(topology, "act", client_config, options=FAST)) for _ in "ab"]
    intake = Intake(topology, client_config).start()
    try:
        levels: dict[str, Callable[[], str]] = {
            "act-1": lambda: acts[0].degradation().view.level,
            "act-2": lambda: acts[1].degradation().view.level,
            "intake": lambda: intake.degradation().view.level,
        }
        assert {name: level() for name, level in levels.items()} == dict.fromkeys(levels, "normal")
        # Nothing runs `plan`: its one record's age grows past enter (2 s).
        published_at = time.monotonic()
        publish(
            client_config,
            topology.stages["plan"].input_topics_by_lane["standard"],
            events(topology, "plan", 1),
        )
        entered = {
            name: wait_for(lambda level=level: level() == "lean", 15, f"{name} at lean")  # type: ignore[misc]
            for name, level in levels.items()
        }
        assert max(entered.values()) - min(entered.values()) <= 1.0, entered
        assert min(entered.values()) - published_at >= 2.0 - 0.5  # not before the age
        assert max(entered.values()) - published_at <= 2.0 + 2.0, entered
        # The intake acts on it: standard runs are refused with the reason, urgent enter.
        refused = intake.submit(RunRequest("tenant-a", b"{}", lane="standard"))
        assert (refused.outcome, refused.reason) == ("rejected", "degraded")
        assert refused.retry_after_s is not None and refused.retry_after_s >= 1.0
        assert intake.submit(RunRequest("tenant-a", b"{}", lane="urgent")).outcome == "accepted"
        decisions = read_records(client_config, topology.decisions_topic, 2, expect=2, timeout_s=10)
        serde = Serde(SchemaStore(), "dev.streams.AdmissionDecisionRecord")
        recorded = [serde.decode(r.value) for r in decisions if r.value is not None]
        assert {(d["reason"], d["degradation_level"]) for d in recorded} == {
            ("degraded", "lean"),
            ("admitted", "lean"),
        }
        sample = acts[0].registry.get_sample_value
        assert (
            sample("streams_degradation_level", {"workflow": topology.workflow, "level": "lean"})
            == 1
        )
        # A plan worker drains the queue: everyone returns to normal only after the dwell.
        start(workers, StageWorker(topology, "plan", client_config, options=FAST))
        drained = wait_for(
            lambda: (
                all(level() == "lean" for level in levels.values())
                and _plan_lag(admin, topology) == 0
            ),
            15,
            "plan drained",
        )
        left = {
            name: wait_for(lambda level=level: level() == "normal", 15, f"{name} back to normal")  # type: ignore[misc]
            for name, level in levels.items()
        }
        assert max(left.values()) - min(left.values()) <= 1.0, left
        assert min(left.values()) - drained >= dwell_s - 1.0, (drained, left)  # the dwell
    finally:
        intake.close()


def _plan_lag(admin: Admin, topology: Topology) -> int:
    from streams.clock import SystemClock
    from streams.kafka.lag_reader import LagReader

    stage = topology.stages["plan"]
    reader = LagReader(admin, SystemClock())
    return reader.read(stage.consumer_group, stage.input_topics).total_lag


def test_pause_stages_stops_a_background_stage_at_its_level(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread], tmp_path: Path
) -> None:
    topology = workflow(
        admin,
        tmp_path,
        {"plan": {}, "enrich": {"background": True}},
        degradation={"levels": {"lean": {"when": NEVER, "pause_stages": ["enrich"]}}},
    )
    calls = Calls()
    enrich = start(
        workers, StageWorker(topology, "enrich", client_config, options=FAST, handler=calls)
    )
    topic = topology.stages["enrich"].input_topics_by_lane["background"]
    publish(client_config, topic, events(topology, "enrich", 3, lane="background"))
    wait_for(lambda: calls.count() == 3, 20, "3 handled at normal")
    write(
        client_config,
        topology,
        forced_level(topology.workflow, "lean", who="test", why=None, at_ms=now_ms()),
    )
    wait_for(lambda: paused_for(enrich, "degraded"), 5, "enrich paused by the level")
    publish(client_config, topic, events(topology, "enrich", 3, lane="background"))
    time.sleep(2.0)
    assert calls.count() == 3  # stopped at lean
    write(
        client_config,
        topology,
        forced_level(topology.workflow, "lean", who="test", why=None, at_ms=now_ms(), active=False),
    )
    wait_for(lambda: calls.count() == 6, 20, "the rest handled once back at normal")


def test_require_review_sends_a_record_to_the_review_stage_first(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread], tmp_path: Path
) -> None:
    topology = workflow(
        admin,
        tmp_path,
        {
            "plan": {"downstream": ["act"]},
            "approve": {
                "kind": "review",
                "handler": None,
                "downstream": ["act"],
                "review": {"max_pending": 5, "max_wait_s": 60, "on_timeout": "decline"},
            },
            "act": {},
        },
        degradation={
            "levels": {"essential": {"when": NEVER, "require_review": ["act"], "knobs": {"k": 1}}}
        },
    )
    write(
        client_config,
        topology,
        forced_level(topology.workflow, "essential", who="test", why=None, at_ms=now_ms()),
    )
    calls = Calls()
    act = start(workers, StageWorker(topology, "act", client_config, options=FAST, handler=calls))
    start(workers, review_worker(topology, "approve", client_config, options=FAST))
    wait_for(lambda: act.degradation().view.level == "essential", 5, "act at essential")
    [event] = events(topology, "act", 1)
    publish(client_config, topology.stages["act"].input_topics_by_lane["standard"], [event])
    desk = ReviewDesk(topology, client_config)
    try:
        wait_for(lambda: [r.run_id for r in desk.pending()] == [event.run_id], 20, "pending review")
        assert calls.count() == 0  # not handled before a person decided
        desk.decide(event.run_id, "approve", note=None, reviewer="ana")
        wait_for(lambda: calls.count() == 1, 20, "act handles the reviewed record")
        assert calls.seen == [(event.run_id, "approve", "essential")]
        time.sleep(1.0)
        assert calls.count() == 1  # the decided record is not sent to review again
    finally:
        desk.close()


def test_a_forced_level_and_a_manual_pause_survive_a_worker_restart(
    admin: Admin, client_config: ClientConfig, tmp_path: Path
) -> None:
    topology = workflow(
        admin,
        tmp_path,
        {"plan": {"downstream": ["act"]}, "act": {}},
        degradation={"levels": {"lean": {"when": NEVER}}},
    )
    write(
        client_config,
        topology,
        forced_level(topology.workflow, "lean", who="ana", why="incident", at_ms=now_ms()),
        manual_pause(topology.workflow, "act", who="ana", why="crm down", at_ms=now_ms()),
    )
    calls = Calls()
    first = WorkerThread(StageWorker(topology, "act", client_config, options=FAST, handler=calls))
    first.start()
    try:
        now = first.worker.degradation()
        assert now.view.level == "lean" and now.view.forced
        assert now.paused_by_operator["act"].why == "crm down"
        wait_for(lambda: paused_for(first.worker, "operator"), 10, "act paused by the operator")
        publish(
            client_config,
            topology.stages["act"].input_topics_by_lane["standard"],
            events(topology, "act", 2),
        )
        time.sleep(1.5)
        assert calls.count() == 0
    finally:
        first.stop()
    second = WorkerThread(StageWorker(topology, "act", client_config, options=FAST, handler=calls))
    second.start()
    try:
        now = second.worker.degradation()  # known before its first fetch
        assert now.view.level == "lean" and now.view.forced and "act" in now.paused_by_operator
        wait_for(lambda: paused_for(second.worker, "operator"), 20, "paused again after restart")
        time.sleep(2.0)
        assert calls.count() == 0  # the restarted worker never fetched for its handler
        write(
            client_config,
            topology,
            manual_pause(
                topology.workflow, "act", who="bo", why=None, at_ms=now_ms(), active=False
            ),
        )
        wait_for(lambda: calls.count() == 2, 20, "handled after resume")
        assert {level for _, _, level in calls.seen} == {"lean"}  # still forced
    finally:
        second.stop()


# --------------------------------------------------------------------------- the CLI


def _control(path: Path, bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "streams", "control", str(path), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_streams_control_end_to_end(
    admin: Admin,
    client_config: ClientConfig,
    bootstrap: str,
    workers: list[WorkerThread],
    tmp_path: Path,
) -> None:
    topology = workflow(
        admin,
        tmp_path,
        {"plan": {"downstream": ["act"]}, "act": {"tools": ["crm"]}},
        tools={"crm": {}},
        degradation={"levels": {"lean": {"when": NEVER}}},
    )
    path = Path(topology.source)
    act = start(workers, StageWorker(topology, "act", client_config, options=FAST))

    done = _control(
        path, bootstrap, "pause", "--stage", "act", "--reason", "crm down", "--who", "ana"
    )
    assert done.returncode == 0, done.stderr
    assert "stage act paused by ana (crm down)" in done.stdout
    wait_for(lambda: paused_for(act, "operator"), 1.5, "act paused within ~1 s")

    done = _control(path, bootstrap, "degrade", "--level", "lean", "--for", "30m", "--who", "ana")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: act.degradation().view.level == "lean", 1.5, "lean within ~1 s")

    done = _control(path, bootstrap, "tool", "--name", "crm", "--open", "--who", "ana")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: paused_for(act, "tool_unavailable"), 2.0, "crm forced open")

    shown = _control(path, bootstrap, "show", "--json")
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert view["level"] == "lean"
    assert view["forced"]["level"] == "lean" and view["forced"]["who"] == "ana"
    assert view["forced"]["expires_at_ms"] - view["forced"]["at_ms"] == 30 * 60 * 1000
    assert view["paused_stages"]["act"] == {
        "who": "ana",
        "why": "crm down",
        "at_ms": view["paused_stages"]["act"]["at_ms"],
    }
    assert set(view["tools_forced_open"]) == {"crm"}

    refused = _control(path, bootstrap, "pause", "--stage", "nope")
    assert refused.returncode == 1 and "unknown stage 'nope'" in refused.stderr

    done = _control(path, bootstrap, "clear", "--who", "bo", "--reason", "over")
    assert done.returncode == 0, done.stderr
    wait_for(
        lambda: (
            act.degradation().view.level == "normal" and not act.degradation().paused_by_operator
        ),
        1.5,
        "everything cleared within ~1 s",
    )
    wait_for(lambda: not any(p.paused_by for p in act.partitions().values()), 5, "act fetching")
    view = json.loads(_control(path, bootstrap, "show", "--json").stdout)
    assert (
        view["forced"] is None and view["paused_stages"] == {} and view["tools_forced_open"] == {}
    )


def test_a_worker_of_a_workflow_applied_before_w_control_existed_creates_it(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread], tmp_path: Path
) -> None:
    topology = workflow(admin, tmp_path, {"plan": {}})
    admin.delete_topics([topology.control_topic])
    wait_for(lambda: topology.control_topic not in admin.partition_counts(), 20, "deleted")
    start(workers, StageWorker(topology, "plan", client_config, options=FAST))
    assert admin.partition_counts().get(topology.control_topic) == 1


def test_a_manual_pause_holds_across_a_rebalance(
    admin: Admin, client_config: ClientConfig, workers: list[WorkerThread], tmp_path: Path
) -> None:
    topology = workflow(admin, tmp_path, {"plan": {"partitions": 4}})
    write(
        client_config,
        topology,
        manual_pause(topology.workflow, "plan", who="ana", why=None, at_ms=now_ms()),
    )
    calls = Calls()
    first = start(
        workers, StageWorker(topology, "plan", client_config, options=FAST, handler=calls)
    )
    wait_for(lambda: len(first.partitions()) == 8 and paused_for(first, "operator"), 20, "paused")
    second = start(
        workers, StageWorker(topology, "plan", client_config, options=FAST, handler=calls)
    )
    wait_for(
        lambda: (
            len(first.partitions()) + len(second.partitions()) == 8 and len(second.partitions()) > 0
        ),
        30,
        "partitions shared after the rebalance",
    )
    assert paused_for(first, "operator") and paused_for(second, "operator")
    publish(
        client_config,
        topology.stages["plan"].input_topics_by_lane["standard"],
        events(topology, "plan", 4),
    )
    time.sleep(2.0)
    assert calls.count() == 0
