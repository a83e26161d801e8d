"""Reads the timestamp of the record at a given offset (a group's first uncommitted record),
without a consumer group, so a monitor can say how old a paused or stopped backlog is.

Owns one confluent Consumer that is assigned only for the duration of a peek; must not
join a group, commit, or keep records. No KafkaException leaves: transient errors give no
answer for the partitions concerned, other failures raise the mapped StreamsError.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streams.kafka import client_logs
from streams.kafka.client_config import ClientConfig
from streams.kafka.errors import classify, kafka_errors, to_streams_error
from streams.types import TopicPartition


class RecordPeeker:
    """``timestamps_at({tp: offset})`` returns, per partition, the broker timestamp (ms) of
    the first record at or after ``offset`` (None: from the partition's beginning).

    read_committed, like the stages: aborted records and transaction markers are skipped,
    so the answer is the first record a stage will actually be handed. A partition that has
    no such record within ``timeout_s`` (nothing there yet, or the broker is slow) is left
    out of the answer. Not thread-safe.
    """

    def __init__(self, config: ClientConfig, *, timeout_s: float = 2.0) -> None:
        self._timeout_s = timeout_s
        self._hooks = client_logs.hooks(config.cluster_key)
        settings = {
            **config.base(),
            # librdkafka wants a group id, but this reader never joins or commits.
            "group.id": f"streams-peek-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",  # an offset retention deleted: the next one
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 50,
            # One record per partition is all a peek wants; keep the prefetch small.
            "fetch.max.bytes": 1_048_576,
            "max.partition.fetch.bytes": 65_536,
            "queued.max.messages.kbytes": 1024,
            **self._hooks.settings(stats=False),
        }
        with kafka_errors("creating a record peeker"):
            self._consumer = Consumer(settings)

    def timestamps_at(
        self, offsets: Mapping[TopicPartition, int | None]
    ) -> dict[TopicPartition, int]:
        if not offsets:
            return {}
        wanted = {
            (tp.topic, tp.partition): (OFFSET_BEGINNING if offset is None else offset)
            for tp, offset in offsets.items()
        }
        with kafka_errors("peeking at records"):
            self._consumer.assign(
                [KafkaTopicPartition(t, p, off) for (t, p), off in wanted.items()]
            )
        found: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + self._timeout_s
        try:
            while len(found) < len(wanted) and time.monotonic() < deadline:
                try:
                    messages = self._consumer.consume(num_messages=500, timeout=0.1)
                except KafkaException as exc:
                    self._unless_fatal(exc.args[0] if exc.args else None, exc)
                    continue
                for message in messages:
                    error = message.error()
                    if error is not None:
                        self._unless_fatal(error, None)
                        continue
                    topic, partition = message.topic(), message.partition()
                    if topic is None or partition is None:
                        continue
                    tp = TopicPartition(topic, partition)
                    start = wanted.get((topic, partition))
                    offset = message.offset()
                    if tp in found or start is None or offset is None:
                        continue
                    if start >= 0 and offset < start:
                        continue  # fetched from before the wanted offset (a batch start)
                    found[tp] = message.timestamp()[1]
        finally:
            with kafka_errors("peeking at records"):
                self._consumer.unassign()
        return found

    def close(self) -> None:
        """Close the peeker; a broker that is down on the way out is no error."""
        with contextlib.suppress(KafkaException, RuntimeError):
            self._consumer.close()

    def _unless_fatal(self, error: object, cause: BaseException | None) -> None:
        if isinstance(error, KafkaError) and classify(error) != "fatal":
            if error.code() != KafkaError._PARTITION_EOF:
                self._hooks.note("peeking at records", error)
            return
        if isinstance(error, KafkaError):
            raise to_streams_error(error, "peeking at records") from cause
        raise to_streams_error(KafkaException(error), "peeking at records") from cause
