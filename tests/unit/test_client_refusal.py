"""A cluster that keeps refusing a running client's credentials (password rotated, user
removed) stops the client after a grace period with one line saying what to check, instead
of librdkafka reconnecting forever; a broker seen up again in between clears it."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import KafkaError

from streams.errors import AuthorizationFailed
from streams.kafka.client_logs import REFUSED_GRACE_S, ClientHooks, ClientLogs

_REFUSED = KafkaError(
    KafkaError._AUTHENTICATION,
    "sasl_ssl://b:9093/bootstrap: SASL authentication error: Authentication failed",
)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_refusals_for_longer_than_the_grace_stop_the_client_with_one_line() -> None:
    clock = _Clock()
    logs = ClientLogs(clock=clock)
    hooks = ClientHooks(logs, "b:9093|alice")
    producer = ClientHooks(logs, "b:9093|alice")  # another client, same cluster and user
    other = ClientHooks(logs, "c:9093|alice")
    hooks.raise_if_refused("consumer of group g")  # nothing refused yet
    producer.on_error(_REFUSED)  # the refusal may reach any of the process's clients
    clock.now += REFUSED_GRACE_S - 1
    hooks.raise_if_refused("consumer of group g")  # within the grace: it may be a rotation
    hooks.on_error(_REFUSED)
    clock.now += 2
    other.raise_if_refused("consumer of group h")  # another cluster is not refused
    with pytest.raises(AuthorizationFailed) as caught:
        hooks.raise_if_refused("consumer of group g")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("consumer of group g: the cluster has refused the credentials")
    assert "Authentication failed" in message
    assert "sasl.username" in message and "sasl.password" in message


def test_a_broker_seen_up_again_clears_the_refusal() -> None:
    clock = _Clock()
    hooks = ClientHooks(ClientLogs(clock=clock), "b:9093|alice")
    hooks.on_error(_REFUSED)
    clock.now += REFUSED_GRACE_S / 2
    hooks.on_stats(json.dumps({"brokers": {"b:9093/1": {"state": "UP"}}}))
    clock.now += REFUSED_GRACE_S
    hooks.raise_if_refused("producer")  # no refusal since it came back
