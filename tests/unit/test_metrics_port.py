"""serve_metrics on a taken port: one-line streams error, nothing left running."""

from __future__ import annotations

import socket
import threading

import pytest
from prometheus_client import CollectorRegistry

from streams.errors import MetricsPortUnavailable, StreamsError
from streams.metrics import serve_metrics


def test_a_port_in_use_raises_one_line_and_leaves_no_thread() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        before = set(threading.enumerate())
        with pytest.raises(MetricsPortUnavailable) as caught:
            serve_metrics(CollectorRegistry(), port)
        after = {t for t in threading.enumerate() if t.is_alive()}
    assert isinstance(caught.value, StreamsError)
    assert str(caught.value) == (
        f"metrics port {port} on 127.0.0.1 is already in use; "
        "pick another with --metrics-port (0 picks a free one)"
    )
    assert "\n" not in str(caught.value)
    assert after - before == set()


def test_an_address_that_cannot_be_bound_raises_one_line() -> None:
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is never a local address.
    with pytest.raises(MetricsPortUnavailable) as caught:
        serve_metrics(CollectorRegistry(), 0, addr="192.0.2.1")
    message = str(caught.value)
    assert message.startswith("metrics port 0 on 192.0.2.1 cannot be opened: ")
    assert "\n" not in message
