"""Schema ids from a registry, cached: what streams.serde needs to write and read the
Confluent wire format (it implements streams.serde.SchemaIds).

Owns the subject naming (TopicNameStrategy: ``<topic>-value``) and the id caches; must not
encode records nor talk to Kafka.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from streams.registry.client import RegistryClient, RegistryError, RegistryUnavailable
from streams.registry.settings import schema_registry_url


class StoredSchema(Protocol):
    """What the registry needs of a loaded .avsc (streams.serde.StoredSchema has it; serde
    sits above this package, so the type is described here, not imported)."""

    @property
    def fingerprint(self) -> bytes: ...

    @property
    def path(self) -> Path: ...


__all__ = [
    "QUIET_AFTER_UNAVAILABLE_S",
    "RegistryIds",
    "configured_ids",
    "registered_text",
    "subject_for_topic",
]

#: After the registry could not answer a read, reads of ids not cached yet fail at once for
#: this long instead of each waiting out its own timeout: a worker's poll thread meets one
#: such record per held partition when their holds end together (streams.runtime.decode_holds).
QUIET_AFTER_UNAVAILABLE_S = 0.5


def subject_for_topic(topic: str) -> str:
    """Confluent's default TopicNameStrategy for record values."""
    return f"{topic}-value"


def registered_text(schema: StoredSchema) -> str:
    """The schema as registered: the whole .avsc (defaults and docs kept, since the
    registry's compatibility checks need the defaults), as compact JSON."""
    try:
        raw = json.loads(schema.path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read {schema.path} to register it: {exc}") from exc
    return json.dumps(raw, separators=(",", ":"), sort_keys=False)


class RegistryIds:
    """Ids of schemas under topics' subjects, and schemas by id, each asked once.

    A writer's first record to a topic looks its schema up under the topic's subject and
    registers it when missing (as Confluent's serializers do by default); the registry
    itself refuses a schema its compatibility rule forbids. Thread-safe.

    A read the registry cannot answer raises RegistryUnavailable, and so does every read of
    an uncached id for QUIET_AFTER_UNAVAILABLE_S after it, without asking.
    """

    def __init__(
        self, client: RegistryClient, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = client
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, bytes], int] = {}
        self._texts: dict[int, str] = {}
        self._unavailable: tuple[float, RegistryUnavailable] | None = None

    def id_for_topic(self, topic: str, schema: StoredSchema) -> int:
        subject = subject_for_topic(topic)
        key = (subject, schema.fingerprint)
        found = self._ids.get(key)
        if found is not None:
            return found
        text = registered_text(schema)
        schema_id = self.client.lookup(subject, text)
        if schema_id is None:
            schema_id = self.client.register(subject, text)
        with self._lock:
            self._ids[key] = schema_id
            self._texts.setdefault(schema_id, text)
        return schema_id

    def schema_text(self, schema_id: int) -> str:
        found = self._texts.get(schema_id)
        if found is not None:
            return found
        down = self._unavailable
        if down is not None and self._monotonic() - down[0] < QUIET_AFTER_UNAVAILABLE_S:
            raise RegistryUnavailable(
                f"{down[1]} (schema id {schema_id} not asked: the registry failed "
                f"{self._monotonic() - down[0]:.2f} s ago)"
            )
        try:
            text = self.client.schema_text(schema_id)
        except RegistryUnavailable as exc:
            self._unavailable = (self._monotonic(), exc)
            raise
        self._unavailable = None
        with self._lock:
            self._texts.setdefault(schema_id, text)
        return text


def configured_ids() -> RegistryIds | None:
    """The ids of the registry STREAMS_SCHEMA_REGISTRY_URL names (one per URL per process,
    so every codec shares its cache), or None when none is configured (the default)."""
    url = schema_registry_url()
    return None if url is None else _ids_for(url)


@functools.cache
def _ids_for(url: str) -> RegistryIds:
    return RegistryIds(RegistryClient(url))
