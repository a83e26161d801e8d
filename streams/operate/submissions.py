"""The event a run entered the workflow with, read back from the entry stage's input
topics: what `streams dlq replay --from-entry` submits again for a run that died in a
later stage (whose dead letter holds that stage's input, not the submission).

Owns that read (through streams.kafka); must not decide what is replayed. Found only while
the entry topics still hold it (their retention, 7 days by default).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from streams.errors import BrokerUnavailable, StreamsError
from streams.events import TaskEvent, TaskEventCodec
from streams.kafka.client_config import ClientConfig
from streams.kafka.tail import TopicTail
from streams.topology import Topology

#: Producers stamp CreateTime when a record is produced; the intake publishes a run's event
#: right after its submission time, so a little slack before it is enough.
_SLACK_MS = 2_000


def find_submissions(
    client: ClientConfig,
    topology: Topology,
    entry_stage: str,
    since_by_run: Mapping[str, int],
    *,
    timeout_s: float = 30.0,
) -> dict[str, TaskEvent]:
    """For each run id (with when it was created, epoch ms), its first-attempt event on
    the entry stage's lane topics, when they still hold it."""
    if not since_by_run:
        return {}
    wanted = {run_id.encode(): run_id for run_id in since_by_run}
    since_ms = min(since_by_run.values()) - _SLACK_MS
    specs = topology.all_topics()
    codec = TaskEventCodec()
    found: dict[str, TaskEvent] = {}
    deadline = time.monotonic() + timeout_s
    for topic in topology.stages[entry_stage].input_topics:
        tail = TopicTail(client, topic, specs[topic].partitions, since_ms=since_ms)
        try:
            while True:
                if time.monotonic() >= deadline:
                    raise BrokerUnavailable(
                        f"could not read {topic} to its end within {timeout_s:.0f} s"
                    )
                records = tail.poll(1000, 0.2)
                for record in records:
                    run_id = wanted.get(record.key or b"")
                    if run_id is None or record.value is None:
                        continue
                    try:
                        event = codec.decode(record.value)
                    except StreamsError:
                        continue
                    # Retries re-enter the same topics: the submission is the lowest attempt.
                    known = found.get(run_id)
                    if known is None or event.attempt < known.attempt:
                        found[run_id] = event
                if not records and tail.caught_up():
                    break
        finally:
            tail.close()
    return found
