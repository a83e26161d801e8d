"""An idempotent (or transactional) producer in our types, with per-record acknowledgements.

Owns the confluent Producer; must not decide outcomes. Acks arrive through `on_ack`, called
from poll()/flush() on the calling thread, never from a librdkafka thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.errors import DeliveryError
from streams.kafka.client_config import ClientConfig, producer_settings
from streams.kafka.records import to_theirs
from streams.types import TopicPartition

AckCallback = Callable[[DeliveryError | None], None]
#: Like AckCallback, with where the record landed: (error, partition, offset).
PlacedCallback = Callable[[DeliveryError | None, int, int], None]
Headers = Sequence[tuple[str, bytes]]


class ProducerQueueFull(DeliveryError):
    """The local producer queue stayed full past the wait: treat as backpressure."""


class RecordProducer:
    def __init__(self, config: ClientConfig, *, transactional_id: str | None = None) -> None:
        self._producer = Producer(producer_settings(config, transactional_id=transactional_id))
        self.transactional = transactional_id is not None
        self.sent_since_commit = 0

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers = (),
        on_ack: AckCallback | None = None,
        on_placed: PlacedCallback | None = None,
        max_wait_s: float = 5.0,
    ) -> None:
        """Queue one record; on_ack(None) once the broker has it, on_ack(error) if not.

        A full local queue (BufferError) is served by polling for acks until there is room,
        up to max_wait_s; past that ProducerQueueFull is raised for the caller to back off.
        """
        if on_placed is not None:
            callback = _placed(on_placed)
        elif on_ack is not None:
            callback = _delivery(on_ack)
        else:
            callback = None
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=list(headers) or None,
                    on_delivery=callback,
                )  # fmt: skip
                self.sent_since_commit += 1
                return
            except BufferError:
                if deadline is None:
                    deadline = time.monotonic() + max_wait_s
                if time.monotonic() >= deadline:
                    raise ProducerQueueFull(
                        f"producer queue full for {max_wait_s:.0f} s while sending to {topic}"
                    ) from None
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise DeliveryError(f"cannot send to {topic}: {exc.args[0].str()}") from exc

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery callbacks; returns how many were served."""
        served: int = self._producer.poll(timeout_s)
        return served

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still not acknowledged."""
        remaining: int = self._producer.flush(timeout_s)
        return remaining

    def __len__(self) -> int:
        return len(self._producer)

    # Transactions (exactly-once mode): emits and consumed offsets commit together.
    def init_transactions(self, timeout_s: float = 30.0) -> None:
        self._producer.init_transactions(timeout_s)

    def begin_transaction(self) -> None:
        self._producer.begin_transaction()

    def send_offsets(
        self, offsets: dict[TopicPartition, int], group_metadata: object, timeout_s: float = 30.0
    ) -> None:
        self._producer.send_offsets_to_transaction(
            to_theirs(offsets, offsets), group_metadata, timeout_s
        )

    def commit_transaction(self, timeout_s: float = 30.0) -> None:
        try:
            self._producer.commit_transaction(timeout_s)
        except KafkaException as exc:
            raise DeliveryError(f"transaction commit failed: {exc.args[0].str()}") from exc
        self.sent_since_commit = 0

    def abort_transaction(self, timeout_s: float = 30.0) -> None:
        self._producer.abort_transaction(timeout_s)


def _delivery(on_ack: AckCallback) -> Callable[[KafkaError | None, Message], None]:
    def deliver(error: KafkaError | None, _message: Message) -> None:
        on_ack(None if error is None else DeliveryError(error.str()))

    return deliver


def _placed(on_placed: PlacedCallback) -> Callable[[KafkaError | None, Message], None]:
    def deliver(error: KafkaError | None, message: Message) -> None:
        partition, offset = message.partition(), message.offset()
        on_placed(
            None if error is None else DeliveryError(error.str()),
            -1 if partition is None else partition,
            -1 if offset is None else offset,
        )

    return deliver
