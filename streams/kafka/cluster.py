"""Finds the cluster to talk to: KAFKA_BOOTSTRAP_SERVERS when set, else the local broker."""

from __future__ import annotations

from streams.config import Settings
from streams.kafka.local_broker import LocalBroker
from streams.kafka.probe import wait_for_metadata


def ensure_bootstrap(settings: Settings) -> str:
    """Return a bootstrap address that answers, starting the local broker if needed."""
    if settings.bootstrap_servers:
        wait_for_metadata(settings.bootstrap_servers, timeout_s=15.0)
        return settings.bootstrap_servers
    state, _ = LocalBroker(settings).start()
    return state.bootstrap
