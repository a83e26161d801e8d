"""A token bucket: the rate ceiling of one tool in one worker process.

Owns the tokens, their refill and re-rating; must not read a clock (callers pass `now`,
monotonic seconds) or decide the rate (streams.policy.tool_share does). Not thread-safe:
the tool that owns it locks.

Starts full. In any window of t seconds it grants at most rate * t + burst tokens: at most
`burst` are stored at the window's start and `rate * t` arrive during it.
"""

from __future__ import annotations

import math


class TokenBucket:
    __slots__ = ("_last", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        _check(rate_per_s, burst)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._last = now

    def tokens(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def try_take(self, now: float) -> bool:
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_s(self, now: float) -> float:
        """Seconds until a token is there (0 if one is now; inf at rate 0)."""
        self._refill(now)
        missing = 1.0 - self._tokens
        if missing <= 0:
            return 0.0
        return missing / self.rate_per_s if self.rate_per_s > 0 else math.inf

    def set_rate(self, rate_per_s: float, *, burst: float, now: float) -> None:
        """Re-rate from `now` on (after a rebalance): tokens earned so far at the old rate
        are kept, up to the new burst."""
        _check(rate_per_s, burst)
        self._refill(now)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = min(self._tokens, burst)

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
            self._last = now


def _check(rate_per_s: float, burst: float) -> None:
    if not (rate_per_s >= 0 and math.isfinite(rate_per_s)):
        raise ValueError(f"rate_per_s must be a finite number >= 0, got {rate_per_s}")
    if not (burst >= 1 and math.isfinite(burst)):
        raise ValueError(f"burst must be a finite number >= 1 (one call), got {burst}")
