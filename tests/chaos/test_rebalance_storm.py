"""Chaos: a rebalance storm while the stage is paused for downstream pressure.

Stage plan feeds act; act has no worker and a lag over plan's pause threshold, so plan
pauses every partition. Then plan's workers join and leave eight times (up to three at
once), each change moving partitions. While act stays over the threshold no partition of
plan may make progress: no commit moves, nothing is emitted to act, and every partition a
worker owns is in its pause set (invariant 5). Once an act worker drains act, plan resumes
and every run reaches act (invariant 2). Classic (cooperative-sticky) and KIP-848 groups.
The membership changes come from a seeded generator (CHAOS_SEED reproduces a run).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig, GroupProtocol
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, publish
from streams.types import TopicPartition
from tests.integration.process_helpers import (
    TopicReader,
    assigned_partitions,
    committed,
    desired_paused,
)
from tests.integration.workflows import declared_partitions, events, make_workflow

pytestmark = [pytest.mark.integration]

PARTITIONS = 6
MAX_WORKERS = 3
CHANGES = 8
RUNS = 300


class WorkerDied(AssertionError):
    """A worker thread's run() raised: a worker must survive its group changing."""


def _seed() -> int:
    configured = os.environ.get("CHAOS_SEED")
    return int(configured) if configured else random.SystemRandom().randrange(2**32)


@contextlib.contextmanager
def _running() -> Iterator[dict[str, WorkerThread]]:
    """Worker threads put in the yielded dict are stopped on the way out."""
    threads: dict[str, WorkerThread] = {}
    try:
        yield threads
    finally:
        for thread in threads.values():
            if thread.thread.is_alive():
                thread.stop()


def _check_alive(threads: dict[str, WorkerThread]) -> None:
    for name, thread in threads.items():
        if thread.error is not None:
            raise WorkerDied(f"worker {name} died: {thread.error!r}") from thread.error


def _owners(threads: dict[str, WorkerThread]) -> dict[str, set[TopicPartition]]:
    return {name: assigned_partitions(t.worker) for name, t in threads.items()}


def _describe(threads: dict[str, WorkerThread], client_config: ClientConfig, group: str) -> str:
    """Who owns what, for a failure message: a settle that never comes names the owners each
    worker reports, what its client holds, and what the group coordinator assigned."""
    owners = _owners(threads)
    mine = "; ".join(
        f"{name} reports {sorted(tp.partition for tp in owners[name])}, its client holds "
        f"{sorted(tp.partition for tp in threads[name].worker._consumer.assignment())}"
        for name in owners
    )
    admin = AdminClient(client_config.as_librdkafka())
    try:
        described = admin.describe_consumer_groups([group], request_timeout=10)[group].result(
            timeout=15
        )
        members = ", ".join(
            f"{m.member_id[:8]}: {sorted(p.partition for p in m.assignment.topic_partitions)}"
            for m in described.members
        )
        coordinator = f"group {described.state} ({described.type}): {members}"
    except Exception as exc:  # a diagnosis must not hide the failure it describes
        coordinator = f"group not described: {exc!r}"
    return f"{mine}; {coordinator}"


def _settled(owners: dict[str, set[TopicPartition]], every: set[TopicPartition]) -> bool:
    """Each partition owned by exactly one live worker, and every worker owns one at least
    (six partitions, at most three workers)."""
    owned = [tp for parts in owners.values() for tp in parts]
    return len(owned) == len(set(owned)) and set(owned) == every and all(owners.values())


