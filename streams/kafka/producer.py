"""An idempotent (or transactional) producer in our types, with per-record acknowledgements.

Owns the confluent Producer; must not decide outcomes. Acks arrive through `on_ack`, called
from poll()/flush() on the calling thread, never from a librdkafka thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.errors import (
    BrokerUnavailable,
    ClientFailed,
    DeliveryError,
    ProducerFenced,
    ProducerQueueFull,
    RequestRejected,
    StreamsError,
)
from streams.kafka import client_logs
from streams.kafka.client_config import ClientConfig, producer_settings
from streams.kafka.errors import classify, kafka_errors, to_streams_error
from streams.kafka.records import to_theirs
from streams.types import TopicPartition

AckCallback = Callable[[DeliveryError | None], None]
#: What the client itself calls per delivery report: (its error or None, the message).
#: No wrapper frame in between, which the per-record path wants (one Python call per ack,
#: not three); the callee maps an error with ``RecordProducer.delivery_error`` and reads
#: the topic from ``message.topic()``.
ReportCallback = Callable[[KafkaError | None, Message], None]
#: The client's types in a report, for callers that take reports without importing it.
ClientError = KafkaError
ClientMessage = Message
#: Like AckCallback, with where the record landed: (error, partition, offset).
PlacedCallback = Callable[[DeliveryError | None, int, int], None]
Headers = Sequence[tuple[str, bytes]]

#: Retriable transaction calls are retried with this pause, within their timeout.
_TXN_RETRY_PAUSE_S = 0.2

__all__ = [
    "AckCallback",
    "AckWait",
    "ClientError",
    "ClientMessage",
    "PlacedCallback",
    "ProducerQueueFull",
    "RecordProducer",
    "ReportCallback",
]


class AckWait:
    """The broker's answer to one record a caller waits on: give ``on_ack`` to send(),
    flush, then ``problem()`` is None when the record was acknowledged, else the delivery
    error or "no acknowledgement in time". Safe when another thread's flush serves the ack.
    """

    __slots__ = ("_acked", "_errors")

    def __init__(self) -> None:
        self._acked = threading.Event()
        self._errors: list[DeliveryError] = []

    def on_ack(self, error: DeliveryError | None) -> None:
        if error is not None:
            self._errors.append(error)
        self._acked.set()

    def problem(self) -> DeliveryError | str | None:
        if self._errors:
            return self._errors[0]
        return None if self._acked.is_set() else "no acknowledgement in time"


class RecordProducer:
    """One confluent Producer. Records are idempotent and survive a broker outage of at
    least five minutes in the client (message.timeout.ms, see client_config): librdkafka
    retries them itself, and only fatal errors or that timeout reach on_ack.

    send() never blocks: on a full local queue it serves acks once and retries once, then
    raises ProducerQueueFull. queued() and capacity count messages in that queue, so a
    caller can stop dispatching above a high-water mark (in messages, not records: one
    record's fan-out is several messages) and keep polling until it falls.
    """

    def __init__(self, config: ClientConfig, *, transactional_id: str | None = None) -> None:
        settings: dict[str, object] = {
            **producer_settings(config, transactional_id=transactional_id)
        }
        self._hooks = client_logs.hooks(config.cluster_key)
        settings.update(self._hooks.settings())
        #: The local queue's bound in messages (queue.buffering.max.messages).
        self.capacity = int(str(settings["queue.buffering.max.messages"]))
        with kafka_errors("creating a producer"):
            self._producer = Producer(settings)
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
        on_report: ReportCallback | None = None,
    ) -> None:
        """Queue one record; on_ack(None) once the broker has it, on_ack(error) if not
        (on_placed: with its partition and offset; on_report: the client's raw report).

        Never blocks. A full local queue (BufferError) is served by one poll(0) for acks
        and one more try; if still full, ProducerQueueFull is raised at once: the record
        was not queued and on_ack will not be called for it. Other refusals raise a
        DeliveryError (or, if fatal, the mapped StreamsError).
        """
        callback: ReportCallback | None
        if on_report is not None:
            callback = on_report
        elif on_placed is not None:
            callback = _placed(on_placed)
        elif on_ack is not None:
            callback = _delivery(on_ack)
        else:
            callback = None
        for attempt in (1, 2):
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=list(headers) or None,
                    on_delivery=callback,
                )  # fmt: skip
                self.sent_since_commit += 1
                return
            except BufferError:
                if attempt == 2:
                    raise ProducerQueueFull(
                        f"producer queue full ({len(self._producer)} of {self.capacity} "
                        f"messages) while sending to {topic}: back off until acks drain it"
                    ) from None
                self._producer.poll(0)
            except KafkaException as exc:
                raise _send_error(exc, topic) from exc

    @staticmethod
    def delivery_error(error: KafkaError) -> DeliveryError:
        """An on_report callback's error in our type (what on_ack would have been given)."""
        return _delivery_error(error)

    def queued(self) -> int:
        """What waits in the client: messages not yet sent or not yet acknowledged, plus
        delivery reports and client events (logs, stats) not yet served by poll()."""
        return len(self._producer)

    def send_when_room(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        on_ack: AckCallback | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        """send(), waiting up to timeout_s for room in a full queue (serving acks
        meanwhile): for bulk publishers (tests, benchmarks, the demo's load), never for a
        poll loop. ProducerQueueFull if the queue stays full."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.send(topic, value, key=key, on_ack=on_ack)
                return
            except ProducerQueueFull:
                if time.monotonic() >= deadline:
                    raise
                self._producer.poll(0.05)

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery callbacks; returns how many were served."""
        with kafka_errors("serving producer acks"):
            served: int = self._producer.poll(timeout_s)
        return served

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still not acknowledged."""
        with kafka_errors("flushing the producer"):
            remaining: int = self._producer.flush(timeout_s)
        return remaining

    def __len__(self) -> int:
        return len(self._producer)

    # Transactions (exactly-once mode): emits and consumed offsets commit together. Each
    # call retries retriable errors within its timeout, then raises BrokerUnavailable;
    # TransactionAborted when the transaction must be aborted (the caller aborts and
    # rewinds to the last committed offsets); ProducerFenced when the producer is fenced
    # or in a fatal state (stop: another worker owns the transactional id).
    def init_transactions(self, timeout_s: float = 30.0) -> None:
        self._txn_call("initialising transactions", self._producer.init_transactions, timeout_s)

    def begin_transaction(self) -> None:
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise _txn_error(exc, "beginning a transaction") from exc

    def send_offsets(
        self, offsets: dict[TopicPartition, int], group_metadata: object, timeout_s: float = 30.0
    ) -> None:
        parts = to_theirs(offsets, offsets)
        self._txn_call(
            "sending offsets to the transaction",
            lambda left: self._producer.send_offsets_to_transaction(parts, group_metadata, left),
            timeout_s,
        )

    def commit_transaction(self, timeout_s: float = 30.0) -> None:
        self._txn_call("committing the transaction", self._producer.commit_transaction, timeout_s)
        self.sent_since_commit = 0

    def abort_transaction(self, timeout_s: float = 30.0) -> None:
        self._txn_call("aborting the transaction", self._producer.abort_transaction, timeout_s)
        self.sent_since_commit = 0

    def _txn_call(self, what: str, call: Callable[[float], object], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                call(max(0.1, left))
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = (
                    isinstance(error, KafkaError)
                    and error.retriable()
                    and not error.fatal()
                    and not error.txn_requires_abort()
                )
                if not retriable or left <= _TXN_RETRY_PAUSE_S:
                    raise _txn_error(exc, what) from exc
                self._hooks.note(what, error)  # type: ignore[arg-type]
            time.sleep(_TXN_RETRY_PAUSE_S)


def _send_error(exc: KafkaException, topic: str) -> StreamsError:
    mapped = to_streams_error(exc, f"cannot send to {topic}")
    if isinstance(mapped, BrokerUnavailable | RequestRejected):
        # Callers handle a refused send as a DeliveryError; the code says which.
        delivery = DeliveryError(str(mapped))
        delivery.code = mapped.code
        return delivery
    return mapped


def _txn_error(exc: KafkaException, what: str) -> StreamsError:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError) and error.fatal() and classify(error) == "fatal":
        mapped = to_streams_error(error, what)
        if type(mapped) is ClientFailed:
            # A transactional producer in librdkafka's fatal state is as good as fenced.
            fenced = ProducerFenced(f"{what}: {error.str()} ({error.name()}); restart the worker")
            fenced.code = error.name()
            return fenced
        return mapped
    return to_streams_error(exc, what)


def _delivery_error(error: KafkaError) -> DeliveryError:
    failure = DeliveryError(f"{error.str()} ({error.name()})")
    failure.code = error.name()
    return failure


def _delivery(on_ack: AckCallback) -> Callable[[KafkaError | None, Message], None]:
    def deliver(error: KafkaError | None, _message: Message) -> None:
        on_ack(None if error is None else _delivery_error(error))

    return deliver


def _placed(on_placed: PlacedCallback) -> Callable[[KafkaError | None, Message], None]:
    def deliver(error: KafkaError | None, message: Message) -> None:
        partition, offset = message.partition(), message.offset()
        on_placed(
            None if error is None else _delivery_error(error),
            -1 if partition is None else partition,
            -1 if offset is None else offset,
        )

    return deliver
