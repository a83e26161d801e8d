"""Chaos: the broker restarts (a real broker of its own, down STREAMS_CHAOS_OUTAGE_S, 60 s by
default) under 200 concurrent submitters that retry with their idempotency keys until they
hear a definite answer.

What must hold: every submission ends in exactly one run (one run id per idempotency key,
on the first stage and in the completed topic), no key runs twice, every answer that named
a run named that one, and once the workflow drained the intake counts nothing as queued
(nothing left over from the answers it could not give during the outage).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import defaultdict

import pytest

from streams.config import Settings
from streams.errors import StreamsError
from streams.events import TaskEventCodec
from streams.intake.requests import RunRequest
from streams.intake.service import Intake
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.local_broker import LocalBroker
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread, read_records, read_records_until
from streams.topology import Topology
from streams.types import Record, TopicPartition
from tests.integration.intake_helpers import intake_workflow

OUTAGE_S = float(os.environ.get("STREAMS_CHAOS_OUTAGE_S", "60"))
SUBMITTERS = 200
#: Each submitter's pause between two runs: the flood goes on through the outage.
PAUSE_S = (1.0, 3.0)
FINAL = ("accepted", "collapsed")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240 + 1.5 * OUTAGE_S)]


class Answers:
    """Every answer each idempotency key got, in order."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
        self.errors: dict[str, str] = {}
        self.retries = 0
        self.unknown = 0

    def final_run(self, key: str) -> str | None:
        outcome, run_id = self.by_key[key][-1]
        return run_id if outcome in FINAL else None


async def _submit_until_definite(
    intake: Intake, key: str, answers: Answers, give_up: float
) -> None:
    request = RunRequest(tenant=f"t{hash(key) % 5}", payload=b'{"n":1}', idempotency_key=key)
    while True:
        try:
            decision = await intake.asubmit(request)
        except StreamsError as exc:  # unknown (with its run id) or unavailable
            run_id = getattr(exc, "run_id", None)
            answers.by_key[key].append((type(exc).__name__, run_id))
            answers.errors[key] = str(exc)
            answers.unknown += run_id is not None
        else:
            answers.by_key[key].append((decision.outcome, decision.run_id))
            if decision.outcome in FINAL:
                return
        if time.monotonic() > give_up:
            return
        answers.retries += 1
        await asyncio.sleep(random.uniform(0.5, 1.5))


async def _flood(intake: Intake, answers: Answers, new_until: float, give_up: float) -> None:
    async def submitter(i: int) -> None:
        n = 0
        while time.monotonic() < new_until:
            await _submit_until_definite(intake, f"k{i}-{n}", answers, give_up)
            n += 1
            await asyncio.sleep(random.uniform(*PAUSE_S))

    await asyncio.gather(*(submitter(i) for i in range(SUBMITTERS)))


def _where(client: ClientConfig, topology: Topology, keys: set[str]) -> str:
    """Where the first stage's copies of `keys` are, against what its group committed: tells
    records lost before the stage (absent) from a stage that stopped short (past committed)."""
    stage = topology.stages["plan"]
    codec = TaskEventCodec()
    admin = Admin(client)
    found: list[tuple[str, int, int, str]] = []
    partitions: list[TopicPartition] = []
    for topic in stage.input_topics:
        count = topology.all_topics()[topic].partitions
        partitions += [TopicPartition(topic, p) for p in range(count)]
        for record in read_records(client, topic, count, expect=10**9, timeout_s=5):
            key = codec.decode(record.value or b"").idempotency_key
            if key in keys:
                found.append((record.topic, record.partition, record.offset, key))
    ends = admin.end_offsets(partitions)
    committed = admin.committed_offsets(stage.consumer_group, partitions)
    admin.close()
    return (
        f"{len(found)} of them on the first stage, e.g. {sorted(found)[:5]}; "
        f"ends {ends}; committed {committed}"
    )


