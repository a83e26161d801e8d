"""HandlerRunner against hostile handlers: whatever the handler does, every job is reported
exactly once and the runner keeps serving (real threads, real asyncio, no Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, cast

import pytest

from streams.events import TaskEvent, new_task_event
from streams.runtime.context import HandlerContext
from streams.runtime.handler_runner import Completion, Handler, HandlerRunner, HandlerTimeout, Job
from streams.types import Record

# A "coroutine was never awaited" or an unraisable exception is a bug here, whatever the
# suite's own setting.
pytestmark = pytest.mark.filterwarnings("error")

EVENT = new_task_event(
    workflow="w", stage="s", tenant="t", lane="standard", payload=b"{}", now_ms=1
)
WAIT_S = 10.0  # generous: the machine is shared; the runner's own bounds are far below


def _job(token: int, timeout_s: float = 5.0) -> Job[int]:
    """A job whose record offset is its token, so a handler can tell jobs apart."""
    record = Record("w.s.standard", 0, token, b"k", b"v", 0, ())
    # The runner never looks inside the context: no emitter (or routes) is needed here.
    ctx = HandlerContext("s", "standard", record, None, 0, cast(Any, None))
    return Job(token, EVENT, ctx, timeout_s)


class _Reports:
    """Every completion a runner reports over a test; fails on a job reported twice."""

    def __init__(self, runner: HandlerRunner[int]) -> None:
        self.runner = runner
        self.seen: Counter[int] = Counter()
        self.done: dict[int, Completion[int]] = {}

    def wait(self, tokens: set[int], wait_s: float = WAIT_S) -> dict[int, Completion[int]]:
        """Drain until every token in `tokens` is reported; return those completions."""
        deadline = time.monotonic() + wait_s
        while not tokens <= self.done.keys() and time.monotonic() < deadline:
            self.drain()
            time.sleep(0.005)
        missing = tokens - self.done.keys()
        assert not missing, f"never reported: {sorted(missing)}"
        return {t: self.done[t] for t in tokens}

    def drain(self) -> list[Completion[int]]:
        completions = self.runner.drain()
        for completion in completions:
            self.seen[completion.job.token] += 1
            self.done[completion.job.token] = completion
        twice = [t for t, n in self.seen.items() if n > 1]
        assert twice == [], f"reported more than once: {twice}"
        return completions


def _wait_for(condition: Callable[[], bool], wait_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + wait_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _token(ctx: HandlerContext) -> int:
    return ctx.record.offset


# ---------------------------------------------------------------- async: BaseException


def test_async_handler_raising_its_own_cancelled_error_is_an_error() -> None:
    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        await asyncio.sleep(0)
        if _token(ctx) == 0:
            raise asyncio.CancelledError  # its own, not the runner's timeout cancel

    runner: HandlerRunner[int] = HandlerRunner(handler)
    reports = _Reports(runner)
    try:
        runner.submit([_job(0, timeout_s=0.3), _job(1)])
        done = reports.wait({0, 1})
        assert done[0].status == "error"
        assert isinstance(done[0].error, asyncio.CancelledError)
        assert done[1].status == "ok"
        assert runner.in_flight == 0
    finally:
        runner.close()


def test_async_handler_that_cancels_its_own_task_is_an_error() -> None:
    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(1)

    runner: HandlerRunner[int] = HandlerRunner(handler)
    reports = _Reports(runner)
    try:
        runner.submit([_job(0)])
        done = reports.wait({0})
        assert done[0].status == "error"
        assert isinstance(done[0].error, asyncio.CancelledError)
    finally:
        runner.close()


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_async_base_exceptions_are_errors_and_later_jobs_still_run(
    exc_type: type[BaseException],
) -> None:
    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        await asyncio.sleep(0)
        if _token(ctx) < 3:
            raise exc_type()

    runner: HandlerRunner[int] = HandlerRunner(handler)
    reports = _Reports(runner)
    try:
        runner.submit([_job(i) for i in range(3)])
        first = reports.wait({0, 1, 2})
        assert {c.status for c in first.values()} == {"error"}
        assert all(isinstance(c.error, exc_type) for c in first.values())
        runner.submit([_job(i) for i in range(3, 10)])  # the loop thread is still alive
        later = reports.wait(set(range(3, 10)))
        assert {c.status for c in later.values()} == {"ok"}
    finally:
        runner.close()


def test_a_base_exception_in_a_task_the_handler_spawned_does_not_kill_the_loop() -> None:
    async def explode() -> None:
        raise KeyboardInterrupt  # asyncio re-raises this out of run_forever

    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        if _token(ctx) == 0:
            asyncio.get_running_loop().create_task(explode())
        await asyncio.sleep(0.01)

    runner: HandlerRunner[int] = HandlerRunner(handler)
    reports = _Reports(runner)
    try:
        runner.submit([_job(0)])
        reports.wait({0})
        runner.submit([_job(i) for i in range(1, 6)])
        later = reports.wait(set(range(1, 6)))
        assert {c.status for c in later.values()} == {"ok"}
    finally:
        runner.close()


def test_a_handler_that_stops_the_loop_does_not_stop_the_runner() -> None:
    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        if _token(ctx) == 0:
            asyncio.get_running_loop().stop()
        await asyncio.sleep(0.01)

    runner: HandlerRunner[int] = HandlerRunner(handler)
    reports = _Reports(runner)
    try:
        runner.submit([_job(0)])
        reports.wait({0})
        runner.submit([_job(i) for i in range(1, 6)])
        assert {c.status for c in reports.wait(set(range(1, 6))).values()} == {"ok"}
    finally:
        runner.close()


# ---------------------------------------------------------------- plain: BaseException


@pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
def test_plain_base_exceptions_are_errors_and_threads_keep_serving(
    exc_type: type[BaseException],
) -> None:
    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        if _token(ctx) < 6:
            raise exc_type()

    runner: HandlerRunner[int] = HandlerRunner(handler, max_threads=2)
    reports = _Reports(runner)
    try:
        runner.submit([_job(i) for i in range(6)])  # three per thread: each would die
        first = reports.wait(set(range(6)))
        assert all(c.status == "error" and isinstance(c.error, exc_type) for c in first.values())
        runner.submit([_job(i) for i in range(6, 20)])
        later = reports.wait(set(range(6, 20)))
        assert {c.status for c in later.values()} == {"ok"}
        assert runner.capacity == 2 and runner.stuck == 0
    finally:
        runner.close()


def test_plain_handler_returning_garbage_that_raises_on_inspection_is_an_error() -> None:
    class Hostile:
        @property  # type: ignore[misc]
        def __class__(self) -> type:  # isinstance() asks for it when the type check fails
            raise SystemExit("inspected")

    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        return Hostile() if _token(ctx) == 0 else None  # type: ignore[return-value]

    runner: HandlerRunner[int] = HandlerRunner(handler, max_threads=1)
    reports = _Reports(runner)
    try:
        runner.submit([_job(0), _job(1)])
        done = reports.wait({0, 1})
        assert done[0].status == "error" and isinstance(done[0].error, SystemExit)
        assert done[1].status == "ok"
    finally:
        runner.close()


# ---------------------------------------------------------------- async detection


class _AsyncCallable:
    def __init__(self) -> None:
        self.ran: list[int] = []

    async def __call__(self, event: TaskEvent, ctx: HandlerContext, tag: str = "") -> None:
        await asyncio.sleep(0)
        self.ran.append(_token(ctx))


def test_an_object_with_async_call_is_awaited() -> None:
    handler = _AsyncCallable()
    runner: HandlerRunner[int] = HandlerRunner(handler)
    reports = _Reports(runner)
    try:
        runner.submit([_job(i) for i in range(5)])
        done = reports.wait(set(range(5)))
        assert sorted(handler.ran) == list(range(5))  # it ran, not just "succeeded"
        assert {c.status for c in done.values()} == {"ok"}
    finally:
        runner.close()
        gc.collect()  # a never-awaited coroutine would warn here, and the warning is an error


def _partial_of_function() -> tuple[Handler, list[int]]:
    ran: list[int] = []

    async def handler(tag: str, event: TaskEvent, ctx: HandlerContext) -> None:
        await asyncio.sleep(0)
        ran.append(_token(ctx))

    return functools.partial(handler, "tag"), ran


def _partial_of_callable_object() -> tuple[Handler, list[int]]:
    obj = _AsyncCallable()
    return functools.partial(functools.partial(obj, tag="x")), obj.ran


@pytest.mark.parametrize("make", [_partial_of_function, _partial_of_callable_object])
def test_functools_partial_of_an_async_handler_is_awaited(
    make: Callable[[], tuple[Handler, list[int]]],
) -> None:
    handler, ran = make()
    runner: HandlerRunner[int] = HandlerRunner(handler)
    reports = _Reports(runner)
    try:
        runner.submit([_job(i) for i in range(5)])
        done = reports.wait(set(range(5)))
        assert sorted(ran) == list(range(5))
        assert {c.status for c in done.values()} == {"ok"}
    finally:
        runner.close()
        gc.collect()


def test_plain_function_returning_a_coroutine_is_an_error_and_the_coroutine_is_closed() -> None:
    ran: list[int] = []

    async def real_work(ctx: HandlerContext) -> None:
        ran.append(_token(ctx))

    def handler(event: TaskEvent, ctx: HandlerContext) -> Coroutine[Any, Any, None]:
        return real_work(ctx)  # a wrapper that forgot to be async

    runner: HandlerRunner[int] = HandlerRunner(handler, max_threads=2)
    reports = _Reports(runner)
    try:
        runner.submit([_job(i) for i in range(3)])
        done = reports.wait(set(range(3)))
        for completion in done.values():
            assert completion.status == "error"
            assert isinstance(completion.error, TypeError)
            assert "async def" in str(completion.error)
        assert ran == []
    finally:
        runner.close()
    gc.collect()  # a "never awaited" RuntimeWarning here fails the test (filterwarnings)


# ---------------------------------------------------------------- timeouts


def test_a_coroutine_that_ignores_cancellation_is_reported_timeout_after_the_grace() -> None:
    release = threading.Event()

    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        if _token(ctx) != 0:
            return
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # hostile: swallows them all
                await asyncio.sleep(0.02)

    runner: HandlerRunner[int] = HandlerRunner(handler, max_running=1, cancel_grace_s=0.3)
    reports = _Reports(runner)
    try:
        started = time.monotonic()
        runner.submit([_job(0, timeout_s=0.2), _job(1, timeout_s=5.0)])
        done = reports.wait({0})
        elapsed = time.monotonic() - started
        assert done[0].status == "timeout" and isinstance(done[0].error, HandlerTimeout)
        assert 0.5 <= elapsed < 5.0  # timeout 0.2 + grace 0.3, with slack for a busy box
        assert runner.stuck == 1  # abandoned, still running on the loop
        # The abandoned coroutine does not hold the only slot: job 1 runs meanwhile.
        assert reports.wait({1})[1].status == "ok"
        assert runner.capacity == 1
        release.set()
        assert _wait_for(lambda: runner.stuck == 0)
        assert reports.drain() == []  # its late end is not reported a second time
    finally:
        release.set()
        runner.close()


def test_a_coroutine_that_swallows_the_cancel_and_returns_is_still_a_timeout() -> None:
    async def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return  # returns "normally" after its deadline

    runner: HandlerRunner[int] = HandlerRunner(handler)
    reports = _Reports(runner)
    try:
        runner.submit([_job(0, timeout_s=0.2)])
        assert reports.wait({0})[0].status == "timeout"
        assert runner.stuck == 0
    finally:
        runner.close()


def test_hung_plain_threads_are_stuck_and_jobs_queued_behind_them_wait_unstarted() -> None:
    release = threading.Event()
    started: list[int] = []

    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        started.append(_token(ctx))
        if _token(ctx) < 2:
            release.wait(WAIT_S)

    runner: HandlerRunner[int] = HandlerRunner(handler, max_threads=2)
    reports = _Reports(runner)
    try:
        assert runner.capacity == 2 and runner.stuck == 0
        runner.submit([_job(0, timeout_s=0.2), _job(1, timeout_s=0.2)])
        assert _wait_for(lambda: sorted(started) == [0, 1])
        runner.submit([_job(i, timeout_s=0.2) for i in range(2, 6)])
        done = reports.wait({0, 1})
        assert {c.status for c in done.values()} == {"timeout"}
        assert runner.stuck == 2 and runner.capacity == 0
        # Well past their own 0.2 s budget, the queued jobs are neither started nor timed out.
        time.sleep(0.6)
        assert reports.drain() == [] and sorted(started) == [0, 1]
        assert runner.in_flight == 4
        release.set()  # the hung calls return: their threads serve again
        later = reports.wait(set(range(2, 6)))
        assert {c.status for c in later.values()} == {"ok"}
        assert _wait_for(lambda: runner.stuck == 0 and runner.capacity == 2)
        assert reports.drain() == []  # the late results of 0 and 1 are dropped
    finally:
        release.set()
        runner.close()


def test_one_stuck_thread_leaves_the_others_serving() -> None:
    release = threading.Event()

    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        if _token(ctx) == 0:
            release.wait(WAIT_S)
        else:
            time.sleep(0.01)

    runner: HandlerRunner[int] = HandlerRunner(handler, max_threads=2)
    reports = _Reports(runner)
    try:
        runner.submit([_job(0, timeout_s=0.2)])
        assert reports.wait({0})[0].status == "timeout"
        assert runner.stuck == 1 and runner.capacity == 1
        runner.submit([_job(i, timeout_s=0.5) for i in range(1, 30)])
        done = reports.wait(set(range(1, 30)))
        assert {c.status for c in done.values()} == {"ok"}
    finally:
        release.set()
        runner.close()


def test_close_does_not_hang_on_a_stuck_plain_thread() -> None:
    release = threading.Event()

    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        release.wait(WAIT_S)

    runner: HandlerRunner[int] = HandlerRunner(handler, max_threads=1)
    reports = _Reports(runner)
    try:
        runner.submit([_job(0, timeout_s=0.1), _job(1)])
        reports.wait({0})
        started = time.monotonic()
        runner.close(timeout_s=0.5)
        assert time.monotonic() - started < 3.0
    finally:
        release.set()


# ---------------------------------------------------------------- start_check


class _Expired(Exception):
    pass


@pytest.mark.parametrize("is_async", [True, False])
def test_start_check_refuses_a_job_that_expired_while_it_waited_for_a_slot(
    is_async: bool,
) -> None:
    gate, expired = threading.Event(), threading.Event()
    ran: list[int] = []
    check_threads: list[str] = []

    def body(ctx: HandlerContext) -> None:
        ran.append(_token(ctx))

    async def async_handler(event: TaskEvent, ctx: HandlerContext) -> None:
        body(ctx)
        while _token(ctx) == 0 and not gate.is_set():
            await asyncio.sleep(0.01)

    def sync_handler(event: TaskEvent, ctx: HandlerContext) -> None:
        body(ctx)
        if _token(ctx) == 0:
            gate.wait(WAIT_S)

    def start_check(job: Job[int]) -> BaseException | None:
        check_threads.append(threading.current_thread().name)
        return _Expired("past its deadline") if expired.is_set() and job.token == 1 else None

    handler: Handler = async_handler if is_async else sync_handler
    runner: HandlerRunner[int] = HandlerRunner(
        handler, max_threads=1, max_running=1, start_check=start_check
    )
    reports = _Reports(runner)
    try:
        runner.submit([_job(0), _job(1), _job(2)])  # 1 and 2 wait behind the busy slot
        assert _wait_for(lambda: ran == [0])
        expired.set()  # the record expires while its job waits in the runner's queue
        gate.set()
        done = reports.wait({0, 1, 2})
        assert done[0].status == "ok" and done[2].status == "ok"
        assert done[1].status == "refused" and isinstance(done[1].error, _Expired)
        assert ran == [0, 2]  # the handler never ran on the refused job
        assert threading.current_thread().name not in check_threads  # not the poll thread
    finally:
        gate.set()
        runner.close()


@pytest.mark.parametrize("is_async", [True, False])
def test_a_start_check_that_raises_refuses_the_job_and_the_runner_keeps_serving(
    is_async: bool,
) -> None:
    async def async_handler(event: TaskEvent, ctx: HandlerContext) -> None:
        pass

    def sync_handler(event: TaskEvent, ctx: HandlerContext) -> None:
        pass

    def start_check(job: Job[int]) -> BaseException | None:
        if job.token == 0:
            raise RuntimeError("check failed")
        return None

    handler: Handler = async_handler if is_async else sync_handler
    runner: HandlerRunner[int] = HandlerRunner(handler, max_threads=1, start_check=start_check)
    reports = _Reports(runner)
    try:
        runner.submit([_job(0), _job(1)])
        done = reports.wait({0, 1})
        assert done[0].status == "refused" and isinstance(done[0].error, RuntimeError)
        assert done[1].status == "ok"
    finally:
        runner.close()


# ---------------------------------------------------------------- a thread dies anyway


def test_a_handler_thread_killed_anyway_hands_back_its_jobs_and_is_replaced() -> None:
    def handler(event: TaskEvent, ctx: HandlerContext) -> None:
        time.sleep(0.01)

    runner: HandlerRunner[int] = HandlerRunner(handler, max_threads=1)
    reports = _Reports(runner)
    try:
        runner.submit([_job(0)])
        reports.wait({0})
        (thread,) = [
            t
            for t in threading.enumerate()
            if t.name.startswith("handler-") and t.name != "handler-loop"
        ]
        assert thread.ident is not None
        # What no handler's own code can do to an idle thread: an asynchronous exception,
        # raised the moment the thread takes its next job (CPython's C API, via ctypes).
        set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
        assert set_async_exc(ctypes.c_ulong(thread.ident), ctypes.py_object(SystemExit)) == 1
        runner.submit([_job(i) for i in range(1, 6)])
        done = reports.wait(set(range(1, 6)))
        # It died holding job 1's batch before starting it: the batch goes back to the
        # queue and its replacement runs every job, none lost and none failed for it.
        assert {done[i].status for i in range(1, 6)} == {"ok"}
        assert _wait_for(lambda: not thread.is_alive())
        assert runner.capacity == 1 and runner.in_flight == 0
    finally:
        runner.close()