@pytest.mark.timeout(280)  # the named waits inside govern
@pytest.mark.parametrize("group_protocol", ["classic", "consumer"])
def test_rebalance_storm_keeps_paused_partitions_paused(
    admin: Admin, client_config: ClientConfig, group_protocol: GroupProtocol
) -> None:
    seed = _seed()
    rng = random.Random(seed)
    print(f"rebalance storm ({group_protocol}): CHAOS_SEED={seed}")
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
    act_topic = topology.stages["act"].input_topics[0]
    act_partitions = [TopicPartition(act_topic, p) for p in range(PARTITIONS)]
    every = declared_partitions(topology, plan.input_topics)
    publish(client_config, act_topic, events(topology, "act", 100))
    sent = events(topology, "plan", RUNS)
    publish(client_config, plan.input_topics[0], sent)
    history: list[str] = []

    def context() -> str:
        return f"CHAOS_SEED={seed}, changes {history}"

    def wait(
        condition: Callable[[], bool],
        timeout_s: float,
        what: str,
        state: Callable[[], str] = lambda: "",
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, (
                f"timed out after {timeout_s} s: {what}; {context()}; {state()}"
            )
            time.sleep(0.2)

    def worker(name: str) -> WorkerThread:
        options = WorkerOptions(
            group_protocol=group_protocol,
            worker_id=name,
            pressure_refresh_s=0.2,
            report_interval_s=0.5,
        )
        return WorkerThread(StageWorker(topology, "plan", client_config, options=options))

    with _running() as threads:
        threads["w0"] = worker("w0").start()
        first = threads["w0"].worker
        wait(
            lambda: assigned_partitions(first) == every,
            60,
            "w0 owns every partition",
            lambda: f"w0 reports {sorted(assigned_partitions(first))} of {sorted(every)}",
        )
        wait(lambda: every <= desired_paused(first), 30, "w0 pauses every partition")

        # Quiet: what w0 took before pausing is handled and committed (commits every 0.5 s).
        def progress() -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
            offsets = committed(admin, plan.consumer_group, plan.input_topics)
            return offsets, admin.end_offsets(act_partitions)

        baseline = progress()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 2.0:
            time.sleep(0.25)
            now = progress()
            if now != baseline:
                baseline, quiet_since = now, time.monotonic()
        assert sum(baseline[0].values()) < RUNS // 2, f"w0 consumed {baseline[0]} before pausing"

        def paused_and_still() -> None:
            """The invariant, checked between and during every membership change."""
            _check_alive(threads)
            for name, thread in threads.items():
                owned = assigned_partitions(thread.worker)
                unpaused = owned - desired_paused(thread.worker)
                assert not unpaused, f"{name} owns {sorted(unpaused)} unpaused; {context()}"
            offsets, act_end = progress()
            assert offsets == baseline[0], f"plan committed while paused: {offsets}; {context()}"
            assert act_end == baseline[1], f"plan emitted to act while paused; {context()}"

        seen: list[tuple[float, str]] = []  # each change of reported owners, for a failure

        def settled_and_still() -> bool:
            paused_and_still()
            owners = _owners(threads)
            shown = " ".join(f"{n}{sorted(tp.partition for tp in p)}" for n, p in owners.items())
            if not seen or seen[-1][1] != shown:
                seen.append((time.monotonic(), shown))
            return _settled(owners, every)

        joined = 1
        moved = 0
        for change in range(CHANGES):
            before = _owners(threads)
            if len(threads) == 1 or (len(threads) < MAX_WORKERS and rng.random() < 0.5):
                name = f"w{joined}"
                joined += 1
                history.append(f"+{name}")
                threads[name] = worker(name).start()
            else:
                name = rng.choice(sorted(threads))
                history.append(f"-{name}")
                threads.pop(name).stop()  # graceful: drains, commits, leaves the group
            began = time.monotonic()
            seen.clear()
            wait(
                settled_and_still,
                90,
                f"change {change + 1} ({history[-1]}) settles",
                lambda: (
                    f"owners seen {[(round(t - seen[0][0], 1), o) for t, o in seen[-12:]]}; at the "
                    f"timeout: {_describe(threads, client_config, plan.consumer_group)}"
                ),
            )
            after = _owners(threads)
            moves = sum(
                1
                for tp in every
                if next((n for n, p in before.items() if tp in p), None)
                != next((n for n, p in after.items() if tp in p), None)
            )
            history[-1] += f" moved {moves} in {time.monotonic() - began:.1f} s"
            assert moves, f"change {history[-1]} moved no partition; {context()}"
            moved += moves
        paused_and_still()
        print(f"rebalance storm ({group_protocol}): {moved} partition moves; {history}")

        # act drains below resume: plan resumes and hands every run on.
        act_options = WorkerOptions(group_protocol=group_protocol)
        threads["act"] = WorkerThread(
            StageWorker(topology, "act", client_config, options=act_options)
        ).start()
        wanted = {e.run_id for e in sent}
        with TopicReader(client_config, act_topic, PARTITIONS) as act_input:

            def all_arrived(reader: TopicReader) -> bool:
                _check_alive(threads)
                return wanted <= set(reader.run_ids())

            arrived = act_input.wait_until(all_arrived, 90)
            missing = wanted - set(act_input.run_ids())
            assert arrived, f"{len(missing)} of {RUNS} plan runs never reached act; {context()}"
        _check_alive(threads)
