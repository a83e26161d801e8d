"""`streams worker` as a real process: SIGTERM drains and commits, kill -9 loses nothing
(at-least-once) and duplicates nothing (exactly-once, restarted with the same worker id).
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.runtime.options import WorkerOptions
from streams.testing import publish
from streams.topology import Topology

from .process_helpers import (
    HandlerCall,
    TopicReader,
    committed,
    handler_log,
    worker_processes,
    write_workflow,
)
from .workflows import events

pytestmark = [pytest.mark.integration]

STAGE = "work"
PARTITIONS = 3


def _input_topic(topology: Topology) -> str:
    return topology.stages[STAGE].input_topics_by_lane["standard"]


def _done_offsets(calls: list[HandlerCall]) -> dict[int, set[int]]:
    by_partition: dict[int, set[int]] = defaultdict(set)
    for call in calls:
        by_partition[call.partition].add(call.offset)
    return by_partition


@pytest.mark.timeout(120)
def test_sigterm_drains_in_flight_and_exits_0(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    topology, topology_file = write_workflow(
        admin, tmp_path, {STAGE: {"concurrency": 10}}, partitions=PARTITIONS
    )
    sent = events(topology, STAGE, 40)
    publish(client_config, _input_topic(topology), sent)
    calls = tmp_path / "calls.log"
    group = topology.stages[STAGE].consumer_group
    grace_s = WorkerOptions().shutdown_grace_s

    with (
        worker_processes(bootstrap, tmp_path) as procs,
        TopicReader(client_config, topology.completed_topic, PARTITIONS) as out,
    ):
        first = procs.start(
            topology_file,
            STAGE,
            # Calls longer than the loop watch's 2 s: a drain that long is not a stuck loop.
            env={"PROC_HANDLER_SLEEP_S": "2.5", "PROC_HANDLER_LOG": str(calls)},
        )
        assert out.wait_until(lambda r: len(r.records) > 0, 60), procs.logs()
        started, done = handler_log(calls)
        in_flight = set(started) - set(done)
        first.signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = first.wait(grace_s)
        took_s = time.monotonic() - signalled
        assert code == 0, f"exit code {code} after {took_s:.1f} s\n{procs.logs()}"
        assert in_flight, "nothing was in flight at SIGTERM; the test proves nothing"
        assert "has not turned" not in procs.logs(), procs.logs()

        _, done = handler_log(calls)
        # Drained: every call running at SIGTERM finished.
        assert in_flight <= set(done)
        # Committed exactly what was processed: per partition, handled offsets are 0..c-1.
        offsets = committed(admin, group, topology.stages[STAGE].input_topics)
        handled = _done_offsets(done)
        for tp, offset in offsets.items():
            assert handled.get(tp.partition, set()) == set(range(offset)), (
                f"{tp}: committed {offset}, handled {sorted(handled.get(tp.partition, ()))}"
            )
        assert 0 < sum(offsets.values()) < len(sent), "SIGTERM came before or after the stream"
        # Nothing committed without its output.
        out.read_to_end(admin)
        assert {c.run_id for c in done} <= set(out.run_ids())

        second = procs.start(topology_file, STAGE, env={"PROC_HANDLER_SLEEP_S": "0.05"})
        wanted = {e.run_id for e in sent}
        assert out.wait_until(lambda r: wanted <= set(r.run_ids()), 60), procs.logs()
        second.signal(signal.SIGTERM)
        assert second.wait(grace_s) == 0, procs.logs()


def _kill_mid_stream(
    admin: Admin,
    client_config: ClientConfig,
    bootstrap: str,
    tmp_path: Path,
    *,
    delivery: str,
    count: int = 2000,
) -> None:
    """Shared by the kill -9 tests: publish, kill the worker mid-stream, check what the
    broker holds, restart (same worker id), check everything arrived; exactly-once also
    checks that nothing arrived twice."""
    exactly_once = delivery == "exactly_once"
    topology, topology_file = write_workflow(
        admin,
        tmp_path,
        {STAGE: {"concurrency": 4, "delivery": delivery}},
        partitions=PARTITIONS,
    )
    sent = events(topology, STAGE, count)
    wanted = {e.run_id for e in sent}
    input_topic = _input_topic(topology)
    publish(client_config, input_topic, sent)
    calls = tmp_path / "calls.log"
    group = topology.stages[STAGE].consumer_group

    with (
        worker_processes(bootstrap, tmp_path) as procs,
        TopicReader(client_config, topology.completed_topic, PARTITIONS) as out,
        TopicReader(client_config, topology.dead_letter_topic, PARTITIONS) as dlq,
        TopicReader(client_config, input_topic, PARTITIONS) as inputs,
    ):
        first = procs.start(
            topology_file,
            STAGE,
            worker_id="w1",
            env={"PROC_HANDLER_SLEEP_S": "0.01", "PROC_HANDLER_LOG": str(calls)},
        )
        assert out.wait_until(lambda r: len(r.records) >= count // 5, 60), procs.logs()
        # Kill while some handled work is not yet committed, so the restart has work to
        # redo (commits run every 0.5 s; the window is rarely shut, but wait it out).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if len(handler_log(calls)[1]) > sum(committed(admin, group, (input_topic,)).values()):
                break
            time.sleep(0.02)
        first.signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL

        # After the kill, before the restart: the broker's view of the dead worker's work.
        offsets = committed(admin, group, (input_topic,))
        inputs.read_to_end(admin)
        out.read_to_end(admin)
        dlq.read_to_end(admin, quiet_s=0.5)
        _, done = handler_log(calls)
        assert 0 < sum(offsets.values()) < count, f"kill came too late: committed {offsets}"
        assert len({c.run_id for c in done}) > sum(offsets.values()), (
            "no handled-but-uncommitted work at the kill; the restart redoes nothing"
        )
        finished = set(out.run_ids()) | set(dlq.run_ids())
        run_id_at = inputs.run_id_at()
        assert len(run_id_at) == count
        not_finished = [
            (tp.partition, o, run_id_at[tp.partition, o])
            for tp, end in offsets.items()
            for o in range(end)
            if run_id_at[tp.partition, o] not in finished
        ]
        assert not not_finished, f"committed past records without output: {not_finished[:5]}"
        if exactly_once:
            assert max(out.run_id_counts().values()) == 1

        # Same worker id: the dead worker's open transaction is fenced and aborted at once.
        second = procs.start(topology_file, STAGE, worker_id="w1")
        assert out.wait_until(lambda r: wanted <= set(r.run_ids()) | set(dlq.run_ids()), 90), (
            procs.logs()
        )
        second.signal(signal.SIGTERM)
        assert second.wait(WorkerOptions().shutdown_grace_s) == 0, procs.logs()
        out.read_to_end(admin)
        dlq.read_to_end(admin, quiet_s=0.5)

    assert set(out.run_ids()) | set(dlq.run_ids()) == wanted
    if exactly_once:
        twice = {run_id: n for run_id, n in out.run_id_counts().items() if n > 1}
        assert not twice, f"{len(twice)} run ids emitted more than once, e.g. {list(twice)[:5]}"
        assert not dlq.records


@pytest.mark.timeout(150)
def test_kill_9_loses_nothing_at_least_once(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    _kill_mid_stream(admin, client_config, bootstrap, tmp_path, delivery="at_least_once")


@pytest.mark.timeout(150)
def test_kill_9_exactly_once_no_duplicates(
    admin: Admin, client_config: ClientConfig, bootstrap: str, tmp_path: Path
) -> None:
    _kill_mid_stream(admin, client_config, bootstrap, tmp_path, delivery="exactly_once")
