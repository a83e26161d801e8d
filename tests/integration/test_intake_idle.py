"""An idle intake costs (almost) nothing: its I/O thread blocks on the client instead of
waking every half millisecond to find nothing to do."""

from __future__ import annotations

import os
import threading
import time

import pytest

from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig

from .intake_helpers import intake_workflow, running_intake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _cpu_s(thread: threading.Thread) -> float:
    """User + system CPU seconds a thread has used (Linux /proc)."""
    with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def test_an_idle_intake_io_thread_uses_under_two_percent_of_a_core(
    admin: Admin, client_config: ClientConfig
) -> None:
    topology = intake_workflow(admin, {})
    with running_intake(topology, client_config):
        (io,) = [t for t in threading.enumerate() if t.name == "intake-io"]
        time.sleep(1.0)  # past start-up
        before, started = _cpu_s(io), time.monotonic()
        time.sleep(4.0)
        share = (_cpu_s(io) - before) / (time.monotonic() - started)
    print(f"\nidle I/O thread: {share:.1%} of a core")
    assert share < 0.02
