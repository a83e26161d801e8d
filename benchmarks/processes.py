"""Processes: how `streams worker --processes N` scales a CPU-bound stage, and what each
process costs.

One stage, 6 partitions, a handler that burns a fixed amount of CPU per record in pure
Python (an FNV-1a hash over the payload, `--cpu-us` µs, calibrated once here) and emits
the event. N events are produced into its input before the command starts; then ONE
`streams worker FILE --stage burn --processes P` runs, for P = 1 and then 2, each on a
fresh workflow. events/s = N / (last output record - first output record); the tree's
CPU (the supervisor and its children, /proc/PID/stat) and each process's peak RSS
(VmHWM) are read just before it is stopped with SIGTERM.

Run: python -m benchmarks.processes [--quick]. Writes benchmarks/results/processes.json
(quick: processes-quick.json).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import common, feeding
from streams.events import TaskEvent
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.runtime.context import HandlerContext
from streams.topology import Topology
from streams.types import TopicPartition

NAME = "processes"
STAGE = "burn"
FLEETS = (1, 2)
TARGET_RATIO = 1.6
HANDLERS = {"async": "benchmarks.processes:burn", "sync": "benchmarks.processes:burn_sync"}
_STEPS = int(os.environ.get("BENCH_CPU_STEPS", "0"))  # set by the driver for its workers
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- handlers
def _fnv(data: bytes, steps: int) -> int:
    data = data or b"\0"
    size = len(data)
    h = 0x811C9DC5
    for i in range(steps):
        h = ((h ^ data[i % size]) * 0x01000193) & 0xFFFFFFFF
    return h


async def burn(event: TaskEvent, ctx: HandlerContext) -> None:
    """The workers' handler: `_STEPS` hash steps over the payload, then emit."""
    _fnv(event.payload, _STEPS)
    ctx.emit(event)


def burn_sync(event: TaskEvent, ctx: HandlerContext) -> None:
    """The same as a plain function (it runs on the worker's handler threads)."""
    _fnv(event.payload, _STEPS)
    ctx.emit(event)


def calibrate(cpu_us: float, payload_size: int) -> dict[str, Any]:
    """Hash steps that take `cpu_us` of CPU in this process, timed on this machine."""
    payload = os.urandom(payload_size)
    probe = 200_000
    trials = []
    for _ in range(5):
        # thread_time, not wall time: another process taking the core does not inflate it.
        started = time.thread_time()
        _fnv(payload, probe)
        trials.append((time.thread_time() - started) / probe)
    step_s = statistics.median(trials)
    return {
        "cpu_us": cpu_us,
        "steps": max(1, round(cpu_us * 1e-6 / step_s)),
        "step_ns": step_s * 1e9,
        "trials_step_ns": [t * 1e9 for t in trials],
    }


