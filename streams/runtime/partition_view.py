"""What pause decisions and reports read of one assigned partition: its lane, what it holds
against its bound, and its oldest held record.

Owns that read-only shape, so a stage run by another engine (streams.faust) shares
PauseControl and Reporter with the stage worker; must not hold state. PartitionBuffer
(streams.runtime.buffers) is the worker's implementation.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Protocol

from streams.types import Lane


class PartitionView(Protocol):
    @property
    def lane(self) -> Lane: ...

    @property
    def bound(self) -> int: ...

    @property
    def fill(self) -> int:
        """What the partition bound limits (records held, in any state)."""
        ...

    @property
    def waiting(self) -> Sized:
        """Records held and not started yet."""
        ...

    def oldest_enqueued_ms(self) -> int | None: ...