def test_every_submission_ends_in_exactly_one_run_across_a_broker_restart(
    own_broker: Settings,
) -> None:
    broker = LocalBroker(own_broker)
    state, _ = broker.start()
    client = ClientConfig(state.bootstrap, client_id="chaos-intake")
    try:
        topology = intake_workflow(
            Admin(client), {"max_queued_runs": 10_000, "max_queued_per_tenant": 10_000}
        )

        async def passthrough(event: object, ctx: object) -> None:
            ctx.emit(event)  # type: ignore[attr-defined]

        worker = WorkerThread(
            StageWorker(
                topology,
                "plan",
                client,
                handler=passthrough,
                options=WorkerOptions(pressure_refresh_s=0.5, report_interval_s=1.0),
            )
        ).start()
        intake = Intake(topology, client, ack_timeout_s=3.0).start()
        answers = Answers()
        try:

            async def scenario() -> None:
                now = time.monotonic()
                flood = asyncio.ensure_future(
                    _flood(intake, answers, now + OUTAGE_S + 10, now + OUTAGE_S + 120)
                )
                await asyncio.sleep(3.0)  # the flood is under way
                await asyncio.to_thread(broker.stop)
                await asyncio.sleep(OUTAGE_S)
                await asyncio.to_thread(broker.start)
                await flood

            asyncio.run(scenario())
            keys = list(answers.by_key)
            undecided = [k for k in keys if answers.final_run(k) is None]
            assert not undecided, (
                f"{len(undecided)} keys never got a definite answer, e.g. "
                f"{[(k, answers.by_key[k][-3:], answers.errors.get(k)) for k in undecided[:3]]}"
            )
            finals = {k: answers.final_run(k) for k in keys}
            assert len(set(finals.values())) == len(keys)  # a run per key

            codec = TaskEventCodec()
            specs = topology.all_topics()
            # Re-deliveries after the restart may repeat a run (at-least-once): runs, not
            # records, are what must be one per key, so the read waits for every key, not
            # for as many records as keys (repeats made that stop short of the last ones).
            runs_by_key: dict[str, set[str]] = defaultdict(set)
            read = 0

            def every_key_seen(batch: list[Record]) -> bool:
                nonlocal read
                read += len(batch)
                for record in batch:
                    event = codec.decode(record.value or b"")
                    assert event.idempotency_key is not None
                    runs_by_key[event.idempotency_key].add(event.run_id)
                return len(runs_by_key) >= len(keys)

            read_records_until(
                client, topology.completed_topic, specs[topology.completed_topic].partitions,
                every_key_seen, timeout_s=90,
            )  # fmt: skip
            twice = {k: r for k, r in runs_by_key.items() if len(r) > 1}
            assert not twice, f"{len(twice)} keys ran as two runs: {list(twice.items())[:3]}"
            missing = [k for k in keys if runs_by_key.get(k) != {finals[k]}]
            few = missing[:3]
            assert not missing, (
                f"{len(missing)} keys' runs are not the answered one "
                f"({read} records read for {len(keys)} keys): "
                f"{[(k, finals[k], runs_by_key.get(k), answers.by_key[k][-3:]) for k in few]}"
                f"; {_where(client, topology, set(missing))}"
            )
            for key in keys:  # whoever named a run for this key named this one, or none
                named = {r for outcome, r in answers.by_key[key] if r is not None}
                ran = runs_by_key[key]
                assert named <= ran | _never_written(intake, named - ran), (key, named, ran)

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and intake.capacity().queued_by_lane != {
                lane: 0 for lane in intake.capacity().queued_by_lane
            }:
                time.sleep(0.5)
            report = intake.capacity()
            assert sum(report.queued_by_lane.values()) == 0, report
            assert report.undecided_by_tenant == {}
            print(
                f"\n{len(keys)} keys, {answers.retries} retries, {answers.unknown} unknown answers"
            )
        finally:
            intake.close()
            worker.stop()
    finally:
        broker.stop()


def _never_written(intake: Intake, run_ids: set[str]) -> set[str]:
    """Run ids answered 'unknown' that the intake then found were never written (released:
    the ledger no longer knows them)."""
    return {r for r in run_ids if intake.status(r) is None}
