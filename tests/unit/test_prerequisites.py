"""Missing tools and a corrupt cache give one-line errors that say what to do."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from streams.config import KAFKA_VERSION
from streams.errors import PrerequisiteMissing
from streams.kafka.jars import COMPLETE_MARKER, REQUIRED_JARS, JarCacheCorrupt, ensure_jars
from streams.kafka.prerequisites import find_java, find_maven


def test_missing_java_says_what_to_install() -> None:
    with pytest.raises(PrerequisiteMissing, match="Java 17\\+ is needed.*install a JDK"):
        find_java("streams-no-such-java")


def test_missing_maven_says_what_to_install() -> None:
    with pytest.raises(PrerequisiteMissing, match="Maven is needed.*install it"):
        find_maven("streams-no-such-mvn")


def test_cli_without_java_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    env = {
        "PATH": str(Path(sys.executable).parent),  # the venv only: no java on PATH
        "STREAMS_HOME": str(tmp_path),
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "streams", "broker", "start"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: Java 17+ is needed")
    assert "Traceback" not in result.stderr


def test_corrupt_jar_cache_is_reported(tmp_path: Path) -> None:
    cache = tmp_path / f"kafka-{KAFKA_VERSION}"
    libs = cache / "libs"
    libs.mkdir(parents=True)
    (cache / COMPLETE_MARKER).write_text(KAFKA_VERSION)
    for name in REQUIRED_JARS:
        with zipfile.ZipFile(libs / name, "w") as jar:
            jar.writestr("x", "y")
    (libs / REQUIRED_JARS[0]).write_bytes(b"truncated download")
    with pytest.raises(JarCacheCorrupt, match="corrupt.*streams broker start --refresh"):
        ensure_jars(cache)


def test_good_cache_is_used_without_maven(tmp_path: Path) -> None:
    cache = tmp_path / f"kafka-{KAFKA_VERSION}"
    libs = cache / "libs"
    libs.mkdir(parents=True)
    (cache / COMPLETE_MARKER).write_text(KAFKA_VERSION)
    for name in REQUIRED_JARS:
        with zipfile.ZipFile(libs / name, "w") as jar:
            jar.writestr("x", "y")
    assert ensure_jars(cache, mvn="streams-no-such-mvn") == libs
