"""Asks a cluster for metadata: the one readiness and reachability check everything uses.

Owns a short-lived admin client; must not retry (callers loop if they want to wait). It
connects with the caller's client settings (SASL, TLS), so wrong credentials fail here, at
start, with one line saying what to check, not later as a client retrying forever.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streams.errors import AuthorizationFailed, BrokerUnavailable
from streams.kafka.client_config import ClientConfig
from streams.kafka.errors import kafka_errors, to_streams_error

#: librdkafka reports these through its error callback, and keeps reconnecting.
_AUTHENTICATION = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL,
     KafkaError.UNSUPPORTED_SASL_MECHANISM, KafkaError.ILLEGAL_SASL_STATE}
)  # fmt: skip


def wait_for_metadata(
    bootstrap: str, *, timeout_s: float = 10.0, client: ClientConfig | None = None
) -> int:
    """Return the number of brokers once a metadata request succeeds; else BrokerUnavailable,
    or AuthorizationFailed as soon as the cluster refuses `client`'s credentials or TLS."""
    refused: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if error.code() in _AUTHENTICATION:
            refused.append(error)

    settings: dict[str, Any] = {} if client is None else dict(client.base())
    # log_level 0: librdkafka logs every refused connection while the broker boots, and
    # readiness probing expects exactly those failures.
    settings.update({"bootstrap.servers": bootstrap, "log_level": 0, "error_cb": on_error})
    with kafka_errors(f"probing {bootstrap}"):
        admin = AdminClient(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            # Short rounds: a refused login shows in the error callback between them.
            metadata = admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return len(metadata.brokers)
        except KafkaException as exc:
            admin.poll(0)  # serves the error callback
            if refused:
                raise _refused(bootstrap, client, refused[-1]) from None
            if time.monotonic() >= deadline:
                mapped = to_streams_error(exc, f"asking {bootstrap} for metadata")
                if not isinstance(mapped, BrokerUnavailable):
                    raise mapped from exc
                plain = client is None or client.security_protocol == "PLAINTEXT"
                if plain and _accepts_connections(bootstrap):
                    # What a SASL or TLS listener does to a plaintext client: it takes the
                    # connection and closes it (librdkafka says only "transport failure").
                    raise BrokerUnavailable(
                        f"the broker at {bootstrap} accepts connections but closed ours for "
                        f"{timeout_s:.0f} s: if the cluster needs SASL or TLS, set "
                        "security.protocol and the sasl.* / ssl.* settings (--client-config "
                        "file or STREAMS_KAFKA_* variables)"
                    ) from exc
                raise BrokerUnavailable(
                    f"no Kafka broker answered at {bootstrap} within {timeout_s:.0f} s: "
                    f"{exc.args[0]}"
                ) from exc


def _accepts_connections(bootstrap: str) -> bool:
    """Whether the first bootstrap address takes a TCP connection."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def _refused(bootstrap: str, client: ClientConfig | None, error: KafkaError) -> AuthorizationFailed:
    where = client.describe() if client is not None else bootstrap
    if error.code() == KafkaError._SSL:
        check = "ssl.ca.location (the cluster's CA), ssl.certificate.location and ssl.key.location"
    else:
        check = "sasl.mechanism, sasl.username and sasl.password"
    failed = AuthorizationFailed(
        f"the cluster at {where} refused the connection: {error.str()}; check {check} "
        "(--client-config file or STREAMS_KAFKA_* variables)"
    )
    failed.code = error.name()
    return failed
