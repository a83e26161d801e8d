"""Partitions held on an unreachable schema registry: a record framed with a schema id this
process has not seen yet cannot be decoded while the registry does not answer, and that is
a dependency's outage, not bad input, so it is not dead-lettered. Its partition is rewound
to it and paused (reason ``registry_unavailable``) until the next attempt is due
(streams.policy.outage_backoff: 1 s doubling to 30 s), then fetched again from that record,
so nothing after it in the partition is handled before it.

Owns the ``registry_unavailable`` pause reason and the rewind offsets of held partitions;
must not decode records nor talk to the registry (the worker's codec does; it raises
RegistryUnavailable). Marks reasons on the worker's PauseSet, which the worker applies.
Called on the poll thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from streams.policy.outage_backoff import OutageBackoff
from streams.runtime.pause_log import PauseLog
from streams.runtime.pauses import PauseSet
from streams.types import PauseReason, Record, TopicPartition

__all__ = ["REASON", "DecodeHolds"]

log = logging.getLogger(__name__)

REASON: PauseReason = "registry_unavailable"
Seek = Callable[[TopicPartition, int], None]


class DecodeHolds:
    """Held partitions of one worker.

    ``partitions`` maps each held partition to the offset it must be read from next (the
    record that could not be decoded): paused until the retry is due, then fetching again
    until that record comes back. The worker calls ``admits`` for every consumed record
    while ``partitions`` is not empty (a record it refuses is dropped: it is read again),
    ``hold`` when decoding raised RegistryUnavailable, ``update`` every turn and
    ``forget`` for partitions it no longer owns.
    """

    def __init__(
        self,
        stage: str,
        pauses: PauseSet,
        seek: Seek,
        pause_log: PauseLog,
        backoff: OutageBackoff | None = None,
    ) -> None:
        self._stage = stage
        self._pauses = pauses
        self._seek = seek
        self._pause_log = pause_log
        self.backoff = backoff if backoff is not None else OutageBackoff()
        self.partitions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._since: dict[TopicPartition, float] = {}  # when each partition's hold began

    def admits(self, record: Record) -> bool:
        """May `record` be accepted now? False: drop it, its partition reads it again."""
        tp = record.tp
        resume_at = self.partitions.get(tp)
        if resume_at is None:
            return True
        offset = record.offset
        if tp in self._paused:
            # Fetched before the pause took hold; one below the held record can only come
            # from a rewind further back (an aborted transaction): read again from there.
            if offset < resume_at:
                self.partitions[tp] = offset
                self._seek(tp, offset)
            return False
        if offset == resume_at:
            del self.partitions[tp]  # back: it decodes now, or is held again
            return True
        if offset < resume_at:
            return True  # rewound further back meanwhile: these come first, in order
        # Ahead of the held record (the rewind did not take): it must be read first.
        self._seek(tp, resume_at)
        return False

    def hold(self, record: Record, error: Exception, now_mono: float) -> None:
        """`record` could not be decoded for want of the registry: hold its partition."""
        tp = record.tp
        self.partitions[tp] = record.offset
        self._paused.add(tp)
        self._seek(tp, record.offset)
        self._pauses.mark(tp, REASON, True)
        retry_in = self.backoff.failed(now_mono) - now_mono
        if tp in self._since:
            log.debug(
                "stage %s: %s still held at offset %d: registry unavailable; next try in %.1f s",
                self._stage, tp, record.offset, retry_in,
            )  # fmt: skip
            return
        self._since[tp] = now_mono
        log.warning(
            "stage %s: partition %s held at offset %d (paused, %s): %s; retrying in %.1f s "
            "(up to every %g s), records after it wait",
            self._stage, tp, record.offset, REASON, error, retry_in, self.backoff.cap_s,
        )  # fmt: skip
        self._pause_log.partition(tp, REASON, True, f"held at offset {record.offset}", now_mono)

    def update(self, assigned: Iterable[TopicPartition], now_mono: float) -> None:
        """Lift the pauses when the next attempt is due; say which partitions resumed."""
        if self._paused and self.backoff.due(now_mono):
            for tp in self._paused:
                self._pauses.mark(tp, REASON, False)
            self._paused.clear()
        if not self._since:
            return
        owned = set(assigned)
        for tp in [tp for tp in self._since if tp not in self.partitions]:
            held_s = now_mono - self._since.pop(tp)
            if tp in owned:
                log.warning(
                    "stage %s: partition %s read its held record after %.1f s: the registry "
                    "answered", self._stage, tp, held_s,
                )  # fmt: skip
                self._pause_log.partition(tp, REASON, False, "the registry answered", now_mono)
        if not self.partitions:
            self.backoff.recovered()

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions revoked or lost: their next owner reads from the last commit."""
        for tp in partitions:
            self.partitions.pop(tp, None)
            self._paused.discard(tp)
            self._since.pop(tp, None)
        if not self.partitions:
            self.backoff.recovered()
