"""Every error streams raises on purpose, in one tree.

StreamsError                 .retriable: the same call may succeed later
├── ConfigError            bad settings or topology; names the file and the key path
│   ├── ClientConfigInvalid   librdkafka refused a client setting (fatal)
│   └── MetricsPortUnavailable  the metrics port is taken or cannot be bound
├── BrokerError            the local broker or the cluster
│   ├── PrerequisiteMissing   java or mvn not found / too old
│   ├── BrokerStartFailed     the broker process died or never answered
│   ├── BrokerUnavailable     transient: no coordinator/leader/broker, timed out (retriable)
│   │   └── OutcomeUnknown       a write was sent but not acknowledged: it may or may not
│   │                            have happened (the intake: retry with the same key)
│   ├── AuthorizationFailed   fatal: credentials or ACLs refused (authn or authz)
│   ├── RequestRejected       the cluster refused one request; retrying will not help,
│   │                         the client is fine (bad partition count, record too large)
│   └── ClientFailed          fatal: the client is in librdkafka's fatal state; recreate it
│       └── ProducerFenced       a newer producer with our transactional id took over
├── SerdeError             encoding or decoding a record
│   ├── UnknownSchema         a fingerprint we hold no schema for
│   └── DecodeError           bytes that are not a valid record
├── EmitRejected           a handler emitted an event that cannot be encoded or routed
├── DeliveryError          the broker did not acknowledge a write
│   ├── ProducerQueueFull     the local producer queue is full: backpressure (retriable)
│   └── TransactionAborted    the open transaction must be aborted, its input rewound and
│                             processed again (retriable after the abort)
├── DeadLetterLimitExceeded  the dead-letter safety valve tripped: stop, not dead-letter all
├── ProcessGroupFailed     `worker --processes N`: a child failed, kept dying, or hung
│                          (streams.runtime.process_group)
└── ToolError              a call through ctx.tool(name) was refused or did not finish
    ├── ToolUnavailable       the tool's breaker is open: the call was not made (retriable)
    ├── ToolSaturated         no slot or rate token within max_wait_s: not made (retriable)
    └── ToolTimeout           the call ran past the tool's timeout_s (also a TimeoutError)

Client errors from confluent-kafka are mapped onto this tree in one place,
streams.kafka.errors; errors that came from the broker carry `code`, librdkafka's name for
it (e.g. "_WAIT_COORD"). Messages say what went wrong and what to do, in one line. Signals
that steer control flow are not errors and do not live here.
"""

from __future__ import annotations

from typing import ClassVar


class StreamsError(Exception):
    """Base of every error streams raises on purpose."""

    #: True when the same call may succeed later (TransactionAborted: after the abort).
    retriable: ClassVar[bool] = False
    #: librdkafka's name of the client error behind this one, when there was one.
    code: str | None = None


class ConfigError(StreamsError):
    def __init__(self, source: str, key_path: str, problem: str) -> None:
        self.source = source
        self.key_path = key_path
        self.problem = problem
        where = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{where}: {problem}")


class ClientConfigInvalid(ConfigError):
    def __init__(self, problem: str) -> None:
        super().__init__("kafka client settings", "", problem)


class MetricsPortUnavailable(ConfigError):
    """The metrics HTTP port is already in use or cannot be bound on its address."""

    def __init__(self, port: int, addr: str, problem: str) -> None:
        self.port = port
        self.addr = addr
        super().__init__("--metrics-port", "", problem)
        # The message is the problem alone: it already names the option to change.
        self.args = (problem,)


class BrokerError(StreamsError):
    pass


class PrerequisiteMissing(BrokerError):
    pass


class BrokerStartFailed(BrokerError):
    pass


class BrokerUnavailable(BrokerError):
    retriable = True


class OutcomeUnknown(BrokerUnavailable):
    """A submission's writes were sent but not all acknowledged in time: the run may
    exist or not. Not a refusal: `run_id` is the run it is (or would be); retrying with the
    same tenant and idempotency key collapses into it if it exists."""

    def __init__(self, message: str, *, run_id: str, retry_after_s: float) -> None:
        self.run_id = run_id
        self.retry_after_s = retry_after_s
        super().__init__(message)


class AuthorizationFailed(BrokerError):
    pass


class RequestRejected(BrokerError):
    pass


class ClientFailed(BrokerError):
    pass


class ProducerFenced(ClientFailed):
    pass


class SerdeError(StreamsError):
    pass


class UnknownSchema(SerdeError):
    pass


class DecodeError(SerdeError):
    pass


class DeliveryError(StreamsError):
    pass


class ProducerQueueFull(DeliveryError):
    """Raised at once (never after a wait) when the producer's local queue is full: stop
    dispatching, keep polling for acks, send again once RecordProducer.queued() falls."""

    retriable = True


class TransactionAborted(DeliveryError):
    retriable = True


class DeadLetterLimitExceeded(StreamsError):
    pass


class EmitRejected(StreamsError):
    """A handler's ctx.emit(...) was refused: the event cannot be encoded, or its lane is
    not allowed (a promotion above the run's lane). The record is dead-lettered
    "emit_error" with this message, whatever the handler does with the exception."""


class ToolError(StreamsError):
    """A call through ctx.tool(name) was refused or did not finish. `tool` names it."""

    def __init__(self, tool: str, message: str) -> None:
        self.tool = tool
        super().__init__(message)


class ToolUnavailable(ToolError):
    """The tool's circuit breaker is open (or half-open with every probe taken, and none
    came back in time): the call was not made. `retry_after_s`: when the breaker next
    probes, if known. Catch it to take a fallback path; uncaught, the stage's policy decides
    (today: dead letter "tool_unavailable")."""

    retriable = True

    def __init__(self, tool: str, retry_after_s: float | None) -> None:
        self.retry_after_s = retry_after_s
        when = "" if retry_after_s is None else f"; it probes again in {retry_after_s:.1f} s"
        super().__init__(tool, f"tool {tool!r} is unavailable: its circuit breaker is open{when}")


class ToolSaturated(ToolError):
    """No concurrency slot or rate token came within the tool's max_wait_s: the call was
    not made. Catch it to take a fallback path; uncaught: dead letter "tool_saturated"."""

    retriable = True

    def __init__(self, tool: str, waited_s: float, waiting_for: str) -> None:
        self.waited_s = waited_s
        self.waiting_for = waiting_for
        super().__init__(
            tool,
            f"tool {tool!r} is saturated: no {waiting_for} within {waited_s:.2f} s "
            "(its max_wait_s)",
        )


class ToolTimeout(ToolError, TimeoutError):
    """The call ran past the tool's timeout_s and was cancelled (async forms); a blocking
    call cannot be cancelled and is only counted as a timeout. Uncaught: "tool_timeout"."""

    def __init__(self, tool: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(tool, f"tool {tool!r} call timed out after {timeout_s:g} s")
