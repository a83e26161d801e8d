"""`streams broker` against the real Apache Kafka broker: start, status, reuse, stop, failures."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.config import Settings, load_settings
from streams.errors import BrokerStartFailed, DeliveryError
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.kafka.consumer import GroupConsumer
from streams.kafka.local_broker import LocalBroker
from streams.kafka.probe import wait_for_metadata
from streams.kafka.producer import RecordProducer
from streams.kafka.tail import TopicTail
from streams.testing import publish_raw
from streams.types import Record, TopicPartition

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


def _commit_one_record(bootstrap: str, topic: str, group: str) -> None:
    config = ClientConfig(bootstrap, client_id="broker-keep-test")
    Admin(config).apply([TopicWanted(topic, 1)])
    publish_raw(config, topic, [b"kept"], key=b"k")
    consumer = GroupConsumer(config, group, [topic])
    try:
        deadline = time.monotonic() + 60
        records: list[Record] = []
        while not records and time.monotonic() < deadline:
            records = consumer.poll(10, 0.5)
        assert records, "the produced record never arrived"
        assert consumer.commit({records[0].tp: records[0].offset + 1})
    finally:
        consumer.close()


def test_stop_start_keeps_data_and_port_fresh_wipes(
    own_home: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = LocalBroker(own_home)
    topic, group = f"kept-{uuid.uuid4().hex[:8]}", f"kept-group-{uuid.uuid4().hex[:8]}"
    first, _ = broker.start()
    try:
        _commit_one_record(first.bootstrap, topic, group)
    finally:
        assert broker.stop()

    second, reused = broker.start()
    try:
        assert not reused
        assert second.bootstrap == first.bootstrap
        assert second.controller_port == first.controller_port
        assert second.cluster_id == first.cluster_id != ""
        admin = Admin(ClientConfig(second.bootstrap))
        assert admin.partition_counts().get(topic) == 1
        tp = TopicPartition(topic, 0)
        assert admin.committed_offsets(group, [tp]) == {tp: 1}
        admin.close()

        monkeypatch.setenv("STREAMS_HOME", str(own_home.home))
        monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
        shown = CliRunner().invoke(app, ["broker", "status"])
        assert shown.exit_code == 0, shown.output
        assert str(broker.data_dir) in shown.output
        assert second.cluster_id in shown.output
    finally:
        assert broker.stop()

    # The remembered port held by someone else: one line naming it and the ways out.
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", second.port))
        holder.listen()
        with pytest.raises(BrokerStartFailed) as info:
            broker.start()
    message = str(info.value)
    assert f"port {second.port}" in message and "--fresh" in message and "--port" in message
    assert "\n" not in message

    fresh, _ = broker.start(fresh=True)
    try:
        assert fresh.cluster_id != first.cluster_id
        assert topic not in Admin(ClientConfig(fresh.bootstrap)).partition_counts()
    finally:
        assert broker.stop()


def test_clients_ride_out_a_broker_restart(own_home: Settings) -> None:
    """Broker stopped under live clients: commits defer (False, at once), polls and reads
    return nothing, a record sent meanwhile is delivered once the broker is back."""
    broker = LocalBroker(own_home)
    state, _ = broker.start()
    config = ClientConfig(state.bootstrap, client_id="restart-test")
    topic, group = f"restart-{uuid.uuid4().hex[:8]}", f"restart-group-{uuid.uuid4().hex[:8]}"
    Admin(config).apply([TopicWanted(topic, 1)])
    publish_raw(config, topic, [b"before"], key=b"k")
    consumer = GroupConsumer(config, group, [topic])
    producer = RecordProducer(config)
    tail = TopicTail(config, topic, 1)
    acks: list[DeliveryError | None] = []
    tp = TopicPartition(topic, 0)
    try:
        deadline = time.monotonic() + 60
        records: list[Record] = []
        while not records and time.monotonic() < deadline:
            records = consumer.poll(10, 0.5)
        assert records
        assert consumer.commit({tp: 1})

        assert broker.stop()
        producer.send(topic, b"during", key=b"k", on_ack=acks.append)
        outage_end = time.monotonic() + 8
        while time.monotonic() < outage_end:
            assert consumer.poll(10, 0.5) == []
            tail.poll(10, 0.1)  # must not raise
            producer.poll(0.1)
            started = time.monotonic()
            assert consumer.commit({tp: 1}) is False
            assert time.monotonic() - started < 2.0, "a deferred commit must not block"
        assert consumer.committed([tp], timeout_s=1.0) == {}
        assert acks == []  # still retrying inside the client, not failed

        again, _ = broker.start()
        assert again.bootstrap == state.bootstrap
        deadline = time.monotonic() + 90
        committed = False
        while time.monotonic() < deadline and not (acks and committed):
            consumer.poll(10, 0.5)
            producer.poll(0.1)
            committed = committed or consumer.commit({tp: 1})
        assert acks == [None], "the record sent during the outage was not delivered"
        assert committed, "commits did not resume after the broker came back"
    finally:
        consumer.close()
        tail.close()
        producer.flush(5)
        broker.stop()
