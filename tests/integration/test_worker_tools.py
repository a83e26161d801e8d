"""Tools against the real broker: a fleet-wide rate across two worker processes, a failing
tool that opens its breaker and pauses the stage (tool_unavailable) until it recovers,
ToolSaturated after max_wait_s, and a handler's fallback path."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.errors import ToolSaturated
from streams.events import DeadLetterCodec, TaskEvent
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig, GroupProtocol
from streams.runtime.options import WorkerOptions
from streams.runtime.pressure_reports import PressureReport
from streams.runtime.tools import ToolRegistry
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish, read_dead_letters, read_events
from streams.topology import load_topology

from .process_helpers import TopicReader, committed, worker_processes, write_workflow
from .tool_handlers import CrmDown, read_calls
from .workflows import events, make_workflow

pytestmark = [pytest.mark.integration]


@pytest.mark.timeout(150)
def test_two_worker_processes_share_a_tools_rate(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    rate, burst, window_s = 20.0, 2.0, 15.0
    topology, path = write_workflow(
        admin,
        tmp_path,
        {"work": {"handler": "tests.integration.tool_handlers:call_api"}},
        partitions=6,
    )
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["tools"] = {"api": {"rate": rate, "burst": burst, "max_wait_s": 60}}
    data["stages"]["work"]["tools"] = ["api"]
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    topology = load_topology(path)
    # Enough backlog to keep both busy at the ceiling for the whole window and more.
    publish(client_config, topology.stages["work"].input_topics[0], events(topology, "work", 1200))
    log = tmp_path / "calls.log"
    log.touch()
    with worker_processes(bootstrap, tmp_path) as procs:
        env = {"TOOL_CALL_LOG": str(log)}
        procs.start(path, "work", env=env)
        procs.start(path, "work", env=env)
        deadline = time.monotonic() + 60
        while len({pid for _, pid in read_calls(str(log))}) < 2:
            assert time.monotonic() < deadline, f"both workers never called\n{procs.logs()}"
            time.sleep(0.5)
        time.sleep(4.0)  # past the join's rebalance: its overlap is the documented worst case
        start = time.time()
        time.sleep(window_s + 1.0)
        calls = [(t, pid) for t, pid in read_calls(str(log)) if start <= t < start + window_s]
    by_pid: dict[int, int] = {}
    for _, pid in calls:
        by_pid[pid] = by_pid.get(pid, 0) + 1
    ceiling = rate * window_s + burst
    # Without the fleet-wide share each process would take the whole rate: about twice this.
    assert len(calls) <= ceiling, f"{len(calls)} calls in {window_s} s over {ceiling}: {by_pid}"
    assert len(calls) >= 0.8 * rate * window_s, f"only {len(calls)} calls: {by_pid}"
    assert len(by_pid) == 2, by_pid  # both processes called within the window
    # Any window of 1 s holds at most the ceiling's worth too (no burst bunching).
    times = sorted(t for t, _ in calls)
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        assert i - j + 1 <= rate * 1.0 + burst + 1, f"{i - j + 1} calls in 1 s ending {t}"


@pytest.mark.timeout(120)
def test_a_failing_tool_opens_its_breaker_pauses_the_stage_and_it_resumes(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(
        admin,
        {"act": {"tools": ["crm"], "concurrency": 4}},
        tools={
            "crm": {
                "failure_errors": ["tests.integration.tool_handlers:CrmDown"],
                "breaker": {"window": 6, "minimum_calls": 6, "open_s": 6, "half_open_probes": 2},
            }
        },
    )
    failing = threading.Event()
    failing.set()

    async def crm(event: TaskEvent) -> None:
        await asyncio.sleep(0.01)
        if failing.is_set():
            raise CrmDown("503")

    async def handler(event: TaskEvent, ctx: Any) -> None:
        await ctx.tool("crm").call(crm, event)
        ctx.emit(event)

    sent = events(topology, "act", 300)
    publish(client_config, topology.stages["act"].input_topics_by_lane["standard"], sent)
    worker = StageWorker(
        topology, "act", client_config, handler=handler, tools=ToolRegistry(topology)
    )
    running = WorkerThread(worker).start()
    try:
        # The breaker opens and the stage stops fetching, with the reason on every partition.
        deadline = time.monotonic() + 30
        while True:
            parts = worker.partitions()
            paused = parts and all("tool_unavailable" in p.paused_by for p in parts.values())
            if paused and worker.status().holding == "tool_unavailable":
                break
            assert time.monotonic() < deadline, f"never paused for the tool: {parts}"
            time.sleep(0.05)

        pulled_at_pause = sum(p.fill for p in worker.partitions().values())
        time.sleep(1.0)  # still open: nothing more is pulled, nothing more is dead-lettered
        assert sum(p.fill for p in worker.partitions().values()) <= pulled_at_pause
        failing.clear()  # the CRM recovers; after open_s the probes succeed

        def reports_open(reader: TopicReader) -> bool:
            return any(
                (health := PressureReport.from_bytes(r.value).tool("crm")) is not None
                and health.breaker == "open"
                for r in reader.records
                if r.value is not None
            )

        with TopicReader(client_config, topology.pressure_topic, 1) as reports:
            # Other workers and the monitor saw it in the stage's pressure reports.
            assert reports.wait_until(reports_open, 10), "no pressure report says crm is open"
        with (
            TopicReader(client_config, topology.completed_topic, 3) as completed,
            TopicReader(client_config, topology.dead_letter_topic, 3) as letters,
        ):
            # Every record ends in one outcome: wait until all are accounted for.
            deadline = time.monotonic() + 60
            while len(completed.records) + len(letters.records) < len(sent):
                assert time.monotonic() < deadline, (len(completed.records), len(letters.records))
                completed.poll(0.1)
                letters.poll(0.1)
            codec = DeadLetterCodec()
            dead = [codec.decode(r.value) for r in letters.records if r.value is not None]
            out = completed.records
        # It resumed: nothing paused for the tool any more.
        deadline = time.monotonic() + 10
        while any("tool_unavailable" in p.paused_by for p in worker.partitions().values()):
            assert time.monotonic() < deadline, worker.partitions()
            time.sleep(0.05)
    finally:
        running.stop()
    assert running.error is None
    reasons = [d.reason for d in dead]
    lost = len(sent) - len(out)
    assert lost == len(dead)
    # The failures that opened it, plus the records started or queued to start when it
    # opened (concurrency 4 + 1 prefetched), each cycle of failed probes (2) if the CRM was
    # still down at a half-open: not the backlog, which a worker without a breaker would
    # have dead-lettered whole.
    assert 6 <= lost <= 6 + 5 + 2, (lost, reasons)
    assert set(reasons) <= {"handler_error", "tool_unavailable"}, reasons
    sample = worker.registry.get_sample_value(
        "streams_tool_breaker_transitions_total",
        {
            "workflow": topology.workflow,
            "tool": "crm",
            "from_state": "half_open",
            "to_state": "closed",
        },
    )
    assert sample is not None and sample >= 1


@pytest.mark.timeout(120)
def test_tool_saturated_after_max_wait_and_a_fallback_path(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = make_workflow(
        admin,
        {"act": {"tools": ["llm"], "concurrency": 4}},
        partitions=1,
        tools={"llm": {"concurrency": 1, "max_wait_s": 0.2, "pause_at_waiting": 50}},
    )
    waits: list[float] = []

    async def handler(event: TaskEvent, ctx: Any) -> None:
        wants_fallback = json.loads(event.payload)["fallback"]
        started = time.monotonic()
        try:
            async with ctx.tool("llm"):
                await asyncio.sleep(0.5)  # the big model, slow
        except ToolSaturated:
            waits.append(time.monotonic() - started)
            if not wants_fallback:
                raise
            # The fallback: a cheaper answer, marked as such.
            cheap = json.dumps({"fallback": True, "answer": "cached"}).encode()
            ctx.emit(dataclasses.replace(event, payload=cheap))
            return
        ctx.emit(event)

    sent = events(topology, "act", 8, payload=b'{"fallback": true}') + events(
        topology, "act", 8, payload=b'{"fallback": false}'
    )
    publish(client_config, topology.stages["act"].input_topics_by_lane["standard"], sent)
    worker = StageWorker(
        topology, "act", client_config, handler=handler, tools=ToolRegistry(topology)
    )
    running = WorkerThread(worker).start()
    try:
        dead = read_dead_letters(
            client_config, topology.dead_letter_topic, 1, expect=1, timeout_s=60
        )
        out = read_events(client_config, topology.completed_topic, 1, expect=8, timeout_s=60)
    finally:
        running.stop()
    assert running.error is None
    assert waits and all(0.19 <= w < 2.0 for w in waits), waits
    assert dead[0].reason == "tool_saturated"
    assert dead[0].error_type == "streams.errors.ToolSaturated"
    fallbacks = [e for e in out if b"cached" in e.payload]
    assert fallbacks, "no handler took the fallback path"
    rejected = worker.registry.get_sample_value(
        "streams_tool_calls_total",
        {"workflow": topology.workflow, "tool": "llm", "outcome": "rejected_saturated"},
    )
    assert rejected is not None and rejected >= len(waits)


def _lag(admin: Admin, group: str, topics: tuple[str, ...]) -> int:
    tps = admin.partitions_of(topics)
    ends = admin.end_offsets(tps)
    done = committed(admin, group, topics)
    return sum(ends[tp] - done.get(tp, 0) for tp in tps)


@pytest.mark.timeout(120)
def test_a_sick_tool_stops_its_stage_and_the_pressure_reaches_upstream(
    admin: Admin, client_config: ClientConfig
) -> None:
    pause_lag = 30
    topology = make_workflow(
        admin,
        {
            "plan": {
                "downstream": ["act"],
                "concurrency": 4,
                "pressure": {"lag": {"pause": pause_lag, "resume": 10}},
            },
            "act": {"tools": ["crm"], "concurrency": 4},
        },
        lanes=["standard"],
        tools={
            "crm": {
                "failure_errors": ["tests.integration.tool_handlers:CrmDown"],
                "breaker": {"window": 6, "minimum_calls": 6, "open_s": 60},
            }
        },
    )

    async def plan(event: TaskEvent, ctx: Any) -> None:
        await asyncio.sleep(0.01)
        ctx.emit(event)

    async def crm() -> None:
        raise CrmDown("503")

    async def act(event: TaskEvent, ctx: Any) -> None:
        await ctx.tool("crm").call(crm)

    sent = events(topology, "plan", 2000)
    publish(client_config, topology.stages["plan"].input_topics[0], sent)
    tools = ToolRegistry(topology)
    acting = WorkerThread(StageWorker(topology, "act", client_config, handler=act, tools=tools))
    planning = WorkerThread(StageWorker(topology, "plan", client_config, handler=plan, tools=tools))
    acting.start()
    planning.start()
    act_topics = topology.stages["act"].input_topics
    plan_topics = topology.stages["plan"].input_topics
    try:
        deadline = time.monotonic() + 60
        while True:  # act stops for its tool; plan stops for act's lag
            act_paused = acting.worker.partitions()
            plan_paused = planning.worker.partitions()
            if (
                act_paused
                and all("tool_unavailable" in p.paused_by for p in act_paused.values())
                and plan_paused
                and all("downstream" in p.paused_by for p in plan_paused.values())
            ):
                break
            assert time.monotonic() < deadline, (act_paused, plan_paused)
            time.sleep(0.1)
        time.sleep(2.0)  # plan's calls in flight at its pause land
        act_lag = _lag(admin, topology.stages["act"].consumer_group, act_topics)
        time.sleep(3.0)
        assert _lag(admin, topology.stages["act"].consumer_group, act_topics) == act_lag
        # Within act's max_lag plus what plan had in flight (invariant 4); plan's pause
        # reaction itself is the downstream-pressure tests' subject.
        assert pause_lag <= act_lag <= topology.stages["act"].max_lag + 5, act_lag
        # The backlog waits upstream, where the intake can see it, not pulled to fail.
        assert _lag(admin, topology.stages["plan"].consumer_group, plan_topics) >= 1000
    finally:
        planning.stop()
        acting.stop()
    assert planning.error is None and acting.error is None


@pytest.mark.timeout(150)
@pytest.mark.parametrize("group_protocol", ["classic", "consumer"])
def test_partitions_that_move_while_a_tool_is_open_stay_paused(
    admin: Admin, client_config: ClientConfig, group_protocol: GroupProtocol
) -> None:
    topology = make_workflow(
        admin,
        {"act": {"tools": ["crm"], "concurrency": 4}},
        lanes=["standard"],
        partitions=6,
        tools={
            "crm": {
                "failure_errors": ["tests.integration.tool_handlers:CrmDown"],
                "breaker": {"window": 6, "minimum_calls": 6, "open_s": 60},
            }
        },
    )

    async def crm() -> None:
        raise CrmDown("503")

    async def act(event: TaskEvent, ctx: Any) -> None:
        await ctx.tool("crm").call(crm)
        ctx.emit(event)

    publish(client_config, topology.stages["act"].input_topics[0], events(topology, "act", 600))
    tools = ToolRegistry(topology)  # one process: both workers share the open breaker
    options = WorkerOptions(group_protocol=group_protocol)

    def worker() -> WorkerThread:
        return WorkerThread(
            StageWorker(topology, "act", client_config, handler=act, tools=tools, options=options)
        )

    def all_paused(thread: WorkerThread) -> bool:
        parts = thread.worker.partitions()
        return bool(parts) and all("tool_unavailable" in p.paused_by for p in parts.values())

    first = worker().start()
    second: WorkerThread | None = None
    with TopicReader(client_config, topology.dead_letter_topic, 3) as letters:
        try:
            deadline = time.monotonic() + 30
            while not all_paused(first):
                assert time.monotonic() < deadline, first.worker.partitions()
                time.sleep(0.05)
            time.sleep(1.0)
            letters.poll(1.0)
            dead_before = len(letters.records)
            second = worker().start()
            deadline = time.monotonic() + 60
            while True:  # the group has re-split: both own partitions, every one paused
                owned = len(first.worker.partitions()) + len(second.worker.partitions())
                if owned == 6 and first.worker.partitions() and second.worker.partitions():
                    break
                assert time.monotonic() < deadline, "the group never re-split"
                time.sleep(0.1)
            for _ in range(20):  # and they stay paused across and after the rebalance
                assert all_paused(first), first.worker.partitions()
                assert all_paused(second), second.worker.partitions()
                time.sleep(0.1)
            letters.poll(1.0)
            # Moved partitions were not pulled to fail: no new dead letters.
            assert len(letters.records) == dead_before
        finally:
            first.stop()
            if second is not None:
                second.stop()
    assert first.error is None and (second is None or second.error is None)
