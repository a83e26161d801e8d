"""Finds the cluster to talk to: KAFKA_BOOTSTRAP_SERVERS (or a client config's
bootstrap.servers) when set, else the local broker; with the client settings it needs."""

from __future__ import annotations

from pathlib import Path

from streams.config import Settings
from streams.kafka.client_config import ClientConfig, NoClusterNamed, build_client_config
from streams.kafka.local_broker import LocalBroker
from streams.kafka.probe import wait_for_metadata


def ensure_bootstrap(settings: Settings) -> str:
    """Return a bootstrap address that answers, starting the local broker if needed."""
    if settings.bootstrap_servers:
        wait_for_metadata(settings.bootstrap_servers, timeout_s=15.0)
        return settings.bootstrap_servers
    state, _ = LocalBroker(settings).start()
    return state.bootstrap


def connect(settings: Settings, *, client_id: str, file: Path | None = None) -> ClientConfig:
    """The client settings of one process (README "Secured clusters"), checked by asking
    the cluster for metadata with them: wrong credentials fail here in one line
    (AuthorizationFailed). No cluster named anywhere: the local broker, started if needed."""
    try:
        client = build_client_config(settings, client_id=client_id, file=file)
    except NoClusterNamed:
        state, _ = LocalBroker(settings).start()
        return build_client_config(
            settings, client_id=client_id, file=file, bootstrap=state.bootstrap
        )
    wait_for_metadata(client.bootstrap_servers, timeout_s=15.0, client=client)
    return client
