"""streams.registry's client and `topology apply`'s subject check over real HTTP, against
the in-memory registry double (tests/registry_double.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.operate.schema_subjects import apply_subjects, plan_subjects, subjects_of
from streams.registry import RegistryClient, RegistryError, RegistryIds, SchemaIncompatible
from streams.registry.ids import registered_text
from streams.serde import SchemaStore
from streams.topology import load_topology
from tests.registry_double import RegistryDouble, running_registry

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY = REPO / "topology" / "example.yaml"


@pytest.fixture
def registry() -> Iterator[RegistryDouble]:
    with running_registry() as double:
        yield double


def test_register_lookup_and_resolve(registry: RegistryDouble) -> None:
    client = RegistryClient(registry.url)
    store = SchemaStore(REPO / "schemas", registry=None)
    text = registered_text(store.current("TaskEvent"))
    assert client.lookup("a-value", text) is None
    first = client.register("a-value", text)
    assert client.register("b-value", text) == first  # one id per schema, across subjects
    assert client.lookup("a-value", text) == first
    assert json.loads(client.schema_text(first))["name"] == "TaskEvent"
    ids = RegistryIds(client)
    assert ids.id_for_topic("c", store.current("TaskEvent")) == first
    assert "c-value" in client.subjects()
    with pytest.raises(RegistryError, match="unknown"):
        client.schema_text(999)


def test_unreachable_registry_is_a_registry_error() -> None:
    client = RegistryClient("http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(RegistryError, match="unreachable"):
        client.subjects()


def test_apply_registers_every_subject_then_is_unchanged(registry: RegistryDouble) -> None:
    client = RegistryClient(registry.url)
    topology = load_topology(TOPOLOGY, validate_handlers=False)
    store = SchemaStore(REPO / "schemas", registry=None)
    subjects = subjects_of(topology)
    assert f"{topology.dead_letter_topic}-value" in subjects
    done = apply_subjects(client, topology, store)
    assert {c.action for c in done} == {"registered"}
    assert set(client.subjects()) == set(subjects)
    assert {c.action for c in plan_subjects(client, topology, store)} == {"unchanged"}


def test_apply_refuses_an_incompatible_change(registry: RegistryDouble, tmp_path: Path) -> None:
    client = RegistryClient(registry.url)
    topology = load_topology(TOPOLOGY, validate_handlers=False)
    apply_subjects(client, topology, SchemaStore(REPO / "schemas", registry=None))
    # A new TaskEvent with a required field and no default: old records cannot be read.
    schemas = tmp_path / "schemas"
    shutil.copytree(REPO / "schemas", schemas)
    raw = json.loads((schemas / "task_event.avsc").read_text())
    raw["fields"].append({"name": "cost_center", "type": "string"})
    (schemas / "task_event.avsc").write_text(json.dumps(raw))
    before = list(registry.requests)
    with pytest.raises(SchemaIncompatible) as refused:
        apply_subjects(client, topology, SchemaStore(schemas, registry=None))
    message = str(refused.value)
    assert refused.value.subject.endswith("-value") and refused.value.subject in message
    assert "cost_center" in message and "BACKWARD" in message
    registered = [r for r in registry.requests[len(before) :] if r.endswith("/versions")]
    assert registered == []  # nothing registered when one subject refuses


def test_unreachable_registry_fails_encode_and_unknown_ids_as_serde_errors() -> None:
    from streams.errors import SerdeError
    from streams.events import TaskEventCodec, new_task_event

    ids = RegistryIds(RegistryClient("http://127.0.0.1:9", timeout_s=2))
    codec = TaskEventCodec(SchemaStore(REPO / "schemas", registry=ids))
    event = new_task_event(
        workflow="w", stage="s", tenant="t", lane="standard", payload=b"{}", now_ms=1
    )
    with pytest.raises(SerdeError, match="unreachable"):
        codec.encode(event, topic="w.s.standard")
    with pytest.raises(SerdeError, match="unreachable"):
        codec.decode(bytes.fromhex("00 00 00 00 05 00"))
    assert codec.decode(codec.encode(event)) == event  # single-object still reads
