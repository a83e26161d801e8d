"""One assigned input partition of a governed faust stage, as PauseControl and Reporter read
it (streams.runtime.partition_view): its lane, and the records the agent holds now.

Owns that per-partition state; must not decide pauses. Faust's own buffer is invisible
here: what waits in it shows as lag, since faust has not committed it.
"""

from __future__ import annotations

from streams.types import Lane


class FaustPartition:
    __slots__ = ("bound", "held", "lane")

    def __init__(self, lane: Lane, bound: int) -> None:
        self.lane: Lane = lane
        self.bound = bound  # faust's stream_buffer_maxsize: where faust pauses by itself
        #: Offsets handed to the agent and not finished, with their enqueued time (ms).
        self.held: dict[int, int] = {}

    @property
    def fill(self) -> int:
        return len(self.held)

    @property
    def waiting(self) -> tuple[()]:
        return ()  # faust's buffer holds what waits; the agent has started what we hold

    def oldest_enqueued_ms(self) -> int | None:
        return min(self.held.values()) if self.held else None
