"""Passthrough throughput: one stage that re-emits every 1 KB event, against a bare
confluent-kafka loop doing the same work, and Kafka's own perf tools as the ceiling.

Run: python -m benchmarks.passthrough [--quick]. Each variant runs in a fresh child process
(`--variant NAME`, started by the driver) on fresh topics, so peak RSS is per variant.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from confluent_kafka import Consumer, Producer

from benchmarks import common, feeding
from streams.events import TaskEvent, TaskEventCodec
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig, consumer_settings, producer_settings
from streams.runtime.context import HandlerContext
from streams.runtime.handler_runner import Handler

NAME = "passthrough"
STAGE = "pass"
VARIANTS = ("streams-async", "streams-sync", "bare")
TARGET_RATIO = 0.70
TARGET_EVENTS_PER_S = 30_000.0


# --------------------------------------------------------------------------- children
def _child(variant: str, workflow: dict[str, Any], servers: str, opts: dict[str, Any]) -> None:
    first: list[float] = []
    if variant == "bare":
        result = _bare_loop(workflow, servers, first)
    else:
        result = common.serve_worker(workflow, STAGE, servers, _handler(variant, first), **opts)
    print(json.dumps({**result, "first_at": first[0] if first else None}), flush=True)


def _handler(variant: str, first: list[float]) -> Handler:
    # Stamping the first call costs one list check per event; it marks "first consumed".
    async def emit_async(event: TaskEvent, ctx: HandlerContext) -> None:
        if not first:
            first.append(time.time())
        ctx.emit(event)

    def emit_sync(event: TaskEvent, ctx: HandlerContext) -> None:
        if not first:
            first.append(time.time())
        ctx.emit(event)

    return emit_async if variant == "streams-async" else emit_sync


def _bare_loop(workflow: dict[str, Any], servers: str, first: list[float]) -> dict[str, Any]:
    """The baseline: consume a batch, decode, with_stage, encode, produce, commit async.

    Same client settings as streams' own consumer and producer; unlike streams it commits
    consumed positions without waiting for the produce acks (at-most-once on a crash).
    """
    name = workflow["workflow"]
    client = ClientConfig(servers)
    settings = consumer_settings(client, f"{name}.{STAGE}")
    # streams stores offsets itself; the bare loop lets commit() take the consumed positions.
    settings["enable.auto.offset.store"] = True
    consumer = Consumer(settings)
    consumer.subscribe([f"{name}.{STAGE}.standard"])
    producer = Producer(producer_settings(client))
    codec = TaskEventCodec()
    out_topic = f"{name}.completed"
    stopping: list[bool] = []
    common.stop_on_stdin_eof(lambda: stopping.append(True))
    cpu0 = common.cpu_seconds()
    while not stopping:
        messages = consumer.consume(num_messages=500, timeout=0.05)
        if messages and not first:
            first.append(time.time())
        now_ms = int(time.time() * 1000)
        for m in messages:
            value = m.value()
            if m.error() is not None or not isinstance(value, bytes):
                continue
            event = codec.decode(value).with_stage("completed", now_ms)
            while True:
                try:
                    producer.produce(out_topic, codec.encode(event), key=m.key())
                    break
                except BufferError:  # local queue full: serve acks, then retry
                    producer.poll(0.05)
        producer.poll(0)
        if messages:
            consumer.commit(asynchronous=True)
    producer.flush(30.0)
    consumer.close()
    return {
        "peak_rss_mb": common.proc_status_kb("VmHWM") / 1024,
        "cpu_s": common.cpu_seconds() - cpu0,
    }


# --------------------------------------------------------------------------- driver
def run_variant(variant: str, client: ClientConfig, args: argparse.Namespace) -> dict[str, Any]:
    stage = {
        "concurrency": args.concurrency,
        "partition_buffer": args.partition_buffer,
        "max_queue_age_s": 3600.0,  # the backlog is old on purpose; nothing may expire
    }
    workflow, topology = common.make_workflow(client, {STAGE: stage}, partitions=args.partitions)
    spec = topology.stages[STAGE]
    in_tps = common.partitions_of(spec.input_topics, args.partitions)
    out_tps = common.partitions_of([topology.completed_topic], args.partitions)
    produce_s = common.produce_events(
        client, topology, spec.input_topics[0], args.count, args.payload, stage=STAGE
    )
    opts = json.dumps({"poll_batch": args.poll_batch})
    child = common.spawn(
        f"benchmarks.{NAME}",
        [
            "--variant",
            variant,
            "--workflow",
            json.dumps(workflow),
            "--servers",
            client.bootstrap_servers,
            "--opts",
            opts,
        ],
    )
    admin = Admin(client)
    t_output = t_committed = None
    deadline = time.monotonic() + args.timeout
    while (t_output is None or t_committed is None) and time.monotonic() < deadline:
        time.sleep(0.02)
        if child.poll() is not None:
            raise common.child_failed(child, variant)
        if t_output is None and common.end_total(admin, out_tps) >= args.count:
            t_output = time.time()
        if (
            t_committed is None
            and common.committed_total(admin, spec.consumer_group, in_tps) >= args.count
        ):
            t_committed = time.time()
    # Latency phase: fresh events at a steady rate below capacity, on the same worker.
    starts = admin.end_offsets(out_tps)
    sent = feeding.produce_paced(
        client, topology, spec.input_topics[0], args.latency_rate, args.latency_seconds,
        args.payload, stage=STAGE,
    )  # fmt: skip
    lat = feeding.latencies_ms(feeding.read_from(client, starts, sent))
    child_result = common.finish(child)
    common.delete_workflow(client, topology)
    first_at = child_result.pop("first_at")
    if t_output is None or t_committed is None or first_at is None:
        raise RuntimeError(f"{variant}: not all {args.count} events done in {args.timeout} s")
    return {
        "variant": variant,
        "events_per_s_output": args.count / (t_output - first_at),
        "events_per_s_committed": args.count / (t_committed - first_at),
        "latency_rate_per_s": args.latency_rate,
        "latency_events": len(lat),
        "latency_p50_ms": common.percentile(lat, 50),
        "latency_p99_ms": common.percentile(lat, 99),
        "preproduce_s": produce_s,
        **child_result,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__)
    p.add_argument("--quick", action="store_true", help="20,000 events, short latency phase")
    p.add_argument("--count", type=int, default=None, help="events per variant (200,000)")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--payload", type=int, default=1024, help="payload bytes per event")
    p.add_argument("--concurrency", type=int, default=1000, help="stage concurrency")
    p.add_argument("--partition-buffer", type=int, default=2000)
    p.add_argument("--poll-batch", type=int, default=500)
    p.add_argument("--latency-rate", type=float, default=None, help="events/s (5000)")
    p.add_argument("--latency-seconds", type=float, default=None, help="(10; quick 3)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--no-kafka-tools", action="store_true")
    p.add_argument("--timeout", type=float, default=600.0)
    # Child mode, used by the driver.
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--workflow", help=argparse.SUPPRESS)
    p.add_argument("--servers", help=argparse.SUPPRESS)
    p.add_argument("--opts", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variant:
        _child(args.variant, json.loads(args.workflow), args.servers, json.loads(args.opts))
        return
    args.count = args.count or (20_000 if args.quick else 200_000)
    args.latency_rate = args.latency_rate or (2000.0 if args.quick else 5000.0)
    args.latency_seconds = args.latency_seconds or (3.0 if args.quick else 10.0)
    client = ClientConfig(common.bootstrap())
    rows = [run_variant(v, client, args) for v in args.variants.split(",")]
    for r in rows:
        # CPU per event is steadier than events/s on a shared machine: the gap between a
        # variant and the bare loop is the framework's own cost per record.
        r["cpu_us_per_event"] = 1e6 * r["cpu_s"] / (args.count + r["latency_events"])
    by_name = {r["variant"]: r for r in rows}
    results: dict[str, Any] = {"variants": rows}
    if "bare" in by_name:
        bare = by_name["bare"]["events_per_s_output"]
        for r in rows:
            r["ratio_to_bare"] = r["events_per_s_output"] / bare
    if not args.no_kafka_tools:
        results["kafka_tools"] = feeding.kafka_tools_ceiling(client, args.count, args.partitions)
    _check_targets(results, rows)
    path = common.write_results(
        NAME, {k: v for k, v in vars(args).items() if v is not None}, results
    )
    common.print_table(
        ["variant", "ev/s out", "ev/s commit", "x bare", "CPU us/ev", "p50 ms", "p99 ms",
         "peak RSS MB"],
        [
            [r["variant"], r["events_per_s_output"], r["events_per_s_committed"],
             r.get("ratio_to_bare", float("nan")), r["cpu_us_per_event"],
             r["latency_p50_ms"], r["latency_p99_ms"], r["peak_rss_mb"]]
            for r in rows
        ],
    )  # fmt: skip
    if "kafka_tools" in results:
        k = results["kafka_tools"]
        print(f"Kafka tools: produce {k['producer_records_per_s']:,.0f}/s, "
              f"consume {k['consumer_records_per_s']:,.0f}/s")  # fmt: skip
    for line in results["targets"]:
        print(line)
    print(f"wrote {path}")


def _check_targets(results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    lines = []
    for r in rows:
        if not r["variant"].startswith("streams"):
            continue
        rate, ratio = r["events_per_s_output"], r.get("ratio_to_bare")
        ok_rate = rate >= TARGET_EVENTS_PER_S
        lines.append(f"{r['variant']}: {rate:,.0f} ev/s >= {TARGET_EVENTS_PER_S:,.0f}: "
                     f"{'PASS' if ok_rate else 'FAIL'}")  # fmt: skip
        if ratio is not None:
            ok = ratio >= TARGET_RATIO
            lines.append(f"{r['variant']}: {ratio:.0%} of bare >= {TARGET_RATIO:.0%}: "
                         f"{'PASS' if ok else 'FAIL'}")  # fmt: skip
    results["targets"] = lines


if __name__ == "__main__":
    main(sys.argv[1:])
