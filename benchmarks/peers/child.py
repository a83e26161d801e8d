"""The child side of the benchmark protocol, for peer children in foreign environments.

The protocol is benchmarks.common's (closing the child's stdin stops it; it prints one
JSON line last), but common imports streams and confluent-kafka, which the peers'
virtual environments do not have (faust's has no confluent-kafka at all), so the few
stdlib pieces a child needs live here. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The stage name the output records carry: streams' emit from a stage with no
#: downstream sends to {workflow}.completed, queued for "completed".
OUTPUT_STAGE = "completed"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="a peer child of python -m benchmarks.peers")
    p.add_argument("--workload", choices=["passthrough", "io"], required=True)
    p.add_argument("--servers", required=True, help="bootstrap servers, comma-separated")
    p.add_argument("--group", required=True, help="consumer group")
    p.add_argument("--input", required=True, help="input topic")
    p.add_argument("--output", required=True, help="output topic")
    p.add_argument("--latency", type=float, default=0.2, help="io: seconds awaited per record")
    p.add_argument("--concurrency", type=int, default=1000, help="io: calls in flight")
    return p.parse_args(argv)


def now_ms() -> int:
    return int(time.time() * 1000)


class FirstSeen:
    """Wall time of the first record handled: where the benchmark's clock starts."""

    def __init__(self) -> None:
        self.at: float | None = None

    def stamp(self) -> None:
        # One attribute check per record; set once (a benign race across threads).
        if self.at is None:
            self.at = time.time()


def stop_on_stdin_eof(stop: Callable[[], None]) -> None:
    """Call stop() (from a thread) once the parent closes our stdin."""

    def watch() -> None:
        sys.stdin.read()
        stop()

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def sigterm_self() -> None:
    """Stop the way a deployment stops it: Quix and faust install SIGTERM handlers that
    finish gracefully (quixstreams/app.py _setup_signal_handlers; mode's Worker)."""
    os.kill(os.getpid(), signal.SIGTERM)


def cpu_seconds() -> float:
    """User plus system CPU of this whole process (every thread, librdkafka's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report(first: FirstSeen, cpu0: float, version: str, **extra: Any) -> None:
    """The one JSON line the driver reads (the last line starting with "{")."""
    doc = {
        "first_at": first.at,
        "cpu_s": cpu_seconds() - cpu0,
        "peak_rss_mb": peak_rss_mb(),
        "version": version,
        **extra,
    }
    print(json.dumps(doc), flush=True)
