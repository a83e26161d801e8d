"""Tools at run time: the per-process limits of each declared tool, shared by every stage
worker in the process, and the call forms a handler uses through ctx.tool(name).

Owns admission to a tool (breaker, concurrency slot, rate token, in that order, within
max_wait_s), its timeout, the verdict of each call and the readings for metrics, pauses
and pressure reports. Must not decide the policies themselves (streams.policy.breaker,
token_bucket, adaptive_limit, tool_share do) nor touch Kafka.

Thread-safe: handlers call from handler threads and from each worker's event loop at once.
One lock per tool guards its state; async waiters poll (every few milliseconds, or when the
next token is due) because they may sit on different event loops; blocking waiters sleep on
a condition that every finished call notifies. Waiters are served in arrival order (a
ticket each; a newcomer never overtakes a waiter): otherwise, with the many waking
together when a token is due, an unlucky one can lose every race until max_wait_s
refuses it (seen in the demo: "no rate token within 5 s" at 16 waiters and 40 tokens/s).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Literal, NamedTuple, ParamSpec, TypeVar, overload

from streams.clock import Clock, SystemClock
from streams.errors import StreamsError, ToolError, ToolSaturated, ToolTimeout, ToolUnavailable
from streams.policy.adaptive_limit import AdaptiveLimit
from streams.policy.breaker import CLOSED, BreakerState, CircuitBreaker, Permit, Verdict
from streams.policy.token_bucket import TokenBucket
from streams.policy.tool_share import ProcessLimits, ToolCeilings, process_limits
from streams.topology import ErrorClasses, Stage, ToolSpec, Topology

__all__ = [
    "CALL_OUTCOMES",
    "LATENCY_BUCKETS_S",
    "CallOutcome",
    "Tool",
    "ToolBox",
    "ToolCall",
    "ToolReading",
    "ToolRegistry",
]

P = ParamSpec("P")
R = TypeVar("R")

CallOutcome = Literal["ok", "error", "timeout", "rejected_open", "rejected_saturated"]
CALL_OUTCOMES: tuple[CallOutcome, ...] = (
    "ok",
    "error",
    "timeout",
    "rejected_open",
    "rejected_saturated",
)
#: Tool calls take milliseconds (a cache) to a minute (a model): buckets span both.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: An async waiter for a slot looks again this often (a finished call cannot wake it: it
#: may be on another event loop); a waiter for a token sleeps until the token is due.
_SLOT_POLL_S = 0.005
_MAX_SLEEP_S = 0.05
_Wait = Literal["ok", "open", "slot", "probe", "token"]


class Admission(NamedTuple):
    """One admitted call: when (monotonic), how long it waited, its breaker permit."""

    started: float
    waited_s: float
    permit: Permit


@dataclass(frozen=True, slots=True)
class ToolReading:
    """One tool's state in this process, for metrics, pauses, status and reports."""

    name: str
    breaker: BreakerState | None  # None: the tool has no breaker
    open_until_s: float | None  # monotonic time an open breaker starts probing
    free_probes: int
    in_flight: int
    waiting: int
    concurrency_limit: int | None  # this process's slots now; None: unlimited
    rate_per_s: float | None  # this process's share of the rate; None: unlimited
    tokens: float | None
    share: float
    calls: Mapping[str, int]  # by CallOutcome
    latency_counts: tuple[int, ...]  # per LATENCY_BUCKETS_S, then +Inf
    latency_sum_s: float
    wait_counts: tuple[int, ...]
    wait_sum_s: float
    transitions: Mapping[tuple[str, str], int]  # (from, to) BreakerState


