"""Settings from the environment; the only module that reads os.environ.

Owns the names of environment variables and their defaults; must not talk to Kafka.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Pinned Apache Kafka release for the local broker and docker-compose (a test checks both).
KAFKA_VERSION = "4.1.1"


@dataclass(frozen=True, slots=True)
class Settings:
    """Process-wide settings.

    bootstrap_servers: an existing cluster (KAFKA_BOOTSTRAP_SERVERS); when set, no local
    broker is started anywhere.
    home: where streams keeps its caches and local broker state (STREAMS_HOME), outside
    the repository so a fresh clone stays clean.
    """

    bootstrap_servers: str | None
    home: Path
    test_broker: str = "local"
    cache_dir: Path | None = None

    @property
    def jar_cache(self) -> Path:
        return (self.cache_dir or self.home / "cache") / f"kafka-{KAFKA_VERSION}"

    @property
    def broker_dir(self) -> Path:
        return self.home / "broker"


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ) if environ is None else environ
    home = env.get("STREAMS_HOME") or str(Path.home() / ".cache" / "streams")
    return Settings(
        bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        home=Path(home).expanduser(),
        test_broker=env.get("STREAMS_TEST_BROKER", "local"),
        cache_dir=Path(env["STREAMS_CACHE_DIR"]).expanduser()
        if env.get("STREAMS_CACHE_DIR")
        else None,
    )
