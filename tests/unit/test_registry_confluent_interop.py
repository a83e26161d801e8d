"""The wire format against Confluent's own implementation: records streams frames are read
by confluent-kafka's AvroDeserializer, and records its AvroSerializer writes are read by
streams, through one registry (the HTTP double), under the same subject and id."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streams.events import TaskEventCodec, new_task_event
from streams.registry import RegistryClient, RegistryIds
from streams.registry.ids import registered_text
from streams.serde import SchemaStore
from tests.registry_double import RegistryDouble, running_registry

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
TOPIC = "support.plan.standard"


@pytest.fixture
def registry() -> Iterator[RegistryDouble]:
    with running_registry() as double:
        yield double


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """Confluent's reader applies logical types (timestamp-millis -> datetime); streams
    keeps int milliseconds. Compare in streams' terms."""
    out = {}
    for key, item in value.items():
        if isinstance(item, datetime.datetime):
            item = int(item.timestamp() * 1000)
        out[key] = item
    return out


def test_confluent_reads_what_streams_writes_and_back(registry: RegistryDouble) -> None:
    store = SchemaStore(SCHEMAS, registry=RegistryIds(RegistryClient(registry.url)))
    codec = TaskEventCodec(store)
    event = new_task_event(
        workflow="support",
        stage="plan",
        tenant="tenant-a",
        lane="standard",
        payload=b'{"q": 1}',
        now_ms=1_700_000_000_000,
        deadline_ms=1_700_000_060_000,
        trace_context={"traceparent": "00-abc-def-01"},
    )
    ours = codec.encode(event, topic=TOPIC)

    confluent = SchemaRegistryClient({"url": registry.url})
    context = SerializationContext(TOPIC, MessageField.VALUE)
    theirs_reader = AvroDeserializer(confluent)
    assert _plain(theirs_reader(ours, context)) == event.to_avro()

    text = registered_text(store.current("TaskEvent"))
    writer = AvroSerializer(confluent, text, conf={"auto.register.schemas": False})
    theirs = writer(event.to_avro(), context)
    assert theirs[:5] == ours[:5]  # same magic byte and schema id for the same subject
    assert codec.decode(theirs) == event
