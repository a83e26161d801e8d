"""What `streams topology apply` does with a registry: every subject a workflow writes is
checked against its current schema first, then registered.

Owns the topic -> record schema map of a workflow and the check-then-register order; must
not talk to Kafka (the CLI applies the topics) nor encode records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from streams.registry.client import RegistryClient, SchemaIncompatible
from streams.registry.ids import registered_text, subject_for_topic
from streams.registry.settings import schema_registry_url
from streams.serde import SchemaStore
from streams.topology import Topology

__all__ = [
    "SubjectChange",
    "apply_subjects",
    "configured_client",
    "plan_subjects",
    "subjects_of",
]

_TASK_EVENT = "dev.streams.TaskEvent"
_DEAD_LETTER = "dev.streams.DeadLetter"
_ESCALATION = "dev.streams.Escalation"


@dataclass(frozen=True, slots=True)
class SubjectChange:
    subject: str
    schema: str
    action: Literal["registered", "unchanged", "would_register"]
    schema_id: int | None


def configured_client() -> RegistryClient | None:
    """A client of the registry STREAMS_SCHEMA_REGISTRY_URL names, or None (the default)."""
    url = schema_registry_url()
    return None if url is None else RegistryClient(url)


def subjects_of(topology: Topology) -> dict[str, str]:
    """Subject -> full record name, for each topic a worker or the intake frames records
    on: stage inputs, retry tiers and the delayed topic carry TaskEvent, the dead-letter
    topic DeadLetter, the escalations topic Escalation."""
    topics: dict[str, str] = {}
    for stage in topology.stages.values():
        for topic in stage.input_topics:
            topics[topic] = _TASK_EVENT
    for topic in topology.retry_topics.values():
        topics[topic] = _TASK_EVENT
    topics[topology.delayed_topic] = _TASK_EVENT
    topics[topology.dead_letter_topic] = _DEAD_LETTER
    if topology.retry_topics:
        topics[topology.escalations_topic] = _ESCALATION
    return {subject_for_topic(t): name for t, name in sorted(topics.items())}


def plan_subjects(
    client: RegistryClient, topology: Topology, store: SchemaStore
) -> list[SubjectChange]:
    """Check every subject; raise SchemaIncompatible for the first that refuses (nothing
    registered yet), else say what registering would do."""
    changes: list[SubjectChange] = []
    for subject, name in subjects_of(topology).items():
        schema = store.current(name)
        text = registered_text(schema)
        known = client.lookup(subject, text)
        if known is not None:
            changes.append(SubjectChange(subject, str(schema), "unchanged", known))
            continue
        verdict = client.check_compatibility(subject, text)
        if not verdict.compatible:
            rule = client.compatibility(subject)
            reasons = verdict.reasons or (f"breaks the subject's {rule} rule",)
            raise SchemaIncompatible(subject, (f"{schema} ({rule})", *reasons))
        changes.append(SubjectChange(subject, str(schema), "would_register", None))
    return changes


def apply_subjects(
    client: RegistryClient, topology: Topology, store: SchemaStore
) -> list[SubjectChange]:
    """Check all subjects first (so an incompatible one registers nothing), then register."""
    names = subjects_of(topology)
    done: list[SubjectChange] = []
    for change in plan_subjects(client, topology, store):
        if change.action != "would_register":
            done.append(change)
            continue
        text = registered_text(store.current(names[change.subject]))
        schema_id = client.register(change.subject, text)
        done.append(SubjectChange(change.subject, change.schema, "registered", schema_id))
    return done
