"""Events per minute by key over a sliding window, from the events' own timestamps (so a
restarted monitor that re-reads the last minutes counts them again correctly).

Owns a bounded deque of (time, key); must not read clocks (callers pass times).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class RecentCounts(Generic[K]):
    """Keeps events of the last ``keep_s`` seconds, at most ``max_events`` (the oldest go
    first); events may arrive slightly out of order (several partitions)."""

    def __init__(self, keep_s: float = 300.0, max_events: int = 100_000) -> None:
        if keep_s <= 0 or max_events < 1:
            raise ValueError("keep_s must be positive and max_events at least 1")
        self._keep_s = keep_s
        self._events: deque[tuple[float, K]] = deque(maxlen=max_events)

    def __len__(self) -> int:
        return len(self._events)

    def add(self, key: K, at: float) -> None:
        self._events.append((at, key))

    def per_minute(self, now: float, window_s: float = 60.0) -> dict[K, float]:
        """Events per minute by key over the last ``window_s`` seconds."""
        self._prune(now)
        since = now - window_s
        counts: dict[K, float] = {}
        for at, key in self._events:
            if since < at <= now:
                counts[key] = counts.get(key, 0.0) + 1.0
        scale = 60.0 / window_s
        return {key: n * scale for key, n in counts.items()}

    def _prune(self, now: float) -> None:
        horizon = now - self._keep_s
        events = self._events
        while events and events[0][0] < horizon:
            events.popleft()
