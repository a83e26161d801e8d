"""I/O-bound stage: an async handler that awaits 200 ms (a model or tool call) at
concurrency 1000, fed above its capacity for a sustained run. Ideal throughput is
concurrency / latency = 5000 events/s; reports how close the worker gets and whether its
RSS stays flat.

Run: python -m benchmarks.io_bound [--quick]. The worker runs in a child process
(`--variant worker`); the driver feeds the input, samples committed offsets and child RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from statistics import mean
from typing import Any

from benchmarks import common, feeding
from streams.events import TaskEvent
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.runtime.context import HandlerContext

NAME = "io_bound"
STAGE = "work"
TARGET_SHARE_OF_IDEAL = 0.80
TARGET_RSS_DRIFT = 0.10


def _child(workflow: dict[str, Any], servers: str, latency_s: float) -> None:
    async def slow_call(event: TaskEvent, ctx: HandlerContext) -> None:
        await asyncio.sleep(latency_s)
        ctx.emit(event)

    print(json.dumps(common.serve_worker(workflow, STAGE, servers, slow_call)), flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    client = ClientConfig(common.bootstrap())
    stage = {
        "concurrency": args.concurrency,
        "partition_buffer": args.partition_buffer,
        "max_queue_age_s": 3600.0,  # the feeder keeps a backlog; none of it may expire
        "handler_timeout_s": 30.0,
    }
    workflow, topology = common.make_workflow(client, {STAGE: stage}, partitions=args.partitions)
    spec = topology.stages[STAGE]
    in_tps = common.partitions_of(spec.input_topics, args.partitions)
    # Feed above the ideal rate; the lag cap keeps the backlog (and the run) bounded.
    feeder = feeding.BoundedFeeder(
        client, topology, STAGE, args.feed_rate, args.payload, max_lag=args.max_backlog
    )
    feeder.start()
    child = common.spawn(
        f"benchmarks.{NAME}",
        ["--variant", "worker", "--workflow", json.dumps(workflow),
         "--servers", client.bootstrap_servers, "--latency", str(args.latency)],
    )  # fmt: skip
    admin = Admin(client)
    done: list[tuple[float, int]] = []  # (seconds since first progress, committed total)
    rss: list[tuple[float, float]] = []  # (seconds since first progress, MB)
    started: float | None = None
    next_rss = 0.0
    deadline = time.monotonic() + args.duration + 120.0  # start-up allowance
    while time.monotonic() < deadline:
        time.sleep(1.0)
        if child.poll() is not None:
            feeder.stop()
            raise common.child_failed(child, NAME)
        committed = common.committed_total(admin, spec.consumer_group, in_tps)
        if started is None:
            if committed == 0:
                continue  # still joining the group: the clock starts at the first commit
            started = time.monotonic()
        t = time.monotonic() - started
        done.append((t, committed))
        if t >= next_rss:
            rss.append((t, common.proc_status_kb("VmRSS", child.pid) / 1024))
            next_rss += args.rss_every
        if t >= args.duration:
            break
    feeder.stop()
    child_result = common.finish(child)
    common.delete_workflow(client, topology)
    if started is None:
        raise RuntimeError("the worker committed nothing")
    return _summarise(args, done, rss, feeder, child_result)


def _summarise(
    args: argparse.Namespace,
    done: list[tuple[float, int]],
    rss: list[tuple[float, float]],
    feeder: feeding.BoundedFeeder,
    child_result: dict[str, Any],
) -> dict[str, Any]:
    warmup = min(30.0, args.duration / 6)
    window = min(60.0, (args.duration - warmup) / 3)
    steady = [(t, c) for t, c in done if t >= warmup]
    (t0, c0), (t1, c1) = steady[0], steady[-1]
    throughput = (c1 - c0) / (t1 - t0)
    ideal = args.concurrency / args.latency
    first = [mb for t, mb in rss if warmup <= t <= warmup + window]
    last = [mb for t, mb in rss if t >= done[-1][0] - window]
    first_mb, last_mb = mean(first or [float("nan")]), mean(last or [float("nan")])
    drift = (last_mb - first_mb) / first_mb
    return {
        "events_per_s": throughput,
        "ideal_events_per_s": ideal,
        "share_of_ideal": throughput / ideal,
        "events_done": c1,
        "measured_s": t1 - t0,
        "warmup_s": warmup,
        "rss_window_s": window,
        "rss_first_window_mb": first_mb,
        "rss_last_window_mb": last_mb,
        "rss_drift": drift,
        "rss_samples_mb": [[round(t, 1), round(mb, 1)] for t, mb in rss],
        "feeder_sent": feeder.sent,
        "feeder_held_s": feeder.held_s,  # > 0: the input had a backlog, the worker was the limit
        **child_result,
        "targets": [
            f"throughput {throughput / ideal:.0%} of ideal >= {TARGET_SHARE_OF_IDEAL:.0%}: "
            + ("PASS" if throughput / ideal >= TARGET_SHARE_OF_IDEAL else "FAIL"),
            f"RSS drift {drift:+.1%} within {TARGET_RSS_DRIFT:.0%}: "
            + ("PASS" if abs(drift) <= TARGET_RSS_DRIFT else "FAIL"),
        ],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__)
    p.add_argument("--quick", action="store_true", help="30 s instead of 5 minutes")
    p.add_argument("--duration", type=float, default=None, help="seconds (300; quick 30)")
    p.add_argument("--concurrency", type=int, default=1000)
    p.add_argument("--partition-buffer", type=int, default=2000)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--latency", type=float, default=0.2, help="handler await, seconds")
    p.add_argument("--feed-rate", type=float, default=6000.0, help="events/s offered")
    p.add_argument("--max-backlog", type=int, default=20_000, help="feeder holds above this")
    p.add_argument("--payload", type=int, default=256)
    p.add_argument("--rss-every", type=float, default=None, help="seconds (10; quick 2)")
    p.add_argument("--variant", choices=["worker"], help=argparse.SUPPRESS)
    p.add_argument("--workflow", help=argparse.SUPPRESS)
    p.add_argument("--servers", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variant:
        _child(json.loads(args.workflow), args.servers, args.latency)
        return
    args.duration = args.duration or (30.0 if args.quick else 300.0)
    args.rss_every = args.rss_every or (2.0 if args.quick else 10.0)
    results = run(args)
    path = common.write_results(
        NAME, {k: v for k, v in vars(args).items() if v is not None}, results
    )
    r = results
    common.print_table(
        ["ev/s", "ideal", "share", "RSS first MB", "RSS last MB", "drift", "peak RSS MB"],
        [[r["events_per_s"], r["ideal_events_per_s"], f"{r['share_of_ideal']:.0%}",
          r["rss_first_window_mb"], r["rss_last_window_mb"], f"{r['rss_drift']:+.1%}",
          r["peak_rss_mb"]]],
    )  # fmt: skip
    for line in r["targets"]:
        print(line)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
