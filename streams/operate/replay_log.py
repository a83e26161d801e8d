"""The record of what `streams dlq replay` sent: the workflow's compacted `W.replays`
topic (one partition), keyed by the dead letter's place, Avro `ReplayRecord`
(schemas/replay.avsc); the newest record per dead letter is how its last replay went.

Owns that topic (created on first use, like `streams topology apply` would) and its
reading and writing, through streams.kafka; must not decide what is replayed.
"""

from __future__ import annotations

import time
from typing import Any

from streams.errors import DeliveryError, SerdeError
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.kafka.producer import RecordProducer
from streams.kafka.tail import TopicTail
from streams.serde import SchemaStore, Serde

REPLAY_SCHEMA = "dev.streams.ReplayRecord"


def replays_topic(workflow: str) -> str:
    return f"{workflow}.replays"


def replay_id(dead_letter_topic: str, entry_id: str) -> str:
    """A dead letter's key on the replays topic: its topic and place."""
    return f"{dead_letter_topic}/{entry_id}"


class ReplayLog:
    def __init__(self, client: ClientConfig, workflow: str) -> None:
        self.topic = replays_topic(workflow)
        admin = Admin(client, timeout_s=10.0)
        try:
            admin.apply([TopicWanted(self.topic, 1, None, compacted=True)])
        finally:
            admin.close()
        self._client = client
        self._serde = Serde(SchemaStore(), REPLAY_SCHEMA)
        self._producer = RecordProducer(client)

    def read(self, timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
        """The newest replay record of every dead letter replayed so far, by replay_id."""
        newest: dict[str, dict[str, Any]] = {}
        tail = TopicTail(self._client, self.topic, 1)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                records = tail.poll(1000, 0.2)
                for record in records:
                    if record.key is None or record.value is None:
                        continue
                    try:
                        newest[record.key.decode(errors="replace")] = self._serde.decode(
                            record.value
                        )
                    except SerdeError:
                        continue  # one damaged record must not stop a replay
                if not records and tail.caught_up():
                    return newest
        finally:
            tail.close()
        raise TimeoutError(f"could not read {self.topic} to its end in {timeout_s:.0f} s")

    def write(self, key: str, record: dict[str, Any], timeout_s: float = 30.0) -> None:
        """Append one replay record and wait for the broker to acknowledge it."""
        acked: list[DeliveryError | None] = []
        self._producer.send(
            self.topic, self._serde.encode(record), key=key.encode(), on_ack=acked.append
        )
        self._producer.flush(timeout_s)
        if not acked or acked[0] is not None:
            raise DeliveryError(
                f"the replay record of {key} was not acknowledged by {self.topic}: "
                f"{acked[0] if acked else 'no answer'}"
            )

    def close(self) -> None:
        self._producer.flush(5.0)
