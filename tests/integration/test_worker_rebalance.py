"""Rebalances against the real broker: partitions paused for downstream pressure stay
paused when a second worker joins, and a worker leaving mid-stream loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.events import TaskEvent
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig, GroupProtocol
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish
from streams.topology import Topology
from streams.types import TopicPartition

from .process_helpers import (
    TopicReader,
    assigned_partitions,
    committed,
    desired_paused,
    reported_paused,
)
from .workflows import declared_partitions, events, make_workflow

pytestmark = [pytest.mark.integration]

PARTITIONS = 3
PROTOCOLS = ["classic", "consumer"]


class WorkerDied(AssertionError):
    """A worker thread's run() raised (a worker must survive its group changing)."""


# --------------------------------------------------------------------------- observation


_assigned = assigned_partitions
_reported_paused = reported_paused
_desired_paused = desired_paused


def _describe(threads: list[WorkerThread]) -> str:
    """What each worker says about itself, for failure messages: which of a stuck pause
    (policy still pausing) or a stuck fetch (policy resumed, nothing consumed) it is."""
    lines = []
    for thread in threads:
        worker = thread.worker
        status = worker.status()
        lines.append(
            f"{worker.stage.name}/{worker.options.worker_id}: alive={thread.thread.is_alive()} "
            f"assigned={sorted(map(str, _assigned(worker)))} "
            f"desired_paused={sorted(map(str, _desired_paused(worker)))} "
            f"reported_paused={sorted(map(str, _reported_paused(worker)))} "
            f"in_flight={status.in_flight} lag={status.lag_by_lane} "
            f"pause_reason={status.last_pause_reason!r} error={thread.error!r}"
        )
    return "\n".join(lines)


def _died(*threads: WorkerThread) -> bool:
    """Raises WorkerDied if one of the threads' workers died, else False (for `or` chains)."""
    for thread in threads:
        if thread.error is not None:
            raise WorkerDied(f"worker died: {thread.error!r}") from thread.error
    return False


def _wait(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    describe: Callable[[], str] = str,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s} s waiting until {what}\n{describe()}"
            )
        time.sleep(0.1)


@contextlib.contextmanager
def _running() -> Iterator[list[WorkerThread]]:
    """Worker threads appended to the yielded list are stopped on the way out."""
    threads: list[WorkerThread] = []
    try:
        yield threads
    finally:
        for thread in threads:
            if thread.thread.is_alive():
                thread.stop()


# --------------------------------------------------------------------------- paused pair


@dataclass
class PausedPlan:
    """plan -> act, act over plan's pause lag with no worker; plan's workers a and b."""

    topology: Topology
    sent: list[TaskEvent]
    a: WorkerThread
    b: WorkerThread | None = None
    baseline: dict[TopicPartition, int] = field(default_factory=dict)
    act_end: dict[TopicPartition, int] = field(default_factory=dict)

    @property
    def act_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.act_topic, p) for p in range(PARTITIONS)]

    @property
    def act_topic(self) -> str:
        return self.topology.stages["act"].input_topics_by_lane["standard"]


def _pause_then_join(
    admin: Admin,
    client_config: ClientConfig,
    group_protocol: GroupProtocol,
    threads: list[WorkerThread],
) -> PausedPlan:
    """Worker a pauses plan (act's lag 100 >= pause 50), then b joins its group; returns
    once both own partitions."""
    topology = make_workflow(
        admin,
        {
            "plan": {"downstream": ["act"], "pressure": {"lag": {"pause": 50, "resume": 20}}},
            "act": {"max_lag": 1000},
        },
        lanes=["standard"],
        partitions=PARTITIONS,
    )
    plan = topology.stages["plan"]
    every_partition = declared_partitions(topology, plan.input_topics)
    publish(client_config, f"{topology.workflow}.act.standard", events(topology, "act", 100))
    sent = events(topology, "plan", 200)
    publish(client_config, plan.input_topics[0], sent)

    def plan_worker(worker_id: str) -> WorkerThread:
        options = WorkerOptions(group_protocol=group_protocol, worker_id=worker_id)
        thread = WorkerThread(StageWorker(topology, "plan", client_config, options=options))
        threads.append(thread)
        return thread.start()

    scenario = PausedPlan(topology, sent, plan_worker("a"))
    a = scenario.a.worker
    _wait(lambda: _assigned(a) == every_partition, 60, "worker a owns every partition")
    _wait(lambda: every_partition <= _desired_paused(a), 30, "worker a pauses every partition")
    scenario.baseline = committed(admin, plan.consumer_group, plan.input_topics)
    scenario.act_end = admin.end_offsets(scenario.act_partitions)
    assert sum(scenario.baseline.values()) < len(sent) // 2, (
        f"worker a consumed {sum(scenario.baseline.values())} of {len(sent)} before pausing"
    )

    scenario.b = plan_worker("b")
    b = scenario.b.worker

    def settled() -> bool:
        _died(*threads)
        owned_a, owned_b = _assigned(a), _assigned(b)
        return bool(owned_a and owned_b) and owned_a | owned_b == every_partition

    _wait(settled, 120, "both workers own partitions", lambda: _describe(threads))
    return scenario


