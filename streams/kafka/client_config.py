"""librdkafka settings in one place: defaults per client role, the connection settings a
secured cluster needs (from a client.properties file and STREAMS_KAFKA_* variables), and
secrets kept out of every repr, description and error.

Owns the settings dicts; must not create clients (the log and error hooks every client
gets are added by streams.kafka.client_logs at construction) nor read the environment
(streams.config does). The model is Quix Streams' ConnectionConfig: one small object that
round-trips to librdkafka's own names and never prints a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from streams.config import Settings
from streams.errors import ConfigError

GroupProtocol = Literal["classic", "consumer"]
Value = str | int | float | bool
#: How long an idempotent producer keeps retrying a record before giving it up (6 min).
DELIVERY_TIMEOUT_MS = 360_000
TRANSACTION_TIMEOUT_MS = 10_000
_SECRET_KEYS = frozenset(
    {"sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
     "sasl.oauthbearer.client.secret", "sasl.oauthbearer.config", "ssl_key"}
)  # fmt: skip
_SECRET_WORDS = re.compile(r"password|secret|token|credential")
#: Java client settings people copy from a Java client.properties, and what librdkafka
#: takes instead.
_JAVA_ONLY = {
    "sasl.jaas.config": "librdkafka takes sasl.username and sasl.password (and "
    "sasl.mechanism) instead of a JAAS line",
    "ssl.truststore.location": "librdkafka takes the CA as PEM: ssl.ca.location",
    "ssl.truststore.password": "librdkafka takes the CA as PEM: ssl.ca.location",
    "ssl.truststore.type": "librdkafka takes the CA as PEM: ssl.ca.location",
    "ssl.keystore.type": "librdkafka takes PEM files: ssl.certificate.location and "
    "ssl.key.location (or ssl.keystore.location for a PKCS#12 file)",
}
_LINE = re.compile(r"\s*([^\s=:]+)\s*[=:\s]\s*(.*?)\s*")


class NoClusterNamed(ConfigError):
    """Neither KAFKA_BOOTSTRAP_SERVERS nor a client config names the cluster."""


def is_secret(key: str) -> bool:
    """Whether a librdkafka setting holds a secret (never printed nor logged)."""
    return key in _SECRET_KEYS or _SECRET_WORDS.search(key) is not None


def redacted(settings: Mapping[str, object]) -> dict[str, object]:
    """`settings` with every secret's value replaced by ***, for printing."""
    return {k: ("***" if is_secret(k) else v) for k, v in settings.items()}


def parse_client_properties(text: str, source: str) -> dict[str, str]:
    """A client.properties file's settings (librdkafka's names): `key=value`, `key: value`
    or `key value` lines, `#` and `!` comments. ConfigError (file, line) on a line without
    a key or a Java-only setting; the message never quotes a value."""
    settings: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        match = _LINE.fullmatch(line) or re.fullmatch(r"\s*([^\s=:]+)\s*", line)
        if match is None:
            raise ConfigError(source, f"line {number}", "expected key=value (no key found)")
        key = match.group(1)
        value = match.group(2) if match.lastindex == 2 else ""
        if key in _JAVA_ONLY:
            raise ConfigError(
                source, f"line {number}", f"{key} is a Java client setting: {_JAVA_ONLY[key]}"
            )
        settings[key] = value
    return settings


def read_client_properties(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            str(path), "", f"cannot read the client config file: {exc.strerror or exc}"
        ) from None
    return parse_client_properties(text, str(path))


def build_client_config(
    settings: Settings, *, client_id: str, file: Path | None = None, bootstrap: str | None = None
) -> ClientConfig:
    """The connection settings of one client: the client.properties file (`file`, from
    --client-config, else STREAMS_CLIENT_CONFIG), then STREAMS_KAFKA_* over it. The
    cluster: `bootstrap` if given, else KAFKA_BOOTSTRAP_SERVERS, else the settings'
    bootstrap.servers; ConfigError if none (callers that start the local broker pass its
    address)."""
    chosen = file or settings.client_config_file
    merged: dict[str, str] = {} if chosen is None else read_client_properties(chosen)
    merged.update(settings.kafka_client_settings)
    from_settings = merged.pop("bootstrap.servers", None)
    merged.pop("client.id", None)  # each client names itself (streams-<stage>, ...)
    servers = bootstrap or settings.bootstrap_servers or from_settings
    if not servers:
        raise NoClusterNamed(
            str(chosen or "STREAMS_KAFKA_*"), "bootstrap.servers",
            "no cluster named: set KAFKA_BOOTSTRAP_SERVERS or bootstrap.servers",
        )  # fmt: skip
    return ClientConfig(servers, client_id, merged)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Connection settings shared by every client; `extra` passes through to librdkafka
    (security.protocol, sasl.*, ssl.* ...). Its repr and describe() hide secrets."""

    bootstrap_servers: str
    client_id: str = "streams"
    extra: Mapping[str, Value] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"ClientConfig({self.bootstrap_servers!r}, client_id={self.client_id!r}, "
            f"extra={redacted(self.extra)})"
        )

    __str__ = __repr__

    @classmethod
    def from_librdkafka(cls, settings: Mapping[str, Value]) -> ClientConfig:
        """The inverse of as_librdkafka(): bootstrap.servers and client.id, the rest extra."""
        rest = dict(settings)
        servers = rest.pop("bootstrap.servers", None)
        if not isinstance(servers, str) or not servers:
            raise ConfigError("kafka client settings", "bootstrap.servers", "is required")
        client_id = rest.pop("client.id", "streams")
        return cls(servers, str(client_id), rest)

    def as_librdkafka(self) -> dict[str, Value]:
        """librdkafka's settings for these connection settings (what base() is)."""
        return self.base()

    @property
    def cluster_key(self) -> str:
        """Which cluster and identity the settings connect as (no secret in it): clients
        with the same key share what the cluster says about their credentials."""
        return f"{self.bootstrap_servers}|{self.extra.get('sasl.username', '')}"

    @property
    def security_protocol(self) -> str:
        return str(self.extra.get("security.protocol", "PLAINTEXT")).upper()

    def describe(self) -> str:
        """One line for status output and errors: where, how secured; never a secret."""
        text = f"{self.bootstrap_servers} over {self.security_protocol}"
        mechanism = self.extra.get("sasl.mechanism", self.extra.get("sasl.mechanisms"))
        if self.security_protocol.startswith("SASL"):
            user = self.extra.get("sasl.username")
            as_user = f" as {user}" if user else ""
            text += f" ({mechanism or 'GSSAPI'}{as_user})"
        ca = self.extra.get("ssl.ca.location")
        if ca:
            text += f", CA {ca}"
        if self.extra.get("ssl.certificate.location"):
            text += f", client certificate {self.extra['ssl.certificate.location']}"
        return text

    def with_extra(self, extra: Mapping[str, Value]) -> ClientConfig:
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
        # With that small a queue, librdkafka's default wait of 1000 ms before fetching a
        # partition again once the queue is full starved stages paused on their partition
        # bounds (benchmarks.processes, one process: 768 events/s at 1000, 1,815 at 10).
        "fetch.queue.backoff.ms": 10,
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
