"""Runs user handlers off the poll thread: async handlers as tasks on an event loop in a
thread of their own, plain functions on a bounded set of handler threads.

Owns handler execution, timeouts, cancellation and the hand-back of exactly one result per
job; must not touch Kafka, decide a record's outcome, or block the poll thread on user code.
Handlers are hostile by assumption: whatever one raises, returns or ignores, the runner's
threads live on and every job is reported.

Cost matters here: this runs once per record. Deadlines are kept by one sweep over the
calls in flight every few hundredths of a timeout, not by an asyncio.timeout per call
(which costs more than the task itself: measured 10.1 us against 3.6 us per call here).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import logging
import math
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from streams.events import TaskEvent
from streams.runtime.context import HandlerContext
from streams.runtime.loop_watch import Beat, LoopWatch

__all__ = [
    "Completion",
    "Handler",
    "HandlerRunner",
    "HandlerTimeout",
    "Job",
    "StartCheck",
    "Status",
    "is_async_handler",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[TaskEvent, HandlerContext], Awaitable[None] | None]
#: ok: returned; error: raised (any BaseException); timeout: ran past its timeout;
#: refused: the start check said no, the handler never ran.
Status = Literal["ok", "error", "timeout", "refused"]

#: Sweep for overdue calls every this fraction of the shortest timeout, within bounds.
_SWEEP_FRACTION = 0.02
_SWEEP_MIN_S = 0.005
_SWEEP_MAX_S = 0.25
#: Trouble in the runner's own threads is logged at most once per this many seconds.
_LOG_EVERY_S = 60.0
#: Plain functions whose calls average under this run in batches: one handler thread
#: takes a submitted batch and calls them one after another, instead of every call waking
#: a thread of its own (passthrough: 13.6k/s against async's 21.9k/s, the difference
#: being a thread wake-up and a GIL hand-off per record). Over it, one call per thread.
_BATCH_BELOW_S = 0.0005
#: A call in a batch running longer than this hands the rest of its batch to other
#: threads: when it returns, or from the loop thread's check (every _RELEASE_EVERY_S)
#: if it is still running, so a call that blocks holds the calls after it no longer.
_RELEASE_AFTER_S = 0.002
_RELEASE_EVERY_S = 0.005
#: Weight of the newest call in the running average of plain calls' durations, and the
#: average a release sets (some 70 fast calls bring it back under _BATCH_BELOW_S).
_AVERAGE_WEIGHT = 0.05
_SLOW_AVERAGE_S = 0.02


# Build these unsubscripted (`Job(token, ...)`, the type checker infers T): on Python 3.11
# `Job[X](...)` fails for a frozen slots dataclass (CPython #90055, zero-argument super()).
@dataclass(frozen=True, slots=True)
class Job(Generic[T]):
    """One handler call: `token` is the submitter's own handle on its record."""

    token: T
    event: TaskEvent
    ctx: HandlerContext
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Completion(Generic[T]):
    """What became of a Job; `error` is None only for "ok"."""

    job: Job[T]
    status: Status
    error: BaseException | None
    duration_s: float


#: Called on the thread that starts a call, immediately before its handler: a non-None
#: result refuses the job (status "refused", that exception as its error).
StartCheck = Callable[[Job[T]], BaseException | None]


class HandlerTimeout(TimeoutError):
    """The handler ran past its timeout (the stage's handler_timeout_s)."""


class _Call(Generic[T]):
    """One job in flight, a key of HandlerRunner._running until it is reported. Whoever
    pops it from there first reports it; dict.pop is atomic, so exactly one does."""

    __slots__ = ("abandoned", "deadline", "ended", "expired", "job", "started", "task")

    def __init__(self, job: Job[T]) -> None:
        self.job = job
        self.started = 0.0
        self.deadline = math.inf  # set when the handler starts: waiting is not its time
        self.task: asyncio.Task[None] | None = None
        self.expired = False  # past its deadline (coroutine: cancelled; plain: reported)
        self.abandoned = False  # coroutine reported after ignoring its cancel for the grace
        self.ended = False  # a plain call's thread has accounted for its end


