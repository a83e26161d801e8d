"""When to try a dependency again during its outage: capped exponential backoff, one schedule
shared by everything waiting on it (a worker's partitions held on the schema registry).

Owns the schedule only; must not do I/O nor read a clock (callers pass monotonic times).

    failed(now)   an attempt failed: the first failure of a round (at or after the due
                  time) doubles the wait (first_s, 2x, 4x ... up to cap_s); failures before
                  the due time (other partitions meeting the same outage) join the round
    due(now)      the next attempt may be made
    recovered()   an attempt succeeded: the next outage starts at first_s again

One schedule, not one per partition: when the dependency answers again every held
partition resumes on the same turn, and while it does not, a round costs one real attempt
(the registry's reader fails the rest fast, streams.registry.ids).
"""

from __future__ import annotations

__all__ = ["OutageBackoff"]


class OutageBackoff:
    def __init__(self, first_s: float = 1.0, cap_s: float = 30.0) -> None:
        if first_s <= 0 or cap_s < first_s:
            raise ValueError(f"need 0 < first_s <= cap_s, got first_s={first_s} cap_s={cap_s}")
        self.first_s = first_s
        self.cap_s = cap_s
        self.rounds = 0  # failed rounds of the current outage
        #: When the next attempt is due (monotonic s); None outside an outage.
        self.retry_at: float | None = None

    def delay_s(self, rounds: int) -> float:
        """The wait after the `rounds`-th failed round (1: first_s)."""
        return min(self.cap_s, self.first_s * 2.0 ** min(rounds - 1, 62))

    def failed(self, now: float) -> float:
        """An attempt failed at `now`; returns when the next one is due."""
        if self.retry_at is None or now >= self.retry_at:
            self.rounds += 1
            self.retry_at = now + self.delay_s(self.rounds)
        return self.retry_at

    def due(self, now: float) -> bool:
        return self.retry_at is not None and now >= self.retry_at

    def recovered(self) -> None:
        self.rounds = 0
        self.retry_at = None
