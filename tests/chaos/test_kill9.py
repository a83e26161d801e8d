"""Chaos: `streams worker` processes killed with SIGKILL ten times at random moments while
2,000 runs flow through their stage, each restarted at once with the same worker id.

Every input run must end in the output topic or the dead letters (invariant 2); at-least-
once may duplicate (counted and reported), exactly-once may not (read_committed). The kill
moments come from a seeded generator: CHAOS_SEED reproduces a run, and every assertion
message names the seed.

Two workers share the stage so that records keep flowing through one while the group waits
out the other's session (a classic-protocol member killed with SIGKILL holds its partitions
until its 10 s session expires; one worker alone would spend the whole budget waiting).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.runtime.options import WorkerOptions
from streams.testing import publish
from tests.integration.process_helpers import (
    TopicReader,
    WorkerProcess,
    WorkerProcesses,
    worker_processes,
    write_workflow,
)
from tests.integration.workflows import events

pytestmark = [pytest.mark.integration]

STAGE = "work"
PARTITIONS = 6
COUNT = 2000
KILLS = 10
WORKER_IDS = ("w1", "w2")
# 4 handler calls of 20 ms at once per worker: about 200 runs/s each, so the stream lasts
# long enough for ten kills spread over it.
HANDLER_ENV = {"PROC_HANDLER_SLEEP_S": "0.02"}
RecordProperty = Callable[[str, object], None]  # pytest's record_property fixture


@dataclass(frozen=True, slots=True)
class Kill:
    worker_id: str
    finished_before: int  # distinct runs in output or dead letters when the kill was sent
    at_s: float  # seconds since the first worker started


def _seed() -> int:
    configured = os.environ.get("CHAOS_SEED")
    return int(configured) if configured else random.SystemRandom().randrange(2**32)


def _kill_schedule(rng: random.Random) -> list[int]:
    """Finished-run counts at which to kill: ten distinct points in 5-80 % of the stream,
    so every kill lands while runs are still flowing."""
    return sorted(rng.sample(range(COUNT * 5 // 100, COUNT * 80 // 100), KILLS))


def _run_chaos(
    admin: Admin,
    client_config: ClientConfig,
    bootstrap: str,
    tmp_path: Path,
    record_property: RecordProperty,
    *,
    delivery: str,
) -> None:
    seed = _seed()
    rng = random.Random(seed)
    print(f"kill -9 chaos ({delivery}): CHAOS_SEED={seed}")
    record_property("chaos_seed", seed)
    topology, topology_file = write_workflow(
        admin,
        tmp_path,
        {STAGE: {"concurrency": 4, "delivery": delivery}},
        partitions=PARTITIONS,
    )
    sent = events(topology, STAGE, COUNT)
    wanted = {e.run_id for e in sent}
    publish(client_config, topology.stages[STAGE].input_topics[0], sent)
    kills: list[Kill] = []

    with (
        worker_processes(bootstrap, tmp_path) as procs,
        TopicReader(client_config, topology.completed_topic, PARTITIONS) as out,
        TopicReader(client_config, topology.dead_letter_topic, PARTITIONS) as dlq,
    ):

        def finished() -> set[str]:
            return set(out.run_ids()) | set(dlq.run_ids())

        def context() -> str:
            return f"CHAOS_SEED={seed}, kills {kills}\n{procs.logs()[-20_000:]}"

        def wait_finished(at_least: int, timeout_s: float) -> None:
            deadline = time.monotonic() + timeout_s
            while len(finished()) < at_least:
                assert time.monotonic() < deadline, (
                    f"{len(finished())} of {COUNT} runs finished, waited {timeout_s} s for "
                    f"{at_least}; {context()}"
                )
                out.poll(0.1)
                dlq.poll(0.0)

        def start(worker_id: str) -> WorkerProcess:
            return _start(procs, topology_file, worker_id)

        began = time.monotonic()
        alive = {worker_id: start(worker_id) for worker_id in WORKER_IDS}
        for threshold in _kill_schedule(rng):
            # Generous: after a kill the group waits out the dead member's 10 s session.
            wait_finished(threshold, 60)
            time.sleep(rng.uniform(0.0, 0.3))
            out.poll(0.0)
            dlq.poll(0.0)
            victim = rng.choice(WORKER_IDS)
            kills.append(Kill(victim, len(finished()), round(time.monotonic() - began, 1)))
            alive[victim].signal(signal.SIGKILL)
            assert alive[victim].wait(10) == -signal.SIGKILL, context()
            for worker_id, process in alive.items():
                assert process.alive or worker_id == victim, f"{worker_id} died; {context()}"
            alive[victim] = start(victim)
        assert kills[-1].finished_before < COUNT, f"the last kill came after the stream; {kills}"

        wait_finished(COUNT, 90)
        for process in alive.values():
            process.signal(signal.SIGTERM)
        for worker_id, process in alive.items():
            code = process.wait(WorkerOptions().shutdown_grace_s)
            assert code == 0, f"{worker_id} exited {code} on SIGTERM; {context()}"
        out.read_to_end(admin)
        dlq.read_to_end(admin, quiet_s=0.5)

        lost = wanted - finished()
        assert not lost, f"{len(lost)} runs lost, e.g. {sorted(lost)[:5]}; {context()}"
        assert finished() == wanted, f"runs nobody sent: {finished() - wanted}"
        duplicates = sum(n - 1 for n in out.run_id_counts().values() if n > 1)
        print(
            f"kill -9 chaos ({delivery}): {len(kills)} kills, {COUNT} runs, "
            f"{len(out.records)} outputs, {duplicates} duplicates, {len(dlq.records)} dead "
            f"letters, {time.monotonic() - began:.0f} s; kills {kills}"
        )
        record_property("duplicates", duplicates)
        if delivery == "exactly_once":
            twice = {run_id: n for run_id, n in out.run_id_counts().items() if n > 1}
            assert not twice, (
                f"{len(twice)} run ids in the output more than once, e.g. "
                f"{list(twice.items())[:5]}; {context()}"
            )
            assert not dlq.records, f"dead letters under exactly-once: {len(dlq.records)}"


def _start(procs: WorkerProcesses, topology_file: Path, worker_id: str) -> WorkerProcess:
    return procs.start(topology_file, STAGE, worker_id=worker_id, env=HANDLER_ENV)


@pytest.mark.timeout(180)
def test_kill_9_ten_times_loses_nothing_at_least_once(
    admin: Admin,
    client_config: ClientConfig,
    bootstrap: str,
    tmp_path: Path,
    record_property: RecordProperty,
) -> None:
    _run_chaos(admin, client_config, bootstrap, tmp_path, record_property, delivery="at_least_once")


@pytest.mark.timeout(180)
def test_kill_9_ten_times_exactly_once_no_duplicates(
    admin: Admin,
    client_config: ClientConfig,
    bootstrap: str,
    tmp_path: Path,
    record_property: RecordProperty,
) -> None:
    _run_chaos(admin, client_config, bootstrap, tmp_path, record_property, delivery="exactly_once")
