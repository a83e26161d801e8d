"""A live reader of a workflow's control topic: every record applied to one ControlState.

Owns reading `W.control` from its beginning (compacted: the latest record of every key is
kept forever) and telling when it has read what the topic held. Must not decide anything
from the records (streams.policy.degradation and the runtime do) nor write.
"""

from __future__ import annotations

import logging
import time

from streams.control.records import ControlCodec, ControlState
from streams.errors import SerdeError, StreamsError
from streams.kafka.client_config import ClientConfig
from streams.kafka.tail import TopicTail
from streams.topology import Topology

log = logging.getLogger(__name__)


class ControlFollower:
    """refresh() applies what arrived (never blocks long); state() is the latest fold.
    Call from one thread (the degradation feed's); close() when done."""

    def __init__(self, topology: Topology, client: ClientConfig) -> None:
        self.topic = topology.control_topic
        self._tail = TopicTail(client, self.topic, 1, fetch_wait_ms=50)
        self._codec = ControlCodec()
        self._state = ControlState(topology.workflow)
        self.caught_up = False

    def refresh(self, timeout_s: float = 0.0) -> bool:
        """Apply every record that arrived; True if any did."""
        changed = False
        wait = timeout_s
        while True:
            records = self._tail.poll(500, wait)
            wait = 0.0
            if not records:
                break
            for record in records:
                if record.value is None:
                    continue  # a tombstone: nothing we wrote, nothing to keep
                try:
                    self._state.apply(self._codec.decode(record.value))
                except (SerdeError, KeyError, ValueError) as exc:
                    # A foreign or damaged record must not stop operator controls.
                    log.warning("skipping an unreadable record in %s: %s", self.topic, exc)
                    continue
                changed = True
        if not self.caught_up:
            try:
                self.caught_up = self._tail.caught_up(5.0)
            except StreamsError as exc:  # a new topic's leader not elected yet
                log.debug("end of %s not known yet: %s", self.topic, exc)
        return changed

    def read_to_end(self, timeout_s: float) -> None:
        """Block until what the topic held has been read; StreamsError after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.refresh(0.1)
            if self.caught_up:
                return
            if time.monotonic() >= deadline:
                raise StreamsError(
                    f"could not read {self.topic} to its end in {timeout_s:g} s (if the "
                    "topic is missing, run: streams topology apply TOPOLOGY)"
                )

    def state(self) -> ControlState:
        return self._state.copy()

    def close(self) -> None:
        self._tail.close()
