"""Writes control records: one at a time, each acknowledged by the broker before the
operator is told it took effect.

Owns the record key and the wait for the acknowledgement; must not read the topic nor
decide what a command means (streams.control.commands does).
"""

from __future__ import annotations

from streams.control.records import ControlCodec, ControlRecord
from streams.errors import StreamsError
from streams.kafka.client_config import ClientConfig
from streams.kafka.producer import AckWait, RecordProducer


class ControlWriter:
    def __init__(self, topic: str, client: ClientConfig) -> None:
        self.topic = topic
        self._producer = RecordProducer(client)
        self._codec = ControlCodec()

    def write(self, record: ControlRecord, timeout_s: float = 10.0) -> None:
        """Send `record` keyed by its key and wait for the ack. Raises StreamsError."""
        ack = AckWait()
        self._producer.send(
            self.topic, self._codec.encode(record), key=record.key.encode(), on_ack=ack.on_ack
        )
        self._producer.flush(timeout_s)
        if (cause := ack.problem()) is not None:
            raise StreamsError(f"control record {record.key} not written to {self.topic}: {cause}")

    def send_unacknowledged(self, record: ControlRecord) -> None:
        """Queue `record` without waiting (a worker publishing its level from a feed
        thread: a lost publish is repeated at the next change, and nothing waits on it)."""
        self._producer.send(self.topic, self._codec.encode(record), key=record.key.encode())
        self._producer.poll(0)

    def close(self) -> None:
        self._producer.flush(5.0)
