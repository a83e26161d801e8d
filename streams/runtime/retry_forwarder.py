"""The retry forwarder of one stage worker: moves due retries from the retry-tier topics
back into the stage's input lane topics, through the stage's bounds.

Owns its consumer group (`<stage group>.retry`) on the workflow's tier topics, its own
producer, and each tier partition's hold. A partition whose head is not due yet is paused
and rewound to that head until its due time: nothing sleeps and nothing is kept in memory
beyond one poll's records. Nothing is forwarded while `room()` (the worker's view of the
stage: any input partition paused, or its input lag at max_lag) is 0, and never more than
the room; forwarded retries land in the input topics, so they count against the stage's
lag like first attempts (invariant 7). A tier offset is committed only after its forward
is acknowledged (at-least-once: a crash re-forwards, never loses). Retries of other stages
share the tier topics and pass by (committed at once). Must not run handlers or decide
retry policy (streams.runtime.retries and streams.policy.retry do).

Called on the worker's poll thread: step() each loop, revoke work inside the callbacks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from streams.clock import Clock
from streams.errors import DeliveryError, SerdeError
from streams.events import TaskEventCodec
from streams.kafka.client_config import ClientConfig, GroupProtocol
from streams.kafka.consumer import GroupConsumer
from streams.kafka.producer import ProducerQueueFull, RecordProducer
from streams.policy.offsets import OffsetTracker
from streams.policy.outage_waits import OutageWaits
from streams.registry import RegistryUnavailable
from streams.runtime.retries import (
    REASON_HEADER,
    RETRY_DUE_HEADER,
    RETRY_STAGE_HEADER,
    RETRY_TOPIC_HEADER,
)
from streams.runtime.retry_metrics import RetryMetrics
from streams.topology import Stage, Topology
from streams.types import Record, TopicPartition

log = logging.getLogger(__name__)

#: Most records one step takes from the tier topics (the memory bound, with the room).
_MAX_BATCH = 100
_REVOKE_FLUSH_S = 5.0
_EXPORT_INTERVAL_S = 0.5


@dataclass(slots=True)
class _Held:
    """A tier partition rewound to its head, which is due at `due_at` (wall s); once due,
    only the stage's room holds it (`due` True)."""

    due_at: float
    due: bool


