"""Runs user handlers off the poll thread: async handlers on an event loop in a thread of
their own, plain functions in a bounded thread pool driven by that loop.

Owns handler execution, cancellation on timeout and the hand-back of results. It never
touches Kafka; the poll thread submits work and drains completions without blocking.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from streams.events import TaskEvent
from streams.runtime.context import HandlerContext

Handler = Callable[[TaskEvent, HandlerContext], Awaitable[None] | None]
Status = Literal["ok", "error", "timeout"]


@dataclass(frozen=True, slots=True)
class Job:
    """One handler call: `token` lets the submitter match the completion to its record."""

    token: object
    event: TaskEvent
    ctx: HandlerContext
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Completion:
    job: Job
    status: Status
    error: BaseException | None
    duration_s: float


class HandlerRunner:
    """Executes Jobs concurrently; at most `max_threads` plain-function calls at once.

    submit() and drain() are called by the poll thread and never block on user code. A
    timed-out coroutine is cancelled; a timed-out plain function cannot be stopped, so its
    thread runs on (bounded by the pool) and its late result is dropped.
    """

    def __init__(self, handler: Handler, *, max_threads: int = 32) -> None:
        self._handler = handler
        self._is_async = inspect.iscoroutinefunction(handler)
        self._done: deque[Completion] = deque()
        self._loop = asyncio.new_event_loop()
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="handler")
        self._thread = threading.Thread(target=self._run_loop, name="handler-loop", daemon=True)
        self._wakeup: Callable[[], None] | None = None
        self._thread.start()

    def set_wakeup(self, wakeup: Callable[[], None]) -> None:
        """Called (from the loop thread) whenever a completion is ready."""
        self._wakeup = wakeup

    def submit(self, jobs: Sequence[Job]) -> None:
        if jobs:
            # One cross-thread hop per batch, not per record.
            self._loop.call_soon_threadsafe(self._start_all, list(jobs))

    def drain(self) -> list[Completion]:
        done: list[Completion] = []
        pop = self._done.popleft
        try:
            while True:
                done.append(pop())
        except IndexError:
            return done

    def close(self, timeout_s: float = 5.0) -> None:
        def _cancel_all() -> None:
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.stop()

        if self._loop.is_running():
            self._loop.call_soon_threadsafe(_cancel_all)
        self._thread.join(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_default_executor(self._pool)
        self._loop.run_forever()

    def _start_all(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._loop.create_task(self._run(job))

    async def _run(self, job: Job) -> None:
        started = time.monotonic()
        status: Status = "ok"
        error: BaseException | None = None
        deadline = asyncio.timeout(job.timeout_s)
        try:
            async with deadline:
                if self._is_async:
                    await self._handler(job.event, job.ctx)  # type: ignore[misc]
                else:
                    await self._loop.run_in_executor(None, self._call_sync, job)
        except TimeoutError as exc:
            # Only our own deadline is a timeout; a TimeoutError the handler raised itself
            # (a tool call timing out, say) is a handler error.
            status, error = ("timeout", exc) if deadline.expired() else ("error", exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any handler failure is an outcome
            status, error = "error", exc
        self._done.append(Completion(job, status, error, time.monotonic() - started))
        if self._wakeup is not None:
            self._wakeup()

    def _call_sync(self, job: Job) -> Any:
        return self._handler(job.event, job.ctx)
