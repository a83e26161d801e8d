"""Whether a reading taken every fraction of a second still counts as readable after one
fails. One failed read is not an outage: a broker that has just started (or moved a group
coordinator) answers COORDINATOR_LOAD_IN_PROGRESS for a moment, and CI saw an intake
report itself unhealthy ("the broker does not answer") for that while it was admitting.
So a reading is readable while its last success is at most `grace_s` old. Pure.
"""

from __future__ import annotations


class ReadingGrace:
    def __init__(self, grace_s: float) -> None:
        if grace_s < 0:
            raise ValueError("grace_s must be >= 0")
        self.grace_s = grace_s
        self._last_success: float | None = None

    def succeeded(self, now: float) -> None:
        self._last_success = now

    def readable(self, now: float) -> bool:
        """Never before a first success; after one, until grace_s has passed without
        another."""
        last = self._last_success
        return last is not None and now - last <= self.grace_s
