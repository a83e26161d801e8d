"""A consumer group's lag and oldest-unconsumed age, read from outside the group.

Owns the end-offset histories and the cached partition lists; must not join the group,
consume records, or decide anything from the numbers (that is policy's job). It reads only
through Admin, so a group with no live member (a stopped stage) still shows its lag growing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from streams.clock import Clock
from streams.errors import StreamsError
from streams.kafka.admin import Admin
from streams.policy.time_lag import EndOffsetHistory
from streams.types import TopicPartition

#: How often the partition list of a topic set is re-read (topics can gain partitions).
DEFAULT_PARTITIONS_REFRESH_S = 30.0


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition of a group: ``lag = end_offset - committed`` (committed None = 0).

    With nothing committed the lag counts from offset 0, including records retention has
    already deleted: the log-start offset is not read (one more request per reading).
    """

    tp: TopicPartition
    end_offset: int
    committed: int | None
    lag: int
    oldest_age_s: float


@dataclass(frozen=True, slots=True)
class GroupLag:
    """A group's lag over the partitions of the topics it was read for.

    ``measured_at`` is wall-clock seconds, taken right after the end offsets arrived.
    """

    group: str
    partitions: tuple[PartitionLag, ...]
    measured_at: float

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def max_age_s(self) -> float:
        return max((p.oldest_age_s for p in self.partitions), default=0.0)

    def by_topic(self) -> dict[str, GroupLag]:
        """The same reading split per topic (each keeps the group and measurement time)."""
        split: dict[str, list[PartitionLag]] = {}
        for p in self.partitions:
            split.setdefault(p.tp.topic, []).append(p)
        return {
            topic: GroupLag(self.group, tuple(parts), self.measured_at)
            for topic, parts in split.items()
        }


class LagReader:
    """Reads groups' lag through Admin; call ``read`` periodically (e.g. every 0.5 s).

    The age estimate comes from each partition's end-offset history, which only grows
    while ``read`` is called: the first reading of a backlog reports age 0 (no history)
    and later readings a lower bound until the history covers the backlog. Histories are
    per partition and shared by every group read over the same topics.

    ``from_earliest`` states how groups with no committed offset start: True (our
    consumers use auto.offset.reset=earliest) counts every record in the partition as lag.
    Not thread-safe: one poller owns a reader. Raises BrokerUnavailable when the cluster
    does not answer, and also for transient broker errors (NOT_LEADER_OR_FOLLOWER right
    after a topic is created or a leader moves): there are no hidden retries or sleeps, a
    periodic caller simply skips that reading ("no reading": stale pressure, which the
    feed treats as pause) and the next call re-reads the partitions. Other failures are the
    StreamsError streams.kafka.errors maps them to; never a KafkaException.
    """

    def __init__(
        self,
        admin: Admin,
        clock: Clock,
        *,
        partitions_refresh_s: float = DEFAULT_PARTITIONS_REFRESH_S,
        history_samples: int = 120,
        from_earliest: bool = True,
    ) -> None:
        self._admin = admin
        self._clock = clock
        self._partitions_refresh_s = partitions_refresh_s
        self._history_samples = history_samples
        self._from_earliest = from_earliest
        # topics -> (partitions, monotonic time read)
        self._partitions: dict[tuple[str, ...], tuple[list[TopicPartition], float]] = {}
        self._histories: dict[TopicPartition, EndOffsetHistory] = {}

    def close(self) -> None:
        """Close the clients behind the reader (its admin's offset-reading consumers, which
        otherwise live, and retry a vanished broker, until the process exits)."""
        self._admin.close()

    def read(self, group: str, topics: Sequence[str]) -> GroupLag:
        partitions = self._partitions_of(tuple(topics))
        if not partitions:
            return GroupLag(group, (), self._clock.now())
        try:
            # Committed before end: a consumer moving between the two reads then makes the
            # lag slightly high, never negative.
            committed = self._admin.committed_offsets(group, partitions)
            end_offsets = self._admin.end_offsets(partitions)
        except StreamsError:
            # A topic may have been deleted or recreated: re-read its partitions next time.
            self._forget_partitions(tuple(topics))
            raise
        now = self._clock.now()
        result = []
        for tp in partitions:
            end = end_offsets.get(tp)
            if end is None:
                continue  # the broker did not answer for it; do not report a made-up 0
            history = self._history(tp)
            history.record(end, now)
            done = committed.get(tp)
            start = done if done is not None else (0 if self._from_earliest else end)
            age = history.age_of(done, end, now, from_earliest=self._from_earliest)
            result.append(PartitionLag(tp, end, done, max(0, end - start), age))
        return GroupLag(group, tuple(result), now)

    def _partitions_of(self, topics: tuple[str, ...]) -> list[TopicPartition]:
        mono = self._clock.monotonic()
        cached = self._partitions.get(topics)
        # An empty list (topic not created yet) is re-read every time rather than cached.
        if cached and cached[0] and mono - cached[1] < self._partitions_refresh_s:
            return cached[0]
        partitions = self._admin.partitions_of(topics)
        self._partitions[topics] = (partitions, mono)
        self._prune_histories()
        return partitions

    def _forget_partitions(self, topics: tuple[str, ...]) -> None:
        # Mark stale rather than drop, so a passing broker error does not prune histories.
        cached = self._partitions.get(topics)
        if cached is not None:
            self._partitions[topics] = (cached[0], -math.inf)

    def _history(self, tp: TopicPartition) -> EndOffsetHistory:
        history = self._histories.get(tp)
        if history is None:
            history = self._histories[tp] = EndOffsetHistory(self._history_samples)
        return history

    def _prune_histories(self) -> None:
        # Keep memory bounded by the partitions still watched.
        watched = {tp for parts, _ in self._partitions.values() for tp in parts}
        for tp in [tp for tp in self._histories if tp not in watched]:
            del self._histories[tp]
