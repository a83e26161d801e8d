"""Every error streams raises on purpose, in one tree.

StreamsError
├── ConfigError            bad settings or topology; names the file and the key path
│   └── MetricsPortUnavailable  the metrics port is taken or cannot be bound
├── BrokerError            the local broker or the cluster
│   ├── PrerequisiteMissing   java or mvn not found / too old
│   ├── BrokerStartFailed     the broker process died or never answered
│   └── BrokerUnavailable     a cluster that does not answer
├── SerdeError             encoding or decoding a record
│   ├── UnknownSchema         a fingerprint we hold no schema for
│   └── DecodeError           bytes that are not a valid record
├── DeliveryError          the broker did not acknowledge a write
├── EmitRejected           a handler emitted an event that cannot be encoded or routed
└── DeadLetterLimitExceeded  the dead-letter safety valve tripped: stop, not dead-letter all

Messages say what went wrong and what to do, in one line. Signals that steer control flow
are not errors and do not live here.
"""

from __future__ import annotations


class StreamsError(Exception):
    """Base of every error streams raises on purpose."""


class ConfigError(StreamsError):
    def __init__(self, source: str, key_path: str, problem: str) -> None:
        self.source = source
        self.key_path = key_path
        self.problem = problem
        where = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{where}: {problem}")


class BrokerError(StreamsError):
    pass


class PrerequisiteMissing(BrokerError):
    pass


class BrokerStartFailed(BrokerError):
    pass


class BrokerUnavailable(BrokerError):
    pass


class SerdeError(StreamsError):
    pass


class UnknownSchema(SerdeError):
    pass


class DecodeError(SerdeError):
    pass


class DeliveryError(StreamsError):
    pass


class DeadLetterLimitExceeded(StreamsError):
    pass


class MetricsPortUnavailable(ConfigError):
    """The metrics HTTP port is already in use or cannot be bound on its address."""

    def __init__(self, port: int, addr: str, problem: str) -> None:
        self.port = port
        self.addr = addr
        super().__init__("--metrics-port", "", problem)
        # The message is the problem alone: it already names the option to change.
        self.args = (problem,)

    def __str__(self) -> str:
        return self.problem


class EmitRejected(StreamsError):
    """A handler's ctx.emit(...) was refused: the event cannot be encoded, or its lane is
    not allowed (a promotion above the run's lane). The record is dead-lettered
    "emit_error" with this message, whatever the handler does with the exception."""
