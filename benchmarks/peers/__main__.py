"""Peers: streams against the bare confluent-kafka loop, Quix Streams, arroyo and
faust-streaming, on the same passthrough and I/O-bound work, back to back, same broker.

Run: python -m benchmarks.peers [--quick] [--repeats N]. Every run gets fresh topics (a
workflow of one stage), N TaskEvent envelopes produced into its input before the
consumer starts, one child process (streams in this environment; each peer in its own
venv, see benchmarks/peers/venvs.py), the same clock and the same output check.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks import common, passthrough
from benchmarks.peers import results, streams_peer, venvs
from streams.events import TaskEventCodec
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.topology import Topology
from streams.types import TopicPartition

NAME = "peers"
STAGE = passthrough.STAGE  # passthrough's child serves this stage name
WORKLOADS = ("passthrough", "io")
PEERS = {peer.name: peer for peer in venvs.PEERS}
SYSTEMS = (*streams_peer.SYSTEMS, *PEERS)
SERIAL = ("quix",)  # one record at a time: an I/O-bound run gets --io-serial-count records
RESTAGED_SAMPLE = 200  # output records decoded to check they were restaged


@dataclass
class Child:
    process: subprocess.Popen[str]
    log: str

    def failed(self, what: str) -> RuntimeError:
        return RuntimeError(f"{what}: child exited with {self.process.returncode}; see {self.log}")

    def finish(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Close its stdin (the stop signal of the protocol) and read its last JSON line."""
        out, _ = self.process.communicate(input="", timeout=timeout_s)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if self.process.returncode != 0 or not lines:
            raise self.failed("finish")
        doc: dict[str, Any] = json.loads(lines[-1])
        return doc


