"""The client-log gate with a fake clock: one line per broker state change, a summary of
the rest; and, against a closed loopback port, that a real client's retries stay quiet."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from streams.kafka.client_config import ClientConfig
from streams.kafka.producer import RecordProducer
from streams.policy.log_limit import ClientLogGate, split_broker

FAIL = (
    "[thrd:127.0.0.1:9092/bootstrap]: 127.0.0.1:9092/bootstrap: Connect to "
    "ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)"
)


def test_split_broker_reads_librdkafka_prefixes() -> None:
    assert split_broker(FAIL) == (
        "127.0.0.1:9092",
        "Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)",
    )
    assert split_broker("1/1 brokers are down") == (None, "1/1 brokers are down")


def test_one_line_per_broker_state_change_and_a_summary() -> None:
    gate = ClientLogGate(summary_every_s=60.0)
    lines = gate.line("FAIL", FAIL, 0.0)
    assert lines == [
        (
            "warning",
            "broker 127.0.0.1:9092 down: Connect to ipv4#127.0.0.1:9092 failed: "
            "Connection refused (after 0ms in state CONNECT)",
        )
    ]
    assert gate.brokers_down == {"127.0.0.1:9092"}
    # Four retries a second for 59 s, plus the error events that repeat them: all counted.
    printed = []
    now = 0.0
    for _ in range(236):
        now += 0.25
        printed += gate.line("FAIL", FAIL, now)
        printed += gate.line("_TRANSPORT", FAIL.split("]: ", 1)[1], now)
        printed += gate.line("_ALL_BROKERS_DOWN", "1/1 brokers are down", now)
    assert printed == [("warning", "_ALL_BROKERS_DOWN: 1/1 brokers are down")]
    summary = gate.tick(60.0)
    assert summary == [
        (
            "info",
            "suppressed 707 client log lines in the last 60 s: FAIL x236, _TRANSPORT x236, "
            "_ALL_BROKERS_DOWN x235",
        )
    ]
    assert gate.tick(61.0) == []
    assert gate.broker_up("127.0.0.1:9092", 63.0) == [
        ("info", "broker 127.0.0.1:9092 back after 63 s")
    ]
    assert gate.broker_up("127.0.0.1:9092", 64.0) == []  # already back: no second line
    assert gate.brokers_down == frozenset()
    # Down again: a new state change, a new line.
    assert gate.line("FAIL", FAIL, 70.0)[0][1].startswith("broker 127.0.0.1:9092 down")


def test_other_lines_repeat_once_a_window_numbers_ignored() -> None:
    gate = ClientLogGate(repeat_every_s=60.0, summary_every_s=600.0)
    assert gate.line("COMMITFAIL", "Offset commit (7 partitions) failed", 0.0)
    assert gate.line("COMMITFAIL", "Offset commit (9 partitions) failed", 1.0) == []
    assert gate.line("COMMITFAIL", "Offset commit (9 partitions) failed", 61.0) != []


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError):
        ClientLogGate(summary_every_s=0)


@pytest.mark.timeout(60)
def test_a_client_against_a_closed_port_logs_a_few_lines(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: connections are refused
    caplog.set_level(logging.DEBUG, logger="streams.kafka")
    producer = RecordProducer(ClientConfig(f"127.0.0.1:{port}", client_id="closed-port-test"))
    producer.send("nowhere", b"x")
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        producer.poll(0.2)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("streams.kafka")]
    assert 1 <= len(lines) <= 5, lines
    assert any(f"broker 127.0.0.1:{port} down" in line for line in lines), lines
    # Nothing bypasses Python logging (librdkafka's default logger prints to stderr).
    assert "Connection refused" not in capfd.readouterr().err
    assert producer.queued() == 1
