"""Shared benchmark plumbing: broker address, unique workflows, bulk produce, offsets, the
worker-child protocol, machine info and result files.

Owns nothing the library needs; benchmarks only. Must not be imported by streams/.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.errors import StreamsError
from streams.events import TaskEventCodec, new_task_event
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.kafka.producer import RecordProducer
from streams.runtime.handler_runner import Handler
from streams.runtime.heap import freeze_startup_heap
from streams.runtime.options import WorkerOptions
from streams.runtime.worker import StageWorker
from streams.topology import Topology, parse_topology
from streams.types import Lane, TopicPartition

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# --------------------------------------------------------------------------- environment
def bootstrap() -> str:
    """KAFKA_BOOTSTRAP_SERVERS if set, else the local broker (started or reused)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    cli = Path(PYTHON).with_name("streams")
    out = subprocess.run([str(cli), "broker", "start"], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if "model name" in ln), "?"
    )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "loadavg_at_start": os.getloadavg(),
    }


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip()


def write_results(name: str, parameters: dict[str, Any], results: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    doc = {
        "benchmark": name,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": git_commit(),
        "machine": machine_info(),
        "parameters": parameters,
        "results": results,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def proc_status_kb(key: str, pid: int | str = "self") -> int:
    """VmRSS / VmHWM etc. of a process, in kB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


# --------------------------------------------------------------------------- workflows
def make_workflow(
    client: ClientConfig,
    stages: dict[str, dict[str, Any]],
    *,
    partitions: int,
    lanes: Sequence[Lane] = ("standard",),
    log_append_stages: Sequence[str] = (),
) -> tuple[dict[str, Any], Topology]:
    """A uniquely named workflow (its dict, for child processes, and the parsed topology).

    The completed topic (and the input topics of `log_append_stages`) are created first
    with LogAppendTime, so their timestamps are the broker's append time (when a record
    counts as output or as lag), not the emitter's clock.
    """
    name = f"bench{uuid.uuid4().hex[:8]}"
    data: dict[str, Any] = {
        "workflow": name,
        "lanes": list(lanes),
        "topic_defaults": {"partitions": partitions, "retention_ms": 3_600_000},
        "stages": {
            s: {"handler": "benchmarks.common:unused", **spec} for s, spec in stages.items()
        },
    }
    topology = parse_topology(data, f"<benchmark {name}>", validate_handlers=False)
    for topic in [topology.completed_topic] + [
        t for stage in log_append_stages for t in topology.stages[stage].input_topics
    ]:
        log_append_topic(client, topic, partitions)
    Admin(client).apply(
        TopicWanted(t, spec.partitions, None, spec.compacted)
        for t, spec in topology.all_topics().items()
    )
    wait_for_leaders(client, topology)
    return data, topology


def wait_for_leaders(client: ClientConfig, topology: Topology, timeout_s: float = 90.0) -> None:
    """Return once every topic of the workflow serves (end offsets answer).

    New topics answer NOT_LEADER_OR_FOLLOWER (or UNKNOWN_TOPIC, mapped to another error
    class) for a moment; start only once they serve."""
    # A fresh admin client per try: one that saw a topic as unknown kept answering
    # UNKNOWN_TOPIC_OR_PART from its metadata cache for the whole 90 s (seen here).
    tps = [
        TopicPartition(t, p)
        for t, spec in topology.all_topics().items()
        for p in range(spec.partitions)
    ]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            Admin(client).end_offsets(tps)
            return
        except StreamsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def delete_workflow(client: ClientConfig, topology: Topology) -> None:
    """Delete a benchmark's topics: the shared broker should not collect them."""
    Admin(client).delete_topics(topology.all_topics())


def log_append_topic(client: ClientConfig, topic: str, partitions: int) -> None:
    admin = AdminClient(client.base())
    config = {"message.timestamp.type": "LogAppendTime", "retention.ms": "3600000"}
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, config=config)])
    for future in futures.values():
        future.result()


def produce_events(
    client: ClientConfig,
    topology: Topology,
    topic: str,
    count: int,
    payload_size: int,
    *,
    stage: str,
) -> float:
    """Send `count` fresh events (unique run ids, so no key waits on another); returns s."""
    producer = RecordProducer(client)
    codec = TaskEventCodec()
    payload = os.urandom(payload_size)  # random: lz4 cannot shrink it away
    started = time.monotonic()
    for _ in range(count):
        event = new_task_event(
            workflow=topology.workflow,
            stage=stage,
            tenant="bench",
            lane="standard",
            payload=payload,
            now_ms=int(time.time() * 1000),
        )
        producer.send_when_room(topic, codec.encode(event), key=event.run_id.encode())
    if producer.flush(120.0):
        raise RuntimeError(f"pre-produce to {topic}: records not acknowledged")
    return time.monotonic() - started


