"""A cluster that keeps refusing a running client's credentials (password rotated, user
removed) stops the client after a grace period with one line saying what to check, instead
of librdkafka reconnecting forever; a broker seen up again in between clears it. A process
whose loop is stuck in a client call the refusal keeps from returning is stopped by the
refusal watchdog with the same line, STUCK_GRACE_S after the loop's own grace."""

from __future__ import annotations

import io
import json
import threading

import pytest
from confluent_kafka import KafkaError

from streams.errors import AuthorizationFailed
from streams.kafka.client_logs import REFUSED_GRACE_S, ClientHooks, ClientLogs
from streams.runtime.refusal_watchdog import STUCK_GRACE_S, RefusalWatchdog, overdue_refusal

_REFUSED = KafkaError(
    KafkaError._AUTHENTICATION,
    "sasl_ssl://b:9093/bootstrap: SASL authentication error: Authentication failed",
)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_refusals_for_longer_than_the_grace_stop_the_client_with_one_line() -> None:
    clock = _Clock()
    logs = ClientLogs(clock=clock)
    hooks = ClientHooks(logs, "b:9093|alice")
    producer = ClientHooks(logs, "b:9093|alice")  # another client, same cluster and user
    other = ClientHooks(logs, "c:9093|alice")
    hooks.raise_if_refused("consumer of group g")  # nothing refused yet
    producer.on_error(_REFUSED)  # the refusal may reach any of the process's clients
    clock.now += REFUSED_GRACE_S - 1
    hooks.raise_if_refused("consumer of group g")  # within the grace: it may be a rotation
    hooks.on_error(_REFUSED)
    clock.now += 2
    other.raise_if_refused("consumer of group h")  # another cluster is not refused
    with pytest.raises(AuthorizationFailed) as caught:
        hooks.raise_if_refused("consumer of group g")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("consumer of group g: the cluster has refused the credentials")
    assert "Authentication failed" in message
    assert "sasl.username" in message and "sasl.password" in message


def test_a_broker_seen_up_again_clears_the_refusal() -> None:
    clock = _Clock()
    hooks = ClientHooks(ClientLogs(clock=clock), "b:9093|alice")
    hooks.on_error(_REFUSED)
    clock.now += REFUSED_GRACE_S / 2
    hooks.on_stats(json.dumps({"brokers": {"b:9093/1": {"state": "UP"}}}))
    clock.now += REFUSED_GRACE_S
    hooks.raise_if_refused("producer")  # no refusal since it came back


REFUSAL = "sasl_plaintext://127.0.0.1:9/bootstrap: SASL authentication error"


def test_due_only_after_the_loops_grace_and_the_stuck_grace() -> None:
    clock = _Clock()
    logs = ClientLogs(clock=clock)
    assert overdue_refusal(logs, "c", "stage work worker") is None
    logs.refused("c", REFUSAL)
    clock.now += REFUSED_GRACE_S + STUCK_GRACE_S - 0.5
    logs.refused("c", REFUSAL)  # refusals go on: the first one dates it
    assert overdue_refusal(logs, "c", "stage work worker") is None
    clock.now += 1.0
    line = overdue_refusal(logs, "c", "stage work worker")
    assert line is not None
    assert line.startswith("stage work worker: the cluster has refused the credentials for 46 s")
    assert REFUSAL in line and "sasl.password" in line
    assert overdue_refusal(logs, "other cluster", "stage work worker") is None


def test_a_broker_answering_again_clears_it() -> None:
    clock = _Clock()
    logs = ClientLogs(clock=clock)
    logs.refused("c", REFUSAL)
    clock.now += REFUSED_GRACE_S + STUCK_GRACE_S + 1
    logs.reachable("c")
    assert overdue_refusal(logs, "c", "w") is None


def test_the_watchdog_prints_one_line_and_exits_1() -> None:
    clock = _Clock()
    logs = ClientLogs(clock=clock)
    codes: list[int] = []
    exited = threading.Event()
    stderr = io.StringIO()

    def exit_process(code: int) -> None:
        codes.append(code)
        exited.set()

    watchdog = RefusalWatchdog(
        "c", "stage work worker", logs=logs, exit_process=exit_process, stderr=stderr,
        interval_s=0.01,
    )  # fmt: skip
    watchdog.start()
    logs.refused("c", REFUSAL)
    assert not exited.wait(0.2)  # refused, but within the graces
    clock.now += REFUSED_GRACE_S + STUCK_GRACE_S + 1
    assert exited.wait(5)
    assert codes == [1]
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stage work worker: the cluster has")


def test_a_stopped_watchdog_does_nothing() -> None:
    clock = _Clock()
    logs = ClientLogs(clock=clock)
    codes: list[int] = []
    watchdog = RefusalWatchdog("c", "w", logs=logs, exit_process=codes.append, interval_s=0.01)
    watchdog.start()
    watchdog.stop()
    logs.refused("c", REFUSAL)
    clock.now += REFUSED_GRACE_S + STUCK_GRACE_S + 1
    threading.Event().wait(0.1)
    assert codes == []
