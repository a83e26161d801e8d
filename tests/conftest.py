"""Shared fixtures: one real Kafka broker per test session, unique names per test.

The broker is KAFKA_BOOTSTRAP_SERVERS when set; a testcontainers KafkaContainer when
STREAMS_TEST_BROKER=testcontainers (needs Docker); otherwise the local Apache Kafka broker
that `streams broker start` runs. Nothing here fakes Kafka.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from hypothesis import settings as hypothesis_settings

from streams.config import load_settings
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig

# Property tests check behaviour, not speed (speed is measured in benchmarks/): hypothesis's
# 200 ms per-example deadline failed serde properties at load 18 on unchanged code.
hypothesis_settings.register_profile("streams", deadline=None)
hypothesis_settings.load_profile("streams")


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    settings = load_settings()
    if settings.bootstrap_servers:
        yield settings.bootstrap_servers
        return
    if settings.test_broker == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        from streams.config import KAFKA_VERSION

        with KafkaContainer(f"apache/kafka:{KAFKA_VERSION}").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from streams.kafka.local_broker import LocalBroker

    running = LocalBroker(settings).status()
    if running is not None:  # the user's (or another session's) broker: share it, leave it
        yield running.bootstrap
        return
    # None running: a broker of the session's own, in a directory of its own (one per
    # session: two sessions at once must not share, or the second would restart the
    # first's), removed at the end. Not the user's broker home: every test leaves unique
    # topics behind, and a data directory grown to tens of thousands of partitions takes
    # minutes to load (and runs out of file descriptors).
    home = settings.home / "test-sessions" / str(os.getpid())
    own = LocalBroker(replace(settings, home=home, cache_dir=settings.jar_cache.parent))
    state, _ = own.start(fresh=True)
    try:
        yield state.bootstrap
    finally:
        own.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def client_config(bootstrap: str) -> ClientConfig:
    return ClientConfig(bootstrap_servers=bootstrap, client_id="streams-tests")


@pytest.fixture(scope="session")
def admin(client_config: ClientConfig) -> Admin:
    return Admin(client_config)


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names unique to this test, so tests never share topics or groups."""
    token = uuid.uuid4().hex[:8]
    return lambda prefix: f"{prefix}-{token}"


@pytest.fixture
def make_topics(admin: Admin) -> Iterator[Callable[..., list[str]]]:
    created: list[str] = []

    def make(*names: str, partitions: int = 1) -> list[str]:
        admin.apply([TopicWanted(name, partitions) for name in names])
        created.extend(names)
        return list(names)

    yield make
    admin.delete_topics(created)
