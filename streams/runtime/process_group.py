"""`streams worker --processes N`: N consumer-group members of one stage under one command,
one process each, behind one metrics endpoint.

Owns the children's lifecycle (start, forward the stop, restart, give up) and the group's
endpoint; must not decide restarts (streams.policy.restarts does) nor merge metrics
(streams.runtime.process_metrics does).

Each child is `python -m streams worker ... --processes 1` (subprocess, not
multiprocessing): it is exactly the single-process command, with its own logging, signal
handling, refusal watchdog and exit status, and ps shows what it is. The hidden
`--group-port-file` makes it write its metrics port (streams.runtime.process_child) and
stop when its stdin, a pipe the supervisor holds, closes. Children share the supervisor's
stdout, stderr and environment (KAFKA_*, STREAMS_*, the schema registry URL).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.errors import StreamsError
from streams.metrics import serve_metrics
from streams.policy.restarts import RestartLimits, RestartPolicy, StopGroup, describe_status
from streams.runtime.options import WorkerOptions
from streams.runtime.process_metrics import GroupCollector, group_registry

__all__ = ["GroupSpec", "ProcessGroup", "ProcessGroupFailed", "child_worker_id"]

log = logging.getLogger(__name__)

#: How long the children may take to stop after SIGTERM before they are killed: a worker
#: drains for up to shutdown_grace_s, then commits and leaves the group.
STOP_TIMEOUT_S = WorkerOptions().shutdown_grace_s + 30.0
_TICK_S = 0.1  # how often the supervisor looks at its children


class ProcessGroupFailed(StreamsError):
    """A child failed with its own error, children kept dying, or did not stop in time."""


def child_worker_id(worker_id: str | None, index: int) -> str | None:
    """Child `index`'s --worker-id: `X-0`, `X-1`, ... for --worker-id X (exactly-once
    children fence by it, so each needs its own, the same after a restart); none without
    one: each child then picks a random id, as a single worker does."""
    return None if worker_id is None else f"{worker_id}-{index}"


@dataclass(frozen=True, slots=True)
class GroupSpec:
    processes: int
    #: `streams` argv after the interpreter, without the per-child flags (worker id,
    #: metrics port, port file): e.g. ("worker", "flow.yaml", "--stage", "plan").
    worker_args: tuple[str, ...]
    worker_id: str | None = None
    metrics_port: int | None = None  # the group's endpoint; None: none (children get none)
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError(f"a group has at least one process, got {self.processes}")


@dataclass
class _Child:
    index: int
    port_file: Path
    popen: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None  # monotonic s; None: not waiting to restart


class ProcessGroup:
    """Runs the group until stop() (safe from a signal handler: it only sets a flag) or a
    failure. run() blocks: it returns when every child exited 0 after the stop, and raises
    ProcessGroupFailed otherwise, after stopping every child."""

    def __init__(self, spec: GroupSpec, *, limits: RestartLimits | None = None) -> None:
        self.spec = spec
        self._policy = RestartPolicy(limits)
        self._stop_requested = False  # a plain flag: a signal handler must not take locks
        self.metrics_port: int | None = None

    def stop(self) -> None:
        self._stop_requested = True

    def run(self) -> None:
        spec = self.spec
        cores = os.cpu_count() or 1
        if spec.processes > cores:
            log.warning(
                "--processes %d is more than this machine's %d cores: the processes will "
                "share cores",
                spec.processes,
                cores,
            )
        with tempfile.TemporaryDirectory(prefix="streams-group-") as directory:
            children = [_Child(i, Path(directory) / f"{i}.port") for i in range(spec.processes)]
            if spec.metrics_port is not None:  # before any child: a taken port fails alone
                registry = group_registry(GroupCollector([c.port_file for c in children]))
                self.metrics_port = serve_metrics(
                    registry, spec.metrics_port, addr=spec.metrics_host
                )
                log.info(
                    "metrics of the %d worker processes at http://%s:%d/metrics",
                    spec.processes,
                    spec.metrics_host,
                    self.metrics_port,
                )
            try:
                failure = self._supervise(children)
            finally:
                for child in children:  # only after an error above: they stop at EOF
                    if child.popen is not None and child.popen.stdin is not None:
                        child.popen.stdin.close()
        if failure is not None:
            raise ProcessGroupFailed(failure)

    def _supervise(self, children: Sequence[_Child]) -> str | None:
        """Until every child has exited after the stop; returns the failure, if any."""
        for child in children:
            self._start(child)
        failure: str | None = None
        stop_deadline: float | None = None
        while True:
            now = time.monotonic()
            if self._stop_requested and stop_deadline is None:
                stop_deadline = now + STOP_TIMEOUT_S
                self._signal_all(children, signal.SIGTERM)
            for child in children:
                popen = child.popen
                status = popen.poll() if popen is not None else None
                if popen is None or status is None:
                    continue
                if popen.stdin is not None:
                    popen.stdin.close()
                child.popen = None
                child.port_file.unlink(missing_ok=True)
                if stop_deadline is not None:
                    if status != 0 and failure is None:
                        failure = (
                            f"worker process {child.index} {describe_status(status)} "
                            "while stopping (its log is above)"
                        )
                    continue
                decision = self._policy.exited(child.index, status, now)
                if isinstance(decision, StopGroup):
                    failure = decision.reason
                    self._stop_requested = True  # the others drain and commit
                    continue
                log.warning(
                    "worker process %d (pid %d) %s; restarting it in %.1f s",
                    child.index,
                    popen.pid,
                    describe_status(status),
                    decision.after_s,
                )
                child.restart_at = now + decision.after_s
            if stop_deadline is not None:
                if all(child.popen is None for child in children):
                    return failure
                if now >= stop_deadline:
                    self._signal_all(children, signal.SIGKILL)
                    failure = failure or (
                        f"worker processes did not stop within {STOP_TIMEOUT_S:g} s of "
                        "SIGTERM; killed them"
                    )
            else:
                for child in children:
                    if child.restart_at is not None and now >= child.restart_at:
                        self._start(child)
            time.sleep(_TICK_S)  # a signal cuts it short; its handler only sets the flag

    def _start(self, child: _Child) -> None:
        spec = self.spec
        child.restart_at = None
        child.port_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "streams", *spec.worker_args]
        worker_id = child_worker_id(spec.worker_id, child.index)
        if worker_id is not None:
            argv += ["--worker-id", worker_id]
        if spec.metrics_port is not None:  # loopback, any port: only the supervisor reads it
            argv += ["--metrics-port", "0", "--metrics-host", "127.0.0.1"]
        argv += ["--processes", "1", "--group-port-file", str(child.port_file)]
        # stdin: a pipe nobody writes to; it closes when this process ends, however it ends.
        child.popen = subprocess.Popen(argv, stdin=subprocess.PIPE)
        self._policy.started(child.index, time.monotonic())
        log.info("worker process %d started (pid %d)", child.index, child.popen.pid)

    @staticmethod
    def _signal_all(children: Sequence[_Child], sig: signal.Signals) -> None:
        for child in children:
            child.restart_at = None  # a stopping group restarts nothing
            if child.popen is not None and child.popen.poll() is None:
                child.popen.send_signal(sig)
