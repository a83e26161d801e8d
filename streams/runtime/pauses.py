"""The worker's own desired-pause set, re-applied to the consumer on every poll and every
rebalance callback, because the client's pause state does not survive rebalances
reliably (confluent-kafka-python #1348, librdkafka #5591).

Owns which partitions are paused and why; must not decide why (policies do that).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from streams.kafka.consumer import GroupConsumer
from streams.types import PauseReason, TopicPartition

OnChange = Callable[[TopicPartition, PauseReason | None, bool], None]


class PauseSet:
    """Desired pause reasons per partition, and what was last applied to the consumer."""

    def __init__(self, on_change: OnChange | None = None) -> None:
        self._reasons: dict[TopicPartition, set[PauseReason]] = {}
        self._applied: set[TopicPartition] = set()
        self._on_change = on_change
        self.pause_events = 0
        self.resume_events = 0

    def mark(self, tp: TopicPartition, reason: PauseReason, active: bool) -> None:
        reasons = self._reasons.setdefault(tp, set())
        if active:
            reasons.add(reason)
        else:
            reasons.discard(reason)

    def reasons(self, tp: TopicPartition) -> frozenset[PauseReason]:
        return frozenset(self._reasons.get(tp, ()))

    def is_paused(self, tp: TopicPartition) -> bool:
        return bool(self._reasons.get(tp))

    def desired(self) -> set[TopicPartition]:
        return {tp for tp, reasons in self._reasons.items() if reasons}

    def reconcile(self, consumer: GroupConsumer, assigned: Iterable[TopicPartition]) -> None:
        """Make the consumer's paused set equal the desired one over `assigned`."""
        assigned_set = set(assigned)
        want = self.desired() & assigned_set
        to_pause = want - self._applied
        to_resume = (self._applied & assigned_set) - want
        if to_pause:
            consumer.pause(to_pause)
            self.pause_events += len(to_pause)
        if to_resume:
            consumer.resume(to_resume)
            self.resume_events += len(to_resume)
        self._applied = want
        if self._on_change is not None:
            for tp in to_pause:
                self._on_change(tp, min(self._reasons[tp]), True)
            for tp in to_resume:
                self._on_change(tp, None, False)

    def reapply(
        self,
        consumer: GroupConsumer,
        assigned: Iterable[TopicPartition],
        fresh: Iterable[TopicPartition] = (),
    ) -> None:
        """Pause every desired partition again, whatever the client did: after each rebalance
        callback, and periodically against a partition the client resumed on its own.

        `fresh` partitions were just assigned: those not wanted paused are resumed
        explicitly, since the client can keep a pause across a loss and re-assignment
        (seen after a broker outage: two partitions that had been paused before the loss
        never fetched again; librdkafka #5591) while this set has forgotten it.
        """
        assigned_set = set(assigned)
        want = self.desired() & assigned_set
        unwanted = set(fresh) - want
        if unwanted:
            consumer.resume(unwanted)
        if want:
            consumer.pause(want)
        newly = want - self._applied
        self.pause_events += len(newly)
        self._applied = want
        if self._on_change is not None:
            for tp in newly:
                self._on_change(tp, min(self._reasons[tp]), True)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._reasons.pop(tp, None)
            self._applied.discard(tp)
