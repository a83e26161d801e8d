"""The monitor's loops with a stand-in reader (no broker): --once samples at least twice,
off a terminal one heartbeat line per status change or heartbeat interval, on a terminal
the table."""

from __future__ import annotations

import dataclasses
import io
import threading

import pytest
from rich.console import Console

from streams.monitor.model import MonitorSnapshot
from streams.monitor.run import run_rounds, sample_once

from .test_monitor_views import plan_view

pytestmark = pytest.mark.timeout(30)


class ScriptedReader:
    """Hands out the given snapshots in turn (the last one again when they run out) and
    stops the loop after ``stop_after`` reads."""

    def __init__(self, *snapshots: MonitorSnapshot, stop: threading.Event, stop_after: int):
        self.snapshots = list(snapshots)
        self.reads = 0
        self._stop, self._stop_after = stop, stop_after

    def read(self) -> MonitorSnapshot:
        snapshot = self.snapshots[min(self.reads, len(self.snapshots) - 1)]
        self.reads += 1
        if self.reads >= self._stop_after:
            self._stop.set()
        return snapshot


def test_once_reads_at_least_twice() -> None:
    reader = ScriptedReader(plan_view(), stop=threading.Event(), stop_after=99)
    sample_once(reader, sample_s=0.0, interval_s=0.01)
    assert reader.reads == 2


def test_off_a_terminal_a_line_per_status_change_and_heartbeat() -> None:
    stop = threading.Event()
    calm = plan_view()
    changed = dataclasses.replace(
        calm, stages=(dataclasses.replace(calm.stages[0], status="OK"), calm.stages[1])
    )
    reader = ScriptedReader(calm, calm, changed, changed, stop=stop, stop_after=4)
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    run_rounds(reader, interval_s=0.0, stop=stop, console=console, heartbeat_s=3600)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # the first round, then the change; no repeats in between
    assert "plan STALL" in lines[0] and "plan OK" in lines[1]


def test_on_a_terminal_the_table_redraws() -> None:
    stop = threading.Event()
    reader = ScriptedReader(plan_view(), stop=stop, stop_after=2)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80, color_system=None)
    run_rounds(reader, interval_s=0.0, stop=stop, console=console)
    text = out.getvalue()
    assert "stage/lane" in text and "STALL" in text and "on purpose: downstream" in text