def spawn(python: Path | str, module: str, args: list[str]) -> Child:
    """common.spawn with a given interpreter (a peer's venv): the same protocol, stderr to
    a log file named on failure."""
    log = tempfile.NamedTemporaryFile(prefix="bench-peer-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [str(python), "-m", module, *args],
        cwd=common.REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    return Child(process, log.name)


# --------------------------------------------------------------------------- one run
def run_one(
    system: str, workload: str, client: ClientConfig, args: argparse.Namespace,
    pythons: dict[str, Path],
) -> dict[str, Any]:  # fmt: skip
    count = _count(system, workload, args)
    stage: dict[str, Any] = {
        "concurrency": args.concurrency,
        "partition_buffer": args.partition_buffer,
        "max_queue_age_s": 3600.0,  # the backlog is old on purpose; nothing may expire
    }
    if workload == "io":
        stage["handler_timeout_s"] = 30.0
    workflow, topology = common.make_workflow(client, {STAGE: stage}, partitions=args.partitions)
    spec = topology.stages[STAGE]
    in_tps = common.partitions_of(spec.input_topics, args.partitions)
    out_tps = common.partitions_of([topology.completed_topic], args.partitions)
    admin = Admin(client)
    child: Child | None = None
    try:
        common.produce_events(
            client, topology, spec.input_topics[0], count, args.payload, stage=STAGE
        )
        child = _start(system, workload, workflow, topology, client, args, pythons)
        t_output = t_committed = None
        deadline = time.monotonic() + args.timeout
        while (t_output is None or t_committed is None) and time.monotonic() < deadline:
            time.sleep(0.02)
            if child.process.poll() is not None:
                raise child.failed(f"{system} {workload}")
            if t_output is None and common.end_total(admin, out_tps) >= count:
                t_output = time.time()
            if (
                t_committed is None
                and common.committed_total(admin, spec.consumer_group, in_tps) >= count
            ):
                t_committed = time.time()
        reported = child.finish()
        if t_output is None or t_committed is None or reported.get("first_at") is None:
            raise RuntimeError(f"{system} {workload}: not done in {args.timeout} s")
        check = _check(client, admin, spec.consumer_group, in_tps, out_tps)
    finally:
        if child is not None and child.process.poll() is None:
            child.process.kill()
            child.process.wait()
        _delete(client, topology)
    cpu_s = reported.pop("cpu_s")
    return {
        "system": system,
        "workload": workload,
        "events": count,
        "version": reported.pop("version", None) or _own_version(system),
        **results.run_numbers(count, reported.pop("first_at"), t_output, t_committed, cpu_s),
        "cpu_s": cpu_s,
        "check": check,
        **reported,
    }


def _count(system: str, workload: str, args: argparse.Namespace) -> int:
    if workload == "passthrough":
        return int(args.count)
    return int(args.io_serial_count if system in SERIAL else args.io_count)


def _start(
    system: str, workload: str, workflow: dict[str, Any], topology: Topology,
    client: ClientConfig, args: argparse.Namespace, pythons: dict[str, Path],
) -> Child:  # fmt: skip
    spec = topology.stages[STAGE]
    if system in PEERS:
        return spawn(
            pythons[system],
            PEERS[system].module,
            ["--workload", workload, "--servers", client.bootstrap_servers,
             "--group", spec.consumer_group, "--input", spec.input_topics[0],
             "--output", topology.completed_topic, "--latency", str(args.latency),
             "--concurrency", str(args.concurrency)],
        )  # fmt: skip
    opts: dict[str, Any] = {"poll_batch": args.poll_batch} if workload == "passthrough" else {}
    if workload == "io" and system == "streams-sync":
        # A plain function runs on handler_threads (README "Handlers"; default 32): as
        # many as the stage has calls in flight, as RunTaskInThreads gets for arroyo.
        opts["handler_threads"] = args.concurrency
    return spawn(
        common.PYTHON,
        "benchmarks.peers.streams_peer",
        ["--system", system, "--workload", workload, "--workflow", json.dumps(workflow),
         "--servers", client.bootstrap_servers, "--stage", STAGE,
         "--latency", str(args.latency), "--opts", json.dumps(opts)],
    )  # fmt: skip


def _check(
    client: ClientConfig, admin: Admin, group: str,
    in_tps: list[TopicPartition], out_tps: list[TopicPartition],
) -> dict[str, Any]:  # fmt: skip
    """Outside the clock: read every key in and out, decode a sample of the output."""
    input_keys, _ = _read(client, in_tps, admin, 0)
    output_keys, sample = _read(client, out_tps, admin, RESTAGED_SAMPLE)
    codec = TaskEventCodec()
    events = [codec.decode(v) for v in sample]
    restaged = bool(events) and all(
        e.stage == "completed" and e.attempt == 0 and e.enqueued_at_ms >= e.created_at_ms
        for e in events
    )
    return results.output_check(
        input_keys,
        output_keys,
        committed=common.committed_total(admin, group, in_tps),
        input_end=common.end_total(admin, in_tps),
        restaged=restaged,
    )


def _read(
    client: ClientConfig, tps: list[TopicPartition], admin: Admin, sample: int
) -> tuple[list[bytes], list[bytes]]:
    """Every key in `tps` up to their current ends, and the first `sample` values."""
    ends = admin.end_offsets(tps)
    group = f"bench-check-{uuid.uuid4().hex}"
    consumer = Consumer({**client.base(), "group.id": group, "enable.auto.commit": False})
    consumer.assign([KafkaTopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in tps])
    keys: list[bytes] = []
    values: list[bytes] = []
    deadline = time.monotonic() + 120.0
    try:
        while len(keys) < sum(ends.values()) and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.2):
                key, value = m.key(), m.value()
                if m.error() is None and isinstance(key, bytes) and isinstance(value, bytes):
                    keys.append(key)
                    if len(values) < sample:
                        values.append(value)
    finally:
        consumer.close()
    return keys, values


def _delete(client: ClientConfig, topology: Topology) -> None:
    """The workflow's topics and any a peer made for itself under its name (faust's
    `{app id}-__assignor-__leader`): the shared broker should not collect them."""
    common.delete_workflow(client, topology)
    admin = AdminClient(client.base())
    own = [t for t in admin.list_topics(timeout=30).topics if t.startswith(topology.workflow)]
    for future in admin.delete_topics(own).values() if own else ():
        future.result()


def _own_version(system: str) -> str:
    if system == "bare":
        return f"confluent-kafka {confluent_kafka.__version__}"
    return f"streams {version('streams')} @ {common.git_commit()[:7]}"


