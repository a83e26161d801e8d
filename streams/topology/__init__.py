"""Topology files: load one workflow's YAML, validate it, hand out frozen objects.

Owns the file format (one strict model for the whole file, the `intake:` section
included), its validation and every name derived from it (topics, consumer groups, lane
routes). Must not talk to Kafka or call handlers: it only imports them to prove they
exist. Every mistake surfaces as one ConfigError naming the file, key path and line.

Modules (private; everything public is re-exported here):
  _model    the file's shape: keys, types, defaults, single-key bounds (pydantic)
  _build    checks spanning keys or stages; the frozen objects of _objects
  _intake   IntakeConfig and the intake section's checks against the workflow
  _load     YAML in, first mistake out as ConfigError
  _errors   wording: key paths, did-you-mean, line numbers
  _tools    ToolSpec and the tools section's checks (tools the stages name, error classes)
  _retry    a stage's RetryPolicy from the workflow's `retry:` defaults and its own overrides
  _keys     every accepted key, for the manual's table
  _degradation  the `degradation:` section: its keys, checks and DegradationSpec
"""

from streams.policy.dlq_valve import DeadLetterLimit
from streams.policy.downstream import OnStale
from streams.topology._degradation import DegradationSpec
from streams.topology._intake import IntakeConfig, intake_limits, load_intake_config
from streams.topology._keys import topology_keys
from streams.topology._load import load_topology, parse_topology
from streams.topology._model import DEFAULT_PARTITIONS, DEFAULT_RETENTION_MS
from streams.topology._objects import (
    KEEP_FOREVER_MS,
    PRESSURE_TOPIC_PARTITIONS,
    CountThresholds,
    PressureConfig,
    SecondsThresholds,
    Stage,
    TopicSpec,
    Topology,
)
from streams.topology._tools import ErrorClasses, ToolSpec

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_RETENTION_MS",
    "KEEP_FOREVER_MS",
    "PRESSURE_TOPIC_PARTITIONS",
    "CountThresholds",
    "DeadLetterLimit",
    "DegradationSpec",
    "ErrorClasses",
    "IntakeConfig",
    "OnStale",
    "PressureConfig",
    "SecondsThresholds",
    "Stage",
    "ToolSpec",
    "TopicSpec",
    "Topology",
    "intake_limits",
    "load_intake_config",
    "load_topology",
    "parse_topology",
    "topology_keys",
]
