"""Human review as a bounded resource: a review stage's queue of runs waiting for a person.

Owns the rules of that queue: at most `max_pending` runs pending (a full queue refuses, and
the stage before it must pause: pressure like any other stage), first decision wins, a run
not decided within `max_wait_s` gets the stated `on_timeout` outcome, the oldest pending
age, and the clear rate people actually achieve (decisions per second over a sliding
window; timeouts do not count) with the wait a new run should expect from it. Pure: no
Kafka, no clock (callers pass `now`, wall seconds), no HTTP. The review stage's runtime
(W.reviews, the HTTP endpoints) is not built yet; this is its policy.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Literal

Decision = Literal["approve", "decline"]
TimeoutOutcome = Literal["decline", "escalate", "approve"]
_OUTCOMES = ("decline", "escalate", "approve")


@dataclass(frozen=True, slots=True)
class ReviewConfig:
    max_pending: int = 50
    max_wait_s: float = 3600.0
    on_timeout: TimeoutOutcome = "escalate"
    rate_window_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {self.max_pending}")
        if not self.max_wait_s > 0:
            raise ValueError(f"max_wait_s must be > 0, got {self.max_wait_s}")
        if self.on_timeout not in _OUTCOMES:
            raise ValueError(f"on_timeout must be one of {', '.join(_OUTCOMES)}")
        if not self.rate_window_s > 0:
            raise ValueError(f"rate_window_s must be > 0, got {self.rate_window_s}")


class ReviewQueue:
    """Pending runs in admission order (so the oldest is first and times out first)."""

    def __init__(self, config: ReviewConfig) -> None:
        self.config = config
        self._pending: OrderedDict[str, float] = OrderedDict()
        self._decisions: deque[float] = deque()  # when people decided, oldest first

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self.config.max_pending

    def admit(self, run_id: str, *, now: float) -> bool:
        """Queue `run_id` for review; False when full (it must wait upstream). A run
        already pending is admitted again without a second entry (a redelivery)."""
        if run_id in self._pending:
            return True
        if self.full:
            return False
        self._pending[run_id] = now
        return True

    def decide(self, run_id: str, decision: Decision, *, now: float) -> Decision | None:
        """A person's decision; None when the run is not pending (unknown, decided or
        timed out already: the first outcome stands)."""
        if self._pending.pop(run_id, None) is None:
            return None
        self._decisions.append(now)
        self._prune(now)
        return decision

    def expire(self, *, now: float) -> list[tuple[str, TimeoutOutcome]]:
        """Runs pending for max_wait_s or longer, oldest first, with the stated outcome;
        they leave the queue."""
        expired: list[tuple[str, TimeoutOutcome]] = []
        limit = now - self.config.max_wait_s
        while self._pending:
            run_id, admitted = next(iter(self._pending.items()))
            if admitted > limit:
                break
            self._pending.popitem(last=False)
            expired.append((run_id, self.config.on_timeout))
        return expired

    def oldest_age_s(self, *, now: float) -> float:
        if not self._pending:
            return 0.0
        return max(0.0, now - next(iter(self._pending.values())))

    def clear_rate_per_s(self, *, now: float) -> float:
        """Decisions people made per second over the last rate_window_s."""
        self._prune(now)
        return len(self._decisions) / self.config.rate_window_s

    def expected_wait_s(self, *, now: float) -> float:
        """How long a run admitted now should expect to wait: everything pending ahead of
        it and itself at the measured clear rate, at most max_wait_s (then it times out);
        with no measured rate, max_wait_s if anything is pending, else 0."""
        if not self._pending:
            return 0.0
        rate = self.clear_rate_per_s(now=now)
        if rate <= 0:
            return self.config.max_wait_s
        return min(self.config.max_wait_s, (len(self._pending) + 1) / rate)

    def _prune(self, now: float) -> None:
        horizon = now - self.config.rate_window_s
        while self._decisions and self._decisions[0] <= horizon:
            self._decisions.popleft()