class RetryForwarder:
    def __init__(
        self,
        client: ClientConfig,
        topology: Topology,
        stage: Stage,
        clock: Clock,
        metrics: RetryMetrics,
        *,
        room: Callable[[], int],
        commit_interval_s: float,
        group_protocol: GroupProtocol = "classic",
        max_poll_interval_ms: int = 300_000,
    ) -> None:
        self._stage = stage
        self._clock = clock
        self._metrics = metrics
        self._room = room
        self._commit_interval_s = commit_interval_s
        self._inputs = set(stage.input_topics)
        self._tier_of_topic = {topic: tier for tier, topic in topology.retry_topics.items()}
        self._codec = TaskEventCodec()
        self._offsets = OffsetTracker()
        self._held: dict[TopicPartition, _Held] = {}
        self._paused: set[TopicPartition] = set()
        # Tier partitions whose due head needs the schema registry while it is down: held
        # and read again on one shared backoff (README "Schema registry"), since an outage
        # is not bad input; one log line when it begins, one when it ends.
        self._registry: OutageWaits[TopicPartition] = OutageWaits()
        self._pending = 0  # forwards not acknowledged yet
        self._next_commit = 0.0
        self._next_export = 0.0
        self.failure: DeliveryError | None = None
        #: Why forwarding holds now ("stage_bound", "not_due") or None, for status views.
        self.holding: str | None = None
        #: Wall times of recent forwards, so the worker can add those a lag reading missed.
        self.sent_at: list[float] = []
        self._producer = RecordProducer(client)
        self._consumer = GroupConsumer(
            client,
            f"{stage.consumer_group}.retry",
            tuple(self._tier_of_topic),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
            group_protocol=group_protocol,
            max_poll_interval_ms=max_poll_interval_ms,
        )

    @property
    def pending(self) -> int:
        return self._pending

    def close(self) -> None:
        self._producer.flush(10.0)
        self._commit()
        self._consumer.close()

    # ----------------------------------------------------------------- the step
    def step(self) -> None:
        now = self._clock.now()
        self._producer.poll(0)
        room = self._room() - self._pending
        for tp, held in list(self._held.items()):
            held.due = held.due or held.due_at <= now
            if held.due and room > 0:
                del self._held[tp]  # resumed below: its head comes again and is forwarded
        # No room: nothing is fetched at all (the whole tier waits, other stages' too).
        assigned = self._offsets.assigned()
        self._set_paused(set(self._held) if room > 0 else set(assigned))
        skip: set[TopicPartition] = set()
        records = self._consumer.poll(max(1, min(room, _MAX_BATCH)), 0.0)
        for record in records:
            tp = record.tp
            if tp in skip or tp not in self._offsets.assigned():
                continue
            headers = dict(record.headers)
            if headers.get(RETRY_STAGE_HEADER) != self._stage.name.encode():
                self._pass_by(record)
                continue
            due_at = _due_at(headers, now)
            if due_at > now:
                self._hold(record, due_at, False, skip)
            elif room <= 0:
                self._hold(record, due_at, True, skip)
            else:
                try:
                    forwarded = self._forward(record, headers, now)
                except RegistryUnavailable as exc:
                    self._hold(record, now + self._registry_down(tp, exc, now), False, skip)
                    continue
                self._registry_through(tp, now)
                if forwarded:
                    room -= 1
                else:
                    self._hold(record, due_at, True, skip)  # the producer queue is full
        self._held = {tp: h for tp, h in self._held.items() if tp in self._offsets.assigned()}
        if room <= 0:  # nothing is fetched: the whole tier waits for the stage
            self.holding = "stage_bound"
        else:
            self.holding = "not_due" if self._held else None
        mono = time.monotonic()
        if mono >= self._next_export:  # gauges twice a second, not every loop
            self._next_export = mono + _EXPORT_INTERVAL_S
            self._export(now)
        if mono >= self._next_commit:
            self._next_commit = mono + self._commit_interval_s
            self._commit()

    def _registry_down(self, tp: TopicPartition, error: RegistryUnavailable, now: float) -> float:
        """`tp`'s due head waits for the registry; returns in how many seconds to read it again."""
        if self._registry.failed(tp, now):
            log.warning(
                "due retries of stage %s wait for the schema registry (held, not skipped): %s; "
                "trying again in %.1f s (up to every %g s)",
                self._stage.name, error, self._registry.wait_s(now), self._registry.backoff.cap_s,
            )  # fmt: skip
        return self._registry.wait_s(now)

    def _registry_through(self, tp: TopicPartition, now: float) -> None:
        lasted = self._registry.went_through(tp, now)
        if lasted is not None:
            log.warning(
                "the schema registry answered after %.1f s: due retries of stage %s go on",
                lasted, self._stage.name,
            )  # fmt: skip

    def _pass_by(self, record: Record) -> None:
        self._offsets.track(record.tp, record.offset)
        self._offsets.complete(record.tp, record.offset)

    def _hold(self, record: Record, due_at: float, due: bool, skip: set[TopicPartition]) -> None:
        """Rewind `record`'s partition to it and keep it paused until due (or room)."""
        tp = record.tp
        skip.add(tp)
        self._consumer.seek(tp, record.offset)
        self._consumer.pause([tp])
        self._paused.add(tp)
        self._held[tp] = _Held(due_at, due)

    def _forward(self, record: Record, headers: dict[str, bytes], now: float) -> bool:
        try:
            event = self._codec.decode(record.value or b"")
        except RegistryUnavailable:
            raise  # held by the caller, read again later
        except SerdeError as exc:
            # Not a retry this stage wrote: nothing to forward, nothing to lose.
            log.warning("retry tier %s@%d: undecodable, skipped: %s", record.tp, record.offset, exc)
            self._pass_by(record)
            return True
        target = headers.get(RETRY_TOPIC_HEADER, b"").decode(errors="replace")
        if target not in self._inputs:
            by_lane = self._stage.input_topics_by_lane
            target = by_lane.get(event.lane) or next(iter(by_lane.values()))
        # Its queue age counts from re-entering the stage, as for a first attempt.
        value = self._codec.encode(replace(event, enqueued_at_ms=int(now * 1000)), topic=target)
        kept = tuple(
            h
            for h in record.headers
            if not h[0].startswith("streams.retry.") and h[0] != REASON_HEADER
        )
        tier = self._tier_of_topic[record.topic]
        try:
            self._producer.send(
                target,
                value,
                key=record.key,
                headers=kept,
                on_ack=partial(self._acked, record.tp, record.offset, tier),
            )
        except ProducerQueueFull:
            return False
        self._offsets.track(record.tp, record.offset)
        self._pending += 1
        self.sent_at.append(now)
        if len(self.sent_at) > 4 * _MAX_BATCH:
            del self.sent_at[: len(self.sent_at) - 2 * _MAX_BATCH]
        return True

    def _acked(
        self, tp: TopicPartition, offset: int, tier: int, error: DeliveryError | None
    ) -> None:
        self._pending -= 1
        if tp not in self._offsets.assigned():
            return  # revoked meanwhile: its next owner forwards it again (at-least-once)
        if error is not None:
            if self.failure is None:
                self.failure = DeliveryError(f"a due retry from {tp}@{offset} was refused: {error}")
            return
        self._offsets.complete(tp, offset)
        self._metrics.count_forwarded(tier)

    def _set_paused(self, want: set[TopicPartition]) -> None:
        resume = self._paused - want
        pause = want - self._paused
        if resume:
            self._consumer.resume(resume)
        if pause:
            self._consumer.pause(pause)
        self._paused = want

    def _export(self, now: float) -> None:
        by_tier: dict[int, list[int]] = {t: [0, 0] for t in self._tier_of_topic.values()}
        overdue: dict[int, float] = dict.fromkeys(self._tier_of_topic.values(), 0.0)
        for tp, held in self._held.items():
            tier = self._tier_of_topic[tp.topic]
            if not held.due:
                by_tier[tier][0] += 1
            else:
                by_tier[tier][1] += 1
                overdue[tier] = max(overdue[tier], now - held.due_at)
        for tier, (not_due, bound) in by_tier.items():
            self._metrics.set_tier(
                tier, not_due=not_due, stage_bound=bound, overdue_s=overdue[tier]
            )

    def _commit(self) -> None:
        committable = self._offsets.committable()
        if committable and self._consumer.commit(committable):
            self._offsets.mark_committed(committable)

    # ----------------------------------------------------------------- rebalance
    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._offsets.assign(tp)
        self._paused -= set(partitions)

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        if self._pending:
            self._producer.flush(_REVOKE_FLUSH_S)  # acks complete what was forwarded
        revoked = set(partitions)
        final = {tp: pos for tp in revoked if (pos := self._offsets.revoke(tp)) is not None}
        if final:
            self._consumer.commit(final)
        self._drop(revoked)

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._offsets.revoke(tp)
        self._drop(set(partitions))

    def _drop(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._held.pop(tp, None)
            self._registry.forget(tp)
        self._paused -= partitions


def _due_at(headers: dict[str, bytes], now: float) -> float:
    """The retry's due time; a missing or garbled header means due now."""
    raw = headers.get(RETRY_DUE_HEADER)
    try:
        return int(raw) / 1000 if raw is not None else now
    except ValueError:
        return now
