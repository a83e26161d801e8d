"""Resolves the pinned Apache Kafka jars from Maven Central into a cache outside the repo.

Owns the jar cache and its integrity check; must not start processes other than Maven.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from importlib import resources
from pathlib import Path

from streams.config import KAFKA_VERSION
from streams.errors import BrokerError
from streams.kafka.prerequisites import find_maven

COMPLETE_MARKER = ".complete"
#: Jars the broker cannot run without; their presence and integrity define a good cache.
REQUIRED_JARS = (
    f"kafka_2.13-{KAFKA_VERSION}.jar",
    f"kafka-clients-{KAFKA_VERSION}.jar",
    f"kafka-tools-{KAFKA_VERSION}.jar",
    f"kafka-server-{KAFKA_VERSION}.jar",
)


class JarCacheCorrupt(BrokerError):
    pass


def pom_text() -> str:
    return resources.files("streams.kafka").joinpath("resources/broker-pom.xml").read_text()


def verify_cache(libs: Path) -> None:
    """Raise JarCacheCorrupt unless every required jar is present and a readable zip."""
    for name in REQUIRED_JARS:
        jar = libs / name
        if not jar.is_file() or not zipfile.is_zipfile(jar):
            raise JarCacheCorrupt(
                f"the Kafka jar cache at {libs.parent} is corrupt ({name} missing or unreadable); "
                "run `streams broker start --refresh` to fetch it again"
            )


def ensure_jars(cache: Path, *, refresh: bool = False, mvn: str = "mvn") -> Path:
    """Return the directory holding the broker's classpath, fetching it on first use.

    The download goes to a temporary directory that is renamed into place only when Maven
    succeeds, so an interrupted first run never leaves a half cache behind a marker.
    """
    libs = cache / "libs"
    if refresh and cache.exists():
        shutil.rmtree(cache)
    if (cache / COMPLETE_MARKER).is_file():
        verify_cache(libs)
        return libs
    maven = find_maven(mvn)
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = cache.parent / f".{cache.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pom = staging / "pom.xml"
    pom.write_text(pom_text())
    cmd = [
        maven, "-B", "-q", "-f", str(pom),
        "dependency:copy-dependencies", "-DincludeScope=runtime",
        f"-DoutputDirectory={staging / 'libs'}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        log = staging / "maven.log"
        log.write_text(result.stdout + result.stderr)
        raise BrokerError(
            f"Maven could not fetch the Kafka {KAFKA_VERSION} jars (exit {result.returncode}); "
            f"check network access to Maven Central, details in {log}"
        )
    verify_cache(staging / "libs")
    (staging / COMPLETE_MARKER).write_text(KAFKA_VERSION + "\n")
    shutil.rmtree(cache, ignore_errors=True)
    staging.rename(cache)
    return libs
