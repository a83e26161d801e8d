"""When a loop that should turn many times a second has stopped turning: the poll loop of
a worker, or the event loop its async handlers run on. Pure; times are injected.

A loop is stalled once its last turn is `after_s` old. That is said once per stall, and
once more when it turns again, with how long it was stuck: an operator sees one line for a
three-second freeze, not six, and sees that it ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class LoopVerdict:
    what: Literal["stalled", "turned"]
    stuck_s: float  # since its last turn (stalled), or how long it was stuck (turned)


class LoopStallGate:
    def __init__(self, after_s: float) -> None:
        if not after_s > 0:
            raise ValueError(f"after_s must be positive, got {after_s!r}")
        self.after_s = after_s
        self._stalled_since: float | None = None  # the last turn before the stall

    def observe(self, last_turn: float, now: float) -> LoopVerdict | None:
        """One look at the loop: `last_turn` is when it last turned. A verdict when the
        loop has just stalled or has just turned again after a stall, else None."""
        if self._stalled_since is not None:
            if last_turn > self._stalled_since:
                stuck = last_turn - self._stalled_since
                self._stalled_since = None
                return LoopVerdict("turned", stuck)
            return None
        if now - last_turn >= self.after_s:
            self._stalled_since = last_turn
            return LoopVerdict("stalled", now - last_turn)
        return None
