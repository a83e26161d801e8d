"""ToolPauses: which partitions pause for a stage's tools, and how much dispatch may start."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from streams.runtime.pauses import PauseSet
from streams.runtime.tool_health import ToolPauses
from streams.runtime.tools import ToolBox, ToolRegistry
from streams.topology import parse_topology
from streams.types import TopicPartition

PARTS = [TopicPartition("wf.act.standard", p) for p in range(3)]


class Down(Exception):
    pass


def box(tool: dict[str, Any]) -> ToolBox:
    topology = parse_topology(
        {
            "workflow": "wf",
            "tools": {"crm": tool},
            "stages": {"act": {"handler": "topology.example_handlers:act", "tools": ["crm"]}},
        },
        "inline",
    )
    tools = ToolBox(ToolRegistry(topology), topology.stages["act"], "w1")
    tools.set_share(1.0)
    return tools


def test_waiting_calls_pause_input_until_half_of_them_are_left() -> None:
    tools = box({"concurrency": 1, "max_wait_s": 5, "pause_at_waiting": 2})
    health = ToolPauses(tools)
    pauses = PauseSet()
    release = threading.Event()

    def hold() -> None:
        with tools.call("crm"):
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.05)
    waiters = [
        threading.Thread(target=lambda: tools.call("crm").call_blocking(lambda: None))
        for _ in range(2)
    ]
    for w in waiters:
        w.start()
    time.sleep(0.1)
    verdict = health.update(pauses, PARTS, waiting_records=0)
    assert verdict.saturated and not verdict.unavailable
    assert all(pauses.reasons(tp) == {"tool_saturated"} for tp in PARTS)
    assert health.dispatch_room(in_flight=3) is None  # saturation holds input, not dispatch
    release.set()
    for t in [holder, *waiters]:
        t.join(5)
    assert not health.update(pauses, PARTS, waiting_records=0).saturated
    assert not any(pauses.is_paused(tp) for tp in PARTS)


def test_open_holds_everything_and_half_open_only_as_many_as_free_probes() -> None:
    tools = box(
        {"breaker": {"window": 2, "minimum_calls": 2, "open_s": 0.1, "half_open_probes": 3}}
    )
    health = ToolPauses(tools)
    pauses = PauseSet()
    for _ in range(2):
        with pytest.raises(Down):
            tools.call("crm").call_blocking(lambda: (_ for _ in ()).throw(Down()))
    verdict = health.update(pauses, PARTS, waiting_records=50)
    assert verdict.unavailable and "crm breaker open" in verdict.detail
    assert all(pauses.reasons(tp) == {"tool_unavailable"} for tp in PARTS)
    assert health.dispatch_room(in_flight=0) == 0
    time.sleep(0.12)
    assert health.dispatch_room(in_flight=1) == 2  # 3 probes, 1 record already running
    # Enough records buffered to probe with: input stays paused...
    assert health.update(pauses, PARTS, waiting_records=3).unavailable
    # ...too few: input resumes to admit a few on purpose.
    assert not health.update(pauses, PARTS, waiting_records=1).unavailable
    tools.call("crm").call_blocking(lambda: None)
    tools.call("crm").call_blocking(lambda: None)
    tools.call("crm").call_blocking(lambda: None)
    assert health.dispatch_room(in_flight=0) is None  # closed again
    assert not health.update(pauses, PARTS, waiting_records=0).unavailable
