"""Retries as recovery attempts: what may be retried, after how long, into which tier, and
whether the budget allows it.

Owns the retry rules — capped exponential backoff with full jitter (AWS), rounding a delay
up to a tier, the deadline cut-off, exception matching by class name, attempt limits, the
per-run retry limit and ratio budgets over a sliding window with a floor (Google SRE,
Envoy, Finagle). Pure: no Kafka, no clock (callers pass times), no logging; randomness is
a `draw()` callable so tests can fix it.

    plan_retry(policy, error, status, attempt=n, ...) -> RetryPlan
        escalate     the handler raised Escalate, or attempts ran out (on_exhausted)
        not_retried  the failure is not retryable: dead-letter it with its own reason
        dead_letter  `reason` given: expired (due after the deadline) or
                     retry_budget_exhausted; None: attempts ran out, keep the failure's reason
        retry        write it to tier `tier_s`, due at `due_ms`

The stateful budgets (RetryBudget) are checked by the caller after a "retry" plan, so an
expired or unretryable failure never spends budget.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from streams.errors import ToolUnavailable
from streams.signals import DeadLetter, Escalate, Retry

OnExhausted = Literal["escalate", "dead_letter"]
RetryAction = Literal["retry", "not_retried", "dead_letter", "escalate"]
#: Why a run went to people (the Escalation record's reason).
EscalationReason = Literal["escalated", "retries_exhausted", "retry_budget_exhausted"]

#: Failures that retry unless configured otherwise: an open breaker and timeouts (a tool's
#: ToolTimeout and the handler's own HandlerTimeout are TimeoutErrors). A Retry signal
#: always retries (the handler asked), unless never_retry names it.
DEFAULT_RETRY_ON = ("ToolUnavailable", "TimeoutError")
DEFAULT_NEVER_RETRY = ("DeadLetter",)
DEFAULT_TIERS_S = (5, 30, 300)
#: 2**n beyond this is past any sensible cap; keeps the float arithmetic finite.
_MAX_DOUBLINGS = 1000


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    """Retries allowed per window: at most `ratio` x first attempts in the last `window_s`
    seconds, but always at least `min_retries` (so a quiet stage can still retry).
    `max_run_retries`: retries one run may take across all its stages (None: no limit)."""

    ratio: float = 0.1
    min_retries: int = 10
    window_s: float = 60.0
    max_run_retries: int | None = None

    def __post_init__(self) -> None:
        if not self.ratio >= 0:
            raise ValueError(f"budget ratio must be >= 0, got {self.ratio}")
        if self.min_retries < 0:
            raise ValueError(f"budget min_retries must be >= 0, got {self.min_retries}")
        if not self.window_s > 0:
            raise ValueError(f"budget window_s must be > 0, got {self.window_s}")
        if self.max_run_retries is not None and self.max_run_retries < 0:
            raise ValueError(f"max_run_retries must be >= 0, got {self.max_run_retries}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """One stage's retry rules. `max_attempts` counts handler runs at the stage, the first
    included (1: never retry). `tiers_s`: the delay tiers (seconds, ascending); a delay is
    rounded up to one. Names in `retry_on` / `never_retry` match any class in the raised
    exception's MRO by its bare name; never_retry wins, and DeadLetter never retries."""

    max_attempts: int = 3
    base_s: float = 1.0
    cap_s: float = 300.0
    tiers_s: tuple[int, ...] = DEFAULT_TIERS_S
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON
    never_retry: tuple[str, ...] = DEFAULT_NEVER_RETRY
    on_exhausted: OnExhausted = "dead_letter"
    budget: RetryBudgetConfig = field(default_factory=RetryBudgetConfig)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not (self.base_s > 0 and self.cap_s > 0):
            raise ValueError("base_s and cap_s must be > 0")
        tiers = self.tiers_s
        if not tiers or any(t <= 0 for t in tiers) or list(tiers) != sorted(set(tiers)):
            raise ValueError(f"tiers must be positive and strictly ascending, got {tiers}")


@dataclass(frozen=True, slots=True)
class RetryPlan:
    action: RetryAction
    #: dead_letter: the dead-letter reason (None keeps the failure's own); escalate: why.
    reason: str | None = None
    delay_s: float = 0.0
    tier_s: int = 0
    due_ms: int = 0


def full_jitter_s(attempt: int, base_s: float, cap_s: float, draw: Callable[[], float]) -> float:
    """AWS full jitter: uniform in [0, min(cap, base·2^attempt)); `attempt` is the number
    of retries already made (0 for the first retry); draw() is uniform in [0, 1)."""
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, _MAX_DOUBLINGS))
    return draw() * ceiling


