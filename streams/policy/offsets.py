"""Out-of-order completion tracking: which offset is safe to commit per partition.

Owns commit-position arithmetic only; must not commit, talk to Kafka, or read a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from streams.types import TopicPartition


class PartitionOffsets:
    """One partition's dispatched-but-unfinished records (parallel-consumer style).

    Contract:
      * ``track`` is called in consumption order with strictly increasing offsets.
      * ``complete`` may be called in any order, once per tracked offset.
      * ``committable`` is the Kafka commit position (next offset to consume): one past the
        highest tracked offset below which every tracked offset has completed. It never
        moves backwards and never passes an unfinished record (faust #312 committed past a
        gap). Contiguity is over *tracked* offsets, so holes left by compaction or
        transaction markers never block it.

    Memory is one deque entry per record from the oldest unfinished record onward: bounded
    by the caller's in-flight bound, never by the partition's history.
    """

    __slots__ = (
        "_committable",
        "_committed",
        "_floor",
        "_last_tracked",
        "_unfinished",
        "_unswept",
    )

    def __init__(self, start_offset: int | None = None) -> None:
        if start_offset is not None and start_offset < 0:
            raise ValueError(f"start_offset must be >= 0, got {start_offset}")
        # Tracked offsets not yet swept into the commit position, oldest first.
        self._unswept: deque[int] = deque()
        # Tracked offsets whose handler has not completed.
        self._unfinished: set[int] = set()
        self._last_tracked: int | None = None
        self._committable: int | None = None
        # Last position the caller told us it committed (the consumer's start position
        # counts: committing it again would be a no-op).
        self._committed: int | None = start_offset
        self._floor = start_offset if start_offset is not None else 0

    def track(self, offset: int) -> None:
        """Record that ``offset`` was consumed and dispatched; offsets must increase."""
        if offset < self._floor:
            raise ValueError(
                f"offset {offset} is below {self._floor} (already tracked, committed, or "
                "before the start offset); offsets must be tracked in increasing order"
            )
        self._unswept.append(offset)
        self._unfinished.add(offset)
        self._last_tracked = offset
        self._floor = offset + 1

    def complete(self, offset: int) -> None:
        """Record that ``offset``'s work finished; raises ValueError if it is not pending."""
        if offset not in self._unfinished:
            raise ValueError(
                f"offset {offset} is not pending: it was never tracked or already completed"
            )
        self._unfinished.remove(offset)
        # Only finishing the oldest record can move the commit position; sweeping here
        # keeps the whole thing amortised O(1) per record.
        if self._unswept[0] == offset:
            self._sweep()

    def _sweep(self) -> None:
        while self._unswept and self._unswept[0] not in self._unfinished:
            self._committable = self._unswept.popleft() + 1

    def committable(self) -> int | None:
        """The offset to commit (next to consume), or None if nothing has completed yet."""
        return self._committable

    def pending(self) -> int:
        """Tracked records whose work has not completed."""
        return len(self._unfinished)

    def held(self) -> int:
        """Tracked offsets kept in memory (not yet swept into the commit position)."""
        return len(self._unswept)

    @property
    def committed(self) -> int | None:
        """The last position passed to ``mark_committed`` (or the start offset)."""
        return self._committed

    def mark_committed(self, offset: int) -> None:
        """Record that ``offset`` was committed; state below it is dropped.

        Raises ValueError if an unfinished record lies below ``offset``: acknowledging
        such a commit would mean something already committed past unfinished work.
        A position older than an earlier one (a late acknowledgement) is ignored.
        """
        # Invariant: the head of _unswept is the oldest unfinished record.
        if self._unswept and self._unswept[0] < offset:
            raise ValueError(
                f"cannot mark {offset} committed: offset {self._unswept[0]} below it "
                "has not completed"
            )
        if self._committed is not None and offset <= self._committed:
            return
        self._committed = offset
        if self._committable is None or self._committable < offset:
            self._committable = offset
        self._floor = max(self._floor, offset)


class OffsetTracker:
    """PartitionOffsets for every assigned partition.

    ``assign`` starts a partition afresh (after a rebalance the consumer resumes from the
    committed position, so earlier in-flight bookkeeping no longer applies); ``revoke``
    forgets it. Completions and commit acknowledgements that arrive after a revoke are
    ignored: the partition's new owner reprocesses from the last commit.
    """

    __slots__ = ("_partitions",)

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}

    def assign(self, tp: TopicPartition, start_offset: int | None = None) -> PartitionOffsets:
        """Start ``tp`` afresh; returns its PartitionOffsets, for the partition's owner to
        track and complete records on directly (one dict lookup less per record)."""
        offsets = self._partitions[tp] = PartitionOffsets(start_offset)
        return offsets

    def revoke(self, tp: TopicPartition) -> int | None:
        """Forget ``tp``; returns its last uncommitted commit position, if any, so the
        caller can commit it before giving the partition up."""
        offsets = self._partitions.pop(tp, None)
        if offsets is None:
            return None
        return _beyond_committed(offsets)

    def assigned(self) -> frozenset[TopicPartition]:
        return frozenset(self._partitions)

    def track(self, tp: TopicPartition, offset: int) -> None:
        """Raises KeyError for a partition that is not assigned (a dispatch bug)."""
        try:
            offsets = self._partitions[tp]
        except KeyError:
            raise KeyError(f"{tp} is not assigned; assign it before tracking") from None
        offsets.track(offset)

    def complete(self, tp: TopicPartition, offset: int) -> bool:
        """Returns False (and records nothing) if ``tp`` was revoked meanwhile."""
        offsets = self._partitions.get(tp)
        if offsets is None:
            return False
        offsets.complete(offset)
        return True

    def pending(self, tp: TopicPartition) -> int:
        offsets = self._partitions.get(tp)
        return 0 if offsets is None else offsets.pending()

    def committable(self) -> dict[TopicPartition, int]:
        """Positions to commit: only partitions that moved past their last commit."""
        result: dict[TopicPartition, int] = {}
        for tp, offsets in self._partitions.items():
            position = _beyond_committed(offsets)
            if position is not None:
                result[tp] = position
        return result

    def idle_positions(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Consumer positions worth committing for partitions with no unfinished work.

        Transaction markers and compaction gaps take offsets that are never delivered, so
        committing "last completed + 1" leaves an idle partition one or more offsets behind
        its end forever: a phantom lag (and a growing age) that would hold an upstream stage
        paused. When nothing is unfinished, the consumer's position (past those offsets) is
        the honest commit point.
        """
        result: dict[TopicPartition, int] = {}
        for tp, position in positions.items():
            offsets = self._partitions.get(tp)
            if offsets is None or offsets.pending():
                continue
            known = max(
                (o for o in (offsets.committed, offsets.committable()) if o is not None),
                default=-1,
            )
            if position > known:
                result[tp] = position
        return result

    def mark_committed(self, committed: Mapping[TopicPartition, int]) -> None:
        """Acknowledge a commit; partitions revoked meanwhile are skipped."""
        for tp, offset in committed.items():
            offsets = self._partitions.get(tp)
            if offsets is not None:
                offsets.mark_committed(offset)


def _beyond_committed(offsets: PartitionOffsets) -> int | None:
    position = offsets.committable()
    if position is None:
        return None
    if offsets.committed is not None and position <= offsets.committed:
        return None
    return position
