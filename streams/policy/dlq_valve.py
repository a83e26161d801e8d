"""Dead-letter safety valve: stop the consumer rather than dead-letter everything, and say
so early when a sustained share of records is dead-lettered below the trip point.

Owns the ratio/consecutive limits (arroyo's DlqLimit), the warning level and the order in
which outcomes are judged; must not stop, log or count anything itself.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

ValveState = Literal["ok", "warning", "tripped"]


@dataclass(frozen=True, slots=True)
class DeadLetterLimit:
    """Trip when more than ``max_ratio`` of the last ``window`` judged outcomes were dead
    letters (judged only once ``min_records`` outcomes are in the window, so one early
    failure does not read as 100 %), or after ``max_consecutive`` dead letters in a row
    (None disables that check). "Last" and "in a row" are in the order records started,
    see DeadLetterValve.

    Warn (state "warning", the records keep going to the dead-letter topic) while the
    same window ratio is above ``warn_ratio`` (None disables it); the warning clears when
    the ratio falls to half of ``warn_ratio`` or below, so a ratio hovering at the level
    does not flap. A ``warn_ratio`` at or above ``max_ratio`` never warns before the trip.
    ``max_waiting`` bounds the outcomes held back waiting for an earlier-started record's
    outcome (0: judge in the order outcomes arrive).
    """

    max_ratio: float = 0.5
    window: int = 100
    min_records: int = 20
    max_consecutive: int | None = 50
    warn_ratio: float | None = 0.1
    max_waiting: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_ratio <= 1.0:
            raise ValueError(f"max_ratio must be within [0, 1], got {self.max_ratio}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 1 <= self.min_records <= self.window:
            raise ValueError(
                f"min_records must be within [1, window={self.window}], got {self.min_records}"
            )
        if self.max_consecutive is not None and self.max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1 or None, got {self.max_consecutive}")
        if self.warn_ratio is not None and not 0.0 <= self.warn_ratio <= 1.0:
            raise ValueError(f"warn_ratio must be within [0, 1] or None, got {self.warn_ratio}")
        if self.max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {self.max_waiting}")


@dataclass(frozen=True, slots=True)
class ValveStatus:
    """A picture of the valve: ``reason`` explains a warning or a trip (None when ok);
    ``ratio`` is over the ``judged`` outcomes in the window (None before any);
    ``waiting`` outcomes are held for an earlier-started record's outcome."""

    state: ValveState
    reason: str | None
    ratio: float | None
    judged: int
    waiting: int


