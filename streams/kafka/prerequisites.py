"""Checks for the tools the local broker needs (Java 17+, Maven), with one-line errors."""

from __future__ import annotations

import re
import shutil
import subprocess

from streams.errors import PrerequisiteMissing

MIN_JAVA_MAJOR = 17


def find_java(java: str = "java") -> str:
    """Return the java executable, or raise saying how to install one."""
    path = shutil.which(java)
    if path is None:
        raise PrerequisiteMissing(
            f"Java {MIN_JAVA_MAJOR}+ is needed to run the local Kafka broker but '{java}' "
            "is not on PATH; install a JDK (e.g. apt-get install openjdk-17-jre-headless) "
            "or set KAFKA_BOOTSTRAP_SERVERS to use an existing cluster"
        )
    major = java_major_version(path)
    if major < MIN_JAVA_MAJOR:
        raise PrerequisiteMissing(
            f"Kafka 4.x needs Java {MIN_JAVA_MAJOR}+ but {path} is Java {major}; "
            "install a newer JDK or put it first on PATH"
        )
    return path


def java_major_version(java_path: str) -> int:
    # `java -version` prints to stderr: 'openjdk version "17.0.15"' or, before 9, '"1.8.0_392"'.
    out = subprocess.run(
        [java_path, "-version"], capture_output=True, text=True, timeout=30, check=False
    )
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise PrerequisiteMissing(f"could not read the Java version from '{java_path} -version'")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def find_maven(mvn: str = "mvn") -> str:
    path = shutil.which(mvn)
    if path is None:
        raise PrerequisiteMissing(
            f"Maven is needed once to fetch the Kafka jars but '{mvn}' is not on PATH; "
            "install it (e.g. apt-get install maven) or set KAFKA_BOOTSTRAP_SERVERS"
        )
    return path
