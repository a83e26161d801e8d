"""Per-partition bound on buffered + in-flight records, with high/low watermarks.

Owns the pause decision for one partition's fill level; must not pause anything itself.
"""

from __future__ import annotations


class PartitionBound:
    """Pause a partition once ``fill >= high_water``; keep it paused until
    ``fill <= low_water`` (parallel-consumer's queued + in-flight target, with hysteresis
    so one completion does not trigger a resume and the next record a pause).

    ``low_water`` defaults to ``high_water // 2``. ``low_water == 0`` is allowed and means
    "drain completely before resuming".
    """

    __slots__ = ("_high_water", "_low_water")

    def __init__(self, high_water: int, low_water: int | None = None) -> None:
        if high_water < 1:
            raise ValueError(f"high_water must be >= 1, got {high_water}")
        if low_water is None:
            low_water = high_water // 2
        if not 0 <= low_water < high_water:
            raise ValueError(
                f"low_water must be in [0, high_water), got {low_water} with "
                f"high_water {high_water}"
            )
        self._high_water = high_water
        self._low_water = low_water

    @property
    def high_water(self) -> int:
        return self._high_water

    @property
    def low_water(self) -> int:
        return self._low_water

    def should_pause(self, fill: int, paused: bool) -> bool:
        """``fill`` is buffered + in-flight records; ``paused`` is the current state."""
        if fill < 0:
            raise ValueError(f"fill cannot be negative, got {fill}")
        if paused:
            return fill > self._low_water
        return fill >= self._high_water

    def __repr__(self) -> str:
        return f"PartitionBound(high_water={self._high_water}, low_water={self._low_water})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PartitionBound):
            return NotImplemented
        return (self._high_water, self._low_water) == (other._high_water, other._low_water)

    def __hash__(self) -> int:
        return hash((self._high_water, self._low_water))