class Tool:
    """One declared tool's limits in this process. See the module docstring for the rules;
    streams.policy.tool_share for how the fleet-wide ceilings become this process's."""

    def __init__(
        self, spec: ToolSpec, classes: ErrorClasses, stages_using: int, clock: Clock
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self._classes = classes
        self.clock = clock
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._ceilings = ToolCeilings(
            rate_per_s=spec.rate_per_s,
            burst=spec.burst,
            concurrency=spec.concurrency,
            stages_using=max(1, stages_using),
        )
        self._shares: dict[tuple[str, str], float] = {}
        self._limits = process_limits(self._ceilings, {})
        now = clock.monotonic()
        self._bucket = None if self._limits.rate_per_s is None else TokenBucket(0.0, 1.0, now)
        self._breaker = (
            None
            if spec.breaker is None
            else CircuitBreaker(spec.breaker, on_transition=self._transition)
        )
        self._adaptive = None if spec.adaptive is None else AdaptiveLimit(spec.adaptive)
        self._in_flight = 0
        self._waiting = 0
        self._queue: deque[int] = deque()  # tickets of waiting calls, oldest first
        self._tickets = itertools.count()
        self._sleepers = 0  # blocking waiters: only they need a notify when a call ends
        self._permit = CLOSED  # the last admission's breaker permit (read under the lock)
        self._calls: dict[CallOutcome, int] = dict.fromkeys(CALL_OUTCOMES, 0)
        self._latency = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._latency_sum = 0.0
        self._wait = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._wait_sum = 0.0
        self._transitions: dict[tuple[BreakerState, BreakerState], int] = {}
        #: An operator forced the breaker open (README "Operator controls"): every call is
        #: refused ToolUnavailable and the stages using it pause, as with an open breaker.
        self.forced_open = False

    # ----------------------------------------------------------------- shares
    def set_share(self, stage: str, worker: str, share: float) -> None:
        """This worker's share of `stage`'s partitions (after every rebalance)."""
        with self._lock:
            if share > 0:
                self._shares[(stage, worker)] = share
            else:
                self._shares.pop((stage, worker), None)
            by_stage: dict[str, float] = {}
            for (name, _), part in self._shares.items():
                by_stage[name] = min(1.0, by_stage.get(name, 0.0) + part)
            self._limits = process_limits(self._ceilings, by_stage)
            if self._bucket is not None and self._limits.rate_per_s is not None:
                assert self._limits.burst is not None
                self._bucket.set_rate(
                    self._limits.rate_per_s, burst=self._limits.burst, now=self.clock.monotonic()
                )
            self._freed.notify_all()

    def limits(self) -> ProcessLimits:
        return self._limits

    # ----------------------------------------------------------------- admission
    async def acquire_async(self) -> Admission:
        """Take a slot, a breaker permit and a token for one call. Raises ToolUnavailable
        or ToolSaturated instead of waiting past max_wait_s."""
        clock = self.clock
        start = now = clock.monotonic()
        deadline = start + self.spec.max_wait_s
        ticket: int | None = None
        try:
            while True:
                with self._lock:
                    kind, hint = self._admit_in_turn(now, ticket)
                    if kind == "ok":
                        return Admission(now, self._admitted(now - start), self._permit)
                    self._refuse_if_due(kind, now, deadline, start)
                    if ticket is None:
                        ticket = self._take_ticket()
                await asyncio.sleep(max(0.001, min(hint, deadline - now, _MAX_SLEEP_S)))
                now = clock.monotonic()
        finally:
            if ticket is not None:
                with self._lock:
                    self._leave_queue(ticket)

    def acquire_blocking(self) -> Admission:
        """acquire_async for a handler thread: sleeps on the tool's condition."""
        clock = self.clock
        start = now = clock.monotonic()
        deadline = start + self.spec.max_wait_s
        with self._lock:
            ticket: int | None = None
            try:
                while True:
                    kind, hint = self._admit_in_turn(now, ticket)
                    if kind == "ok":
                        return Admission(now, self._admitted(now - start), self._permit)
                    self._refuse_if_due(kind, now, deadline, start)
                    if ticket is None:
                        ticket = self._take_ticket()
                        self._sleepers += 1
                    self._freed.wait(max(0.001, min(hint, deadline - now, _MAX_SLEEP_S)))
                    now = clock.monotonic()
            finally:
                if ticket is not None:
                    self._leave_queue(ticket)
                    self._sleepers -= 1

    def _admit_in_turn(self, now: float, ticket: int | None) -> tuple[_Wait, float]:
        """Under the lock: _admit, for the oldest waiter only (or a newcomer when nobody
        waits). The breaker is asked first either way: open refuses everyone at once."""
        queue = self._queue
        if queue and queue[0] != ticket:
            kind, hint = self._admit_check_open(now)
            if kind == "open":
                return kind, hint
            # Not its turn: look again shortly, or when the next token is due (nobody in
            # line can have one before that).
            bucket = self._bucket
            due = bucket.wait_s(now) if bucket is not None and self._limits.rate_per_s else 0.0
            return "slot", max(_SLOT_POLL_S, due)
        return self._admit(now)

    def _admit_check_open(self, now: float) -> tuple[_Wait, float]:
        if self.forced_open:
            return "open", 0.0
        breaker = self._breaker
        if breaker is not None and breaker.state(now) == "open":
            until = breaker.open_until()
            return "open", 0.0 if until is None else until - now
        return "ok", 0.0

    def _take_ticket(self) -> int:
        ticket = next(self._tickets)
        self._queue.append(ticket)
        self._waiting += 1
        return ticket

    def _leave_queue(self, ticket: int) -> None:
        self._waiting -= 1
        if self._queue and self._queue[0] == ticket:
            self._queue.popleft()
        else:
            self._queue.remove(ticket)
        if self._sleepers:
            self._freed.notify_all()  # the next in line may be asleep on the condition

    def _admit(self, now: float) -> tuple[_Wait, float]:
        """Under the lock: admit one call now, or say what it waits for and how long."""
        if self.forced_open:
            return "open", 0.0
        breaker = self._breaker
        state = breaker.state(now) if breaker is not None else "closed"
        if state == "open":
            assert breaker is not None
            until = breaker.open_until()
            return "open", 0.0 if until is None else until - now
        slots = self._slot_limit()
        if slots is not None and self._in_flight >= slots:
            return "slot", _SLOT_POLL_S
        if state == "half_open":
            assert breaker is not None
            if breaker.free_probes(now) == 0:
                return "probe", _SLOT_POLL_S
        bucket = self._bucket
        if bucket is not None:
            if not self._limits.rate_per_s:
                return "token", _MAX_SLEEP_S  # no partitions here, so no share of the rate
            wait = bucket.wait_s(now)
            if wait > 0:
                return "token", wait
            bucket.try_take(now)
        if breaker is not None:
            permit = breaker.try_acquire(now)
            assert permit is not None  # checked above: closed, or a probe is free
            self._permit = permit
        self._in_flight += 1
        return "ok", 0.0

    def _refuse_if_due(self, kind: _Wait, now: float, deadline: float, start: float) -> None:
        if kind == "open":
            self._calls["rejected_open"] += 1
            until = self._breaker.open_until() if self._breaker is not None else None
            until = None if self.forced_open else until
            raise ToolUnavailable(self.name, None if until is None else max(0.0, until - now))
        if now >= deadline:
            if kind == "probe":
                # Half-open with every probe out and none back in time: still unavailable.
                self._calls["rejected_open"] += 1
                raise ToolUnavailable(self.name, None)
            self._calls["rejected_saturated"] += 1
            raise ToolSaturated(self.name, now - start, "rate token" if kind == "token" else "slot")

    def _admitted(self, waited_s: float) -> float:
        self._wait[_bucket_of(waited_s)] += 1
        self._wait_sum += waited_s
        return waited_s

    def _slot_limit(self) -> int | None:
        adaptive = self._adaptive
        if adaptive is None:
            return self._limits.concurrency
        fraction = self._fraction()
        if fraction <= 0:
            return 0
        return max(1, int(adaptive.limit * fraction))

    def _fraction(self) -> float:
        by_stage: dict[str, float] = {}
        for (name, _), part in self._shares.items():
            by_stage[name] = min(1.0, by_stage.get(name, 0.0) + part)
        return min(1.0, sum(by_stage.values()) / self._ceilings.stages_using)

    # ----------------------------------------------------------------- verdicts
    def finish(
        self,
        admission: Admission,
        error: BaseException | None,
        ended: float,
        *,
        timed_out: bool,
    ) -> None:
        """Record an admitted call's end (monotonic times): its verdict for the breaker and
        the adaptive limit, its outcome and latency for the metrics; frees its slot."""
        duration_s = ended - admission.started
        verdict = self.verdict(error, timed_out)
        outcome: CallOutcome = "ok" if error is None else ("timeout" if timed_out else "error")
        with self._lock:
            in_flight = self._in_flight
            self._in_flight -= 1
            if self._breaker is not None:
                self._breaker.record(admission.permit, verdict, duration_s, ended)
            if self._adaptive is not None and verdict != "ignored":
                self._adaptive.record(duration_s, failed=verdict == "failure", in_flight=in_flight)
            self._calls[outcome] += 1
            self._latency[_bucket_of(duration_s)] += 1
            self._latency_sum += duration_s
            if self._sleepers:
                self._freed.notify_all()

    def verdict(self, error: BaseException | None, timed_out: bool) -> Verdict:
        """What a call's end says about the tool's health."""
        if error is None:
            return "success"
        if timed_out:
            return "failure"
        if not isinstance(error, Exception) or isinstance(error, ToolError):
            # Cancelled, interrupted, or another tool refused: nothing about this tool.
            return "ignored"
        if isinstance(error, self._classes.ignored):
            return "ignored"
        if isinstance(error, self._classes.failures):
            return "failure"
        return "success"  # the tool answered; what the handler made of it is its own matter

    def _transition(self, old: BreakerState, new: BreakerState) -> None:
        self._transitions[(old, new)] = self._transitions.get((old, new), 0) + 1

    # ----------------------------------------------------------------- readings
    def probe_room(self) -> int | None:
        """How many calls may start now as far as the breaker goes: 0 open, the free
        probes half-open, None closed (or no breaker). Cheap: read on every dispatch."""
        if self.forced_open:
            return 0
        breaker = self._breaker
        if breaker is None:
            return None
        with self._lock:
            now = self.clock.monotonic()
            state = breaker.state(now)
            if state == "closed":
                return None
            return breaker.free_probes(now)

    def reading(self) -> ToolReading:
        with self._lock:
            now = self.clock.monotonic()
            breaker = self._breaker
            state = breaker.state(now) if breaker is not None else None
            state = "open" if self.forced_open else state
            return ToolReading(
                name=self.name,
                breaker=state,
                open_until_s=breaker.open_until() if breaker is not None else None,
                free_probes=breaker.free_probes(now) if breaker is not None else 0,
                in_flight=self._in_flight,
                waiting=self._waiting,
                concurrency_limit=self._slot_limit(),
                rate_per_s=self._limits.rate_per_s,
                tokens=self._bucket.tokens(now) if self._bucket is not None else None,
                share=self._fraction(),
                calls={str(k): v for k, v in self._calls.items()},
                latency_counts=tuple(self._latency),
                latency_sum_s=self._latency_sum,
                wait_counts=tuple(self._wait),
                wait_sum_s=self._wait_sum,
                transitions={(str(a), str(b)): n for (a, b), n in self._transitions.items()},
            )


def _bucket_of(seconds: float) -> int:
    return bisect_left(LATENCY_BUCKETS_S, seconds)  # Prometheus buckets are "le"


class ToolCall:
    """One call through a tool, from `ctx.tool(name)`. Use it once, in one of four forms:

        async with ctx.tool("crm"):          # the body is the call; cancelled at timeout_s
            await crm.update(...)
        await ctx.tool("crm").call(fn, *args, **kwargs)   # fn may be async or plain
        with ctx.tool("crm"):                # plain-function handlers (a handler thread)
            crm_client.update(...)
        ctx.tool("crm").call_blocking(fn, *args, **kwargs)

    Entering takes a slot, a breaker permit and a rate token within the tool's max_wait_s,
    or raises ToolUnavailable (breaker open) / ToolSaturated (nothing in time) before the
    call is made. The async forms cancel the body at timeout_s and raise ToolTimeout; the
    blocking forms cannot cancel a thread, so a call past timeout_s only counts as a
    timeout (pass `timeout_s` to the client library). Whatever the body raises is judged
    by the tool's failure_errors / ignored_errors and raised on unchanged.
    """

    __slots__ = ("_admission", "_timeout", "_tool")

    def __init__(self, tool: Tool) -> None:
        self._tool = tool
        self._timeout: asyncio.Timeout | None = None
        self._admission = _NOT_ADMITTED

    @property
    def waited_s(self) -> float:
        """How long this call waited for its slot and token."""
        return self._admission.waited_s

    @property
    def timeout_s(self) -> float:
        return self._tool.spec.timeout_s

    async def __aenter__(self) -> ToolCall:
        tool = self._tool
        admission = self._admission = await tool.acquire_async()
        self._timeout = asyncio.timeout(tool.spec.timeout_s)
        try:
            await self._timeout.__aenter__()
        except BaseException as exc:
            tool.finish(admission, exc, admission.started, timed_out=False)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tool = self._tool
        assert self._timeout is not None, "async with ctx.tool(...) was not entered"
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as timed_out:
            tool.finish(self._admission, timed_out, tool.clock.monotonic(), timed_out=True)
            raise ToolTimeout(tool.name, tool.spec.timeout_s) from timed_out
        tool.finish(self._admission, exc, tool.clock.monotonic(), timed_out=False)

    def __enter__(self) -> ToolCall:
        self._admission = self._tool.acquire_blocking()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tool = self._tool
        ended = tool.clock.monotonic()
        over = ended - self._admission.started > tool.spec.timeout_s
        error = exc if exc is not None or not over else _LATE
        tool.finish(self._admission, error, ended, timed_out=over)

    @overload
    async def call(self, fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R: ...
    async def call(self, fn: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> Any:
        async with self:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                return await result
            return result

    def call_blocking(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        with self:
            return fn(*args, **kwargs)


class _LateCall(StreamsError):
    """Stands for a blocking call that returned after timeout_s (it is not raised)."""


_LATE = _LateCall("returned after the tool's timeout_s")
_NOT_ADMITTED = Admission(0.0, 0.0, CLOSED)


class ToolRegistry:
    """Every declared tool of one workflow in this process, shared by its stage workers.

    `ToolRegistry.for_process(topology)` is the one a worker takes unless it is given
    another: the same object for every worker of that workflow in the process, so limits
    are per process (and split fleet-wide by partition share), not per worker.
    """

    _process: ClassVar[dict[tuple[str, str], ToolRegistry]] = {}
    _process_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, topology: Topology, clock: Clock | None = None) -> None:
        clock = clock or SystemClock()
        self.workflow = topology.workflow
        self._tools = {
            name: Tool(spec, spec.error_classes(), len(topology.tools_used_by(name)), clock)
            for name, spec in topology.tools.items()
        }

    @classmethod
    def for_process(cls, topology: Topology) -> ToolRegistry:
        key = (topology.source, topology.workflow)
        with cls._process_lock:
            registry = cls._process.get(key)
            if registry is None:
                registry = cls._process[key] = cls(topology)
            return registry

    def tool(self, name: str) -> Tool:
        return self._tools[name]

    def readings(self, names: tuple[str, ...] | None = None) -> list[ToolReading]:
        chosen = self._tools if names is None else {n: self._tools[n] for n in names}
        return [tool.reading() for tool in chosen.values()]


class ToolBox:
    """The tools one stage worker may call: those its stage lists (ctx.tool refuses
    others), and where it tells them its share of the stage's partitions."""

    __slots__ = ("_tools", "stage", "worker")

    def __init__(self, registry: ToolRegistry, stage: Stage, worker: str) -> None:
        self.stage = stage.name
        self.worker = worker
        self._tools = {name: registry.tool(name) for name in stage.tools}

    def call(self, name: str) -> ToolCall:
        tool = self._tools.get(name)
        if tool is None:
            listed = ", ".join(self._tools) or "none"
            raise StreamsError(
                f"stage {self.stage!r} does not list tool {name!r} (it lists: {listed}); "
                f"add it to stages.{self.stage}.tools in the topology"
            )
        return ToolCall(tool)

    def set_share(self, share: float) -> None:
        for tool in self._tools.values():
            tool.set_share(self.stage, self.worker, share)

    def tools(self) -> tuple[Tool, ...]:
        return tuple(self._tools.values())

    def tool_spec(self, name: str) -> ToolSpec:
        return self._tools[name].spec

    def readings(self) -> list[ToolReading]:
        return [tool.reading() for tool in self._tools.values()]
