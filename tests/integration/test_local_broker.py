"""`streams broker` against the real Apache Kafka broker: start, status, reuse, stop, failures."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from streams.config import Settings, load_settings
from streams.errors import BrokerStartFailed
from streams.kafka.local_broker import LocalBroker
from streams.kafka.probe import wait_for_metadata

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def own_home(tmp_path: Path) -> Settings:
    """A broker home of this test's own, sharing the session's jar cache (no refetch)."""
    shared = load_settings()
    if shared.bootstrap_servers:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS is set: no local broker is managed")
    return Settings(bootstrap_servers=None, home=tmp_path, cache_dir=shared.jar_cache.parent)


def _java_processes() -> str:
    return subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout


def test_start_status_reuse_stop(own_home: Settings) -> None:
    broker = LocalBroker(own_home)
    assert broker.status() is None

    state, reused = broker.start()
    try:
        assert not reused
        assert state.bootstrap.startswith("127.0.0.1:")
        assert wait_for_metadata(state.bootstrap, timeout_s=10) == 1
        running = [line for line in _java_processes().splitlines() if str(state.pid) in line]
        assert running and "kafka.Kafka" in running[0]

        assert broker.status() == state
        again, reused_again = broker.start()
        assert reused_again
        assert again.pid == state.pid
    finally:
        assert broker.stop()
    assert broker.status() is None
    assert not broker.stop()
    assert f" {state.pid} " not in f" {_java_processes()} "


def test_port_clash_is_a_one_line_error(own_home: Settings) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(BrokerStartFailed, match=f"port {port} on 127.0.0.1 is in use"):
            LocalBroker(own_home).start(port=port)


def test_broker_that_dies_on_start_names_its_log(own_home: Settings) -> None:
    # A heap too small for the JVM to boot: the real broker process exits at once.
    broker = LocalBroker(own_home, heap=("-Xmx1m",))
    with pytest.raises(BrokerStartFailed, match="exited with code") as info:
        broker.start()
    assert "console.log" in str(info.value)
    assert broker.status() is None
