"""Traffic helpers for benchmarks: a paced producer, a bounded background feeder, a reader
of output records from given offsets, and Kafka's own perf tools as the broker ceiling.

Benchmarks only; must not be imported by streams/.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KafkaTopicPartition

from streams.errors import BrokerUnavailable
from streams.events import TaskEventCodec, new_task_event
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.kafka.producer import RecordProducer
from streams.topology import Topology
from streams.types import TopicPartition

KAFKA_LIBS = Path.home() / ".cache/streams/cache/kafka-4.1.1/libs"
TICK_S = 0.01  # paced producers top up every 10 ms: smooth enough, cheap enough


def produce_paced(
    client: ClientConfig,
    topology: Topology,
    topic: str,
    rate: float,
    seconds: float,
    payload_size: int,
    *,
    stage: str,
    keep_going: Callable[[], bool] = lambda: True,
) -> int:
    """Send fresh events at `rate`/s for `seconds` (while keep_going()); returns how many.

    Each event is created (enqueued_at = now) right before it is sent, so output timestamp
    minus created_at is the true end-to-end latency, with no pre-produced backlog in it.
    """
    producer = RecordProducer(client)
    codec = TaskEventCodec()
    payload = os.urandom(payload_size)
    sent = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds and keep_going():
        for _ in range(int(rate * elapsed) - sent):
            event = new_task_event(
                workflow=topology.workflow,
                stage=stage,
                tenant="bench",
                lane="standard",
                payload=payload,
                now_ms=int(time.time() * 1000),
            )
            producer.send_when_room(topic, codec.encode(event), key=event.run_id.encode())
            sent += 1
        producer.poll(0)
        time.sleep(TICK_S)
    producer.flush(60.0)
    return sent


class BoundedFeeder:
    """Feeds `topic` at `rate`/s from a thread, holding off while the group's lag on it is
    above `max_lag`, so a long run cannot pile up an unbounded backlog."""

    def __init__(
        self,
        client: ClientConfig,
        topology: Topology,
        stage: str,
        rate: float,
        payload_size: int,
        max_lag: int,
    ) -> None:
        self._args = (client, topology, stage, rate, payload_size, max_lag)
        self._stop = threading.Event()
        self.sent = 0
        self.held_s = 0.0
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60.0)

    def _run(self) -> None:
        client, topology, stage, rate, payload_size, max_lag = self._args
        spec = topology.stages[stage]
        admin = Admin(client)
        tps = [TopicPartition(t, p) for t in spec.input_topics for p in range(_parts(topology))]
        while not self._stop.is_set():
            try:
                end = sum(admin.end_offsets(tps).values())
                group = admin.committed_offsets(spec.consumer_group, tps)
            except BrokerUnavailable:  # a passing broker error: read again shortly
                self._stop.wait(0.2)
                continue
            done = sum(o or 0 for o in group.values())
            if end - done > max_lag:
                self.held_s += 0.5
                self._stop.wait(0.5)
                continue
            self.sent += produce_paced(
                client,
                topology,
                spec.input_topics[0],
                rate,
                0.5,
                payload_size,
                stage=stage,
                keep_going=lambda: not self._stop.is_set(),
            )


def _parts(topology: Topology) -> int:
    return topology.topic_defaults.partitions


def read_from(
    client: ClientConfig, starts: dict[TopicPartition, int], expect: int, timeout_s: float = 60.0
) -> list[tuple[int, bytes]]:
    """(timestamp_ms, value) of `expect` records read from the given offsets onwards."""
    consumer = Consumer(
        {**client.base(), "group.id": f"bench-read-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    consumer.assign([KafkaTopicPartition(tp.topic, tp.partition, o) for tp, o in starts.items()])
    out: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.2):
                value = m.value()
                if m.error() is None and isinstance(value, bytes):
                    out.append((m.timestamp()[1], value))
    finally:
        consumer.close()
    return out


def latencies_ms(records: list[tuple[int, bytes]]) -> list[float]:
    """Broker append time of each output minus its run's created_at (carried through)."""
    codec = TaskEventCodec()
    return [float(ts - codec.decode(value).created_at_ms) for ts, value in records]


# --------------------------------------------------------------------------- Kafka's tools
def kafka_tools_ceiling(client: ClientConfig, count: int, partitions: int) -> dict[str, Any]:
    """Kafka's ProducerPerformance then ConsumerPerformance on a fresh topic: the ceiling of
    this broker on this machine for 1 KB records (JVM clients, no decode, no commits)."""
    topic = f"bench-perf-{uuid.uuid4().hex[:8]}"
    Admin(client).apply([TopicWanted(topic, partitions, 3_600_000)])
    servers = client.bootstrap_servers
    # Same producer durability as streams' RecordProducer (acks=all, idempotent, lz4, 5 ms).
    produced = _java(
        "org.apache.kafka.tools.ProducerPerformance",
        ["--topic", topic, "--num-records", str(count), "--record-size", "1024"],
        ["--throughput", "-1", "--producer-props", f"bootstrap.servers={servers}", "acks=all"],
        ["enable.idempotence=true", "linger.ms=5", "compression.type=lz4"],
    )
    summary = [ln for ln in produced.splitlines() if "records sent" in ln][-1]
    producer_rate = float(re.search(r"([\d.]+) records/sec", summary).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"(\d+) ms 99th", summary)
    consumed = _java(
        "org.apache.kafka.tools.ConsumerPerformance",
        ["--bootstrap-server", servers, "--topic", topic, "--messages", str(count)],
        ["--timeout", "60000"],
    )
    lines = [ln for ln in consumed.splitlines() if ln.strip()]
    header_at = next(i for i, ln in enumerate(lines) if ln.startswith("start.time"))
    names = [h.strip() for h in lines[header_at].split(",")]
    values = [v.strip() for v in lines[header_at + 1].split(",")]
    row = dict(zip(names, values, strict=False))
    return {
        "producer_records_per_s": producer_rate,
        "producer_p99_ms": float(p99.group(1)) if p99 else None,
        "producer_summary": summary.strip(),
        "consumer_records_per_s": float(row["nMsg.sec"]),
        "consumer_fetch_records_per_s": float(row.get("fetch.nMsg.sec", "nan")),
    }


def _java(main_class: str, *arg_groups: list[str]) -> str:
    args = [a for group in arg_groups for a in group]
    cmd = ["java", "-Xmx512m", "-cp", f"{KAFKA_LIBS}/*", main_class, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{main_class} failed: {done.stderr.strip()[-500:]}")
    return done.stdout
