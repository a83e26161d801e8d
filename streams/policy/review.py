"""Human review as a bounded resource: a review stage's queue of runs waiting for a person.

Owns the rules of that queue: at most `max_pending` runs pending (a full queue refuses, and
the stage before it must pause: pressure like any other stage), first decision wins, a run
not decided within `max_wait_s` gets the stated `on_timeout` outcome, the oldest pending
age, and the clear rate people actually achieve (decisions per second over a sliding
window; timeouts do not count) with the wait a new run should expect from it, and the
wait a run entering the workflow should expect at the review stages on its path (the
intake's deadline forecast). Pure: no Kafka, no clock (callers pass `now`, wall seconds),
no HTTP.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Decision = Literal["approve", "decline"]

#: A full review stage (its fullest worker holds max_pending reviews) pauses the stage
#: before it; that stage resumes once the queue is below this fill (pending ÷
#: max_pending) and it stayed paused its min_dwell_s: resuming at every decision would
#: pause and resume it once per decision (pausing drops librdkafka's prefetch).
RESUME_BELOW_FILL = 0.8
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
        self._since: float | None = None  # when the queue first had work (admitted or decided)

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
        self._since = now if self._since is None else min(self._since, now)
        return True

    def decide(self, run_id: str, decision: Decision, *, now: float) -> Decision | None:
        """A person's decision; None when the run is not pending (unknown, decided or
        timed out already: the first outcome stands)."""
        if self._pending.pop(run_id, None) is None:
            return None
        self._decisions.append(now)
        self._since = now if self._since is None else min(self._since, now)
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

    def measured_clear_rate_per_s(self, *, now: float) -> float | None:
        """The clear rate a forecast may use: decisions over the part of the window the
        queue has had work (a window not yet filled would understate the rate, and an
        understated rate refuses runs that would make their deadline); None when no person
        decided within the window (no rate yet)."""
        self._prune(now)
        if not self._decisions or self._since is None:
            return None
        watched_s = min(self.config.rate_window_s, now - self._since)
        # At least the span of the decisions seen, and a second: one decision a moment
        # after the first admission must not read as a thousand per second.
        watched_s = max(watched_s, now - self._decisions[0], 1.0)
        return len(self._decisions) / watched_s

    def expected_wait_s(self, *, now: float) -> float | None:
        """How long a run admitted now should expect to wait: everything pending ahead of
        it and itself at the measured clear rate, at most max_wait_s (then it times out);
        None (unknown) with no measured rate: a forecast must not invent one."""
        rate = self.measured_clear_rate_per_s(now=now)
        if rate is None:
            return None
        return min(self.config.max_wait_s, (len(self._pending) + 1) / rate)

    def _prune(self, now: float) -> None:
        horizon = now - self.config.rate_window_s
        while self._decisions and self._decisions[0] <= horizon:
            self._decisions.popleft()


def path_review_wait(
    entry: str, downstream: Mapping[str, Sequence[str]], waits: Mapping[str, float | None]
) -> tuple[float, bool]:
    """The wait a run entering at `entry` is sure to meet at review stages: the review
    stages' expected waits (`waits`, stage -> seconds, None unknown; stages not in it are
    no review) summed along `downstream` (stage -> the stages it emits to), on the fastest
    branch where a stage has several (a run may take any one of them, so a slower branch
    must not refuse it). Returns (the known part of that wait, whether an unknown wait
    lies on some path): the known part is a lower bound, so refusing on it is never a
    false refusal."""
    memo: dict[str, tuple[float, bool]] = {}

    def walk(stage: str, seen: frozenset[str]) -> tuple[float, bool]:
        if stage in memo:
            return memo[stage]
        own = waits.get(stage, 0.0)
        after = [walk(d, seen | {stage}) for d in downstream.get(stage, ()) if d not in seen]
        known = (own or 0.0) + min((k for k, _ in after), default=0.0)
        unknown = own is None or any(u for _, u in after)
        memo[stage] = (known, unknown)
        return memo[stage]

    return walk(entry, frozenset())
