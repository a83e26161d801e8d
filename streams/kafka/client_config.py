"""librdkafka settings in one place: defaults per client role, secrets kept out of reprs.

Owns the settings dicts; must not create clients (the log and error hooks every client
gets are added by streams.kafka.client_logs at construction).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

GroupProtocol = Literal["classic", "consumer"]
#: How long an idempotent producer keeps retrying a record before giving it up (6 min).
DELIVERY_TIMEOUT_MS = 360_000
TRANSACTION_TIMEOUT_MS = 10_000
_SECRET_KEYS = ("sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Connection settings shared by every client; `extra` passes through to librdkafka."""

    bootstrap_servers: str
    client_id: str = "streams"
    extra: Mapping[str, str | int | float | bool] = field(default_factory=dict)

    def __repr__(self) -> str:
        shown = {k: ("***" if k in _SECRET_KEYS else v) for k, v in self.extra.items()}
        return (
            f"ClientConfig({self.bootstrap_servers!r}, client_id={self.client_id!r}, extra={shown})"
        )

    def with_extra(self, extra: Mapping[str, str | int | float | bool]) -> ClientConfig:
        """A copy with more librdkafka settings (later keys win)."""
        return ClientConfig(self.bootstrap_servers, self.client_id, {**self.extra, **extra})

    def base(self) -> dict[str, str | int | float | bool]:
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            **self.extra,
        }


def consumer_settings(
    config: ClientConfig,
    group_id: str,
    *,
    group_protocol: GroupProtocol = "classic",
    max_poll_interval_ms: int = 300_000,
) -> dict[str, str | int | float | bool]:
    settings: dict[str, str | int | float | bool] = {
        **config.base(),
        "group.id": group_id,
        "enable.auto.commit": False,
        # We store and commit offsets ourselves, only past contiguous completed work.
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "max.poll.interval.ms": max_poll_interval_ms,
        "group.protocol": group_protocol,
        # Bound librdkafka's own prefetch: our buffer is the bounded queue, not its.
        "queued.max.messages.kbytes": 8192,
        "fetch.wait.max.ms": 100,
        # Exactly-once stages write in transactions; never read what may still abort.
        "isolation.level": "read_committed",
    }
    if group_protocol == "classic":
        settings["partition.assignment.strategy"] = "cooperative-sticky"
        settings["session.timeout.ms"] = 10_000
        settings["heartbeat.interval.ms"] = 1_000
    return settings


def producer_settings(
    config: ClientConfig, *, transactional_id: str | None = None
) -> dict[str, str | int | float | bool]:
    # A record survives a broker outage of at least five minutes: the idempotent producer
    # retries it inside librdkafka until this timeout (callers may set a shorter one, e.g.
    # the intake's ack timeout). A transactional producer cannot wait longer than its
    # transaction (librdkafka refuses message.timeout.ms > transaction.timeout.ms): its
    # records time out into an abortable transaction, which the caller aborts and redoes.
    timeout_ms = TRANSACTION_TIMEOUT_MS if transactional_id is not None else DELIVERY_TIMEOUT_MS
    settings: dict[str, str | int | float | bool] = {
        "message.timeout.ms": timeout_ms,
        # A bounded producer queue, in messages (RecordProducer.capacity); a full one is
        # backpressure (ProducerQueueFull), never a wait. `extra` may change it.
        "queue.buffering.max.messages": 100_000,
        **config.base(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    if transactional_id is not None:
        settings["transactional.id"] = transactional_id
        # A crashed worker's open transaction blocks read_committed readers downstream until
        # it times out; restarting with the same id aborts it at once, this bounds the rest.
        settings["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
    return settings
