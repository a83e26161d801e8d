"""Asks a cluster for metadata: the one readiness and reachability check everything uses.

Owns a short-lived admin client; must not retry (callers loop if they want to wait).
"""

from __future__ import annotations

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.errors import BrokerUnavailable
from streams.kafka.errors import kafka_errors, to_streams_error


def wait_for_metadata(bootstrap: str, *, timeout_s: float = 10.0) -> int:
    """Return the number of brokers once a metadata request succeeds; else BrokerUnavailable."""
    # log_level 0: librdkafka logs every refused connection while the broker boots, and
    # readiness probing expects exactly those failures.
    with kafka_errors(f"probing {bootstrap}"):
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        mapped = to_streams_error(exc, f"asking {bootstrap} for metadata")
        if isinstance(mapped, BrokerUnavailable):
            raise BrokerUnavailable(
                f"no Kafka broker answered at {bootstrap} within {timeout_s:.0f} s: {exc.args[0]}"
            ) from exc
        raise mapped from exc
    return len(metadata.brokers)
