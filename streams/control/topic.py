"""Owns making sure a workflow's control topic exists with its spec (compacted, one
partition, kept forever), for processes of a workflow applied before W.control existed.
Must not read or write records."""

from __future__ import annotations

import logging

from streams.errors import StreamsError
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.topology import KEEP_FOREVER_MS, Topology

log = logging.getLogger(__name__)


def ensure_control_topic(topology: Topology, client: ClientConfig) -> None:
    """Create `W.control` if it is missing (a producer writing to a missing topic could
    have the broker auto-create it uncompacted). Without the right to create it, say so
    in the log; reading it then fails with a hint to run `streams topology apply`."""
    topic = topology.control_topic
    admin = Admin(client, timeout_s=10.0)
    try:
        if topic not in admin.partition_counts():
            log.warning("creating the missing control topic %s", topic)
            admin.apply([TopicWanted(topic, 1, KEEP_FOREVER_MS, True)])
    except StreamsError as exc:
        log.warning("control topic %s not checked or created: %s", topic, exc)
    finally:
        admin.close()
