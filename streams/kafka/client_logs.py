"""Routes every Kafka client's logs, error events and broker states through Python logging,
deduplicated and rate-limited by one process-wide ClientLogGate.

Owns the librdkafka `logger`, `error_cb` and `stats_cb` hooks of each client; must not
decide anything about records. librdkafka's own logger would print every reconnect attempt
to stderr (an outage once wrote 2.6 MB in 100 s); through the gate it is one line per
broker state change plus a summary a minute.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

from streams.errors import AuthorizationFailed
from streams.policy.log_limit import ClientLogGate, Level, Line, split_broker

log = logging.getLogger("streams.kafka.client")

#: librdkafka reports broker states this often (the only way it says a broker is back).
STATS_INTERVAL_MS = 5000
#: A running client whose credentials the cluster refuses this long stops (one line):
#: librdkafka itself reconnects forever. The grace rides out a password rotation.
REFUSED_GRACE_S = 30.0
_REFUSALS = frozenset(
    {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL}
)
_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}


class ClientLogs:
    """The gate plus a lock (hooks run on librdkafka's and our polling threads)."""

    def __init__(
        self, gate: ClientLogGate | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._gate = gate or ClientLogGate()
        self._clock = clock
        self._lock = threading.Lock()
        # Refused credentials, by cluster (ClientConfig.cluster_key): since when, and the
        # last error. Shared by the process's clients of that cluster, because the one that
        # meets the refusal (a producer, an admin) is not always the one that polls (the
        # consumer of a worker whose partitions are paused may not reconnect at all).
        self._refused: dict[str, tuple[float, str]] = {}
        self._logger = logging.Logger("streams.kafka.librdkafka")
        self._logger.addHandler(_GateHandler(self))

    @property
    def logger(self) -> logging.Logger:
        """The Logger handed to librdkafka (config key `logger`)."""
        return self._logger

    def client_line(self, facility: str, message: str, level: int) -> None:
        name: Level = (
            "error" if level >= logging.ERROR else "warning" if level >= logging.WARNING else "info"
        )
        with self._lock:
            lines = self._gate.line(facility, message, self._clock(), name)
        _emit(lines)

    def broker_up(self, broker: str) -> None:
        with self._lock:
            lines = self._gate.broker_up(broker, self._clock())
        _emit(lines)

    def refused(self, cluster: str, text: str) -> None:
        with self._lock:
            since = self._refused.get(cluster, (self._clock(), ""))[0]
            self._refused[cluster] = (since, text)

    def reachable(self, cluster: str) -> None:
        with self._lock:
            self._refused.pop(cluster, None)

    def refused_for(self, cluster: str) -> tuple[float, str] | None:
        """How long `cluster` has refused credentials (seconds), and the last error."""
        with self._lock:
            entry = self._refused.get(cluster)
            return None if entry is None else (self._clock() - entry[0], entry[1])

    def tick(self) -> None:
        with self._lock:
            lines = self._gate.tick(self._clock())
        _emit(lines)


def refusal_message(what: str, seconds: float, last_error: str) -> str:
    """The one line a process stops with when the cluster refuses its credentials."""
    return (
        f"{what}: the cluster has refused the credentials for {seconds:.0f} s "
        f"({last_error}); check sasl.mechanism, sasl.username and sasl.password, or "
        "ssl.ca.location and the client certificate (--client-config file or "
        "STREAMS_KAFKA_* variables)"
    )


class ClientHooks:
    """The hooks of one client; `all_brokers_down` says whether, as far as this client
    knows, no broker answers (set by _ALL_BROKERS_DOWN, cleared by a broker seen UP).
    raise_if_refused() (called by the client's owner after each poll) raises
    AuthorizationFailed once the cluster has refused its credentials or TLS for
    REFUSED_GRACE_S with no broker seen UP since."""

    def __init__(self, logs: ClientLogs, cluster: str = "") -> None:
        self._logs = logs
        self._cluster = cluster
        self.all_brokers_down = False

    def settings(self, *, stats: bool = True) -> dict[str, Any]:
        """Config entries for the client. librdkafka hands logs, errors and stats to Python
        only inside the client's poll/consume/flush: a client that is not polled regularly
        must call poll(0) itself, and should take stats=False (they would queue up)."""
        settings: dict[str, Any] = {"logger": self._logs.logger, "error_cb": self.on_error}
        if stats:
            settings["stats_cb"] = self.on_stats
            settings["statistics.interval.ms"] = STATS_INTERVAL_MS
        return settings

    def raise_if_refused(self, what: str) -> None:
        refused = self._logs.refused_for(self._cluster)
        if refused is None or refused[0] < REFUSED_GRACE_S:
            return
        failed = AuthorizationFailed(refusal_message(what, *refused))
        failed.code = "_AUTHENTICATION"
        raise failed

    def on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.all_brokers_down = True
        if error.code() in _REFUSALS:
            self._logs.refused(self._cluster, error.str())
        level = logging.ERROR if error.fatal() else logging.WARNING
        if error.fatal():
            log.error("kafka client fatal error: %s (%s)", error.str(), error.name())
            return
        self._logs.client_line(error.name(), error.str(), level)

    def note(self, what: str, error: KafkaError) -> None:
        """A transient error one of our calls met (a commit deferred, a reading skipped):
        through the gate too, so an outage prints it once, not once per call."""
        self._logs.client_line(error.name(), f"{what}: {error.str()}", logging.WARNING)

    def on_stats(self, stats_json: str) -> None:
        try:
            brokers = json.loads(stats_json).get("brokers", {})
        except ValueError:
            return
        for name, broker in brokers.items():
            if broker.get("state") == "UP":
                self.all_brokers_down = False
                self._logs.reachable(self._cluster)
                address, _ = split_broker(f"{name}: up")
                if address is not None:
                    self._logs.broker_up(address)
        self._logs.tick()


class _GateHandler(logging.Handler):
    def __init__(self, logs: ClientLogs) -> None:
        super().__init__()
        self._logs = logs

    def emit(self, record: logging.LogRecord) -> None:
        # confluent-kafka logs ("%s [%s] %s", facility, client name, message).
        args = record.args
        if isinstance(args, tuple) and len(args) == 3:
            facility, _client, message = (str(a) for a in args)
        else:
            facility, message = "LOG", record.getMessage()
        self._logs.client_line(facility, message, record.levelno)


def _emit(lines: list[Line]) -> None:
    for level, text in lines:
        log.log(_LEVELS[level], "%s", text)


#: One gate per process: six clients of a worker seeing the same broker go down print once.
PROCESS_LOGS = ClientLogs()


def hooks(cluster: str = "") -> ClientHooks:
    """Hooks for a new client of `cluster` (ClientConfig.cluster_key), reporting into the
    process-wide gate."""
    return ClientHooks(PROCESS_LOGS, cluster)
