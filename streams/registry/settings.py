"""The schema registry's one setting, read from the environment in this one place.

Owns the variable's name and its default (none); must not talk to the registry. Kept out of
streams.config because streams.serde (the layer beside it) reaches this through SchemaStore.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["SCHEMA_REGISTRY_URL_ENV", "schema_registry_url"]

#: A Confluent-compatible schema registry's base URL (e.g. http://127.0.0.1:8081, or
#: Apicurio's http://HOST:8080/apis/ccompat/v7). Unset (the default): no registry, records
#: stay Avro single-object encoded. `streams --schema-registry URL` sets it for one command.
SCHEMA_REGISTRY_URL_ENV = "STREAMS_SCHEMA_REGISTRY_URL"


def schema_registry_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The configured schema registry URL without a trailing '/', or None (the default)."""
    env = os.environ if environ is None else environ
    return (env.get(SCHEMA_REGISTRY_URL_ENV) or "").strip().rstrip("/") or None
