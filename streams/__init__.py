"""streams: backpressure for AI-agent workflows, built on Apache Kafka.

The public API, in one place; everything else is private to the package:

    from streams import (
        StageWorker, WorkerOptions, Intake, ClientConfig, load_topology,  # run things
        TaskEvent, new_task_event, HandlerContext,                         # handlers
        DeadLetter, Retry, Escalate,                                       # signals
        StreamsError, ConfigError, ToolUnavailable, ToolSaturated, ...     # errors
    )

Names are imported on first use, so `import streams` (and the CLI) stays light: a worker
does not pay for the intake's HTTP stack, nor the intake for the handler runner.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.errors import (
        AuthorizationFailed,
        BrokerUnavailable,
        ConfigError,
        DeadLetterLimitExceeded,
        DeliveryError,
        EmitRejected,
        ProducerFenced,
        SerdeError,
        StreamsError,
        ToolError,
        ToolSaturated,
        ToolTimeout,
        ToolUnavailable,
    )
    from streams.events import DeadLetterRecord, TaskEvent, new_task_event
    from streams.intake.service import Intake
    from streams.kafka.client_config import ClientConfig
    from streams.review import ReviewDesk, ReviewEntry, ReviewNotPending
    from streams.runtime.context import HandlerContext
    from streams.runtime.options import WorkerOptions
    from streams.runtime.worker import StageWorker
    from streams.runtime.worker_report import WorkerStatus
    from streams.signals import DeadLetter, Escalate, HandlerSignal, Retry
    from streams.topology import Topology, load_topology
    from streams.types import LANES, Lane, Record, TopicPartition

_WHERE = {
    "AuthorizationFailed": "streams.errors",
    "BrokerUnavailable": "streams.errors",
    "ConfigError": "streams.errors",
    "DeadLetterLimitExceeded": "streams.errors",
    "DeliveryError": "streams.errors",
    "EmitRejected": "streams.errors",
    "ProducerFenced": "streams.errors",
    "SerdeError": "streams.errors",
    "StreamsError": "streams.errors",
    "ToolError": "streams.errors",
    "ToolSaturated": "streams.errors",
    "ToolTimeout": "streams.errors",
    "ToolUnavailable": "streams.errors",
    "DeadLetterRecord": "streams.events",
    "TaskEvent": "streams.events",
    "new_task_event": "streams.events",
    "Intake": "streams.intake.service",
    "ClientConfig": "streams.kafka.client_config",
    "ReviewDesk": "streams.review",
    "ReviewEntry": "streams.review",
    "ReviewNotPending": "streams.review",
    "HandlerContext": "streams.runtime.context",
    "WorkerOptions": "streams.runtime.options",
    "StageWorker": "streams.runtime.worker",
    "WorkerStatus": "streams.runtime.worker_report",
    "DeadLetter": "streams.signals",
    "Escalate": "streams.signals",
    "HandlerSignal": "streams.signals",
    "Retry": "streams.signals",
    "Topology": "streams.topology",
    "load_topology": "streams.topology",
    "LANES": "streams.types",
    "Lane": "streams.types",
    "Record": "streams.types",
    "TopicPartition": "streams.types",
}

__all__ = [
    "LANES",
    "AuthorizationFailed",
    "BrokerUnavailable",
    "ClientConfig",
    "ConfigError",
    "DeadLetter",
    "DeadLetterLimitExceeded",
    "DeadLetterRecord",
    "DeliveryError",
    "EmitRejected",
    "Escalate",
    "HandlerContext",
    "HandlerSignal",
    "Intake",
    "Lane",
    "ProducerFenced",
    "Record",
    "Retry",
    "ReviewDesk",
    "ReviewEntry",
    "ReviewNotPending",
    "SerdeError",
    "StageWorker",
    "StreamsError",
    "TaskEvent",
    "ToolError",
    "ToolSaturated",
    "ToolTimeout",
    "ToolUnavailable",
    "TopicPartition",
    "Topology",
    "WorkerOptions",
    "WorkerStatus",
    "load_topology",
    "new_task_event",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'streams' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
