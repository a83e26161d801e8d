"""A tool's circuit breaker: resilience4j's state machine over a sliding count window.

Owns the states (closed, open, half_open), the window of recent verdicts and when to move
between states; must not classify exceptions (callers pass a verdict), read a clock (callers
pass `now`, monotonic seconds) or do I/O. Not thread-safe: the tool that owns it locks.

    closed     every call admitted; each verdict enters a window of the last `window` calls.
               Once the window holds `minimum_calls` and the failure ratio or the slow-call
               ratio reaches its threshold: open.
    open       no call admitted for `open_s`; then half_open.
    half_open  `half_open_probes` calls admitted; once all have a verdict, the same ratios
               over them decide: open again, or closed with an empty window.

An "ignored" verdict (a 404: the tool answered, the request was wrong) enters no window;
in half_open it hands its probe permit back, so it neither heals nor reopens the breaker.

Every admitted call holds a Permit: the half-open period it was granted in, or CLOSED. Only
a probe of the current period counts toward (or goes back to) that period's probes, so a
call admitted while closed and ending during half_open neither takes nor frees a probe.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]
BREAKER_STATES: tuple[BreakerState, ...] = ("closed", "open", "half_open")
#: How a finished call counts: a failure, a success, or not at all.
Verdict = Literal["success", "failure", "ignored"]
OnTransition = Callable[[BreakerState, BreakerState], None]
#: What try_acquire hands out: CLOSED, or the number of the half-open period (from 1).
Permit = int
CLOSED: Permit = 0


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Thresholds; defaults follow resilience4j where they fit tools an agent calls a few
    times a second (its minimum of 100 calls would take half a minute of failures there):
    failure_ratio 0.5, window 100, half_open_probes 10 as resilience4j; minimum_calls 20
    and open_s 30 (resilience4j: 100 and 60); slow_call_ratio 1.0 (as resilience4j: only
    an all-slow window opens it) with slow_call_s the tool's timeout."""

    failure_ratio: float = 0.5
    slow_call_ratio: float = 1.0
    slow_call_s: float = math.inf
    window: int = 100
    minimum_calls: int = 20
    open_s: float = 30.0
    half_open_probes: int = 10

    def __post_init__(self) -> None:
        for name in ("failure_ratio", "slow_call_ratio"):
            ratio = getattr(self, name)
            if not 0 < ratio <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {ratio}")
        if self.window < 1 or self.half_open_probes < 1:
            raise ValueError("window and half_open_probes must be at least 1")
        if not 1 <= self.minimum_calls <= self.window:
            raise ValueError(
                f"minimum_calls must be between 1 and window ({self.window}), "
                f"got {self.minimum_calls}"
            )
        if not (self.open_s > 0 and self.slow_call_s > 0):
            raise ValueError("open_s and slow_call_s must be positive")


class CircuitBreaker:
    """One tool's breaker. try_acquire() before a call; then record() its verdict, or
    release() if the call was never made (no slot in time), with the permit it gave."""

    __slots__ = (
        "_failures",
        "_on_transition",
        "_opened_at",
        "_period",
        "_probe_failures",
        "_probe_slow",
        "_probes_done",
        "_probes_taken",
        "_slow",
        "_state",
        "_window",
        "config",
    )

    def __init__(self, config: BreakerConfig, on_transition: OnTransition | None = None) -> None:
        self.config = config
        self._on_transition = on_transition
        self._state: BreakerState = "closed"
        self._window: deque[tuple[bool, bool]] = deque()  # (failed, slow) per call
        self._failures = 0
        self._slow = 0
        self._opened_at = 0.0
        self._probes_taken = 0
        self._probes_done = 0
        self._probe_failures = 0
        self._probe_slow = 0
        self._period = 0  # half-open periods so far; the current one while half_open

    def state(self, now: float) -> BreakerState:
        if self._state == "open" and now >= self._opened_at + self.config.open_s:
            self._period += 1
            self._move("half_open")
            self._probes_taken = self._probes_done = 0
            self._probe_failures = self._probe_slow = 0
        return self._state

    def open_until(self) -> float | None:
        """When an open breaker turns half-open (monotonic), or None if it is not open."""
        return self._opened_at + self.config.open_s if self._state == "open" else None

    def try_acquire(self, now: float) -> Permit | None:
        """A permit for one call, or None: open, or half-open with every probe out."""
        state = self.state(now)
        if state == "closed":
            return CLOSED
        if state == "half_open" and self._probes_taken < self.config.half_open_probes:
            self._probes_taken += 1
            return self._period
        return None

    def free_probes(self, now: float) -> int:
        """Probe permits still to hand out (0 unless half-open)."""
        if self.state(now) != "half_open":
            return 0
        return self.config.half_open_probes - self._probes_taken

    def release(self, permit: Permit) -> None:
        """A permit from try_acquire() was not used: the call was never made."""
        if self._is_probe(permit) and self._probes_taken > self._probes_done:
            self._probes_taken -= 1

    def record(self, permit: Permit, verdict: Verdict, duration_s: float, now: float) -> None:
        """The verdict of a call admitted with `permit`. In half_open only this period's
        probes count; a call from before (admitted while closed, or in an earlier period)
        describes the past and is dropped."""
        # Closed needs no clock check (only open moves on time): the common case, kept cheap.
        state = self._state if self._state == "closed" else self.state(now)
        config = self.config
        if verdict == "ignored":
            self.release(permit)
            return
        failed = verdict == "failure"
        slow = duration_s >= config.slow_call_s
        if state == "closed":
            window = self._window
            if len(window) == config.window:
                old_failed, old_slow = window.popleft()
                self._failures -= old_failed
                self._slow -= old_slow
            window.append((failed, slow))
            self._failures += failed
            self._slow += slow
            if len(window) >= config.minimum_calls and self._over(
                self._failures, self._slow, len(window)
            ):
                self._open(now)
        elif self._is_probe(permit) and self._probes_done < self._probes_taken:
            self._probes_done += 1
            self._probe_failures += failed
            self._probe_slow += slow
            if self._probes_done >= config.half_open_probes:
                if self._over(self._probe_failures, self._probe_slow, self._probes_done):
                    self._open(now)
                else:
                    self._window.clear()
                    self._failures = self._slow = 0
                    self._move("closed")

    def _is_probe(self, permit: Permit) -> bool:
        return self._state == "half_open" and permit == self._period

    def window_calls(self) -> int:
        return len(self._window)

    def window_failure_ratio(self) -> float | None:
        return self._failures / len(self._window) if self._window else None

    def _over(self, failures: int, slow: int, calls: int) -> bool:
        config = self.config
        return failures >= config.failure_ratio * calls or slow >= config.slow_call_ratio * calls

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._move("open")

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if self._on_transition is not None and old != new:
            self._on_transition(old, new)