# The waits inside (60 + 30 + 120 s, then the checks) govern: each names what it waited for.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("group_protocol", PROTOCOLS)
def test_rebalance_while_paused_keeps_partitions_paused(
    admin: Admin, client_config: ClientConfig, group_protocol: GroupProtocol
) -> None:
    with _running() as threads:
        scenario = _pause_then_join(admin, client_config, group_protocol, threads)
        topology = scenario.topology
        plan = topology.stages["plan"]
        observe_until = time.monotonic() + 5.0
        while time.monotonic() < observe_until:
            _died(*threads)
            for thread in threads:
                owned = _assigned(thread.worker)
                assert owned <= _desired_paused(thread.worker), f"{owned} not all paused"
            now = committed(admin, plan.consumer_group, plan.input_topics)
            assert now == scenario.baseline, f"plan consumed while act is over its pause lag: {now}"
            assert admin.end_offsets(scenario.act_partitions) == scenario.act_end, (
                "plan emitted while paused"
            )
            time.sleep(0.5)

        # An act worker drains act below resume: plan resumes and hands on every run.
        act_options = WorkerOptions(group_protocol=group_protocol)
        act = WorkerThread(StageWorker(topology, "act", client_config, options=act_options))
        threads.append(act)
        act.start()
        wanted = {e.run_id for e in scenario.sent}
        with TopicReader(client_config, scenario.act_topic, PARTITIONS) as act_input:
            arrived = act_input.wait_until(lambda r: wanted <= set(r.run_ids()), 60)
            assert arrived, (
                f"{len(wanted - set(act_input.run_ids()))} plan runs never reached act; "
                f"plan committed {committed(admin, plan.consumer_group, plan.input_topics)}\n"
                f"{_describe(threads)}"
            )
        _died(*threads)


@pytest.mark.timeout(240)  # the waits of _pause_then_join govern, as above
def test_partitions_paused_on_assignment_are_reported_paused(
    admin: Admin, client_config: ClientConfig
) -> None:
    with _running() as threads:
        scenario = _pause_then_join(admin, client_config, "classic", threads)
        assert scenario.b is not None
        b = scenario.b.worker
        time.sleep(2 * b.options.report_interval_s)  # partition series refresh per report
        owned = _assigned(b)
        assert owned <= _desired_paused(b)
        assert owned <= _reported_paused(b), f"b reports {_reported_paused(b)} of {owned} paused"


# --------------------------------------------------------------------------- leaving


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "group_protocol",
    # A commit that meets a rebalance (classic generation, KIP-848 member epoch) is
    # deferred, not fatal: both protocols must keep both workers alive.
    ["classic", "consumer"],
)
def test_two_workers_share_partitions_and_lose_nothing(
    admin: Admin, client_config: ClientConfig, group_protocol: GroupProtocol
) -> None:
    topology = make_workflow(admin, {"work": {"concurrency": 4}}, lanes=["standard"], partitions=6)
    stage = topology.stages["work"]
    sent = events(topology, "work", 3000)
    wanted = {e.run_id for e in sent}
    publish(client_config, stage.input_topics[0], sent)
    handled: dict[str, list[tuple[int, str]]] = {"a": [], "b": []}

    def handler_for(name: str) -> Callable[[Any, Any], Any]:
        async def handle(event: Any, ctx: Any) -> None:
            await asyncio.sleep(0.02)
            handled[name].append((ctx.record.partition, event.run_id))
            ctx.emit(event)

        return handle

    def worker(name: str) -> WorkerThread:
        # Commit often, as a busy worker does, so commits meet every rebalance.
        options = WorkerOptions(
            worker_id=name, group_protocol=group_protocol, commit_interval_s=0.05
        )
        handler = handler_for(name)
        return WorkerThread(
            StageWorker(topology, "work", client_config, options=options, handler=handler)
        )

    with (
        _running() as threads,
        TopicReader(client_config, topology.completed_topic, 6) as out,
    ):
        a, b = worker("a"), worker("b")
        threads += [a, b]
        a.start()
        # b joins a group whose only member is busy handling and committing.
        assert out.wait_until(lambda r: _died(a) or len(r.records) >= 200, 60)
        b.start()
        _wait(lambda: _died(a, b) or len(handled["b"]) >= 100, 60, "b shares the work")
        assert _assigned(a.worker), "a lost every partition to b"
        assert len(out.records) < len(sent), "everything was done before a left"
        a.stop()  # graceful: drains, commits, leaves the group mid-stream
        _died(a, b)
        a_partitions = {p for p, _ in handled["a"]}
        b_before = len(handled["b"])
        arrived = out.wait_until(lambda r: _died(b) or wanted <= set(r.run_ids()), 60)
        assert arrived, f"{len(wanted - set(out.run_ids()))} runs never reached the output"
        out.read_to_end(admin, quiet_s=1.0)
        _died(b)

    taken_over = {p for p, _ in handled["b"][b_before:]} & a_partitions
    assert taken_over, f"b handled nothing of a's partitions {a_partitions} after a left"
    assert set(out.run_ids()) == wanted
