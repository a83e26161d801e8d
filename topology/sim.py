"""Simulated dependencies for the triage workflow: an LLM, vector search, a CRM and human
reviewers, in-process and without network, plus a WorkLedger that counts handler work.

Owns the latency, failure and rate-limit models. Must not touch Kafka or streams' runtime:
handlers call these objects as they would call real clients, so replacing the simulation
with real services changes only topology/triage_handlers.py.

Time: every simulated duration (latencies and token-bucket intervals) is multiplied by the
process-wide time scale, so ``configure(time_scale=0.2)`` runs the whole simulated world
5x faster (rates become 5x higher) and keeps the ratios between stages as they are.

Threads: one process may run several stage workers, each with its handlers on an asyncio
loop in its own thread. Shared state is guarded by threading.Lock, never held across an
await; rate limits are computed sleeps, not asyncio primitives tied to one loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import threading
import time
import zlib
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from typing import Any

from streams.events import TaskEvent

__all__ = [
    "CRM",
    "CRMUnavailable",
    "Dependencies",
    "DependencyError",
    "LatencyModel",
    "ReviewerPool",
    "SimulatedLLM",
    "TokenBucket",
    "VectorSearch",
    "WorkLedger",
    "configure",
    "deps",
    "scaled",
    "time_scale",
]


class DependencyError(Exception):
    """A simulated dependency failed (the LLM's occasional 5xx)."""


class CRMUnavailable(DependencyError):
    """The CRM's write path is down (the demo's incident): every write answers 503."""


# --------------------------------------------------------------------------- time and chance

_time_scale = 1.0
_rng = random.Random()


def configure(*, time_scale: float | None = None, seed: int | None = None) -> None:
    """Set the process-wide time scale (1.0 = real time, 0.2 = 5x faster) and/or reseed."""
    global _time_scale
    if time_scale is not None:
        if not (time_scale > 0 and math.isfinite(time_scale)):
            raise ValueError(f"time_scale must be a finite number > 0, got {time_scale}")
        _time_scale = time_scale
    if seed is not None:
        _rng.seed(seed)


def time_scale() -> float:
    return _time_scale


def scaled(seconds: float) -> float:
    """Real seconds for a simulated duration."""
    return seconds * _time_scale


def _hash(text: str) -> int:
    # Stable across processes (unlike hash()), so replies and records are reproducible.
    return zlib.crc32(text.encode())


class LatencyModel:
    """Lognormal latency: right-skewed like real service times, `median_s` its median."""

    def __init__(self, median_s: float, sigma: float = 0.5) -> None:
        if not (median_s > 0 and sigma >= 0):
            raise ValueError(f"need median_s > 0 and sigma >= 0, got {median_s}, {sigma}")
        self.median_s = median_s
        self.sigma = sigma

    def sample(self) -> float:
        """Simulated seconds (not yet time-scaled)."""
        return _rng.lognormvariate(math.log(self.median_s), self.sigma)


class TokenBucket:
    """`rate_per_s` tokens per simulated second, at most `burst` saved up.

    Shared by every thread and event loop: a caller reserves a token under a lock and is
    told how long to sleep for it, so the k-th caller in line waits k / rate.
    """

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if not (rate_per_s > 0 and burst >= 1):
            raise ValueError(f"need rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)  # negative: callers already in line
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self, max_wait_s: float | None = None) -> float | None:
        """Take a token; return the real seconds until it may be used. None (and nothing
        taken) when that wait would exceed `max_wait_s` real seconds."""
        with self._lock:
            now = time.monotonic()
            rate = self.rate_per_s / _time_scale  # tokens per real second
            self._tokens = min(self.burst, self._tokens + (now - self._last) * rate)
            self._last = now
            wait = max(0.0, (1.0 - self._tokens) / rate)
            if max_wait_s is not None and wait > max_wait_s:
                return None
            self._tokens -= 1.0
            return wait

    def refund(self) -> None:
        with self._lock:
            self._tokens = min(self.burst, self._tokens + 1.0)

    async def acquire(self, max_wait_s: float | None = None) -> bool:
        """Wait for a token; False (at once) if none is due within `max_wait_s`."""
        wait = self.reserve(max_wait_s)
        if wait is None:
            return False
        try:
            await asyncio.sleep(wait)
        except asyncio.CancelledError:
            # A caller that gives up (handler timeout) hands its slot back, so abandoned
            # calls do not eat the dependency's capacity.
            self.refund()
            raise
        return True


class _Counters:
    """Thread-safe named counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


# --------------------------------------------------------------------------- dependencies

_CHOICES = re.compile(r"Answer with one of: (.+?)\.?\s*$")


class SimulatedLLM:
    """A hosted LLM: lognormal latency, rare failures, and a switch that makes it sick.

    `median_s` is for a prompt of about `reference_chars` characters; half the latency is
    fixed (queueing, first token), half grows with prompt length (capped at 2x), so a
    shorter prompt is a real saving. A prompt ending "Answer with one of: a, b, c." gets one
    of the choices, picked by a hash of the prompt so a retried call answers the same.
    """

    def __init__(
        self,
        median_s: float = 1.5,
        sigma: float = 0.5,
        failure_rate: float = 0.01,
        reference_chars: int = 1000,
    ) -> None:
        self.latency = LatencyModel(median_s, sigma)
        self.failure_rate = failure_rate
        self.reference_chars = reference_chars
        self.slowdown = 1.0
        self.counters = _Counters()

    def set_slowdown(self, factor: float) -> None:
        """1 = normal; 10 = the demo's sick dependency. Applies to calls that start later."""
        if not factor > 0:
            raise ValueError(f"slowdown must be > 0, got {factor}")
        self.slowdown = factor

    def latency_s(self, prompt: str) -> float:
        """Draw the real seconds one call with this prompt takes."""
        size = 0.5 + 0.5 * min(len(prompt) / self.reference_chars, 2.0)
        return scaled(self.latency.sample() * size * self.slowdown)

    async def complete(self, prompt: str) -> str:
        delay = self.latency_s(prompt)
        failed = _rng.random() < self.failure_rate
        self.counters.add("calls")
        # A failed call still takes its time: the error arrives when the response would have.
        await asyncio.sleep(delay)
        if failed:
            self.counters.add("failures")
            raise DependencyError("LLM returned 503 (simulated)")
        lines = prompt.strip().splitlines() or [""]
        asked = _CHOICES.search(lines[-1])
        if asked:
            choices = [c.strip() for c in asked.group(1).split(",")]
            return choices[_hash(prompt) % len(choices)]
        return f"Summary: {lines[-1][:80]}"


class VectorSearch:
    """A knowledge-base index: fast, never fails, returns `k` document ids (default
    `self.k`). Half the latency is fixed, half grows with k (relative to `self.k`)."""

    def __init__(self, median_s: float = 0.05, sigma: float = 0.3, k: int = 3) -> None:
        self.latency = LatencyModel(median_s, sigma)
        self.k = k

    async def search(self, query: str, k: int | None = None) -> list[str]:
        k = self.k if k is None else max(1, k)
        await asyncio.sleep(scaled(self.latency.sample() * (0.5 + 0.5 * k / self.k)))
        first = _hash(query) % 5000
        return [f"kb-{first + i}" for i in range(k)]


class CRM:
    """The customer system: quick reads, writes throttled to `rate_per_s` (with `burst`).

    The write limit is the triage workflow's bottleneck by design: it is the CRM's own
    capacity (its API gateway lets 40 writes/s through and queues the rest), so a caller
    that sends more only waits longer. Pacing calls to it is the caller's job: streams does
    it for the governed handlers (the `crm_write` tool's `rate`); a plain loop does not.
    Writes are idempotent by key: a key seen before (among the last `remembered_keys`)
    returns the first result and is not counted as a second write, because a redelivered
    Kafka record must not refund a customer twice.

    An incident (`fail_between`): while it lasts, every write still passes the gateway (it
    waits for its token), takes `slowdown` times its usual latency, and then fails with
    CRMUnavailable with probability `failure_rate` (1.0: always), as a write path whose
    database is struggling answers 503 to most writes. Reads keep working (replicas).

    Retry amplification is measured here, where a real CRM's operators would see it: a write
    whose idempotency key the CRM has not been called with before is a first attempt (the key
    is the same on every attempt of a run's write), any later call with it a retry.
    """

    def __init__(
        self,
        rate_per_s: float = 40.0,
        burst: int = 10,
        read_median_s: float = 0.03,
        write_median_s: float = 0.08,
        sigma: float = 0.3,
        remembered_keys: int = 100_000,
    ) -> None:
        self.bucket = TokenBucket(rate_per_s, burst)
        self.read_latency = LatencyModel(read_median_s, sigma)
        self.write_latency = LatencyModel(write_median_s, sigma)
        self.remembered_keys = remembered_keys
        self.counters = _Counters()
        self._results: OrderedDict[str, str] = OrderedDict()
        self._called: OrderedDict[str, None] = OrderedDict()  # keys written at least once
        self._lock = threading.Lock()
        self._failing_from = math.inf  # monotonic seconds: the incident's start and end
        self._failing_until = math.inf
        self._failure_rate = 1.0
        self._incident_slowdown = 1.0

    def fail_between(
        self, start: float, end: float, *, failure_rate: float = 1.0, slowdown: float = 1.0
    ) -> None:
        """Writes arriving at the CRM in [start, end) (time.monotonic()) take `slowdown`
        times their latency and fail with CRMUnavailable with probability `failure_rate`.
        Calls made meanwhile are counted as `calls_while_failing`."""
        if not end > start:
            raise ValueError(f"an incident needs end > start, got {start}, {end}")
        if not (0.0 < failure_rate <= 1.0 and slowdown >= 1.0):
            raise ValueError(
                f"need 0 < failure_rate <= 1 and slowdown >= 1, got {failure_rate}, {slowdown}"
            )
        self._failing_from, self._failing_until = start, end
        self._failure_rate, self._incident_slowdown = failure_rate, slowdown

    def failing(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self._failing_from <= now < self._failing_until

    @property
    def calls_while_failing(self) -> int:
        """Writes that reached the CRM while it was failing (each answered 503)."""
        return self.counters.get("calls_while_failing")

    @property
    def first_calls_while_failing(self) -> int:
        """Of `calls_while_failing`, the first attempts (a key not called before)."""
        return self.counters.get("first_calls_while_failing")

    @property
    def first_calls(self) -> int:
        """Writes with a key the CRM had not been called with before (first attempts)."""
        return self.counters.get("first_calls")

    @property
    def write_calls(self) -> int:
        """Writes that reached the CRM's gateway, answered or not (duplicates excluded)."""
        return self.counters.get("write_calls")

    @property
    def writes_total(self) -> int:
        return self.counters.get("writes")

    @property
    def duplicate_writes_avoided(self) -> int:
        return self.counters.get("duplicate_writes_avoided")

    async def read(self, ticket_id: str) -> dict[str, str]:
        await asyncio.sleep(scaled(self.read_latency.sample()))
        self.counters.add("reads")
        h = _hash(ticket_id)
        return {"ticket": ticket_id, "tier": ("free", "pro", "enterprise")[h % 3]}

    async def write(
        self, ticket_id: str, change: Mapping[str, object], idempotency_key: str
    ) -> str:
        """Apply `change` once per key; return the change's reference."""
        earlier = self._seen(idempotency_key)
        if earlier is not None:
            return earlier
        await self.bucket.acquire()
        first = self._first_call(idempotency_key)
        self.counters.add("write_calls")
        self.counters.add("first_calls", int(first))
        sick = self.failing()
        latency = self.write_latency.sample()
        failed = False
        if sick:
            self.counters.add("calls_while_failing")
            self.counters.add("first_calls_while_failing", int(first))
            latency *= self._incident_slowdown
            failed = _rng.random() < self._failure_rate
        await asyncio.sleep(scaled(latency))
        if failed:
            raise CRMUnavailable("CRM returned 503 on write (simulated incident)")
        # The key is checked again where the write applies: a concurrent call with the same
        # key may have finished while this one waited.
        with self._lock:
            earlier = self._results.get(idempotency_key)
            if earlier is None:
                result = f"crm-{ticket_id}-{len(change)}-{_hash(idempotency_key):08x}"
                self._results[idempotency_key] = result
                if len(self._results) > self.remembered_keys:
                    self._results.popitem(last=False)  # forget the oldest key
                self.counters.add("writes")
                return result
        self.counters.add("duplicate_writes_avoided")
        return earlier

    def _first_call(self, key: str) -> bool:
        with self._lock:
            if key in self._called:
                return False
            self._called[key] = None
            if len(self._called) > self.remembered_keys:
                self._called.popitem(last=False)
            return True

    def _seen(self, key: str) -> str | None:
        with self._lock:
            earlier = self._results.get(key)
        if earlier is not None:
            self.counters.add("duplicate_writes_avoided")
        return earlier


class ReviewerPool:
    """The people who review runs: `people` reviewers, each taking a lognormal time per
    decision (median `median_s` simulated seconds). They decide through streams' review
    desk (the demo drives them: streams/demo/reviewers.py); this only models how long a
    person takes and which runs need one.

    A run needs a person when act left its change `pending_approval` (refunds to enterprise
    customers); routine changes are approved by the desk's rule at once.
    """

    def __init__(self, people: int = 16, median_s: float = 2.5, sigma: float = 0.5) -> None:
        if people < 1:
            raise ValueError(f"need at least one reviewer, got {people}")
        self.people = people
        self.latency = LatencyModel(median_s, sigma)
        self.counters = _Counters()

    def decision_s(self) -> float:
        """Draw the real seconds one person takes to decide one run."""
        return scaled(self.latency.sample())

    @staticmethod
    def needs_person(payload: bytes) -> bool:
        try:
            ticket = json.loads(payload)
        except ValueError:
            return True  # what the rule cannot read, a person looks at
        return not isinstance(ticket, dict) or ticket.get("status") == "pending_approval"

    @property
    def clear_rate_per_s(self) -> float:
        """People's decisions per real second when all are busy (mean, not median)."""
        mean_s = scaled(self.latency.median_s * math.exp(self.latency.sigma**2 / 2))
        return self.people / mean_s


class WorkLedger:
    """Handler executions by stage, and `wasted` ones: on runs already past their deadline."""

    def __init__(self, max_waits: int = 500_000) -> None:
        self._executions = _Counters()
        self._wasted = _Counters()
        # (now_ms, lane, stage, seconds the record waited in the stage's queue): the
        # handler's start is when queueing ends, so this is the honest queue age.
        self._waits: deque[tuple[int, str, str, float]] = deque(maxlen=max_waits)

    def record(self, stage: str, event: TaskEvent, *, now_ms: int | None = None) -> bool:
        """Count one execution; True if it is wasted work."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        self._executions.add(stage)
        self._waits.append((now, event.lane, stage, max(0.0, (now - event.enqueued_at_ms) / 1000)))
        deadline = event.deadline_ms if event.deadline_ms is not None else _payload_due(event)
        wasted = deadline is not None and now > deadline
        if wasted:
            self._wasted.add(stage)
        return wasted

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {"executions": self._executions.snapshot(), "wasted": self._wasted.snapshot()}

    def waits(self) -> list[tuple[int, str, str, float]]:
        """Queue waits seen at handler start: (at_ms, lane, stage, seconds)."""
        return list(self._waits)


def _payload_due(event: TaskEvent) -> int | None:
    """The caller's deadline when the system was not told it (the demo's naive run puts
    it in the payload as "due_ms", so its wasted work can still be counted)."""
    try:
        due = json.loads(event.payload).get("due_ms")
    except (ValueError, AttributeError):
        return None
    return int(due) if isinstance(due, int) else None


class Dependencies:
    """Every simulated dependency the triage handlers use, as one replaceable set."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Fresh dependencies with default settings: counters at 0, slowdown 1, buckets
        full. The time scale and the random stream are left as they are."""
        self.llm = SimulatedLLM()
        self.vector = VectorSearch()
        self.crm = CRM()
        self.reviewers = ReviewerPool()
        self.ledger = WorkLedger()

    def configure(
        self,
        *,
        time_scale: float | None = None,
        seed: int | None = None,
        llm: SimulatedLLM | None = None,
        vector: VectorSearch | None = None,
        crm: CRM | None = None,
        reviewers: ReviewerPool | None = None,
    ) -> None:
        """Set the time scale or seed (see module `configure`) and/or swap dependencies,
        e.g. ``deps.configure(crm=CRM(rate_per_s=20))``."""
        configure(time_scale=time_scale, seed=seed)
        if llm is not None:
            self.llm = llm
        if vector is not None:
            self.vector = vector
        if crm is not None:
            self.crm = crm
        if reviewers is not None:
            self.reviewers = reviewers

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.ledger.snapshot(),
            "llm": {**self.llm.counters.snapshot(), "slowdown": self.llm.slowdown},
            "crm": self.crm.counters.snapshot(),
            "reviewers": self.reviewers.counters.snapshot(),
        }


# Workers started as separate processes (`streams worker ...`) take these from the
# environment; in-process runners call deps.configure() instead.
configure(
    time_scale=float(os.environ.get("STREAMS_SIM_TIME_SCALE", "1.0")),
    seed=int(os.environ["STREAMS_SIM_SEED"]) if "STREAMS_SIM_SEED" in os.environ else None,
)

#: The process's dependencies; handlers look them up here at call time.
deps = Dependencies()
