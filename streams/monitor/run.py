"""The monitor's loops: one snapshot for scripts, or rounds every interval feeding the
live terminal view (a heartbeat line when stdout is not a terminal) and the HTTP server.

Owns the cadence and the stop signal; must not read Kafka itself (WorkflowReader does) or
render (view, page, exporter do).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from rich.console import Console
from rich.live import Live

from streams.monitor.exporter import MonitorServer
from streams.monitor.model import MonitorSnapshot
from streams.monitor.view import heartbeat_line, render_table


class Reader(Protocol):
    """What the loops need of streams.monitor.collector.WorkflowReader."""

    def read(self) -> MonitorSnapshot: ...


def sample_once(reader: Reader, *, sample_s: float, interval_s: float) -> MonitorSnapshot:
    """Read for ``sample_s`` seconds (at least two rounds, so trends and the time-lag
    history have two points) and return the last round's snapshot."""
    deadline = time.monotonic() + sample_s
    snapshot = reader.read()
    rounds = 1
    while rounds < 2 or time.monotonic() < deadline:
        time.sleep(max(0.0, min(interval_s, deadline - time.monotonic())) if rounds >= 2 else 0.2)
        snapshot = reader.read()
        rounds += 1
    return snapshot


def run_rounds(
    reader: Reader,
    *,
    interval_s: float,
    stop: threading.Event,
    console: Console,
    server: MonitorServer | None = None,
    heartbeat_s: float = 10.0,
    on_round: Callable[[MonitorSnapshot], None] | None = None,
) -> None:
    """Read every ``interval_s`` until ``stop`` is set. On a terminal the table redraws in
    place; otherwise one heartbeat line per ``heartbeat_s`` (and on each status change)
    says the monitor is alive and what it sees."""
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    last_line_at = -float("inf")
    last_statuses: tuple[str, ...] = ()
    try:
        if live is not None:
            live.start()
        while not stop.is_set():
            started = time.monotonic()
            snapshot = reader.read()
            if server is not None:
                server.update(snapshot)
            if on_round is not None:
                on_round(snapshot)
            if live is not None:
                live.update(render_table(snapshot), refresh=True)
            else:
                statuses = tuple(s.status for s in snapshot.stages)
                if statuses != last_statuses or started - last_line_at >= heartbeat_s:
                    console.print(heartbeat_line(snapshot), soft_wrap=True, highlight=False)
                    last_line_at, last_statuses = started, statuses
            stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
    finally:
        if live is not None:
            live.stop()
