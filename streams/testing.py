"""Helpers for tests and demos against a real broker: publish task events, read a topic to
the end, run a worker in a thread. Shipped with the library so users' tests can use them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streams.errors import DeliveryError
from streams.events import DeadLetterCodec, DeadLetterRecord, TaskEvent, TaskEventCodec
from streams.kafka.client_config import ClientConfig
from streams.kafka.producer import RecordProducer
from streams.kafka.tail import TopicTail
from streams.runtime.worker import StageWorker
from streams.types import Record


def publish(client: ClientConfig, topic: str, events: Iterable[TaskEvent]) -> int:
    """Send events keyed by run id; returns how many the broker acknowledged."""
    producer = RecordProducer(client)
    codec = TaskEventCodec()
    acked: list[DeliveryError | None] = []
    for event in events:
        producer.send_when_room(
            topic, codec.encode(event, topic=topic), key=event.run_id.encode(), on_ack=acked.append
        )
    producer.flush(30.0)
    errors = [e for e in acked if e is not None]
    if errors:
        raise errors[0]
    return len(acked)


def publish_raw(client: ClientConfig, topic: str, values: Iterable[bytes], key: bytes) -> None:
    producer = RecordProducer(client)
    for value in values:
        producer.send_when_room(topic, value, key=key)
    if producer.flush(30.0):
        raise DeliveryError(f"raw records to {topic} were not acknowledged")


def read_records(
    client: ClientConfig, topic: str, partitions: int, *, expect: int, timeout_s: float = 30.0
) -> list[Record]:
    """Read a topic from the beginning until `expect` records arrived or the time is up."""
    records: list[Record] = []

    def enough(batch: list[Record]) -> bool:
        records.extend(batch)
        return len(records) >= expect

    read_records_until(client, topic, partitions, enough, timeout_s=timeout_s)
    return records


def read_records_until(
    client: ClientConfig,
    topic: str,
    partitions: int,
    done: Callable[[list[Record]], bool],
    *,
    timeout_s: float = 30.0,
) -> bool:
    """Read a topic from the beginning, handing each batch to `done`, until it says True
    (returned) or the time is up (False). For a count of something other than records,
    such as distinct keys when re-deliveries repeat some."""
    tail = TopicTail(client, topic, partitions)
    deadline = time.monotonic() + timeout_s
    try:
        if done([]):
            return True
        while time.monotonic() < deadline:
            if done(tail.poll(1000, 0.2)):
                return True
        return False
    finally:
        tail.close()


def read_events(
    client: ClientConfig, topic: str, partitions: int, *, expect: int, timeout_s: float = 30.0
) -> list[TaskEvent]:
    codec = TaskEventCodec()
    records = read_records(client, topic, partitions, expect=expect, timeout_s=timeout_s)
    return [codec.decode(r.value) for r in records if r.value is not None]


def read_dead_letters(
    client: ClientConfig, topic: str, partitions: int, *, expect: int, timeout_s: float = 30.0
) -> list[DeadLetterRecord]:
    codec = DeadLetterCodec()
    records = read_records(client, topic, partitions, expect=expect, timeout_s=timeout_s)
    return [codec.decode(r.value) for r in records if r.value is not None]


@dataclass
class WorkerThread:
    """A StageWorker running on a thread of its own; `error` holds what run() raised."""

    worker: StageWorker
    thread: threading.Thread = field(init=False)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(
            target=self._run, name=f"worker-{uuid.uuid4().hex[:6]}", daemon=True
        )

    def start(self, ready_timeout_s: float = 30.0) -> WorkerThread:
        self.thread.start()
        if not self.worker.ready.wait(ready_timeout_s):
            raise TimeoutError("worker did not start polling in time")
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        self.worker.stop()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise TimeoutError("worker did not stop in time")

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # handed to the test thread
            self.error = exc
