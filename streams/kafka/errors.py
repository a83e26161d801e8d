"""Maps confluent-kafka's errors onto the StreamsError tree: the one place that knows which
client errors are transient, which need a transaction abort and which are fatal.

Owns the classification and a capped backoff for retrying transient ones; must not log,
sleep or retry by itself (callers decide, with the Backoff if they like).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from confluent_kafka import KafkaError, KafkaException

from streams.errors import (
    AuthorizationFailed,
    BrokerUnavailable,
    ClientConfigInvalid,
    ClientFailed,
    ProducerFenced,
    RequestRejected,
    StreamsError,
    TransactionAborted,
)

#: transient: retry with capped backoff; abort: abort the transaction, rewind, retry;
#: fatal: stop (config, authorisation, fenced, librdkafka's fatal state); rejected: this
#: request was refused, retrying it will not help, the client is fine.
ErrorKind = Literal["transient", "abort", "fatal", "rejected"]

_FENCED = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTION_COORDINATOR_FENCED,
    }
)
_AUTH = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.DELEGATION_TOKEN_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
    }
)
_CONFIG = frozenset({KafkaError._INVALID_ARG, KafkaError.INVALID_CONFIG})
# What a broker restart, a leader move or a coordinator move looks like from a client.
# UNKNOWN_TOPIC_OR_PART and _UNKNOWN_PARTITION are here because they are what a client
# says while its metadata is being refreshed after a restart (the topic still exists).
_TRANSIENT = frozenset(
    {
        KafkaError._WAIT_COORD,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError._TIMED_OUT,
        KafkaError._TIMED_OUT_QUEUE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._FAIL,
        KafkaError._RESOLVE,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._NODE_UPDATE,
        KafkaError._WAIT_CACHE,
        KafkaError._IN_PROGRESS,
        KafkaError._PREV_IN_PROGRESS,
        KafkaError._RETRY,
        KafkaError._ISR_INSUFF,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._MAX_POLL_EXCEEDED,
        KafkaError._ASSIGNMENT_LOST,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.REPLICA_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,  # NOT_LEADER_OR_FOLLOWER in Kafka's naming
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.NOT_CONTROLLER,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.KAFKA_STORAGE_ERROR,
        KafkaError.OFFSET_NOT_AVAILABLE,
        KafkaError.UNSTABLE_OFFSET_COMMIT,
        KafkaError.FETCH_SESSION_ID_NOT_FOUND,
        KafkaError.CONCURRENT_TRANSACTIONS,
        KafkaError.THROTTLING_QUOTA_EXCEEDED,
        # The group is changing (classic generations, KIP-848 member epochs).
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.STALE_MEMBER_EPOCH,
        KafkaError.FENCED_MEMBER_EPOCH,
    }
)


def classify(error: KafkaError) -> ErrorKind:
    """Fenced, authorisation and configuration codes are fatal whatever the flags say;
    then librdkafka's own flags (fatal, txn_requires_abort, retriable); then the code."""
    code = error.code()
    if code in _FENCED or code in _AUTH or code in _CONFIG or error.fatal():
        return "fatal"
    if error.txn_requires_abort():
        return "abort"
    if code in _TRANSIENT or error.retriable():
        return "transient"
    return "rejected"


def to_streams_error(error: KafkaError | KafkaException, what: str) -> StreamsError:
    """The most specific StreamsError for a client error; `what` names the operation
    ("commit for group g") and leads the one-line message."""
    if isinstance(error, KafkaException):
        inner = error.args[0] if error.args else None
        if not isinstance(inner, KafkaError):
            return ClientFailed(f"{what}: {error}")
        error = inner
    code = error.code()
    detail = f"{what}: {error.str()} ({error.name()})"
    mapped: StreamsError
    if code in _FENCED:
        mapped = ProducerFenced(
            f"{detail}; another worker with the same transactional id took over: stop this one"
        )
    elif code in _AUTH:
        mapped = AuthorizationFailed(f"{detail}; check the credentials and ACLs")
    elif code in _CONFIG:
        mapped = ClientConfigInvalid(f"{detail}; fix the client setting")
    elif error.fatal():
        mapped = ClientFailed(f"{detail}; the client cannot continue: restart the worker")
    elif error.txn_requires_abort():
        mapped = TransactionAborted(f"{detail}; abort the transaction and process again")
    elif code in _TRANSIENT or error.retriable():
        mapped = BrokerUnavailable(f"{detail}; retrying")
    else:
        mapped = RequestRejected(detail)
    mapped.code = error.name()
    return mapped


@contextmanager
def kafka_errors(what: str) -> Iterator[None]:
    """Re-raise a KafkaException inside the block as its StreamsError (``from`` it)."""
    try:
        yield
    except KafkaException as exc:
        raise to_streams_error(exc, what) from exc


class Backoff:
    """Capped exponential backoff for a call that keeps failing transiently: after each
    failure wait initial_s, then twice that, up to cap_s; a success resets it. Time is
    passed in (monotonic seconds), so it is tested without sleeping."""

    def __init__(self, *, initial_s: float = 0.5, cap_s: float = 10.0) -> None:
        self._initial_s = initial_s
        self._cap_s = cap_s
        self.wait_s = 0.0
        self._next_at = 0.0

    def ready(self, now: float) -> bool:
        return now >= self._next_at

    def failed(self, now: float) -> None:
        self.wait_s = min(self._cap_s, self.wait_s * 2 if self.wait_s else self._initial_s)
        self._next_at = now + self.wait_s

    def succeeded(self) -> None:
        self.wait_s = 0.0
        self._next_at = 0.0
