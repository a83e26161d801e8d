"""Pause reaction: how long after a downstream stage's lag crosses its pause threshold the
upstream stage has paused every input partition.

Two stages, plan -> act, plan with pressure.lag {pause: P, resume: P/2}; act has no worker,
so every record plan emits is act lag. Each trial bursts 1.5 P events into plan, detects
the crossing by polling act's end offsets (act's committed offsets are fixed between
resets), and the pause by polling plan's streams_partition_paused gauge. Between trials
act's group is moved to its end offsets, so plan resumes.

Run: python -m benchmarks.pause_reaction [--quick]. The plan worker runs in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from benchmarks import common, feeding
from streams.events import TaskEvent
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.runtime.context import HandlerContext
from streams.runtime.worker import StageWorker
from streams.testing import WorkerThread
from streams.topology import Topology
from streams.types import TopicPartition

NAME = "pause_reaction"
TARGET_P99_S = 1.0
POLL_S = 0.002  # monitor cadence: far finer than the worker's 0.5 s pressure refresh


async def emit(event: TaskEvent, ctx: HandlerContext) -> None:
    await asyncio.sleep(0)
    ctx.emit(event)


def paused_partitions(registry: CollectorRegistry) -> int:
    """Partitions whose fetching is paused for downstream pressure (the gauge plan exports)."""
    count = 0
    for family in registry.collect():
        if family.name != "streams_partition_paused":
            continue
        for sample in family.samples:
            if sample.labels.get("reason") == "downstream" and sample.value == 1:
                count += 1
    return count


def reset_group(client: ClientConfig, group: str, tps: list[TopicPartition]) -> None:
    """Move a member-less group to its end offsets: its lag drops to zero at once."""
    ends = Admin(client).end_offsets(tps)
    request = ConsumerGroupTopicPartitions(
        group, [KafkaTopicPartition(tp.topic, tp.partition, o) for tp, o in ends.items()]
    )
    # Keep the client referenced until the futures resolve: a collected AdminClient never
    # resolves them.
    admin = AdminClient(client.base())
    for future in admin.alter_consumer_group_offsets([request]).values():
        future.result(timeout=30.0)


def wait_until(condition: Any, timeout_s: float, what: str) -> float:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.monotonic()


@dataclass
class _Setup:
    client: ClientConfig
    admin: Admin
    topology: Topology
    plan_tps: list[TopicPartition]
    act_tps: list[TopicPartition]
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    runner: WorkerThread | None = None
    restarts: int = 0

    def start_plan(self) -> None:
        """A fresh plan worker with its own registry (stopping the previous one)."""
        if self.runner is not None:
            self.runner.stop()
            self.restarts += 1
        self.registry = CollectorRegistry()
        worker = StageWorker(
            self.topology, "plan", self.client, registry=self.registry, handler=emit
        )
        self.runner = WorkerThread(worker).start()


def run(args: argparse.Namespace) -> dict[str, Any]:
    client = ClientConfig(common.bootstrap())
    p = args.pause_lag
    pressure = {
        "lag": {"pause": p, "resume": p // 2},
        # Keep age out of it: this benchmark is about the lag signal alone.
        "oldest_age_s": {"pause": 300.0, "resume": 150.0},
        "min_dwell_s": args.min_dwell,
    }
    stages = {
        # A buffer above the burst keeps the local bound from pausing first.
        "plan": {"downstream": ["act"], "pressure": pressure, "partition_buffer": 2 * p},
        "act": {},
    }
    _, topology = common.make_workflow(
        client, stages, partitions=args.partitions, log_append_stages=["act"]
    )
    setup = _Setup(
        client,
        Admin(client),
        topology,
        common.partitions_of(topology.stages["plan"].input_topics, args.partitions),
        common.partitions_of(topology.stages["act"].input_topics, args.partitions),
    )
    setup.start_plan()
    trials: list[dict[str, float]] = []
    try:
        for _ in range(args.trials):
            trials.append(_trial(args, setup))
            print(f"trial {len(trials)}: reaction {trials[-1]['reaction_s']:.3f} s", flush=True)
    finally:
        if setup.runner is not None:
            setup.runner.stop()
        common.delete_workflow(client, topology)
    reactions = [t["reaction_s"] for t in trials]
    p99 = common.percentile(reactions, 99)
    return {
        "trials": trials,
        "reaction_p50_s": common.percentile(reactions, 50),
        "reaction_p99_s": p99,
        "reaction_max_s": max(reactions),
        "act_lag_after_pause_max": max(t["act_lag_after_pause"] for t in trials),
        "act_lag_after_pause_min": min(t["act_lag_after_pause"] for t in trials),
        # > 0: plan stayed paused after act's lag fell to 0, and was restarted to go on.
        "plan_restarts_to_resume": setup.restarts,
        "targets": [
            f"reaction p99 {p99:.3f} s <= {TARGET_P99_S} s: "
            + ("PASS" if p99 <= TARGET_P99_S else "FAIL"),
            f"plan resumed on its own after every reset (restarts {setup.restarts}): "
            + ("PASS" if setup.restarts == 0 else "FAIL"),
        ],
    }


def _quiet_start(args: argparse.Namespace, s: _Setup) -> None:
    """act's lag zero, plan fetching with its input drained (what is left after the last
    pause stays below P), act zero again, and the hysteresis dwell over, so nothing but
    the next burst's lag decides when plan pauses."""
    plan, act = s.topology.stages["plan"], s.topology.stages["act"]
    reset_group(s.client, act.consumer_group, s.act_tps)
    wait_until(
        lambda: (
            common.committed_total(s.admin, plan.consumer_group, s.plan_tps)
            >= common.end_total(s.admin, s.plan_tps)
        ),
        args.resume_timeout,
        "plan to drain its input",
    )
    reset_group(s.client, act.consumer_group, s.act_tps)
    resumed_at = wait_until(
        lambda: paused_partitions(s.registry) == 0, args.resume_timeout, "plan to resume"
    )
    time.sleep(max(0.0, args.min_dwell + 0.2 - (time.monotonic() - resumed_at)))


