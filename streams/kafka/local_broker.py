"""The local Apache Kafka broker: one KRaft broker+controller JVM bound to loopback.

Owns starting, finding, checking and stopping that process and its state directory; the
broker is the real Apache Kafka (jars from Maven Central), never a stand-in.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

from streams.config import KAFKA_VERSION, Settings
from streams.errors import BrokerStartFailed, BrokerUnavailable
from streams.kafka.jars import ensure_jars
from streams.kafka.local_security import (
    SecureFiles,
    ensure_secure_files,
    secure_listener_settings,
    write_client_properties,
)
from streams.kafka.prerequisites import find_java
from streams.kafka.probe import wait_for_metadata

HOST = "127.0.0.1"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
# A 2-core machine runs the broker next to the workers under test: keep the heap modest.
JVM_HEAP = ("-Xms256m", "-Xmx768m")


@dataclass(frozen=True, slots=True)
class BrokerState:
    """A running broker, as state.json records it. data_dir and cluster_id default to ""
    so a state file written before they existed still reads (status() fills them in)."""

    pid: int
    bootstrap: str
    controller_port: int
    kafka_version: str
    started_at: float
    log_file: str
    data_dir: str = ""
    cluster_id: str = ""
    #: --secure: the SASL_SSL listener's address and the client.properties that reaches it.
    secure_bootstrap: str = ""
    client_config: str = ""

    @property
    def port(self) -> int:
        return int(self.bootstrap.rsplit(":", 1)[1])


@dataclass(frozen=True, slots=True)
class _Identity:
    """What a formatted data directory binds the broker to: its cluster id and ports.

    The controller port is part of the KRaft voter set recorded at format time, so it must
    stay; the broker port is kept so clients' bootstrap addresses survive a restart.
    """

    cluster_id: str
    broker_port: int
    controller_port: int
    secure_port: int | None = None  # the SASL_SSL listener, once started with --secure


class LocalBroker:
    """Manage the local broker whose state lives under settings.broker_dir.

    start() reuses a running broker; otherwise it starts one on the data directory left by
    the previous start (same cluster id, broker port and controller port: topics and
    committed offsets survive stop + start), or formats a new cluster when there is none or
    `fresh` is asked. stop() shuts it down with SIGTERM (clean controlled shutdown) and
    falls back to SIGKILL after a timeout; it keeps the data.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        java: str = "java",
        mvn: str = "mvn",
        heap: tuple[str, ...] = JVM_HEAP,
    ) -> None:
        self._settings = settings
        self._dir = settings.broker_dir
        self._java = java
        self._mvn = mvn
        self._heap = heap

    @property
    def state_file(self) -> Path:
        return self._dir / "state.json"

    @property
    def data_dir(self) -> Path:
        return self._dir / "data"

    def status(self) -> BrokerState | None:
        """The running broker's state, or None (stale state files are removed)."""
        state = self._read_state()
        if state is None:
            return None
        if not _pid_alive(state.pid) or not _port_open(HOST, state.port):
            self.state_file.unlink(missing_ok=True)
            return None
        if not state.data_dir or not state.cluster_id:
            # Written by an older streams: the data directory itself says which cluster.
            state = replace(
                state, data_dir=str(self.data_dir), cluster_id=_read_cluster_id(self.data_dir)
            )
        return state

    def start(
        self,
        *,
        port: int | None = None,
        refresh: bool = False,
        fresh: bool = False,
        secure: bool = False,
    ) -> tuple[BrokerState, bool]:
        """Start (or reuse) the broker; returns its state and whether it was already running.

        port: the listener port (default: the remembered one, else a free one). refresh:
        fetch the jars again and restart. fresh: wipe the data and format a new cluster.
        BrokerStartFailed (one line) when a remembered port is held by another process.
        secure: add a SASL_SSL listener (streams.kafka.local_security), restarting a running
        broker that has none; it stays on for later starts until --fresh.
        """
        running = self.status()
        upgrade = secure and running is not None and not running.secure_bootstrap
        if running is not None and not (refresh or fresh or upgrade):
            return running, True
        if running is not None:
            self.stop()
        if fresh:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        java = find_java(self._java)
        libs = ensure_jars(self._settings.jar_cache, refresh=refresh, mvn=self._mvn)
        classpath = f"{libs}/*"
        identity = self._remembered()
        if identity is None:
            identity = _Identity(_cluster_id(), _claim_port(port), _claim_port(None))
            if secure:
                identity = replace(identity, secure_port=_claim_port(None))
            self._prepare_dir(identity)
            self._format_storage(java, classpath, identity.cluster_id)
        else:
            broker_port = identity.broker_port if port is None else port
            _claim_port(broker_port, remembered=port is None)
            _claim_port(identity.controller_port, remembered=True, controller=True)
            secure_port = identity.secure_port
            if secure_port is not None:
                _claim_port(secure_port, remembered=True)
            elif secure:
                secure_port = _claim_port(None)
            identity = replace(identity, broker_port=broker_port, secure_port=secure_port)
            self._prepare_dir(identity)
        log_file = self._dir / "broker.log"
        proc = self._launch(java, classpath, log_file)
        state = BrokerState(
            pid=proc.pid,
            bootstrap=f"{HOST}:{identity.broker_port}",
            controller_port=identity.controller_port,
            kafka_version=KAFKA_VERSION,
            started_at=time.time(),
            log_file=str(log_file),
            data_dir=str(self.data_dir),
            cluster_id=identity.cluster_id,
        )
        if identity.secure_port is not None:
            secure_bootstrap = f"{HOST}:{identity.secure_port}"
            properties = write_client_properties(self._secure_files(), secure_bootstrap)
            state = replace(state, secure_bootstrap=secure_bootstrap, client_config=str(properties))
        self._wait_ready(proc, state)
        self.state_file.write_text(json.dumps(asdict(state), indent=2))
        return state, False

    def stop(self) -> bool:
        """Stop the broker (its data stays for the next start); False when none was running."""
        state = self._read_state()
        if state is None or not _pid_alive(state.pid):
            self.state_file.unlink(missing_ok=True)
            return False
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and _pid_alive(state.pid):
            time.sleep(0.2)
        if _pid_alive(state.pid):
            os.kill(state.pid, signal.SIGKILL)
            while _pid_alive(state.pid) and time.monotonic() < deadline + 5.0:
                time.sleep(0.05)
        _reap(state.pid)
        self.state_file.unlink(missing_ok=True)
        return True

    def _read_state(self) -> BrokerState | None:
        try:
            return BrokerState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _remembered(self) -> _Identity | None:
        """The identity of a formatted data directory, from meta.properties (cluster id)
        and the server.properties written beside it (ports); None when either is missing."""
        cluster_id = _read_cluster_id(self.data_dir)
        props = _read_properties(self._dir / "server.properties")
        listeners = dict(
            item.split("://", 1) for item in props.get("listeners", "").split(",") if "://" in item
        )
        try:
            broker_port = int(listeners["PLAINTEXT"].rsplit(":", 1)[1])
            controller_port = int(listeners["CONTROLLER"].rsplit(":", 1)[1])
            secure = listeners.get("SASL_SSL")
            secure_port = None if secure is None else int(secure.rsplit(":", 1)[1])
        except (KeyError, ValueError, IndexError):
            return None
        if not cluster_id or props.get("log.dirs") != str(self.data_dir):
            return None
        return _Identity(cluster_id, broker_port, controller_port, secure_port)

    def _secure_files(self) -> SecureFiles:
        return ensure_secure_files(self._dir / "secure")

    def _prepare_dir(self, identity: _Identity) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self._dir / "server.properties"
        if identity.secure_port is None:
            path.write_text(
                server_properties(self.data_dir, identity.broker_port, identity.controller_port)
            )
        else:
            secure = secure_listener_settings(self._secure_files())
            text = server_properties(
                self.data_dir, identity.broker_port, identity.controller_port,
                secure_port=identity.secure_port, secure=secure,
            )  # fmt: skip
            path.touch(mode=0o600)
            path.chmod(0o600)  # it holds the listener's password
            path.write_text(text)
        log4j = resources.files("streams.kafka").joinpath("resources/log4j2.properties")
        (self._dir / "log4j2.properties").write_text(log4j.read_text())

    def _format_storage(self, java: str, classpath: str, cluster_id: str) -> None:
        # Only ever on an empty directory: leftovers of a half-formatted one would fail it.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        cmd = [
            java, "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
            "-t", cluster_id, "-c", str(self._dir / "server.properties"),
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise BrokerStartFailed(
                f"formatting KRaft storage in {self.data_dir} failed: {' '.join(detail)}"
            )

    def _launch(self, java: str, classpath: str, log_file: Path) -> subprocess.Popen[bytes]:
        cmd = [
            java, *self._heap, "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._dir / 'log4j2.properties'}",
            f"-Dstreams.broker.log={log_file}",
            "-cp", classpath, "kafka.Kafka", str(self._dir / "server.properties"),
        ]  # fmt: skip
        # A new session: the broker outlives `streams broker start` and ignores its Ctrl-C.
        # The child keeps its own copy of the console file; ours is closed at once.
        with (self._dir / "console.log").open("wb") as console:
            proc = subprocess.Popen(
                cmd, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self._dir,
            )  # fmt: skip
        _STARTED[proc.pid] = proc
        return proc

    def _wait_ready(self, proc: subprocess.Popen[bytes], state: BrokerState) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _STARTED.pop(proc.pid, None)
                raise BrokerStartFailed(
                    f"the Kafka broker exited with code {proc.returncode} while starting; "
                    f"see {state.log_file} and {self._dir / 'console.log'}"
                )
            try:
                wait_for_metadata(state.bootstrap, timeout_s=2.0)
                return
            except BrokerUnavailable:
                continue
        proc.kill()
        _reap(proc.pid)
        raise BrokerStartFailed(
            f"the Kafka broker did not answer on {state.bootstrap} within {START_TIMEOUT_S:.0f} s; "
            f"see {state.log_file}"
        )