class DeadLetterValve:
    """Judges outcomes in the order their records started; ``tripped`` says why the
    consumer must stop, or None; ``state`` is "ok", "warning" or "tripped".

    Why start order: records that start together finish in an order set by their own
    durations, and timeouts finish last by definition. Judged in completion order, a burst
    of 200 with 60 timeouts (30 %) reads as 60 dead letters in a row at its end and trips
    ``max_consecutive``, and its last ``window`` completions read 60 % dead. In start order
    the same burst reads 30 % spread over 200, which is what happened.

    Protocol (one thread, the poll thread; every call O(1) amortised):
      * ``ticket = start()`` when a record's handler starts;
      * ``record(dead_lettered, started=ticket)`` when its outcome is acknowledged;
      * ``abandon(ticket)`` if its outcome will never be recorded or must not be judged
        (partition revoked or lost, record expired after it got a ticket);
      * ``record(dead_lettered)`` with no ticket for an outcome decided without a handler
        run (undecodable): it starts and finishes at once.

    Semantics, exactly:
      * Outcomes are judged in ticket order. An outcome whose ticket is not the next one
        to judge waits until every earlier ticket was recorded or abandoned; abandoned
        tickets are skipped (neither a success nor a dead letter, they break no run).
      * The window is the last ``window`` judged outcomes; the ratio is dead letters over
        the outcomes in the window, judged once it holds ``min_records``.
      * "Consecutive" is the run of dead letters among judged outcomes, in judging order,
        that ends at the latest judged one.
      * Limits are checked after every judged outcome; a trip latches until ``reset``, so
        a caller that checks late cannot miss a storm that later outcomes diluted.
      * At most ``max_waiting`` outcomes wait: beyond that the earliest missing tickets
        are skipped, and an outcome that arrives for a skipped ticket is judged on
        arrival (as in completion order). This bounds memory and how many dead letters
        can pile up unjudged behind one record that never reports.
      * Recording or abandoning a ticket twice is a caller bug the valve does not detect.
    Memory: one deque of at most ``window`` booleans plus at most ``max_waiting`` waiting.
    """

    __slots__ = (
        "_consecutive",
        "_dead_in_window",
        "_next_ticket",
        "_next_to_judge",
        "_outcomes",
        "_tripped",
        "_waiting",
        "_warning",
        "limit",
    )

    def __init__(self, limit: DeadLetterLimit | None = None) -> None:
        self.limit = limit if limit is not None else DeadLetterLimit()
        self._outcomes: deque[bool] = deque(maxlen=self.limit.window)
        self._dead_in_window = 0
        self._consecutive = 0
        self._tripped: str | None = None
        self._warning = False
        self._next_ticket = 0
        self._next_to_judge = 0
        # ticket -> outcome (None: abandoned), for tickets after _next_to_judge.
        self._waiting: dict[int, bool | None] = {}

    def start(self) -> int:
        """A record's handler starts: its ticket, to pass to ``record`` or ``abandon``."""
        ticket = self._next_ticket
        self._next_ticket = ticket + 1
        return ticket

    def record(self, dead_lettered: bool, *, started: int | None = None) -> None:
        self._settle(self.start() if started is None else started, dead_lettered)

    def abandon(self, started: int) -> None:
        """The record of ``started`` will not be judged (its outcome may never come)."""
        self._settle(started, None)

    def _settle(self, ticket: int, dead_lettered: bool | None) -> None:
        if ticket >= self._next_ticket:
            raise ValueError(f"ticket {ticket} was never handed out by start()")
        if ticket == self._next_to_judge:
            if dead_lettered is not None:
                self._judge(dead_lettered)
            self._next_to_judge = ticket + 1
            if self._waiting:
                self._drain()
        elif ticket > self._next_to_judge:
            self._waiting[ticket] = dead_lettered
            if len(self._waiting) > self.limit.max_waiting:
                self._skip_missing()
        elif dead_lettered is not None:
            self._judge(dead_lettered)  # its ticket was skipped: judged on arrival

    def _drain(self) -> None:
        waiting, ticket = self._waiting, self._next_to_judge
        while ticket in waiting:
            outcome = waiting.pop(ticket)
            if outcome is not None:
                self._judge(outcome)
            ticket += 1
        self._next_to_judge = ticket

    def _skip_missing(self) -> None:
        # Skip missing tickets until half the bound waits: a sort per max_waiting / 2
        # outcomes keeps this O(log n) amortised even when tickets go missing often.
        keep = self.limit.max_waiting // 2
        for ticket in sorted(self._waiting):
            if len(self._waiting) <= keep:
                break
            self._next_to_judge = ticket
            self._drain()

    def _judge(self, dead_lettered: bool) -> None:
        outcomes = self._outcomes
        if len(outcomes) == outcomes.maxlen and outcomes[0]:
            self._dead_in_window -= 1  # about to fall out of the window
        outcomes.append(dead_lettered)
        self._dead_in_window += dead_lettered
        self._consecutive = self._consecutive + 1 if dead_lettered else 0
        if self._tripped is not None:
            return
        seen = len(outcomes)
        if seen < self.limit.min_records:
            if dead_lettered:
                self._tripped = self._consecutive_trip()
            return
        # A success can only lower the ratio, except the one that brings the window to
        # min_records (the ratio is judged from then on), and a dead letter only raise
        # it: the common case, a success while not warning, skips the arithmetic.
        limit = self.limit
        if dead_lettered or seen == limit.min_records:
            ratio = self._dead_in_window / seen
            if dead_lettered:
                self._tripped = self._consecutive_trip()
            if self._tripped is None and ratio > limit.max_ratio:
                self._tripped = (
                    f"dead-letter ratio {ratio:.2f} over the last {seen} records "
                    f"exceeds {limit.max_ratio:.2f}"
                )
            if limit.warn_ratio is not None and not self._warning:
                self._warning = ratio > limit.warn_ratio
        if not dead_lettered and self._warning and limit.warn_ratio is not None:
            self._warning = self._dead_in_window / seen > limit.warn_ratio / 2

    def _consecutive_trip(self) -> str | None:
        limit = self.limit.max_consecutive
        if limit is not None and self._consecutive >= limit:
            return f"{self._consecutive} consecutive records dead-lettered, limit {limit}"
        return None

    @property
    def state(self) -> ValveState:
        if self._tripped is not None:
            return "tripped"
        return "warning" if self._warning else "ok"

    def tripped(self) -> str | None:
        return self._tripped

    def ratio(self) -> float | None:
        """Dead letters / outcomes in the current window; None before any outcome."""
        return self._dead_in_window / len(self._outcomes) if self._outcomes else None

    def status(self) -> ValveStatus:
        state, ratio = self.state, self.ratio()
        reason = self._tripped
        if state == "warning" and ratio is not None:
            reason = (
                f"dead-letter ratio {ratio:.2f} over the last {len(self._outcomes)} records "
                f"(warning since it rose above {self.limit.warn_ratio:.2f}; the valve trips "
                f"above {self.limit.max_ratio:.2f})"
            )
        return ValveStatus(state, reason, ratio, len(self._outcomes), len(self._waiting))

    def reset(self) -> None:
        """Forget everything (after an operator fixed the cause and restarted). Tickets
        handed out before stay valid; their outcomes are judged on arrival."""
        self._outcomes.clear()
        self._dead_in_window = 0
        self._consecutive = 0
        self._tripped = None
        self._warning = False
        self._waiting.clear()
        self._next_to_judge = self._next_ticket
