"""The child's side of `streams worker --processes N` (the hidden `--group-port-file`):
tell the supervisor where this worker's metrics are, and stop when the supervisor is gone.

Owns two daemon threads beside an ordinary worker; must not change how the worker runs.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

__all__ = ["supervised"]


class _Worker(Protocol):
    """What a StageWorker (or a review stage's worker) offers that this module uses."""

    ready: threading.Event
    metrics_port: int | None

    def stop(self) -> None: ...


def supervised(worker: _Worker, port_file: Path) -> None:
    """Start the threads for `worker`, which is about to run():

    - once it is ready (it has opened its metrics endpoint and polled once), write its
      metrics port to `port_file` (written whole: a temporary file renamed over it, so the
      supervisor never reads half a number);
    - when stdin reaches end of file, stop it: the supervisor holds the pipe's other end,
      so that happens when the supervisor dies, even by kill -9, and the child drains and
      leaves the group instead of living on as an orphan nobody supervises.
    """
    threading.Thread(
        target=_announce, args=(worker, port_file), name="group-port", daemon=True
    ).start()
    threading.Thread(target=_stop_at_eof, args=(worker,), name="group-stdin", daemon=True).start()


def _announce(worker: _Worker, port_file: Path) -> None:
    worker.ready.wait()
    if worker.metrics_port is None:
        return
    partial = port_file.with_name(port_file.name + ".partial")
    partial.write_text(str(worker.metrics_port), encoding="ascii")
    os.replace(partial, port_file)


def _stop_at_eof(worker: _Worker) -> None:
    # os.read on the descriptor, not sys.stdin: a daemon thread blocked inside a buffered
    # reader's lock can abort the interpreter's shutdown ("could not acquire lock").
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        return  # no stdin at all: nothing to watch
    worker.stop()