class HandlerRunner(Generic[T]):
    """Executes Jobs concurrently and reports each submitted job exactly once.

    HandlerRunner(handler, *, max_threads=32, max_running=None, start_check=None,
                  cancel_grace_s=5.0)

    Async handlers (coroutine functions, objects whose `__call__` is one, and
    functools.partial of either: see is_async_handler) run as tasks on the runner's event
    loop, at most `max_running` at once (None: no limit). Anything else is a plain function
    and runs on at most `max_threads` handler threads. Jobs beyond those limits wait in the
    runner, in submission order, and start the moment a slot or thread frees.

    Called by the poll thread, never blocking on user code:
      submit(jobs)  hand over a batch (one cross-thread hop per batch).
      drain()       the completions reported since the last drain, as a list.
      close(timeout_s=5.0)  cancel what runs, give it up to timeout_s to unwind, stop; it
                    returns within about timeout_s + 1 s even if a handler thread is stuck.
                    Jobs not reported by then never are.
    Status, safe to read from any thread (each a plain int read, a snapshot):
      in_flight     submitted and not reported yet (waiting for a slot or running).
      stuck         calls past their deadline that still run: hung handler threads plus
                    abandoned coroutines.
      capacity      how many calls can run at once right now: max_threads minus stuck
                    threads for plain functions; max_running (None: no limit) for
                    coroutines. 0 means every handler thread is stuck: stop feeding it.
      batching      plain calls are fast and go to the threads in batches (below).

    Outcomes (Completion.status): "ok" the handler returned (its return value is ignored);
    "error" it raised, any BaseException (SystemExit, KeyboardInterrupt, its own
    CancelledError included), or a plain call returned an awaitable (see below);
    "timeout" it ran past job.timeout_s (error: HandlerTimeout); "refused" `start_check`
    returned an exception, or raised one, and the handler never ran. The only thing not
    reported is what close() cancels.

    start_check(job) is called on the thread that starts the call (the loop thread or a
    handler thread), immediately before the handler, also for a job that waited in the
    runner for a slot: the submitter re-checks there that the work has not expired.

    Timeouts start when the handler does, for both kinds: waiting for a slot or a thread
    is the runner's time, not the handler's. Completion.duration_s is the call's own time.
    A timed-out coroutine is cancelled (it sees CancelledError, as under asyncio.timeout)
    and is reported "timeout" once it has unwound, however it ends. One that ignores the
    cancellation is reported "timeout" `cancel_grace_s` after its deadline anyway and
    abandoned: cancelled once more, it frees its max_running slot (so hostile handlers
    cannot starve the stage) and counts in `stuck` until it ends; what it does later is
    dropped. A plain function cannot be stopped: when its deadline passes it is reported
    "timeout" at once and its thread is stuck (capacity drops by one) until the call
    returns; its late result is dropped and the thread serves again.

    Plain functions whose calls average under half a millisecond are handed to the
    threads a submitted batch at a time: one thread calls them one after another (a
    thread wake-up per record costs more than such a call). A call of a batch that runs
    over 2 ms hands the batch's rest back, one call per thread, when it returns or, if
    it is still running, within 5 ms from the loop thread; calls are one per thread
    again until they average fast.

    A plain call that returns an awaitable has not done its work: a coroutine is closed
    unstarted (no "never awaited" warning) and the job is an "error" with a TypeError
    saying to declare the handler `async def`. It is not run on the loop: a handler whose
    kind the runner cannot see is a bug to fix, not to guess around.

    User code never kills the runner's threads: a BaseException from a handler is an
    outcome; SystemExit/KeyboardInterrupt from a task the handler spawned (asyncio lets
    those escape the loop) or a handler stopping the loop restarts the loop; a handler
    thread that dies anyway reports the call it was running as an error, hands the calls
    it had not started back to the queue, and is replaced.

    An async handler that blocks the loop thread (a sync call inside `async def`) stalls
    every coroutine and the deadline sweep with it: nothing here can pre-empt it.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_threads: int = 32,
        max_running: int | None = None,
        start_check: StartCheck[T] | None = None,
        cancel_grace_s: float = 5.0,
    ) -> None:
        if max_threads < 1 or (max_running is not None and max_running < 1):
            raise ValueError("max_threads and max_running must be at least 1")
        if not cancel_grace_s >= 0:
            raise ValueError(f"cancel_grace_s must be >= 0, got {cancel_grace_s!r}")
        self._handler = handler
        self._is_async = is_async_handler(handler)
        self._start_check = start_check
        self._grace_s = cancel_grace_s
        self._running: dict[_Call[T], bool] = {}
        self._done: deque[Completion[T]] = deque()
        self._closing = False  # set by close(): later CancelledErrors are close's own
        self._sweep_every_s = _SWEEP_MAX_S
        self._last_log = -math.inf
        # Coroutines beyond max_running wait here and start the moment one ends, on the
        # loop thread: a freed slot does not wait for the poll loop's next turn.
        self._max_running = max_running
        self._queued: deque[_Call[T]] = deque()
        self._active = 0  # loop thread only, like _abandoned
        self._abandoned = 0
        self._starting = False
        self._loop_stopped = False  # close() stopped the loop (a handler's stop() does not)
        self._loop_beat: Beat | None = None  # set by watch_loop
        self._loop = asyncio.new_event_loop()
        if sys.version_info >= (3, 12):
            # Handlers that finish without awaiting then skip a trip through the loop;
            # the stdlib factory keeps current_task() right for asyncio.timeout and friends.
            self._loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
        self._max_threads = max_threads
        self._threads_lock = threading.Lock()
        self._live_threads = 0
        self._thread_names = itertools.count()
        self._stuck_lock = threading.Lock()  # pairs the sweep's pop+count with a thread's
        self._stuck_threads = 0
        # Batches of plain calls (one call each unless they are fast), None: stop.
        self._sync_jobs: queue.SimpleQueue[deque[_Call[T]] | None] = queue.SimpleQueue()
        # Plain calls' average duration; starts slow, so calls go one per thread until
        # they are seen to be fast.
        self._sync_average_s = math.inf
        # Handler thread -> the batch it is working through and the call it runs now:
        # what the loop thread's check releases when that call runs long.
        self._serving: dict[int, tuple[deque[_Call[T]], _Call[T]]] = {}
        self._thread = threading.Thread(target=self._run_loop, name="handler-loop", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the poll thread
    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def stuck(self) -> int:
        return self._stuck_threads + self._abandoned

    @property
    def capacity(self) -> int | None:
        if self._is_async:
            return self._max_running
        return self._max_threads - self._stuck_threads

    @property
    def batching(self) -> bool:
        """Plain calls go to the threads a submitted batch at a time (they average under
        half a millisecond): calls waiting for a thread then hold no thread."""
        return not self._is_async and self._sync_average_s < _BATCH_BELOW_S

    def submit(self, jobs: Sequence[Job[T]]) -> None:
        if not jobs:
            return
        running = self._running
        calls: list[_Call[T]] = []
        shortest = self._sweep_every_s
        for job in jobs:
            call = _Call(job)
            running[call] = True
            calls.append(call)
            if job.timeout_s * _SWEEP_FRACTION < shortest:
                shortest = job.timeout_s * _SWEEP_FRACTION
        if shortest < self._sweep_every_s:
            self._sweep_every_s = max(_SWEEP_MIN_S, shortest)
        if self._is_async:
            # One cross-thread hop per batch, not per record.
            self._loop.call_soon_threadsafe(self._start_tasks, calls)
        else:
            self._ensure_threads()
            put = self._sync_jobs.put
            if self._sync_average_s < _BATCH_BELOW_S:
                put(deque(calls))  # one wake-up for the batch
            else:
                for call in calls:
                    put(deque((call,)))

    def watch_loop(self, watch: LoopWatch, name: str, after_s: float) -> Beat | None:
        """Have `watch` log the event loop when it stops turning (an async handler that
        blocks it stalls every call); None if the loop thread has ended. The sweep turns
        it at least every _SWEEP_MAX_S, so after_s must be longer than that."""
        ident = self._thread.ident
        if ident is None or not self._thread.is_alive():
            return None
        self._loop_beat = watch.watch(name, ident, max(after_s, 2 * _SWEEP_MAX_S))
        return self._loop_beat

    def drain(self) -> list[Completion[T]]:
        done: list[Completion[T]] = []
        pop = self._done.popleft
        try:
            while True:
                done.append(pop())
        except IndexError:
            return done

    def close(self, timeout_s: float = 5.0) -> None:
        """Cancel what still runs, give it up to timeout_s to unwind, stop the loop."""
        self._closing = True

        async def _cancel_all() -> None:
            self._queued.clear()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks(self._loop) if t is not current]
            for task in tasks:
                task.cancel()
            if tasks:
                # Stopping the loop under tasks still unwinding leaves them pending, and
                # asyncio logs each one ("Task was destroyed but it is pending!").
                await asyncio.wait(tasks, timeout=timeout_s)
            self._loop_stopped = True
            self._loop.stop()

        def _begin() -> None:
            self._loop.create_task(_cancel_all())

        with contextlib.suppress(RuntimeError):  # the loop is closed already
            self._loop.call_soon_threadsafe(_begin)
        self._thread.join(timeout_s + 1.0)
        with self._threads_lock:
            live = self._live_threads
        for _ in range(live):
            self._sync_jobs.put(None)  # handler threads are daemons: a stuck one is left

    # ------------------------------------------------------------------ the loop thread
    def _run_loop(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        loop.call_soon(self._sweep)
        if not self._is_async:
            loop.call_soon(self._release_held)
        while True:
            try:
                loop.run_forever()
            except BaseException as exc:  # user code must not end this thread
                # asyncio re-raises SystemExit/KeyboardInterrupt from a task out of the
                # loop; ours catch everything, so it came from a task a handler spawned.
                self._log_limited(
                    "a task started by the handler raised %s out of the event loop; the "
                    "loop carries on (await the tasks your handler creates)",
                    type(exc).__name__,
                )
            if self._loop_stopped:
                break  # else a handler stopped the loop: run it again
        loop.close()

    def _start_tasks(self, calls: list[_Call[T]]) -> None:
        self._queued.extend(calls)
        self._start_queued()

    def _start_queued(self) -> None:
        if self._starting:
            return  # a task that ended during an (eager) start: the outer loop goes on
        self._starting = True
        try:
            create_task, limit, queued = self._loop.create_task, self._max_running, self._queued
            while queued and (limit is None or self._active < limit):
                call = queued.popleft()
                self._active += 1
                call.task = create_task(self._run_async(call))
        finally:
            self._starting = False

    async def _run_async(self, call: _Call[T]) -> None:
        job = call.job
        try:
            if self._start_check is not None and self._refused(call):
                return
            # The budget starts when the handler does: a busy loop's delay in starting it
            # is ours, not the handler's.
            call.started = time.monotonic()
            call.deadline = call.started + job.timeout_s
            status: Status = "ok"
            error: BaseException | None = None
            try:
                await self._handler(job.event, job.ctx)  # type: ignore[misc]
            except asyncio.CancelledError as exc:
                if self._closing and not call.expired:
                    raise  # close() cancelled it: nothing is reported any more
                status, error = "error", exc  # the handler's own, not our timeout's
            except BaseException as exc:  # any handler failure is an outcome
                status, error = "error", exc
            if call.expired:  # however it ended, it ran past its deadline
                status, error = "timeout", _timeout_error(job)
            self._report(call, status, error)
        finally:
            if call.abandoned:
                self._abandoned -= 1
            else:
                self._active -= 1
            if self._queued:
                self._start_queued()

    def _sweep(self) -> None:
        """Time out overdue calls: cancel coroutines (abandon those that ignore it past the
        grace), report plain functions at once and count their threads stuck."""
        self._loop.call_later(self._sweep_every_s, self._sweep)
        now = time.monotonic()
        if self._loop_beat is not None:
            self._loop_beat.last = now
        for call in list(self._running):
            if call.deadline > now:
                continue
            if not self._is_async:
                with self._stuck_lock:
                    if self._running.pop(call, False):
                        self._stuck_threads += 1
                        # Logged and measured by the submitter, which reads `stuck`.
                        self._append(call, "timeout", _timeout_error(call.job), now)
                continue
            task = call.task
            if task is None:
                continue  # cannot be: a coroutine's deadline is set once its task runs
            if not call.expired:
                call.expired = True
                task.cancel()  # _run_async reports it once the handler has unwound
            elif now >= call.deadline + self._grace_s and self._running.pop(call, False):
                call.abandoned = True
                self._active -= 1
                self._abandoned += 1
                self._append(call, "timeout", _abandoned_error(call.job, self._grace_s), now)
                task.cancel()  # once more: a second cancel gets some loops out
                if self._queued:
                    self._start_queued()

    def _release_held(self) -> None:
        """Hand the rest of a batch to other threads when its current call runs long."""
        self._loop.call_later(_RELEASE_EVERY_S, self._release_held)
        late = time.monotonic() - _RELEASE_AFTER_S
        for batch, call in list(self._serving.values()):
            if batch and call.started < late:
                self._release(batch)

    def _release(self, batch: deque[_Call[T]]) -> None:
        """Requeue what is left of `batch`, one call per thread. Its thread and the loop
        thread may both do this at once: deque.popleft is atomic, so each call is taken
        exactly once."""
        put = self._sync_jobs.put
        # Slow calls among them: no batches again until some dozens of calls say fast.
        self._sync_average_s = max(self._sync_average_s, _SLOW_AVERAGE_S)
        while True:
            try:
                call = batch.popleft()
            except IndexError:
                return
            put(deque((call,)))

    # ------------------------------------------------------------------ handler threads
    def _ensure_threads(self) -> None:
        if self._live_threads >= self._max_threads or self._closing:
            return
        with self._threads_lock:
            while self._live_threads < min(self._max_threads, len(self._running)):
                self._live_threads += 1
                threading.Thread(
                    target=self._serve_sync,
                    name=f"handler-{next(self._thread_names)}",
                    daemon=True,
                ).start()

    def _serve_sync(self) -> None:
        batch: deque[_Call[T]] | None = None
        call: _Call[T] | None = None
        me = threading.get_ident()
        serving = self._serving
        try:
            # A for loop over a C iterator stores the job before the interpreter next
            # checks for asynchronous exceptions (`call := get()` checks right after the
            # call returns): a thread killed that way still reports the job it took.
            for batch in iter(self._sync_jobs.get, None):
                try:
                    for call in iter(batch.popleft, None):  # IndexError once it is empty
                        if self._closing:
                            break
                        call.started = time.monotonic()  # before the check can see it
                        serving[me] = (batch, call)
                        self._call_sync(call)
                        took = time.monotonic() - call.started
                        self._sync_average_s = (
                            took
                            if self._sync_average_s == math.inf
                            else self._sync_average_s
                            + _AVERAGE_WEIGHT * (took - self._sync_average_s)
                        )
                        if took > _RELEASE_AFTER_S and batch:
                            self._release(batch)
                except IndexError:
                    pass  # the batch is done (or the loop thread released the rest)
                serving.pop(me, None)
                call = None
            with self._threads_lock:
                self._live_threads -= 1
        except BaseException as exc:  # e.g. an asynchronous exception
            # _call_sync catches everything a handler does; this is the last line.
            serving.pop(me, None)
            if call is not None:
                self._end_sync(call, "error", exc)
            if batch:
                self._release(batch)
            with self._threads_lock:
                self._live_threads -= 1
            self._log_limited("a handler thread died (%r); it is replaced", exc)
            self._ensure_threads()

    def _call_sync(self, call: _Call[T]) -> None:
        job = call.job
        if self._start_check is not None and self._refused(call):
            return
        call.started = time.monotonic()
        call.deadline = call.started + job.timeout_s
        status: Status = "ok"
        error: BaseException | None = None
        try:
            result = self._handler(job.event, job.ctx)
            if result is not None and inspect.isawaitable(result):
                status, error = "error", _returned_awaitable(result)
        except BaseException as exc:  # any handler failure is an outcome
            status, error = "error", exc
        self._end_sync(call, status, error)

    def _end_sync(self, call: _Call[T], status: Status, error: BaseException | None) -> None:
        if call.ended:
            return
        call.ended = True
        if self._running.pop(call, False):
            self._append(call, status, error, time.monotonic())
            return
        # The sweep reported it as timed out and counted this thread stuck: it serves again.
        with self._stuck_lock:
            self._stuck_threads -= 1

    # ------------------------------------------------------------------ results
    def _refused(self, call: _Call[T]) -> bool:
        """Run the start check; report the call refused if it says no (or raises)."""
        assert self._start_check is not None
        call.started = time.monotonic()
        try:
            refusal = self._start_check(call.job)
        except BaseException as exc:  # a broken check must not kill a thread
            refusal = exc
        if refusal is None:
            return False
        if self._is_async:
            self._report(call, "refused", refusal)
        else:
            self._end_sync(call, "refused", refusal)
        return True

    def _report(self, call: _Call[T], status: Status, error: BaseException | None) -> None:
        if self._running.pop(call, False):
            self._append(call, status, error, time.monotonic())
        # else: already reported (timed out and abandoned); a late result is dropped

    def _append(
        self, call: _Call[T], status: Status, error: BaseException | None, now: float
    ) -> None:
        self._done.append(Completion(call.job, status, error, now - call.started))

    def _log_limited(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            log.warning(message, *args)


def is_async_handler(handler: object) -> bool:
    """Whether `handler` must be awaited: a coroutine function, an object whose `__call__`
    is one, or a functools.partial (nested too) of either."""
    while isinstance(handler, functools.partial):
        handler = handler.func
    if inspect.iscoroutinefunction(handler):
        return True
    if inspect.isroutine(handler) or isinstance(handler, type) or not callable(handler):
        return False
    return inspect.iscoroutinefunction(type(handler).__call__)


def _returned_awaitable(result: object) -> TypeError:
    if inspect.iscoroutine(result) or inspect.isgenerator(result):
        result.close()  # never started: closing it runs none of it and silences the warning
    return TypeError(
        f"the handler returned {type(result).__name__} instead of running: declare it "
        "`async def` (or its class's `__call__`) so the runner awaits it"
    )


def _timeout_error(job: Job[T]) -> HandlerTimeout:
    return HandlerTimeout(f"handler ran past its timeout of {job.timeout_s:g} s")


def _abandoned_error(job: Job[T], grace_s: float) -> HandlerTimeout:
    return HandlerTimeout(
        f"handler ran past its timeout of {job.timeout_s:g} s and ignored cancellation "
        f"for {grace_s:g} s more; abandoned (let CancelledError propagate)"
    )