# --------------------------------------------------------------------------- /proc
def _tree(root: int) -> list[int]:
    """root and every descendant (the supervisor's children, anything they started)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(entry.name)[1])
            except (OSError, IndexError, ValueError):
                continue  # exited while we looked
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _stat_fields(pid: int | str) -> list[str]:
    # The command name in parentheses may hold spaces: fields start after its last ")".
    text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    return text.rsplit(")", 1)[1].split()


def _cpu_s(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime: every thread


def _tree_cpu_s(root: int) -> float:
    total = 0.0
    for pid in _tree(root):
        try:
            total += _cpu_s(pid)
        except (OSError, IndexError):
            continue
    return total


# --------------------------------------------------------------------------- metrics
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _handled(port: int, workflow: str) -> dict[str, tuple[float, float]]:
    """Handler calls and their summed seconds by process ("0" for a single worker)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, tuple[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "streams_handler_latency_seconds":
            continue
        for s in family.samples:
            if s.labels.get("workflow") != workflow or not s.name.endswith(("_count", "_sum")):
                continue
            count, total = out.get(s.labels.get("process", "0"), (0.0, 0.0))
            if s.name.endswith("_count"):
                count += s.value
            else:
                total += s.value
            out[s.labels.get("process", "0")] = (count, total)
    return out


class _BusyWatch:
    """When every process has handled a record: the 2-process rate from then on leaves out
    the second member's join and the rebalance it causes."""

    def __init__(self, port: int, processes: int, workflow: str) -> None:
        self.at: float | None = None
        self._args = (port, processes, workflow)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="busy-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def _run(self) -> None:
        port, processes, workflow = self._args
        # Every 0.25 s and only until all are busy: each scrape costs the workers CPU.
        while not self._stop.wait(0.25):
            try:
                handled = _handled(port, workflow)
            except OSError:  # not serving yet
                continue
            if sum(1 for count, _ in handled.values() if count > 0) >= processes:
                self.at = time.time()
                return


# --------------------------------------------------------------------------- driver
def run_fleet(
    client: ClientConfig, processes: int, steps: int, args: argparse.Namespace
) -> dict[str, Any]:
    # Concurrency well over one batch: at the default 16 a process dispatched 16 records,
    # ran them (5 ms of GIL) and waited for the poll loop's next turn, using a third of a
    # core (719 ev/s at 458 us CPU each), so the 2/1 ratio measured that wait, not cores.
    stage = {
        "handler": HANDLERS[args.handler],
        "max_queue_age_s": 3600.0,  # old on purpose
        "concurrency": args.concurrency,
        **({"partition_buffer": args.partition_buffer} if args.partition_buffer else {}),
    }
    workflow, topology = common.make_workflow(client, {STAGE: stage}, partitions=args.partitions)
    try:
        spec = topology.stages[STAGE]
        produce_s = common.produce_events(
            client, topology, spec.input_topics[0], args.count, args.payload, stage=STAGE
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "flow.yaml"
            path.write_text(yaml.safe_dump(workflow, sort_keys=False), encoding="utf-8")
            port = _free_port()
            command = ["worker", str(path), "--stage", STAGE, "--processes", str(processes)]
            child = common.spawn(
                "streams",
                [*command, "--metrics-port", str(port)],
                env={
                    "KAFKA_BOOTSTRAP_SERVERS": client.bootstrap_servers,
                    "BENCH_CPU_STEPS": str(steps),
                },
            )
            try:
                row = _measure(client, topology, child, port, processes, args)
            finally:
                exit_code = _stop(child)
    finally:
        common.delete_workflow(client, topology)
    return {"processes": processes, **row, "exit_code": exit_code, "preproduce_s": produce_s}


def _measure(
    client: ClientConfig,
    topology: Topology,
    child: subprocess.Popen[str],
    port: int,
    processes: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    spec = topology.stages[STAGE]
    in_tps = common.partitions_of(spec.input_topics, args.partitions)
    out_tps = common.partitions_of([topology.completed_topic], args.partitions)
    admin = Admin(client)
    busy = _BusyWatch(port, processes, topology.workflow)
    outputs: list[tuple[float, int]] = []
    t_output = t_committed = None
    cpu_at_first: tuple[float, int] | None = None
    deadline = time.monotonic() + args.timeout
    try:
        while t_output is None or t_committed is None:
            time.sleep(0.02)
            if child.poll() is not None:
                raise common.child_failed(child, f"--processes {processes}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"--processes {processes}: not done in {args.timeout} s")
            if t_output is None:
                done = common.end_total(admin, out_tps)
                outputs.append((time.time(), done))
                if done and cpu_at_first is None:
                    # What start-up (imports, connect, join) cost, to tell it from the run.
                    cpu_at_first = (_tree_cpu_s(child.pid), done)
                if done >= args.count:
                    t_output = outputs[-1][0]
            if (
                t_committed is None
                and common.committed_total(admin, spec.consumer_group, in_tps) >= args.count
            ):
                t_committed = time.time()
    finally:
        busy.stop()
    pids = _tree(child.pid)
    cpu_s = sum(_cpu_s(pid) for pid in pids)
    rss_mb = {pid: common.proc_status_kb("VmHWM", pid) / 1024 for pid in pids}
    handled = _handled(port, topology.workflow)
    first_s = _first_append_ms(client, out_tps) / 1000
    assert t_output is not None and t_committed is not None and cpu_at_first is not None
    startup_cpu_s, startup_done = cpu_at_first
    running = max(1, args.count - startup_done)
    row: dict[str, Any] = {
        "events_per_s_output": args.count / (t_output - first_s),
        "events_per_s_committed": args.count / (t_committed - first_s),
        "events_per_s_all_busy": _rate_since(busy.at, outputs, args.count, t_output),
        "all_busy_after_s": None if busy.at is None else busy.at - first_s,
        "cpu_s": cpu_s,
        "cpu_us_per_event": 1e6 * cpu_s / args.count,
        "cpu_s_startup": startup_cpu_s,
        "cpu_us_per_event_running": 1e6 * (cpu_s - startup_cpu_s) / running,
        "handled_per_process": {p: int(c) for p, (c, _) in sorted(handled.items())},
        "handler_us_mean": {p: 1e6 * s / c for p, (c, s) in sorted(handled.items()) if c},
    }
    if processes == 1:  # one process and no supervisor (README "Stage workers")
        row |= {"worker_peak_rss_mb": [rss_mb[child.pid]], "supervisor_peak_rss_mb": None}
    else:
        row |= {
            "worker_peak_rss_mb": [mb for pid, mb in rss_mb.items() if pid != child.pid],
            "supervisor_peak_rss_mb": rss_mb[child.pid],
            "supervisor_cpu_s": _cpu_s(child.pid),
        }
    return row


def _rate_since(
    at: float | None, outputs: list[tuple[float, int]], count: int, t_output: float
) -> float | None:
    if at is None or at >= t_output:
        return None
    before = [done for t, done in outputs if t <= at]
    return (count - (before[-1] if before else 0)) / (t_output - at)


def _first_append_ms(client: ClientConfig, tps: list[TopicPartition]) -> float:
    """The broker's append time of the first output record (the completed topic uses
    LogAppendTime): polling would place it up to one poll late. Offset 0 of each partition
    is that partition's first; the earliest of them is the first of all."""
    ends = Admin(client).end_offsets(tps)
    firsts = [feeding.read_from(client, {tp: 0}, 1) for tp in tps if ends[tp] > 0]
    return float(min(records[0][0] for records in firsts if records))


def _stop(child: subprocess.Popen[str]) -> int:
    """SIGTERM the command (the supervisor passes it on) and wait for a clean exit."""
    child.send_signal(signal.SIGTERM)
    try:
        child.communicate(timeout=90)  # the supervisor gives its children 60 s
    except subprocess.TimeoutExpired:
        child.kill()  # its children see their stdin close and leave the group
        child.communicate()
    return child.returncode


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__)
    p.add_argument("--quick", action="store_true", help="6,000 events: checks it works")
    p.add_argument("--count", type=int, default=None, help="events per run (60,000)")
    p.add_argument("--cpu-us", type=float, default=300.0, help="handler CPU per record, µs")
    p.add_argument("--handler", choices=sorted(HANDLERS), default="async")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=200, help="the stage's concurrency")
    p.add_argument(
        "--partition-buffer", type=int, default=None, help="the stage's (topology default)"
    )
    p.add_argument("--payload", type=int, default=1024, help="payload bytes per event")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    args = p.parse_args(argv)
    args.count = args.count or (6_000 if args.quick else 60_000)
    calibration = calibrate(args.cpu_us, args.payload)
    client = ClientConfig(common.bootstrap())
    rows = [run_fleet(client, n, calibration["steps"], args) for n in FLEETS]
    by_n = {r["processes"]: r for r in rows}
    ratio = by_n[2]["events_per_s_output"] / by_n[1]["events_per_s_output"]
    targets = [
        f"2 processes / 1: {ratio:.2f}x >= {TARGET_RATIO}: "
        f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'}"
    ]
    for r in rows:
        if r["exit_code"] != 0:
            targets.append(f"--processes {r['processes']}: exit code {r['exit_code']}: FAIL")
    common.print_table(
        ["processes", "ev/s out", "ev/s commit", "ev/s all busy", "CPU us/ev",
         "CPU us/ev running", "handler us", "worker RSS MB", "supervisor RSS MB", "handled"],
        [
            [r["processes"], r["events_per_s_output"], r["events_per_s_committed"],
             _or_dash(r["events_per_s_all_busy"]), r["cpu_us_per_event"],
             r["cpu_us_per_event_running"],
             " / ".join(f"{us:.0f}" for us in r["handler_us_mean"].values()),
             " / ".join(f"{mb:.0f}" for mb in r["worker_peak_rss_mb"]),
             _or_dash(r["supervisor_peak_rss_mb"] and round(r["supervisor_peak_rss_mb"])),
             " / ".join(str(n) for n in r["handled_per_process"].values())]
            for r in rows
        ],
    )  # fmt: skip
    for line in targets:
        print(line)
    path = common.write_results(
        f"{NAME}-quick" if args.quick else NAME,
        {**vars(args), "cpu_steps": calibration["steps"]},
        {"calibration": calibration, "runs": rows, "ratio_2_to_1": ratio, "targets": targets},
    )
    print(f"wrote {path}")


def _or_dash(value: float | None) -> object:
    return "-" if value is None else value


if __name__ == "__main__":
    main()
