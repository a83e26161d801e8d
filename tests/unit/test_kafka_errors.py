"""The one mapping from confluent-kafka errors to StreamsErrors, with real KafkaError objects
(constructing KafkaError(code) is confluent's own type, not a stand-in)."""

from __future__ import annotations

import socket
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.errors import (
    AuthorizationFailed,
    BrokerUnavailable,
    ClientConfigInvalid,
    ClientFailed,
    ConfigError,
    ProducerFenced,
    ProducerQueueFull,
    RequestRejected,
    StreamsError,
    TransactionAborted,
)
from streams.kafka.client_config import ClientConfig
from streams.kafka.errors import Backoff, classify, kafka_errors, to_streams_error
from streams.kafka.producer import RecordProducer

TRANSIENT = [
    KafkaError._WAIT_COORD,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.NOT_LEADER_FOR_PARTITION,  # NOT_LEADER_OR_FOLLOWER in Kafka's own naming
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._MSG_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError._RESOLVE,
    KafkaError.REBALANCE_IN_PROGRESS,
]


@pytest.mark.parametrize("code", TRANSIENT)
def test_transient_errors_map_to_broker_unavailable(code: int) -> None:
    error = KafkaError(code)
    assert classify(error) == "transient"
    mapped = to_streams_error(error, "reading offsets")
    assert type(mapped) is BrokerUnavailable
    assert mapped.retriable
    assert mapped.code == error.name()
    assert mapped.args[0].startswith("reading offsets: ")
    assert "\n" not in str(mapped)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (KafkaError._INVALID_ARG, ClientConfigInvalid),
        (KafkaError.INVALID_CONFIG, ClientConfigInvalid),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, AuthorizationFailed),
        (KafkaError.GROUP_AUTHORIZATION_FAILED, AuthorizationFailed),
        (KafkaError.CLUSTER_AUTHORIZATION_FAILED, AuthorizationFailed),
        (KafkaError.SASL_AUTHENTICATION_FAILED, AuthorizationFailed),
        (KafkaError._AUTHENTICATION, AuthorizationFailed),
        (KafkaError._FENCED, ProducerFenced),
        (KafkaError.PRODUCER_FENCED, ProducerFenced),
        (KafkaError.INVALID_PRODUCER_EPOCH, ProducerFenced),
        (KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, ProducerFenced),
    ],
)
def test_fatal_errors_map_to_their_own_class(code: int, kind: type[StreamsError]) -> None:
    error = KafkaError(code)
    assert classify(error) == "fatal"
    mapped = to_streams_error(error, "committing")
    assert type(mapped) is kind
    assert not mapped.retriable


def test_client_config_invalid_is_a_config_error() -> None:
    assert isinstance(to_streams_error(KafkaError(KafkaError._INVALID_ARG), "x"), ConfigError)


def test_flags_decide_over_codes() -> None:
    # A retriable code flagged fatal by librdkafka (idempotent producer state lost) is fatal.
    fatal = KafkaError(KafkaError._TIMED_OUT, "lost", fatal=True)
    assert classify(fatal) == "fatal"
    assert type(to_streams_error(fatal, "x")) is ClientFailed
    abortable = KafkaError(KafkaError._TIMED_OUT, "abort me", txn_requires_abort=True)
    assert classify(abortable) == "abort"
    aborted = to_streams_error(abortable, "committing the transaction")
    assert isinstance(aborted, TransactionAborted) and aborted.retriable
    retriable = KafkaError(KafkaError.INVALID_RECORD, "try again", retriable=True)
    assert classify(retriable) == "transient"
    # Fenced is fenced even when the transaction would also need an abort.
    fenced = KafkaError(KafkaError.PRODUCER_FENCED, "x", txn_requires_abort=True)
    assert type(to_streams_error(fenced, "x")) is ProducerFenced


def test_other_refusals_are_rejected_not_transient() -> None:
    error = KafkaError(KafkaError.INVALID_PARTITIONS)
    assert classify(error) == "rejected"
    mapped = to_streams_error(error, "growing topic t")
    assert type(mapped) is RequestRejected
    assert not mapped.retriable


def test_kafka_errors_wraps_exceptions_and_keeps_the_cause() -> None:
    cause = KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    with (
        pytest.raises(BrokerUnavailable, match="^listing topics: ") as info,
        kafka_errors("listing topics"),
    ):
        raise cause
    assert info.value.__cause__ is cause
    # A KafkaException carrying something other than a KafkaError still maps.
    with pytest.raises(StreamsError), kafka_errors("odd"):
        raise KafkaException("not a KafkaError")


def test_backoff_doubles_to_its_cap_and_resets_on_success() -> None:
    backoff = Backoff(initial_s=0.5, cap_s=10.0)
    assert backoff.ready(0.0)
    waits = []
    now = 0.0
    for _ in range(8):
        backoff.failed(now)
        waits.append(backoff.wait_s)
        assert not backoff.ready(now + backoff.wait_s - 0.01)
        now += backoff.wait_s
        assert backoff.ready(now)
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    backoff.succeeded()
    assert backoff.ready(now) and backoff.wait_s == 0.0
    backoff.failed(now)
    assert backoff.wait_s == 0.5


def test_full_producer_queue_raises_at_once_and_reports_its_fill() -> None:
    """A full local queue is backpressure: ProducerQueueFull at once, never a wait."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed: nothing is ever acknowledged
    config = ClientConfig(f"127.0.0.1:{port}", extra={"queue.buffering.max.messages": 2})
    producer = RecordProducer(config)
    assert producer.capacity == 2
    producer.send("t", b"1")
    producer.send("t", b"2")
    assert producer.queued() >= 2  # client events (logs, stats) may wait there too
    started = time.monotonic()
    with pytest.raises(ProducerQueueFull, match="2 of 2 messages") as info:
        producer.send("t", b"3")
    assert time.monotonic() - started < 1.0
    assert info.value.retriable
    assert producer.queued() >= 2
