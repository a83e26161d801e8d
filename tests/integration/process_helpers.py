"""Workers for integration tests: a topology file the `streams worker` CLI can load, the
process itself (or a worker in a thread, stopped after the test), and reads of topics and
group offsets that say exactly what reached the broker. Nothing here fakes Kafka.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.kafka.tail import TopicTail
from streams.testing import WorkerThread
from streams.topology import Topology, load_topology
from streams.types import Record, TopicPartition

if TYPE_CHECKING:
    from streams.runtime.worker import StageWorker

REPO_ROOT = Path(__file__).resolve().parents[2]
PROC_HANDLER = "tests.integration.proc_handlers:sleep_then_emit"


def write_workflow(
    admin: Admin,
    directory: Path,
    stages: dict[str, dict[str, Any]],
    *,
    lanes: list[str] | None = None,
    partitions: int = 3,
    handler: str = PROC_HANDLER,
    **top: Any,
) -> tuple[Topology, Path]:
    """Like workflows.make_workflow, but also writes the topology as YAML for a worker
    subprocess or the CLI. Every stage's handler defaults to `handler`
    (proc_handlers.sleep_then_emit); `top`: more top-level keys (intake, tools, ...)."""
    name = f"p{uuid.uuid4().hex[:10]}"
    data: dict[str, Any] = {
        "workflow": name,
        "lanes": lanes or ["standard"],
        "topic_defaults": {"partitions": partitions, "retention_ms": 3_600_000},
        "stages": {stage: {"handler": handler, **spec} for stage, spec in stages.items()},
        **top,
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    topology = load_topology(path)  # the same file the subprocess reads
    admin.apply(
        TopicWanted(topic, spec.partitions, None, spec.compacted)
        for topic, spec in topology.all_topics().items()
    )
    return topology, path


# --------------------------------------------------------------------------- processes


@dataclass
class WorkerProcess:
    """One `python -m streams worker` subprocess; its stdout and stderr go to `log_path`."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None if the process still runs after timeout_s."""
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass
class WorkerProcesses:
    """Starts worker subprocesses and kills whatever still runs on close()."""

    bootstrap: str
    directory: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def start(
        self,
        topology_file: Path,
        stage: str,
        *,
        worker_id: str | None = None,
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        argv = [sys.executable, "-m", "streams", "worker", str(topology_file), "--stage", stage]
        if worker_id is not None:
            argv += ["--worker-id", worker_id]
        log_path = self.directory / f"worker-{stage}-{len(self.started)}.log"
        environ = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,  # never start another broker
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=environ, stdout=log_file, stderr=subprocess.STDOUT
            )
        process = WorkerProcess(popen, log_path)
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.alive:
                process.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(10.0)

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.log()}" for p in self.started)


@contextlib.contextmanager
def worker_processes(bootstrap: str, directory: Path) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(bootstrap, directory)
    try:
        yield processes
    finally:
        processes.close()


# --------------------------------------------------------------------------- threads


@pytest.fixture
def workers() -> Iterator[list[WorkerThread]]:
    """In-process workers a test starts with `start`; stopped, last first, after it. A
    test module imports it by name (and lists it in ``__all__``)."""
    started: list[WorkerThread] = []
    yield started
    for thread in reversed(started):
        thread.stop()


def start(threads: list[WorkerThread], worker: StageWorker) -> StageWorker:
    threads.append(WorkerThread(worker).start())
    return worker


# --------------------------------------------------------------------------- handler log


@dataclass(frozen=True, slots=True)
class HandlerCall:
    run_id: str
    partition: int
    offset: int


def handler_log(path: Path) -> tuple[list[HandlerCall], list[HandlerCall]]:
    """(started, done) calls from a PROC_HANDLER_LOG file; a cut-off last line is skipped."""
    started: list[HandlerCall] = []
    done: list[HandlerCall] = []
    if not path.exists():
        return started, done
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) != 4 or not parts[3].isdigit():
            continue
        call = HandlerCall(parts[1], int(parts[2]), int(parts[3]))
        if parts[0] == "start":
            started.append(call)
        elif parts[0] == "done":
            done.append(call)
    return started, done


# --------------------------------------------------------------------------- topic reads


class TopicReader:
    """Reads a topic from the beginning (read_committed) and keeps every record it saw.

    Records are keyed by run id on every topic a worker writes (emits and dead letters
    alike), so `run_ids()` needs no decoding.
    """

    def __init__(self, client: ClientConfig, topic: str, partitions: int) -> None:
        self.topic = topic
        self.partitions = partitions
        self.records: list[Record] = []
        self._tail = TopicTail(client, topic, partitions)

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._tail.close()

    def poll(self, timeout_s: float = 0.2) -> int:
        fresh = self._tail.poll(1000, timeout_s)
        self.records.extend(fresh)
        return len(fresh)

    def wait_until(self, done: Callable[[TopicReader], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not done(self):
            if time.monotonic() >= deadline:
                return False
            self.poll()
        return True

    def read_to_end(self, admin: Admin, *, quiet_s: float = 2.0, timeout_s: float = 30.0) -> None:
        """Read until every partition's log end is reached. A partition whose last offset
        is a transaction marker never shows it, so `quiet_s` without new records also ends
        the read (meant for topics nobody writes to any more)."""
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        ends = admin.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            last = self.last_offsets()
            if all(last.get(tp.partition, -1) >= ends[tp] - 1 for tp in tps):
                return
            if self.poll():
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return
        raise TimeoutError(f"{self.topic} not read to its end within {timeout_s} s")

    def last_offsets(self) -> dict[int, int]:
        last: dict[int, int] = {}
        for record in self.records:
            last[record.partition] = max(last.get(record.partition, -1), record.offset)
        return last

    def run_ids(self) -> list[str]:
        return [r.key.decode() for r in self.records if r.key is not None]

    def run_id_counts(self) -> Counter[str]:
        return Counter(self.run_ids())

    def run_id_at(self) -> dict[tuple[int, int], str]:
        """(partition, offset) -> run id, for input topics."""
        return {(r.partition, r.offset): r.key.decode() for r in self.records if r.key is not None}


def committed(admin: Admin, group: str, topics: tuple[str, ...]) -> dict[TopicPartition, int]:
    """The group's committed offsets, 0 where it has committed nothing."""
    offsets = admin.committed_offsets(group, admin.partitions_of(topics))
    return {tp: offset or 0 for tp, offset in offsets.items()}


# --------------------------------------------------------------------------- in-process workers


def partition_series(worker: StageWorker, metric: str) -> dict[TopicPartition, float]:
    """Per-partition samples of one of a worker's gauges, summed over its other labels."""
    values: dict[TopicPartition, float] = {}
    for family in worker.registry.collect():
        for sample in family.samples:
            if sample.name == metric:
                tp = TopicPartition(sample.labels["topic"], int(sample.labels["partition"]))
                values[tp] = values.get(tp, 0.0) + sample.value
    return values


def assigned_partitions(worker: StageWorker) -> set[TopicPartition]:
    """Partitions the worker reports owning: their series live from the first report after
    assignment until revocation."""
    return set(partition_series(worker, "streams_buffer_bound_records"))


def reported_paused(worker: StageWorker) -> set[TopicPartition]:
    return {tp for tp, v in partition_series(worker, "streams_partition_paused").items() if v}


def desired_paused(worker: StageWorker) -> set[TopicPartition]:
    """The worker's desired-pause set. It belongs to the poll thread; a read racing its
    update is retried."""
    for _ in range(100):
        try:
            return worker.pauses.desired()
        except RuntimeError:
            time.sleep(0.001)
    raise AssertionError("could not read the pause set")
