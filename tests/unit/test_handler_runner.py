"""HandlerRunner: outcomes, timeouts and cancellation of async and plain handlers (no Kafka)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import pytest

from streams.events import TaskEvent, new_task_event
from streams.runtime import handler_runner
from streams.runtime.context import HandlerContext
from streams.runtime.handler_runner import Completion, Handler, HandlerRunner, HandlerTimeout, Job
from streams.types import Record

EVENT = new_task_event(
    workflow="w", stage="s", tenant="t", lane="standard", payload=b"{}", now_ms=1
)


Token = int | str


def _job(token: Token, timeout_s: float = 5.0) -> Job[Token]:
    """A job whose record offset is the token (when it is a number)."""
    offset = token if isinstance(token, int) else 0
    record = Record("w.s.standard", 0, offset, b"k", b"v", 0, ())
    # The runner never looks inside the context: no emitter is needed here.
    ctx = HandlerContext("s", "standard", record, None, 0, cast(Any, None))
    return Job(token, EVENT, ctx, timeout_s)


def _run(
    handler: Handler, jobs: list[Job[Token]], wait_s: float = 5.0
) -> dict[Token, Completion[Token]]:
    runner: HandlerRunner[Token] = HandlerRunner(handler, max_threads=4)
    try:
        runner.submit(jobs)
        done: dict[Token, Completion[Token]] = {}
        deadline = time.monotonic() + wait_s
        while len(done) < len(jobs) and time.monotonic() < deadline:
            done.update((c.job.token, c) for c in runner.drain())
            time.sleep(0.005)
        assert runner.in_flight == 0 or len(done) < len(jobs)
        return done
    finally:
        runner.close()


def test_async_outcomes_ok_error_and_own_timeout_error_is_an_error() -> None:
    finished: list[int] = []

    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        token = ctx.record.offset
        await asyncio.sleep(0.001)
        if token == 1:
            raise ValueError("bad")
        if token == 2:
            raise TimeoutError("the tool timed out")  # not ours: a handler error
        finished.append(token)

    jobs = [_job(i) for i in range(3)]
    done = _run(handler, jobs)
    assert done[0].status == "ok" and finished == [0]
    assert done[1].status == "error" and isinstance(done[1].error, ValueError)
    assert done[2].status == "error" and not isinstance(done[2].error, HandlerTimeout)


def test_async_timeout_cancels_the_coroutine() -> None:
    cancelled = threading.Event()

    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started = time.monotonic()
    done = _run(handler, [_job("slow", timeout_s=0.2)])
    assert done["slow"].status == "timeout"
    assert isinstance(done["slow"].error, HandlerTimeout)
    assert cancelled.is_set()
    assert 0.2 <= time.monotonic() - started < 2.0


def test_async_handlers_run_inside_a_task_so_asyncio_timeout_and_taskgroup_work() -> None:
    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        async with asyncio.timeout(5):
            async with asyncio.TaskGroup() as group:
                group.create_task(asyncio.sleep(0))

    done = _run(handler, [_job(i) for i in range(20)])
    assert [done[i].status for i in range(20)] == ["ok"] * 20, [
        done[i].error for i in range(20) if done[i].status != "ok"
    ]


def test_many_async_calls_run_concurrently() -> None:
    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        await asyncio.sleep(0.3)

    started = time.monotonic()
    done = _run(handler, [_job(i) for i in range(500)])
    assert len(done) == 500 and all(c.status == "ok" for c in done.values())
    assert time.monotonic() - started < 2.5  # 500 x 0.3 s one after another would be 150 s


def _sync(body: Callable[[HandlerContext], None]) -> Handler:
    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        body(ctx)

    return handler


def test_plain_function_outcomes_and_bounded_threads() -> None:
    active, peak, lock = [0], [0], threading.Lock()

    def body(ctx: HandlerContext) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        if ctx.record.offset == 3:
            raise RuntimeError("boom")

    jobs = [_job(i) for i in range(12)]
    done = _run(_sync(body), jobs)
    assert sorted(done) == list(range(12))
    assert done[3].status == "error" and isinstance(done[3].error, RuntimeError)
    assert all(done[i].status == "ok" for i in range(12) if i != 3)
    assert 1 < peak[0] <= 4  # max_threads=4


def test_plain_function_timeout_is_reported_on_time_and_its_late_result_dropped() -> None:
    release = threading.Event()

    def body(ctx: HandlerContext) -> None:
        release.wait(10)

    runner: HandlerRunner[Token] = HandlerRunner(_sync(body), max_threads=2)
    try:
        started = time.monotonic()
        runner.submit([_job("stuck", timeout_s=0.2)])
        completions: list[Completion[Token]] = []
        while not completions and time.monotonic() - started < 5:
            completions = runner.drain()
            time.sleep(0.005)
        assert [c.status for c in completions] == ["timeout"]
        assert time.monotonic() - started < 2.0
        release.set()
        time.sleep(0.1)
        assert runner.drain() == []  # the late "ok" is not reported a second time
    finally:
        release.set()
        runner.close()


@pytest.mark.parametrize("is_async", [True, False])
def test_every_job_completes_exactly_once(is_async: bool) -> None:
    async def async_handler(event: TaskEvent, ctx: HandlerContext) -> None:
        if ctx.record.offset % 2:
            await asyncio.sleep(0)

    def sync_handler(event: TaskEvent, ctx: HandlerContext) -> None:
        pass

    jobs = [_job(i) for i in range(2000)]
    runner: HandlerRunner[Token] = HandlerRunner(
        async_handler if is_async else sync_handler, max_threads=8
    )
    try:
        for start in range(0, 2000, 250):
            runner.submit(jobs[start : start + 250])
        seen: list[Token] = []
        deadline = time.monotonic() + 10
        while len(seen) < 2000 and time.monotonic() < deadline:
            seen.extend(c.job.token for c in runner.drain())
            time.sleep(0.002)
        time.sleep(0.05)
        seen.extend(c.job.token for c in runner.drain())
        assert sorted(seen) == list(range(2000))  # none lost, none twice
    finally:
        runner.close()


def test_max_running_caps_coroutines_and_queued_jobs_start_as_slots_free() -> None:
    active, peak = [0], [0]

    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        active[0] += 1  # one loop thread runs every coroutine: no lock needed
        peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.05)
        active[0] -= 1

    runner: HandlerRunner[Token] = HandlerRunner(handler, max_running=5)
    try:
        runner.submit([_job(i, timeout_s=0.5) for i in range(40)])  # 8 rounds of 5
        seen: list[Completion[Token]] = []
        deadline = time.monotonic() + 10
        while len(seen) < 40 and time.monotonic() < deadline:
            seen.extend(runner.drain())
            time.sleep(0.005)
        # Nobody timed out: a queued job's budget starts when it does (40 x 0.05 s / 5
        # at once is 0.4 s of queueing for the last, near its 0.5 s timeout otherwise).
        assert [c.status for c in seen] == ["ok"] * 40
        assert peak[0] == 5
    finally:
        runner.close()


def test_close_lets_cancelled_handlers_unwind_instead_of_destroying_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unwound: list[int] = []

    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            unwound.append(ctx.record.offset)

    runner: HandlerRunner[Token] = HandlerRunner(handler)
    runner.submit([_job(i) for i in range(50)])
    time.sleep(0.2)
    with caplog.at_level("ERROR", logger="asyncio"):
        runner.close()
        del runner
        gc.collect()
    assert sorted(unwound) == list(range(50))
    assert "destroyed but it is pending" not in caplog.text


def _drain_until(
    runner: HandlerRunner[Token], tokens: set[Token], wait_s: float = 5.0
) -> dict[Token, Completion[Token]]:
    done: dict[Token, Completion[Token]] = {}
    deadline = time.monotonic() + wait_s
    while not tokens <= done.keys() and time.monotonic() < deadline:
        done.update((c.job.token, c) for c in runner.drain())
        time.sleep(0.002)
    return done


def test_fast_plain_calls_run_a_batch_on_one_thread_not_a_wake_up_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "Fast" and "long" stretched 100x: a loaded machine's scheduler makes a 0.1 ms sleep
    # take a millisecond or more, which is slow at the real thresholds (correctly so).
    monkeypatch.setattr(handler_runner, "_BATCH_BELOW_S", 0.05)
    monkeypatch.setattr(handler_runner, "_RELEASE_AFTER_S", 0.2)
    threads: dict[int, int] = {}

    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        threads[ctx.record.offset] = threading.get_ident()
        # Short, but it lets go of the GIL: one call per thread, the other threads would
        # take the next calls meanwhile and the batch would spread over all of them.
        time.sleep(0.0001)

    runner: HandlerRunner[Token] = HandlerRunner(handler, max_threads=8)
    try:
        # One per thread until seen fast (enough calls to outweigh a slow first one).
        runner.submit([_job(i) for i in range(300)])
        _drain_until(runner, set(range(300)))
        runner.submit([_job(i) for i in range(300, 800)])
        done = _drain_until(runner, set(range(300, 800)))
        assert {done[i].status for i in range(300, 800)} == {"ok"}
        # A call the machine delays past the release time hands the rest on: most stay.
        on_one = max(Counter(threads[i] for i in range(300, 800)).values())
        assert on_one >= 450
    finally:
        runner.close()


def test_a_call_that_blocks_in_a_batch_hands_the_rest_to_other_threads() -> None:
    release = threading.Event()

    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        if ctx.record.offset == 100:
            release.wait(5)  # a call that blocks: the rest of its batch must not wait

    runner: HandlerRunner[Token] = HandlerRunner(handler, max_threads=4)
    try:
        runner.submit([_job(i) for i in range(100)])
        _drain_until(runner, set(range(100)))
        started = time.monotonic()
        runner.submit([_job(i) for i in range(100, 300)])
        done = _drain_until(runner, set(range(101, 300)))
        took = time.monotonic() - started
        assert {done[i].status for i in range(101, 300)} == {"ok"} and 100 not in done
        assert took < 1.0  # released within milliseconds, not when the blocked call returns
        release.set()
        assert _drain_until(runner, {100})[100].status == "ok"
    finally:
        release.set()
        runner.close()


def test_batching_says_when_plain_calls_go_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker keeps a batching runner fed like an async one (streams.policy.dispatch_cap).
    monkeypatch.setattr(handler_runner, "_BATCH_BELOW_S", 0.05)
    monkeypatch.setattr(handler_runner, "_RELEASE_AFTER_S", 0.2)
    monkeypatch.setattr(handler_runner, "_SLOW_AVERAGE_S", 2.0)
    slow = threading.Event()

    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        if slow.is_set():
            time.sleep(0.3)  # past the release time: batches end

    async def coroutine(event: TaskEvent, ctx: HandlerContext) -> None:
        return None

    runner: HandlerRunner[Token] = HandlerRunner(handler, max_threads=4)
    asynchronous: HandlerRunner[Token] = HandlerRunner(coroutine)
    try:
        assert not runner.batching  # unseen calls count as slow
        runner.submit([_job(i) for i in range(300)])
        _drain_until(runner, set(range(300)))
        assert runner.batching
        slow.set()  # a slow call holding up the rest of its batch releases it
        runner.submit([_job(300), _job(301)])
        assert {c.status for c in _drain_until(runner, {300, 301}).values()} == {"ok"}
        assert not runner.batching
        asynchronous.submit([_job(i) for i in range(300)])
        _drain_until(asynchronous, set(range(300)))
        assert not asynchronous.batching
    finally:
        runner.close()
        asynchronous.close()
