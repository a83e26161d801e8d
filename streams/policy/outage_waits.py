"""What waits on one dependency during its outage (the intake's delayed runs on the schema
registry): the things that could not go on for want of it, the one OutageBackoff they
share, and when the outage began, so that a caller says one line when it begins and one
when it ends instead of one per record or per try.

Owns the outage's start and end; must not do I/O nor read a clock (callers pass monotonic
times). Keys are whatever the caller holds (a write, a partition), compared by identity or
equality as the key's type defines.

    failed(key, now)       key could not go on: it waits (True: this began an outage)
    may_try(now)           may what waits try again now? (always, outside an outage)
    wait_s(now)            how long until it may (0 outside an outage)
    went_through(key, now) key went on: the outage's length when it was the last to wait
    forget(key)            key no longer waits for other reasons (its partition was revoked)
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from streams.policy.outage_backoff import OutageBackoff

__all__ = ["OutageWaits"]

K = TypeVar("K", bound=Hashable)


class OutageWaits(Generic[K]):
    def __init__(self, backoff: OutageBackoff | None = None) -> None:
        self.backoff = backoff if backoff is not None else OutageBackoff()
        #: When the current outage began (monotonic s); None outside an outage.
        self.since: float | None = None
        self._waiting: set[K] = set()

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, key: object) -> bool:
        return key in self._waiting

    @property
    def retry_at(self) -> float | None:
        """When what waits may try again (monotonic s); None outside an outage."""
        return self.backoff.retry_at

    def failed(self, key: K, now: float) -> bool:
        """`key` could not go on at `now` for want of the dependency; True when that began
        an outage (the caller says so once)."""
        began = self.since is None
        if began:
            self.since = now
        self._waiting.add(key)
        self.backoff.failed(now)
        return began

    def may_try(self, now: float) -> bool:
        return self.since is None or self.backoff.due(now)

    def wait_s(self, now: float) -> float:
        retry_at = self.backoff.retry_at
        return 0.0 if self.since is None or retry_at is None else max(0.0, retry_at - now)

    def went_through(self, key: K, now: float) -> float | None:
        """`key` went on at `now`. When it was the last one waiting the outage is over:
        returns how long it lasted (the caller says so once); else None."""
        if key not in self._waiting:
            return None
        self._waiting.discard(key)
        if self._waiting or self.since is None:
            return None
        lasted = now - self.since
        self._end()
        return lasted

    def forget(self, key: K) -> None:
        """`key` waits no more, without having gone on: an outage nothing waits on any more
        ends without a word (the next failure begins a new one)."""
        self._waiting.discard(key)
        if not self._waiting:
            self._end()

    def _end(self) -> None:
        self.since = None
        self.backoff.recovered()
