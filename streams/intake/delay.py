"""The delay path: admitted runs told to come back later wait on the workflow's delayed
topic and enter the first stage when due.

Owns forwarding due records in offset order per partition and committing only what the
broker has acknowledged on the first stage's topic. Runs on the intake's I/O thread; intake
replicas share the work through one consumer group.
"""

from __future__ import annotations

import logging
from collections import deque
from functools import partial

from streams.clock import Clock
from streams.errors import DeliveryError, SerdeError
from streams.events import TaskEventCodec
from streams.kafka.client_config import ClientConfig
from streams.kafka.consumer import GroupConsumer
from streams.kafka.producer import RecordProducer
from streams.policy.offsets import OffsetTracker
from streams.topology import Stage, Topology
from streams.types import Record, TopicPartition

log = logging.getLogger(__name__)

DUE_HEADER = "streams.due_ms"
#: Records held per partition while they wait; the partition pauses beyond it.
HOLD_PER_PARTITION = 1000


class DelayForwarder:
    def __init__(
        self, client: ClientConfig, topology: Topology, entry: Stage, clock: Clock
    ) -> None:
        self._entry = entry
        self._clock = clock
        self._codec = TaskEventCodec()
        self._producer = RecordProducer(client)
        self._offsets = OffsetTracker()
        self._waiting: dict[TopicPartition, deque[Record]] = {}
        self._paused: set[TopicPartition] = set()
        self._dead_letter_topic = topology.dead_letter_topic
        self._consumer = GroupConsumer(
            client,
            f"{topology.workflow}.intake-delay",
            [topology.delayed_topic],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )
        self._next_commit = 0.0

    def step(self) -> None:
        """One non-blocking round: fetch, forward what is due, commit what is acknowledged."""
        for record in self._consumer.poll(200, 0.0):
            queue = self._waiting.get(record.tp)
            if queue is None:
                continue
            self._offsets.track(record.tp, record.offset)
            queue.append(record)
        now = self._clock.now()
        for tp, queue in self._waiting.items():
            while queue and _due_ms(queue[0]) <= now * 1000:
                self._forward(queue.popleft(), now)
            self._hold(tp, len(queue))
        self._producer.poll(0)
        if self._clock.monotonic() >= self._next_commit:
            self._next_commit = self._clock.monotonic() + 0.5
            self._commit()

    def _forward(self, record: Record, now: float) -> None:
        done = partial(self._acked, record)
        if record.value is None:
            done(None)
            return
        try:
            event = self._codec.decode(record.value)
        except SerdeError:
            # Written by the intake, so this is damage, not bad input; keep the bytes.
            self._producer.send(self._dead_letter_topic, record.value, key=record.key, on_ack=done)
            return
        event = event.with_stage(self._entry.name, int(now * 1000))
        topic = self._entry.input_topics_by_lane[event.lane]
        self._producer.send(topic, self._codec.encode(event), key=record.key, on_ack=done)

    def _acked(self, record: Record, error: DeliveryError | None) -> None:
        if error is not None:
            log.error("delayed run %r not forwarded: %s", record.key, error)
            return  # not completed: it is forwarded again after a restart
        if record.tp in self._waiting:
            self._offsets.complete(record.tp, record.offset)

    def _hold(self, tp: TopicPartition, held: int) -> None:
        if held >= HOLD_PER_PARTITION and tp not in self._paused:
            self._consumer.pause([tp])
            self._paused.add(tp)
        elif held <= HOLD_PER_PARTITION // 2 and tp in self._paused:
            self._consumer.resume([tp])
            self._paused.discard(tp)

    def _commit(self) -> None:
        offsets = self._offsets.committable()
        if offsets and self._consumer.commit(offsets):
            self._offsets.mark_committed(offsets)

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._waiting[tp] = deque()
            self._offsets.assign(tp)

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        self._producer.flush(5.0)
        committable = {tp: o for tp, o in self._offsets.committable().items() if tp in partitions}
        if committable:
            self._consumer.commit(committable)
        self._lost(partitions)

    def _lost(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._waiting.pop(tp, None)
            self._paused.discard(tp)
            self._offsets.revoke(tp)

    def close(self) -> None:
        self._producer.flush(5.0)
        self._commit()
        self._consumer.close()


def _due_ms(record: Record) -> int:
    for key, value in record.headers:
        if key == DUE_HEADER:
            try:
                return int(value)
            except ValueError:
                break
    return 0  # no due time: forward at once rather than hold it forever