def _cluster_id() -> str:
    """A random KRaft cluster id. Like Kafka's Uuid.randomUuid, never one starting with '-':
    the storage tool's argument parser would read it as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def server_properties(
    data_dir: Path,
    broker_port: int,
    controller_port: int,
    *,
    secure_port: int | None = None,
    secure: Mapping[str, str] | None = None,
) -> str:
    """Single-node KRaft settings: every internal topic at replication factor 1, no delays.
    With `secure_port`, a SASL_SSL listener there too, with the `secure` settings."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{broker_port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # KIP-848 groups: heartbeat every second and a 10 s session, as the classic
        # members get from the client (the broker defaults, 5 s and 45 s, make every
        # membership change take ~5 s and hold a dead member's partitions for 45 s).
        "group.consumer.heartbeat.interval.ms": "1000",
        "group.consumer.min.heartbeat.interval.ms": "1000",
        "group.consumer.session.timeout.ms": "10000",
        "group.consumer.min.session.timeout.ms": "10000",
        # Tests create and delete many topics; keep the broker lean on a 2-core machine.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.check.interval.ms": "60000",
        "auto.create.topics.enable": "false",
    }
    if secure_port is not None:
        # PLAINTEXT stays the broker's own (inter-broker) listener, on loopback only.
        settings["listeners"] += f",SASL_SSL://{HOST}:{secure_port}"
        settings["advertised.listeners"] += f",SASL_SSL://{HOST}:{secure_port}"
        settings["listener.security.protocol.map"] += ",SASL_SSL:SASL_SSL"
        settings.update(secure or {})
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def _claim_port(
    requested: int | None, *, remembered: bool = False, controller: bool = False
) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the JVM binds its listeners: connections the stopped broker left in TIME_WAIT
        # do not count as "in use", only a socket someone else is listening on does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, requested or 0))
        except OSError as exc:
            if controller:
                way_out = (
                    "the cluster's voter set needs that port: free it, or start an empty "
                    "cluster with --fresh"
                )
            elif remembered:
                way_out = "free it, choose another listener port with --port, or --fresh"
            else:
                way_out = "stop what holds it or choose another with --port"
            what = "remembered from the last start " if remembered else ""
            raise BrokerStartFailed(
                f"port {requested} on {HOST} {what}is in use by another process; {way_out}"
            ) from exc
        port: int = sock.getsockname()[1]
        return port


def _read_properties(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def _read_cluster_id(data_dir: Path) -> str:
    """The cluster id the storage tool wrote into data/meta.properties ("" when unformatted)."""
    return _read_properties(data_dir / "meta.properties").get("cluster.id", "")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


#: Brokers this process started, by pid: their Popen objects live until stop() reaps them
#: (a Popen dropped while its process runs is a ResourceWarning, and its exit status would
#: wait for the garbage collector: a zombie meanwhile).
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    """Collect the exit status of a broker this process started, so it leaves no zombie."""
    proc = _STARTED.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)
        return
    # Not our child (started by an earlier `streams broker start`): init reaps it.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat an exited child as dead.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True
    return status != "Z"
