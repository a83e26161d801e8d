"""A private Apache Kafka broker with a SASL_PLAINTEXT (PLAIN) listener, for tests of
secured clusters: its own directory and ports, the jars of the shared cache, never the
shared broker. A PLAINTEXT listener beside it serves the test's own set-up and reads."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streams.config import load_settings
from streams.errors import BrokerUnavailable
from streams.kafka.jars import ensure_jars
from streams.kafka.local_broker import HOST, server_properties
from streams.kafka.prerequisites import find_java
from streams.kafka.probe import wait_for_metadata

USER = "alice"


@dataclass(frozen=True)
class SecuredBroker:
    plain_bootstrap: str  # no credentials: the test's own admin and reads
    sasl_bootstrap: str  # SASL_PLAINTEXT, mechanism PLAIN, user USER
    password: str
    log_file: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _properties(data_dir: Path, plain: int, sasl: int, controller: int, password: str) -> str:
    base = server_properties(data_dir, plain, controller)
    lines = [line for line in base.splitlines() if not line.startswith(
        ("listeners=", "advertised.listeners=", "listener.security.protocol.map=")
    )]  # fmt: skip
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="admin" password="admin-{password}" user_{USER}="{password}";'
    )
    lines += [
        f"listeners=PLAINTEXT://{HOST}:{plain},SASL_PLAINTEXT://{HOST}:{sasl},"
        f"CONTROLLER://{HOST}:{controller}",
        f"advertised.listeners=PLAINTEXT://{HOST}:{plain},SASL_PLAINTEXT://{HOST}:{sasl}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,"
        "CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms=PLAIN",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}",
    ]
    return "\n".join(lines) + "\n"


class _Process:
    """The broker JVM of one secured_broker(): started, stopped, restarted on its data."""

    def __init__(self, directory: Path, classpath: str, java: str) -> None:
        self.directory = directory
        self.classpath = classpath
        self.java = java
        self.props = directory / "server.properties"
        self.log_file = directory / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, plain_bootstrap: str, timeout_s: float) -> None:
        with (self.directory / "console.log").open("ab") as console:
            self.proc = subprocess.Popen(
                [self.java, "-Xms256m", "-Xmx512m", "-XX:+UseG1GC",
                 f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
                 f"-Dstreams.broker.log={self.log_file}", "-cp", self.classpath,
                 "kafka.Kafka", str(self.props)],
                stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the secured broker exited; see {self.log_file}")
            try:
                wait_for_metadata(plain_bootstrap, timeout_s=2.0)
                return
            except BrokerUnavailable:
                if time.monotonic() > deadline:
                    raise

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self.proc = None


@dataclass
class SecuredBrokerControl:
    """restart_with_password(): the same broker (data, ports) with USER's password changed,
    as an operator rotating credentials would."""

    broker: SecuredBroker
    _process: _Process
    _ports: tuple[int, int, int]

    def restart_with_password(self, password: str, timeout_s: float = 120.0) -> None:
        self._process.stop()
        plain, sasl, controller = self._ports
        self._process.props.write_text(
            _properties(self._process.directory / "data", plain, sasl, controller, password)
        )
        self._process.start(self.broker.plain_bootstrap, timeout_s)


@contextlib.contextmanager
def secured_broker(directory: Path, timeout_s: float = 120.0) -> Iterator[SecuredBroker]:
    """Format and start the broker under `directory`; stop it (SIGTERM, then SIGKILL)."""
    with secured_broker_control(directory, timeout_s) as control:
        yield control.broker


@contextlib.contextmanager
def secured_broker_control(
    directory: Path, timeout_s: float = 120.0
) -> Iterator[SecuredBrokerControl]:
    settings = load_settings()
    java = find_java()
    libs = ensure_jars(settings.jar_cache)
    classpath = f"{libs}/*"
    password = f"pw-{uuid.uuid4().hex}"
    data_dir = directory / "data"
    data_dir.mkdir(parents=True)
    plain, sasl, controller = _free_port(), _free_port(), _free_port()
    props = directory / "server.properties"
    props.write_text(_properties(data_dir, plain, sasl, controller, password))
    log4j = resources.files("streams.kafka").joinpath("resources/log4j2.properties")
    (directory / "log4j2.properties").write_text(log4j.read_text())
    # A KRaft cluster id is a base64 UUID; one starting with "-" would read as an option.
    cluster_id = "A" + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[1:22]
    subprocess.run(
        [java, "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
         "-t", cluster_id, "-c", str(props)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    process = _Process(directory, classpath, java)
    broker = SecuredBroker(f"{HOST}:{plain}", f"{HOST}:{sasl}", password, process.log_file)
    try:
        process.start(broker.plain_bootstrap, timeout_s)
        yield SecuredBrokerControl(broker, process, (plain, sasl, controller))
    finally:
        process.stop()
