"""Tool admission at run time: slots, tokens, breaker and timeout, in the async and blocking
forms; readings for metrics. Real time, short bounds (the policies have fake-clock tests)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from streams.errors import StreamsError, ToolSaturated, ToolTimeout, ToolUnavailable
from streams.runtime.tools import ToolBox, ToolRegistry
from streams.topology import parse_topology


def box(tool: dict[str, Any], share: float = 1.0) -> ToolBox:
    topology = parse_topology(
        {
            "workflow": "wf",
            "tools": {"crm": tool},
            "stages": {"act": {"handler": "topology.example_handlers:act", "tools": ["crm"]}},
        },
        "inline",
    )
    tools = ToolBox(ToolRegistry(topology), topology.stages["act"], "w1")
    tools.set_share(share)
    return tools


class Down(Exception):
    pass


class NotFound(LookupError):
    pass


def test_a_call_past_max_wait_for_a_slot_is_saturated_before_it_is_made() -> None:
    tools = box({"concurrency": 2, "max_wait_s": 0.05})

    async def main() -> None:
        release = asyncio.Event()
        calls = 0

        async def hold() -> None:
            nonlocal calls
            async with tools.call("crm"):
                calls += 1
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(ToolSaturated, match="no slot within"):
            await tools.call("crm").call(lambda: None)
        assert 0.04 <= time.monotonic() - started < 1.0
        assert calls == 2
        release.set()
        await asyncio.gather(*holders)
        assert await tools.call("crm").call(lambda: 7) == 7

    asyncio.run(main())
    reading = tools.readings()[0]
    assert reading.calls["rejected_saturated"] == 1 and reading.calls["ok"] == 3
    assert reading.in_flight == 0 and reading.waiting == 0


def test_failures_open_the_breaker_and_then_no_call_is_made() -> None:
    tools = box(
        {
            "failure_errors": ["tests.unit.test_tools_runtime:Down"],
            "ignored_errors": ["tests.unit.test_tools_runtime:NotFound"],
            "breaker": {"window": 4, "minimum_calls": 4, "open_s": 60},
        }
    )
    made = 0

    def fails(error: Exception) -> None:
        nonlocal made
        made += 1
        raise error

    for _ in range(10):  # a 404 says nothing of the tool's health
        with pytest.raises(NotFound):
            tools.call("crm").call_blocking(fails, NotFound())
    assert tools.readings()[0].breaker == "closed"
    for _ in range(4):
        with pytest.raises(Down):
            tools.call("crm").call_blocking(fails, Down())
    assert tools.readings()[0].breaker == "open"
    with pytest.raises(ToolUnavailable) as info:
        tools.call("crm").call_blocking(fails, Down())
    assert made == 14  # refused before the call
    assert info.value.retry_after_s is not None and 59 < info.value.retry_after_s <= 60
    reading = tools.readings()[0]
    assert reading.calls["rejected_open"] == 1 and reading.calls["error"] == 14
    assert reading.transitions == {("closed", "open"): 1}


def test_an_async_call_past_timeout_is_cancelled_and_counts_as_a_failure() -> None:
    tools = box({"timeout_s": 0.05, "breaker": {"window": 1, "minimum_calls": 1}})
    cancelled = False

    async def slow() -> None:
        nonlocal cancelled
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled = True
            raise

    async def main() -> None:
        with pytest.raises(ToolTimeout):
            await tools.call("crm").call(slow)

    asyncio.run(main())
    assert cancelled
    reading = tools.readings()[0]
    assert reading.calls["timeout"] == 1 and reading.breaker == "open"


def test_blocking_callers_on_many_threads_never_exceed_the_slots() -> None:
    tools = box({"concurrency": 3, "max_wait_s": 10})
    lock = threading.Lock()
    now = peak = 0

    def work() -> None:
        nonlocal now, peak
        with tools.call("crm"):
            with lock:
                now += 1
                peak = max(peak, now)
            time.sleep(0.01)
            with lock:
                now -= 1

    def five() -> None:
        for _ in range(5):
            work()

    threads = [threading.Thread(target=five) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak == 3
    assert tools.readings()[0].calls["ok"] == 40


def test_the_rate_holds_and_its_share_follows_the_partitions() -> None:
    tools = box({"rate": 40, "burst": 1, "max_wait_s": 5}, share=0.5)  # 20/s here
    started = time.monotonic()
    for _ in range(11):
        tools.call("crm").call_blocking(lambda: None)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.45  # 1 from the burst, then 10 at 20/s
    assert tools.readings()[0].rate_per_s == 20.0
    tools.set_share(0.0)  # every partition revoked: no calls at all
    with pytest.raises(ToolSaturated, match="rate token"):
        box({"rate": 40, "max_wait_s": 0.01}, share=0.0).call("crm").call_blocking(lambda: None)


def test_a_tool_the_stage_does_not_list_is_refused_by_name() -> None:
    with pytest.raises(StreamsError, match="does not list tool 'llm'"):
        box({}).call("llm")


def test_half_open_admits_probes_and_closes_on_success() -> None:
    tools = box(
        {"breaker": {"window": 2, "minimum_calls": 2, "open_s": 0.05, "half_open_probes": 1}}
    )
    for _ in range(2):
        with pytest.raises(Down):
            tools.call("crm").call_blocking(lambda: (_ for _ in ()).throw(Down()))
    assert tools.readings()[0].breaker == "open"
    time.sleep(0.06)
    assert tools.readings()[0].breaker == "half_open"
    tools.call("crm").call_blocking(lambda: None)
    assert tools.readings()[0].breaker == "closed"


def test_tool_metrics_are_exported_per_tool() -> None:
    from prometheus_client import CollectorRegistry

    from streams.metrics import ToolMetrics
    from streams.runtime.tools import LATENCY_BUCKETS_S

    tools = box({"concurrency": 4, "rate": 10, "breaker": {"window": 2, "minimum_calls": 2}})
    registry = CollectorRegistry()
    ToolMetrics(registry, "wf", tools.readings, LATENCY_BUCKETS_S)
    tools.call("crm").call_blocking(lambda: None)
    with pytest.raises(Down):  # 1 of 2 failed: at the 0.5 threshold, so it opens
        tools.call("crm").call_blocking(lambda: (_ for _ in ()).throw(Down()))
    with pytest.raises(ToolUnavailable):
        tools.call("crm").call_blocking(lambda: None)
    labels = {"workflow": "wf", "tool": "crm"}

    def value(name: str, **extra: str) -> float | None:
        return registry.get_sample_value(name, {**labels, **extra})

    assert value("streams_tool_calls_total", outcome="ok") == 1.0
    assert value("streams_tool_calls_total", outcome="error") == 1.0
    assert value("streams_tool_calls_total", outcome="rejected_open") == 1.0
    assert value("streams_tool_call_duration_seconds_count") == 2.0
    assert value("streams_tool_wait_seconds_count") == 2.0
    assert value("streams_tool_concurrency_limit") == 4.0
    assert value("streams_tool_rate_limit_per_second") == 10.0
    assert value("streams_tool_in_flight") == 0.0
    assert value("streams_tool_breaker_state", state="open") == 1.0
    assert value("streams_tool_breaker_state", state="closed") == 0.0
    assert (
        value("streams_tool_breaker_transitions_total", from_state="closed", to_state="open") == 1.0
    )


def test_waiters_for_rate_tokens_are_served_in_arrival_order() -> None:
    """16 calls wait on 40 tokens/s: each is admitted in the order it arrived, and none is
    refused although the last waits 16 / 40 = 0.4 s of a 1.5 s max_wait_s (served out of
    order, an unlucky waiter could lose every race to the deadline)."""
    tools = box({"rate": 40, "burst": 1, "max_wait_s": 1.5})

    async def main() -> list[int]:
        admitted: list[int] = []

        async def call(i: int) -> None:
            await tools.call("crm").call(lambda: admitted.append(i))

        tasks = []
        for i in range(16):
            tasks.append(asyncio.create_task(call(i)))
            await asyncio.sleep(0.002)  # arrival order is creation order
        await asyncio.gather(*tasks)
        return admitted

    assert asyncio.run(main()) == list(range(16))


def test_blocking_waiters_are_served_in_arrival_order_too() -> None:
    tools = box({"rate": 40, "burst": 1, "max_wait_s": 1.5})
    admitted: list[int] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        def record() -> None:
            with lock:
                admitted.append(i)

        tools.call("crm").call_blocking(record)

    threads = []
    for i in range(10):
        thread = threading.Thread(target=call, args=(i,))
        thread.start()
        threads.append(thread)
        time.sleep(0.003)
    for thread in threads:
        thread.join(5)
    assert admitted == list(range(10))
