"""Dead-letter safety valve: stop the consumer rather than dead-letter everything.

Owns the ratio/consecutive limits (arroyo's DlqLimit); must not stop anything itself.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeadLetterLimit:
    """Trip when more than ``max_ratio`` of the last ``window`` outcomes were dead letters
    (judged only once ``min_records`` outcomes are in the window, so one early failure
    does not read as 100 %), or after ``max_consecutive`` dead letters in a row
    (None disables that check)."""

    max_ratio: float = 0.5
    window: int = 100
    min_records: int = 20
    max_consecutive: int | None = 50

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


class DeadLetterValve:
    """Counts outcomes; ``tripped`` says why the consumer must stop, or None.

    Latches: once tripped it stays tripped until ``reset`` so a caller that checks late
    cannot miss a storm that later outcomes diluted. The runtime turns a trip into
    ``DeadLetterLimitExceeded``. Memory is one deque of at most ``window`` booleans.
    """

    __slots__ = ("_consecutive", "_dead_in_window", "_outcomes", "_tripped", "limit")

    def __init__(self, limit: DeadLetterLimit | None = None) -> None:
        self.limit = limit if limit is not None else DeadLetterLimit()
        self._outcomes: deque[bool] = deque(maxlen=self.limit.window)
        self._dead_in_window = 0
        self._consecutive = 0
        self._tripped: str | None = None

    def record(self, dead_lettered: bool) -> None:
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._dead_in_window -= 1  # about to fall out of the window
        self._outcomes.append(dead_lettered)
        self._dead_in_window += dead_lettered
        self._consecutive = self._consecutive + 1 if dead_lettered else 0
        # A success can only lower the ratio, except the one that brings the window to
        # min_records (the ratio is judged from then on); skipping the rest saves the
        # check on nearly every record.
        if self._tripped is None and (
            dead_lettered or len(self._outcomes) == self.limit.min_records
        ):
            self._tripped = self._check()

    def _check(self) -> str | None:
        limit = self.limit
        if limit.max_consecutive is not None and self._consecutive >= limit.max_consecutive:
            return (
                f"{self._consecutive} consecutive records dead-lettered, "
                f"limit {limit.max_consecutive}"
            )
        seen = len(self._outcomes)
        if seen >= limit.min_records:
            ratio = self._dead_in_window / seen
            if ratio > limit.max_ratio:
                return (
                    f"dead-letter ratio {ratio:.2f} over the last {seen} records "
                    f"exceeds {limit.max_ratio:.2f}"
                )
        return None

    def tripped(self) -> str | None:
        return self._tripped

    def ratio(self) -> float | None:
        """Dead letters / outcomes in the current window; None before any outcome."""
        return self._dead_in_window / len(self._outcomes) if self._outcomes else None

    def reset(self) -> None:
        """Forget everything (after an operator fixed the cause and restarted)."""
        self._outcomes.clear()
        self._dead_in_window = 0
        self._consecutive = 0
        self._tripped = None
