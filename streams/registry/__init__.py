"""Schema registry support: the Confluent wire format, a registry client, topology checks.

Owns nothing itself; re-exports the package's API. Off unless STREAMS_SCHEMA_REGISTRY_URL
(or ``streams --schema-registry URL``) names a Confluent-compatible registry.
"""

from streams.registry.client import (
    CompatibilityVerdict,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
    SchemaIncompatible,
)
from streams.registry.ids import RegistryIds, configured_ids, subject_for_topic

__all__ = [
    "CompatibilityVerdict",
    "RegistryClient",
    "RegistryError",
    "RegistryIds",
    "RegistryUnavailable",
    "SchemaIncompatible",
    "configured_ids",
    "subject_for_topic",
]
