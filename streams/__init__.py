"""streams: backpressure for AI-agent workflows, built on Apache Kafka.

The public API is re-exported here; everything else is private to the package.
"""

from streams.errors import ConfigError, StreamsError
from streams.types import LANES, Lane, Record, TopicPartition

__all__ = ["LANES", "ConfigError", "Lane", "Record", "StreamsError", "TopicPartition"]
