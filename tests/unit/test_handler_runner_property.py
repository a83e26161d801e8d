"""HandlerRunner property: over any mix of handler behaviours (return, raise anything,
cancel itself, hang, ignore cancellation, return a coroutine, be refused at start), every
job is reported exactly once with the status its behaviour calls for, and the runner ends
with nothing in flight and nothing stuck (real threads and asyncio, no Kafka)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Coroutine
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.events import TaskEvent, new_task_event
from streams.runtime.context import HandlerContext
from streams.runtime.handler_runner import Handler, HandlerRunner, Job, StartCheck, Status
from streams.types import Record

pytestmark = pytest.mark.filterwarnings("error")

EVENT = new_task_event(
    workflow="w", stage="s", tenant="t", lane="standard", payload=b"{}", now_ms=1
)
HANG_TIMEOUT_S = 0.1  # only for the behaviours meant to time out
GRACE_S = 0.1
WAIT_S = 20.0

ASYNC_BEHAVIOURS: dict[str, Status] = {
    "ok": "ok",
    "value_error": "error",
    "system_exit": "error",
    "keyboard_interrupt": "error",
    "own_cancel": "error",
    "hang": "timeout",  # cancelled at its deadline, unwinds
    "ignore_cancel": "timeout",  # swallows cancels for 0.4 s: abandoned after the grace
    "refused": "refused",
}
PLAIN_BEHAVIOURS: dict[str, Status] = {
    "ok": "ok",
    "value_error": "error",
    "system_exit": "error",
    "keyboard_interrupt": "error",
    "returns_coroutine": "error",
    "hang": "timeout",  # sleeps 0.3 s: its thread is stuck, then serves again
    "refused": "refused",
}
_RAISES: dict[str, type[BaseException]] = {
    "value_error": ValueError,
    "system_exit": SystemExit,
    "keyboard_interrupt": KeyboardInterrupt,
}


def _job(token: int, behaviour: str) -> Job[int]:
    record = Record("w.s.standard", 0, token, b"k", b"v", 0, ())
    ctx = HandlerContext("s", "standard", record, None, 0, cast(Any, None))
    timeout_s = HANG_TIMEOUT_S if behaviour in ("hang", "ignore_cancel") else 30.0
    return Job(token, EVENT, ctx, timeout_s)


def _async_handler(plan: list[str]) -> Handler:
    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        behaviour = plan[ctx.record.offset]
        await asyncio.sleep(0)
        if behaviour in _RAISES:
            raise _RAISES[behaviour]()
        if behaviour == "own_cancel":
            raise asyncio.CancelledError
        if behaviour == "hang":
            await asyncio.sleep(30)
        if behaviour == "ignore_cancel":
            until = time.monotonic() + 0.4
            while time.monotonic() < until:
                try:
                    await asyncio.sleep(0.02)
                except asyncio.CancelledError:
                    continue

    return handler


def _plain_handler(plan: list[str]) -> Handler:
    async def never_run() -> None:
        raise AssertionError("a coroutine returned by a plain call must not run")

    def handler(event: TaskEvent, ctx: HandlerContext) -> Coroutine[Any, Any, None] | None:
        behaviour = plan[ctx.record.offset]
        if behaviour in _RAISES:
            raise _RAISES[behaviour]()
        if behaviour == "returns_coroutine":
            return never_run()
        if behaviour == "hang":
            time.sleep(0.3)
        return None

    return handler


def _refuse_planned(plan: list[str]) -> StartCheck[int]:
    def start_check(job: Job[int]) -> BaseException | None:
        return LookupError("expired") if plan[job.token] == "refused" else None

    return start_check


def _check_mix(plan: list[str], expected: dict[str, Status], is_async: bool) -> None:
    handler = _async_handler(plan) if is_async else _plain_handler(plan)
    runner: HandlerRunner[int] = HandlerRunner(
        handler,
        max_threads=3,
        max_running=3,
        start_check=_refuse_planned(plan),
        cancel_grace_s=GRACE_S,
    )
    try:
        jobs = [_job(i, b) for i, b in enumerate(plan)]
        half = len(jobs) // 2
        runner.submit(jobs[:half])
        runner.submit(jobs[half:])
        seen: Counter[int] = Counter()
        statuses: dict[int, Status] = {}
        deadline = time.monotonic() + WAIT_S
        while len(statuses) < len(plan) and time.monotonic() < deadline:
            for completion in runner.drain():
                seen[completion.job.token] += 1
                statuses[completion.job.token] = completion.status
            time.sleep(0.005)
        assert [t for t, n in seen.items() if n > 1] == []  # none twice
        assert sorted(statuses) == list(range(len(plan)))  # none lost
        assert statuses == {i: expected[b] for i, b in enumerate(plan)}
        assert runner.in_flight == 0
        # The hung calls end on their own; then nothing is stuck and nothing reported late.
        while runner.stuck and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.stuck == 0
        assert runner.capacity == 3
        assert runner.drain() == []
    finally:
        runner.close(timeout_s=2.0)


_SETTINGS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@_SETTINGS
@given(st.lists(st.sampled_from(sorted(ASYNC_BEHAVIOURS)), min_size=1, max_size=25))
def test_async_mix_every_job_reported_once_with_its_status(plan: list[str]) -> None:
    _check_mix(plan, ASYNC_BEHAVIOURS, is_async=True)


@_SETTINGS
@given(st.lists(st.sampled_from(sorted(PLAIN_BEHAVIOURS)), min_size=1, max_size=25))
def test_plain_mix_every_job_reported_once_with_its_status(plan: list[str]) -> None:
    _check_mix(plan, PLAIN_BEHAVIOURS, is_async=False)
