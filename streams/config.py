"""Settings from the environment; the only module that reads os.environ.

Owns the names of environment variables and their defaults; must not talk to Kafka.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    kafka_client_settings / client_config_file: what a secured cluster needs (SASL, TLS),
    turned into client settings by streams.kafka.client_config.build_client_config.
    """

    bootstrap_servers: str | None
    home: Path
    test_broker: str = "local"
    cache_dir: Path | None = None
    #: librdkafka settings from STREAMS_KAFKA_* (STREAMS_KAFKA_SASL_PASSWORD: sasl.password).
    kafka_client_settings: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: A client.properties file (STREAMS_CLIENT_CONFIG); --client-config overrides it.
    client_config_file: Path | None = None

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
        kafka_client_settings=kafka_settings_from_environ(env),
        client_config_file=Path(env["STREAMS_CLIENT_CONFIG"]).expanduser()
        if env.get("STREAMS_CLIENT_CONFIG")
        else None,
    )


#: STREAMS_KAFKA_<NAME>: the librdkafka setting <name>, `_` read as `.` (a literal `_` in
#: a setting's name is written `__`): STREAMS_KAFKA_SASL_PASSWORD is sasl.password.
KAFKA_SETTING_PREFIX = "STREAMS_KAFKA_"


def kafka_settings_from_environ(env: Mapping[str, str]) -> dict[str, str]:
    settings: dict[str, str] = {}
    for name, value in env.items():
        if name.startswith(KAFKA_SETTING_PREFIX) and len(name) > len(KAFKA_SETTING_PREFIX):
            key = name[len(KAFKA_SETTING_PREFIX) :].lower()
            settings[key.replace("__", "\0").replace("_", ".").replace("\0", "_")] = value
    return settings