def tier_for(delay_s: float, tiers_s: Sequence[int]) -> int:
    """The smallest tier at or above `delay_s`; the largest for a longer delay."""
    for tier in tiers_s:
        if delay_s <= tier:
            return tier
    return tiers_s[-1]


def matches(error: BaseException, names: Sequence[str]) -> bool:
    """Whether any class in `error`'s MRO has one of `names`."""
    return any(cls.__name__ in names for cls in type(error).__mro__)


def plan_retry(
    policy: RetryPolicy,
    error: BaseException | None,
    status: str,
    *,
    attempt: int,
    run_retries: int,
    now_ms: int,
    deadline_ms: int | None,
    draw: Callable[[], float],
) -> RetryPlan:
    """What to do with a failed handler call (status "error" or "timeout") on attempt
    `attempt` (0: the first) of a run that has retried `run_retries` times so far."""
    if isinstance(error, Escalate):
        return RetryPlan("escalate", "escalated")
    if not _retryable(policy, error, status):
        return RetryPlan("not_retried")
    if attempt + 1 >= policy.max_attempts:
        return exhausted(policy, "retries_exhausted")
    limit = policy.budget.max_run_retries
    if limit is not None and run_retries >= limit:
        return exhausted(policy, "retry_budget_exhausted")
    asked = _asked_delay_s(error)
    if asked is None:
        delay_s = full_jitter_s(attempt, policy.base_s, policy.cap_s, draw)
    else:
        delay_s = min(policy.cap_s, asked)
    due_ms = now_ms + math.ceil(delay_s * 1000)
    if deadline_ms is not None and due_ms > deadline_ms:
        return RetryPlan("dead_letter", "expired", delay_s=delay_s, due_ms=due_ms)
    return RetryPlan(
        "retry", delay_s=delay_s, tier_s=tier_for(delay_s, policy.tiers_s), due_ms=due_ms
    )


def exhausted(policy: RetryPolicy, why: EscalationReason) -> RetryPlan:
    """Attempts or budget ran out: escalate with `why`, or dead-letter (attempts: the
    failure's own reason; budget: retry_budget_exhausted)."""
    if policy.on_exhausted == "escalate":
        return RetryPlan("escalate", why)
    return RetryPlan("dead_letter", None if why == "retries_exhausted" else why)


def _retryable(policy: RetryPolicy, error: BaseException | None, status: str) -> bool:
    if isinstance(error, DeadLetter):
        return False
    if error is None:  # a timeout without its error object still is a timeout
        return status == "timeout" and "TimeoutError" in policy.retry_on
    if matches(error, policy.never_retry):
        return False
    return isinstance(error, Retry) or matches(error, policy.retry_on)


def _asked_delay_s(error: BaseException | None) -> float | None:
    if isinstance(error, Retry):
        return error.after_s
    if isinstance(error, ToolUnavailable):
        return error.retry_after_s
    return None


class RetryBudget:
    """Retries against first attempts over a sliding window of `window_s`, kept in ten
    buckets (so memory is constant). try_spend(now) takes one retry if the budget allows."""

    _BUCKETS = 10

    def __init__(self, config: RetryBudgetConfig) -> None:
        self.config = config
        self._width = config.window_s / self._BUCKETS
        # [bucket index, first attempts, retries], oldest first.
        self._buckets: deque[list[int]] = deque()

    def first_attempt(self, now: float) -> None:
        self._bucket(now)[1] += 1

    def try_spend(self, now: float) -> bool:
        bucket = self._bucket(now)
        firsts = sum(b[1] for b in self._buckets)
        retries = sum(b[2] for b in self._buckets)
        if retries + 1 > max(self.config.min_retries, self.config.ratio * firsts):
            return False
        bucket[2] += 1
        return True

    def retries_in_window(self, now: float) -> int:
        self._prune(now)
        return sum(b[2] for b in self._buckets)

    def first_attempts_in_window(self, now: float) -> int:
        self._prune(now)
        return sum(b[1] for b in self._buckets)

    def _bucket(self, now: float) -> list[int]:
        self._prune(now)
        index = math.floor(now / self._width)
        if not self._buckets or self._buckets[-1][0] < index:
            self._buckets.append([index, 0, 0])
        return self._buckets[-1]

    def _prune(self, now: float) -> None:
        horizon = now - self.config.window_s
        while self._buckets and (self._buckets[0][0] + 1) * self._width <= horizon:
            self._buckets.popleft()