def _trial(args: argparse.Namespace, s: _Setup) -> dict[str, float]:
    p = args.pause_lag
    plan = s.topology.stages["plan"]
    try:
        _quiet_start(args, s)
    except TimeoutError as exc:
        print(f"{exc}; restarting plan's worker", flush=True)
        s.start_plan()
        _quiet_start(args, s)
    starts = s.admin.end_offsets(s.act_tps)  # == act's committed offsets after the reset
    # 1.5 P: enough to cross P, and what is left after the pause stays below P.
    burst = threading.Thread(
        target=common.produce_events,
        args=(s.client, s.topology, plan.input_topics[0], p + p // 2, args.payload),
        kwargs={"stage": "plan"},
    )
    burst.start()
    paused_at = None
    deadline = time.monotonic() + 30.0
    while paused_at is None and time.monotonic() < deadline:
        if paused_partitions(s.registry) == len(s.plan_tps):
            paused_at = time.time()
        time.sleep(POLL_S)
    burst.join()
    if paused_at is None:
        raise TimeoutError("plan never paused")
    # act's topics use LogAppendTime: the P-th record appended since the reset is the
    # moment act's lag reached P, exact to the millisecond (polling end offsets would lag
    # by a round trip per poll, more under load). Negative: plan paused before the broker
    # held P records (it counts its own unacknowledged sends).
    new = common.end_total(s.admin, s.act_tps) - sum(starts.values())
    appended = sorted(ts for ts, _ in feeding.read_from(s.client, starts, new))
    if len(appended) < p:
        raise TimeoutError(f"act holds {len(appended)} new records, expected at least {p}")
    crossed_at = appended[p - 1] / 1000
    return {"reaction_s": paused_at - crossed_at, "act_lag_after_pause": float(len(appended))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="5 trials instead of 20")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--pause-lag", type=int, default=500, help="P: act lag that pauses plan")
    ap.add_argument("--min-dwell", type=float, default=1.0, help="pressure.min_dwell_s")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--payload", type=int, default=256)
    ap.add_argument("--resume-timeout", type=float, default=15.0, help="s before a restart")
    args = ap.parse_args(argv)
    args.trials = args.trials or (5 if args.quick else 20)
    results = run(args)
    path = common.write_results(NAME, vars(args), results)
    common.print_table(
        ["trials", "p50 s", "p99 s", "max s", "max act lag after"],
        [[len(results["trials"]), results["reaction_p50_s"], results["reaction_p99_s"],
          results["reaction_max_s"], int(results["act_lag_after_pause_max"])]],
    )  # fmt: skip
    for line in results["targets"]:
        print(line)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