def partitions_of(topics: Sequence[str], partitions: int) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t in topics for p in range(partitions)]


def end_total(admin: Admin, tps: Sequence[TopicPartition]) -> int:
    return sum(admin.end_offsets(tps).values())


def committed_total(
    admin: Admin, group: str, tps: Sequence[TopicPartition], *, patience_s: float = 10.0
) -> int:
    """The group's committed offsets summed. A new group's coordinator answers
    NOT_COORDINATOR or "load in progress" for a while (retriable): asked again until
    `patience_s` is up, instead of ending the benchmark run that asked."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return sum(o or 0 for o in admin.committed_offsets(group, tps).values())
        except StreamsError as exc:
            if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --------------------------------------------------------------------------- children
def spawn(
    module: str, args: Sequence[str], env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start `python -m module args` with a stdin pipe: closing it asks the child to stop.
    Its stderr goes to a log file (named on failure), so logs never fill a pipe. `env` is
    added to this process's environment."""
    log = tempfile.NamedTemporaryFile(prefix="bench-child-", suffix=".log", delete=False)  # noqa: SIM115
    child = subprocess.Popen(
        [PYTHON, "-m", module, *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    _child_logs[child.pid] = log.name
    return child


_child_logs: dict[int, str] = {}


def child_failed(child: subprocess.Popen[str], what: str) -> RuntimeError:
    log = _child_logs.get(child.pid, "?")
    return RuntimeError(f"{what}: child exited with code {child.returncode}; see {log}")


def finish(child: subprocess.Popen[str], timeout_s: float = 120.0) -> dict[str, Any]:
    """Ask a child to stop and return the JSON object it printed last."""
    out, _ = child.communicate(input="", timeout=timeout_s)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if child.returncode != 0 or not lines:
        raise child_failed(child, "finish")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def stop_on_stdin_eof(stop: Callable[[], None]) -> None:
    """In a child: call stop() once the parent closes our stdin (or dies)."""

    def watch() -> None:
        sys.stdin.read()
        stop()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def cpu_seconds() -> float:
    """User plus system CPU of this whole process (every thread, librdkafka's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve_worker(
    workflow: dict[str, Any], stage: str, bootstrap_servers: str, handler: Handler, **opts: Any
) -> dict[str, Any]:
    """In a child: run a StageWorker until stdin closes; returns peak RSS and counters."""
    topology = parse_topology(workflow, "<benchmark child>", validate_handlers=False)
    worker = StageWorker(
        topology,
        stage,
        ClientConfig(bootstrap_servers),
        options=WorkerOptions(**opts),
        handler=handler,
    )
    stop_on_stdin_eof(worker.stop)
    in_flight: list[int] = []
    sampling = threading.Event()

    def sample_in_flight() -> None:
        # Where a throughput shortfall comes from: idle concurrency slots show up here.
        while not sampling.wait(0.1):
            if worker.ready.is_set():
                in_flight.append(worker.status().in_flight)

    threading.Thread(target=sample_in_flight, daemon=True).start()
    freeze_startup_heap()  # as `streams worker` does once it is built
    collections = GcClock()
    cpu0 = cpu_seconds()
    worker.run()
    sampling.set()
    collections.stop()
    latency = worker.registry.get_sample_value
    labels = {"workflow": topology.workflow, "stage": stage}
    calls = latency("streams_handler_latency_seconds_count", labels) or 0.0
    total = latency("streams_handler_latency_seconds_sum", labels) or 0.0
    busy = [n for n in in_flight if n > 0]
    return {
        "peak_rss_mb": proc_status_kb("VmHWM") / 1024,
        "cpu_s": cpu_seconds() - cpu0,
        "pause_events": worker.pauses.pause_events,
        "handler_mean_s": total / calls if calls else None,
        "in_flight_mean_while_busy": sum(busy) / len(busy) if busy else None,
        **collections.report(),
    }


class GcClock:
    """Wall time the interpreter spent in garbage collections (every thread stops for
    them), per generation: a run-to-run spread in CPU per event can be the collector's."""

    def __init__(self) -> None:
        self._started = 0.0
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self.longest_s = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = info["generation"]
        self.seconds[generation] += took
        self.counts[generation] += 1
        self.longest_s = max(self.longest_s, took)

    def stop(self) -> None:
        gc.callbacks.remove(self._on_gc)

    def report(self) -> dict[str, Any]:
        return {
            "gc_s": sum(self.seconds),
            "gc_s_by_generation": self.seconds,
            "gc_counts": self.counts,
            "gc_longest_ms": self.longest_s * 1000,
        }
