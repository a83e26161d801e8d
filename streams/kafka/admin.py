"""Topic management and lag reads through the admin API, in our types.

Owns the confluent AdminClient; topic creation is idempotent and never shrinks partitions.
No KafkaException leaves: every failure is the StreamsError streams.kafka.errors maps it to
(BrokerUnavailable for transient ones, which a periodic reader treats as "no reading").
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from streams.errors import BrokerUnavailable
from streams.kafka import client_logs
from streams.kafka.client_config import ClientConfig
from streams.kafka.errors import kafka_errors, to_streams_error
from streams.types import TopicPartition


@dataclass(frozen=True, slots=True)
class TopicWanted:
    name: str
    partitions: int
    retention_ms: int | None = None
    compacted: bool = False

    def configs(self) -> dict[str, str]:
        configs: dict[str, str] = {}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        if self.compacted:
            configs["cleanup.policy"] = "compact"
        return configs


@dataclass(frozen=True, slots=True)
class TopicChange:
    name: str
    action: str  # "create", "add_partitions", "unchanged", "refused_shrink"
    detail: str


class Admin:
    def __init__(self, config: ClientConfig, *, timeout_s: float = 30.0) -> None:
        self._config = config
        self._hooks = client_logs.hooks(config.cluster_key)
        with kafka_errors("creating an admin client"):
            self._admin = AdminClient({**config.base(), **self._hooks.settings(stats=False)})
        self._timeout_s = timeout_s
        self._offset_readers: dict[str, Consumer] = {}

    def _serve_logs(self) -> None:
        # The admin client hands its logs and errors to Python only inside poll().
        self._admin.poll(0)

    def partition_counts(self) -> dict[str, int]:
        self._serve_logs()
        with kafka_errors("cannot read cluster metadata"):
            metadata = self._admin.list_topics(timeout=self._timeout_s)
        return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}

    def cluster_id(self) -> str | None:
        """The cluster's id: a broker that lost its data (wiped, formatted anew) has a new one."""
        self._serve_logs()
        with kafka_errors("cannot read cluster metadata"):
            metadata = self._admin.list_topics(timeout=self._timeout_s)
        cluster_id: str | None = metadata.cluster_id
        return cluster_id

    def plan(self, wanted: Iterable[TopicWanted]) -> list[TopicChange]:
        existing = self.partition_counts()
        changes = []
        for topic in wanted:
            have = existing.get(topic.name)
            if have is None:
                changes.append(TopicChange(topic.name, "create", f"{topic.partitions} partitions"))
            elif have < topic.partitions:
                changes.append(
                    TopicChange(topic.name, "add_partitions", f"{have} -> {topic.partitions}")
                )
            elif have > topic.partitions:
                changes.append(
                    TopicChange(
                        topic.name,
                        "refused_shrink",
                        f"has {have} partitions, topology asks {topic.partitions}; Kafka "
                        "cannot shrink a topic (keyed order would break)",
                    )
                )
            else:
                changes.append(TopicChange(topic.name, "unchanged", f"{have} partitions"))
        return changes

    def apply(self, wanted: Iterable[TopicWanted]) -> list[TopicChange]:
        """Create missing topics and grow partition counts; return what changed."""
        wanted_by_name = {t.name: t for t in wanted}
        changes = self.plan(wanted_by_name.values())
        creates = [
            NewTopic(
                c.name,
                num_partitions=wanted_by_name[c.name].partitions,
                replication_factor=-1,  # the broker's default (1 on the local broker)
                config=wanted_by_name[c.name].configs(),
            )
            for c in changes
            if c.action == "create"
        ]
        grows = [
            NewPartitions(c.name, wanted_by_name[c.name].partitions)
            for c in changes
            if c.action == "add_partitions"
        ]
        if creates:
            with kafka_errors("creating topics"):
                futures = self._admin.create_topics(creates, operation_timeout=self._timeout_s)
            _wait_all(futures, ok_codes={KafkaError.TOPIC_ALREADY_EXISTS})
        if grows:
            with kafka_errors("adding partitions"):
                futures = self._admin.create_partitions(grows, operation_timeout=self._timeout_s)
            _wait_all(futures)
        changed = {
            c.name: wanted_by_name[c.name].partitions
            for c in changes
            if c.action in ("create", "add_partitions")
        }
        if changed:
            self._wait_listed(changed)
        return changes

    def _wait_listed(self, wanted: Mapping[str, int]) -> None:
        """Return once the broker's metadata lists every partition of `wanted`. The create
        and grow futures complete when the controller has committed the change; the broker
        serving metadata applies it a moment later, and on a loaded machine a topic created
        moments ago is absent from its answer (seen: 11 of 30 workflows right after apply).
        Callers that read partitions next (the monitor, lag readers) must not see it missing."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            listed = self.partition_counts()
            short = {n: listed.get(n, 0) for n, want in wanted.items() if listed.get(n, 0) < want}
            if not short:
                return
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(
                    f"topics created but not listed by the broker after {self._timeout_s:g} s: "
                    + ", ".join(
                        f"{n} ({have} of {wanted[n]} partitions)" for n, have in short.items()
                    )
                )
            time.sleep(0.05)

    def delete_topics(self, names: Iterable[str]) -> None:
        names = list(names)
        if names:
            self._serve_logs()
            with kafka_errors("deleting topics"):
                futures = self._admin.delete_topics(names, operation_timeout=self._timeout_s)
            _wait_all(futures, ok_codes={KafkaError.UNKNOWN_TOPIC_OR_PART})

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Log-end offsets (high watermarks) of the given partitions."""
        request = {
            KafkaTopicPartition(tp.topic, tp.partition): OffsetSpec.latest()  # type: ignore[no-untyped-call]
            for tp in partitions
        }
        if not request:
            return {}
        self._serve_logs()
        with kafka_errors("cannot read end offsets"):
            futures = self._admin.list_offsets(request, request_timeout=self._timeout_s)
            result: dict[TopicPartition, int] = {}
            for ktp, future in futures.items():
                result[TopicPartition(ktp.topic, ktp.partition)] = future.result().offset
        return result

    def committed_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """A group's committed offsets (None where it has committed nothing).

        Read through a consumer that carries the group's id but never joins it, not through
        AdminClient.list_consumer_group_offsets: that call crashes the process when the
        group's coordinator answers NOT_COORDINATOR (the admin client has no group handle
        to re-query with; librdkafka #5040, confluent-kafka-python #1982), which a fresh
        broker or group does routinely.
        """
        parts = [KafkaTopicPartition(tp.topic, tp.partition) for tp in partitions]
        if not parts:
            return {}
        reader = self._offset_readers.get(group_id)
        if reader is None:
            # read_uncommitted: a read_committed client asks for stable offsets and waits
            # out every pending transactional commit, which an exactly-once stage always has.
            with kafka_errors(f"cannot read offsets of {group_id}"):
                reader = self._offset_readers[group_id] = Consumer(
                    {
                        **self._config.base(),
                        "group.id": group_id,
                        "enable.auto.commit": False,
                        "isolation.level": "read_uncommitted",
                        **self._hooks.settings(stats=False),
                    }
                )
        with kafka_errors(f"cannot read offsets of {group_id}"):
            reader.poll(0)  # serves its logs and errors (it never consumes)
            answer = reader.committed(parts, timeout=self._timeout_s)
        return {
            TopicPartition(p.topic, p.partition): (p.offset if p.offset >= 0 else None)
            for p in answer
        }

    def close(self) -> None:
        """Close the offset readers; a broker that is down on the way out is no error."""
        for reader in self._offset_readers.values():
            with contextlib.suppress(KafkaException, RuntimeError):
                reader.close()
        self._offset_readers.clear()

    def partitions_of(self, topics: Iterable[str]) -> list[TopicPartition]:
        counts = self.partition_counts()
        return [TopicPartition(topic, p) for topic in topics for p in range(counts.get(topic, 0))]


def _wait_all(futures: Mapping[str, object], ok_codes: set[int] | None = None) -> None:
    for name, future in futures.items():
        try:
            future.result()  # type: ignore[attr-defined]
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if ok_codes and isinstance(error, KafkaError) and error.code() in ok_codes:
                continue
            raise to_streams_error(exc, f"topic {name}") from exc
