"""Pure backpressure policy: decisions from numbers, no I/O, Kafka, metrics or config.

Everything public is re-exported here; the submodules are implementation detail.
"""

from streams.policy.dlq_valve import DeadLetterLimit, DeadLetterValve
from streams.policy.downstream import (
    DownstreamLimits,
    DownstreamPressure,
    Metric,
    OnStale,
    PressureSignal,
    PressureVerdict,
)
from streams.policy.expiry import ExpiryReason, expiry_reason, queue_age_s
from streams.policy.hysteresis import HysteresisGate, Thresholds
from streams.policy.lanes import lanes_to_pause, next_lane
from streams.policy.latency import LatencyWindow
from streams.policy.local_bound import PartitionBound
from streams.policy.offsets import OffsetTracker, PartitionOffsets

__all__ = [
    "DeadLetterLimit",
    "DeadLetterValve",
    "DownstreamLimits",
    "DownstreamPressure",
    "ExpiryReason",
    "HysteresisGate",
    "LatencyWindow",
    "Metric",
    "OffsetTracker",
    "OnStale",
    "PartitionBound",
    "PartitionOffsets",
    "PressureSignal",
    "PressureVerdict",
    "Thresholds",
    "expiry_reason",
    "lanes_to_pause",
    "next_lane",
    "queue_age_s",
]
