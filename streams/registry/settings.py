"""The schema registry's one setting: read from the environment, or adopted from a topology
file's `schema_registry.url`, in this one place.

Owns the variable's name, its default (none) and which source wins (the variable, which
`streams --schema-registry` sets, over the file: as STREAMS_KAFKA_* over a client config);
must not talk to the registry. Kept out of streams.config because streams.serde (the layer
beside it) reaches this through SchemaStore.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from streams.errors import ConfigError

__all__ = [
    "SCHEMA_REGISTRY_URL_ENV",
    "adopt_topology_registry",
    "forget_adopted_registry",
    "schema_registry_url",
]

#: A Confluent-compatible schema registry's base URL (e.g. http://127.0.0.1:8081, or
#: Apicurio's http://HOST:8080/apis/ccompat/v7). Unset (the default): no registry, records
#: stay Avro single-object encoded. `streams --schema-registry URL` sets it for one command.
SCHEMA_REGISTRY_URL_ENV = "STREAMS_SCHEMA_REGISTRY_URL"

_lock = threading.Lock()
#: The URL a topology file named and the file, once adopted (one registry per process:
#: every codec shares one cache of its ids).
_adopted: tuple[str, str] | None = None


def schema_registry_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The configured schema registry URL without a trailing '/', or None (the default):
    the variable's, else the one a topology file named (adopt_topology_registry). With
    `environ` given, that mapping alone."""
    env = os.environ if environ is None else environ
    url = (env.get(SCHEMA_REGISTRY_URL_ENV) or "").strip().rstrip("/") or None
    if url is not None or environ is not None:
        return url
    adopted = _adopted
    return None if adopted is None else adopted[0]


def adopt_topology_registry(url: str | None, source: str) -> None:
    """Use the registry a topology file names (`schema_registry.url`) for this process when
    the variable names none. Call before the first codec is made (workers, the intake and
    the CLI do). A second file naming another registry is a ConfigError naming the file
    and key; None (the file names none) changes nothing."""
    global _adopted
    if url is None:
        return
    url = url.strip().rstrip("/")
    with _lock:
        if _adopted is not None and _adopted[0] != url:
            raise ConfigError(
                source,
                "schema_registry.url",
                f"{url} differs from {_adopted[0]} (from {_adopted[1]}), which this process "
                "already uses: one schema registry per process",
            )
        _adopted = (url, source)


def forget_adopted_registry() -> None:
    """Drop the adopted URL (tests, and a process that loads another deployment's files)."""
    global _adopted
    with _lock:
        _adopted = None