# --------------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small counts: checks it works")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--count", type=int, default=None, help="passthrough events (200,000)")
    p.add_argument("--io-count", type=int, default=None, help="I/O-bound events (20,000)")
    p.add_argument(
        "--io-serial-count", type=int, default=None,
        help="I/O-bound events for one-at-a-time peers (Quix; 150 = 30 s at 5/s)",
    )  # fmt: skip
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--payload", type=int, default=1024, help="payload bytes per event")
    p.add_argument("--concurrency", type=int, default=1000, help="I/O-bound calls in flight")
    p.add_argument("--latency", type=float, default=0.2, help="I/O-bound await, seconds")
    p.add_argument("--partition-buffer", type=int, default=2000, help="streams stage setting")
    p.add_argument("--poll-batch", type=int, default=500, help="streams worker option")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--timeout", type=float, default=600.0, help="per run, seconds")
    args = p.parse_args(argv)
    args.count = args.count or (10_000 if args.quick else 200_000)
    args.io_count = args.io_count or (4_000 if args.quick else 20_000)
    args.io_serial_count = args.io_serial_count or (20 if args.quick else 150)
    systems = [s for s in args.systems.split(",") if s]
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(systems) - set(SYSTEMS) | set(workloads) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown systems or workloads: {', '.join(sorted(unknown))}")
    client = ClientConfig(common.bootstrap())
    # Every venv before the first clock starts: building one takes a minute of pip.
    pythons = {s: venvs.python_of(PEERS[s]) for s in systems if s in PEERS}
    runs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    # Repeats outermost: a slow minute on a shared machine hits one repeat of every
    # system, not every repeat of one.
    for repeat in range(1, args.repeats + 1):
        for workload in workloads:
            for system in systems:
                if workload == "io" and system == "bare":
                    continue  # the bare loop has no concurrency to wait with
                try:
                    run = run_one(system, workload, client, args, pythons)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    failures.append({"repeat": repeat, "system": system,
                                     "workload": workload, "error": str(exc)})  # fmt: skip
                    print(f"[{repeat}/{args.repeats}] {workload} {system}: FAILED {exc}")
                    continue
                runs.append({"repeat": repeat, **run})
                _print_run(run, repeat, args.repeats)
    rows = results.summarise(runs, ideal_io=args.concurrency / args.latency)
    name = f"{NAME}-quick" if args.quick else NAME
    parameters = {k: v for k, v in vars(args).items() if v is not None}
    parameters["pins"] = {p.name: f"{p.package}=={p.version}" for p in venvs.PEERS}
    path = common.write_results(
        name, parameters, {"medians": rows, "runs": runs, "failures": failures}
    )
    if rows:
        _print_table(rows)
    print(f"wrote {path}")
    if failures:
        raise SystemExit(f"{len(failures)} run(s) failed")


def _print_run(run: dict[str, Any], repeat: int, repeats: int) -> None:
    check = "ok" if run["check"]["ok"] else f"CHECK FAILED {run['check']}"
    print(f"[{repeat}/{repeats}] {run['workload']:<11} {run['system']:<13} "
          f"{run['events_per_s_output']:>9,.0f} ev/s  {run['cpu_us_per_event']:>6.1f} us/ev  "
          f"{run['peak_rss_mb']:>5.0f} MB  {check}", flush=True)  # fmt: skip


def _print_table(rows: list[dict[str, Any]]) -> None:
    common.print_table(
        ["workload", "system", "version", "ev/s", "each repeat", "x bare", "of ideal",
         "CPU us/ev", "peak RSS MB", "check"],
        [
            [r["workload"], r["system"], r["version"], r["events_per_s_output"],
             " / ".join(f"{v:,.0f}" for v in r["events_per_s_each"]),
             f"{r['x_bare']:.2f}" if "x_bare" in r else "",
             f"{r['share_of_ideal']:.1%}" if "share_of_ideal" in r else "",
             r["cpu_us_per_event"], r["peak_rss_mb"], "ok" if r["all_ok"] else "FAILED"]
            for r in rows
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
