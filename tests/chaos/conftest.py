"""Chaos tests stop, wipe and restart brokers: each runs one of its own (own STREAMS_HOME,
own ports), never the session's."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import Settings, load_settings


@pytest.fixture
def own_broker(tmp_path: Path) -> Settings:
    """Settings for a local broker of this test's own (the jars come from the shared cache)."""
    shared = load_settings()
    if shared.bootstrap_servers:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS is set: no local broker to stop and start")
    return Settings(
        bootstrap_servers=None, home=tmp_path / "home", cache_dir=shared.jar_cache.parent
    )
