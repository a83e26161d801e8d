"""A registry outage versus a registry's "no": the client's error classes, the read timeout
and fail-fast of reads by id, the shared backoff (fake clock) and the partition holds."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from streams.policy.outage_backoff import OutageBackoff
from streams.registry import RegistryClient, RegistryError, RegistryIds, RegistryUnavailable
from streams.runtime.decode_holds import REASON, DecodeHolds
from streams.runtime.pause_log import PauseLog
from streams.runtime.pauses import PauseSet
from streams.types import Record, TopicPartition
from tests.registry_double import running_registry

pytestmark = pytest.mark.timeout(30)

TP = TopicPartition("w.plan.standard", 0)
OTHER = TopicPartition("w.plan.standard", 1)


# ----------------------------------------------------------------- the client
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def answering(status: int, delay_s: float = 0.0) -> Iterator[str]:
    """A registry that answers every request with `status` (after `delay_s`)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay_s)
            body = b'{"error_code": 50001, "message": "backend down"}'
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up first

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_connection_refused_is_unavailable() -> None:
    client = RegistryClient(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        client.schema_text(1)


@pytest.mark.parametrize("status", [500, 503, 429, 408])
def test_server_errors_and_not_now_statuses_are_unavailable(status: int) -> None:
    with answering(status) as url, pytest.raises(RegistryUnavailable, match=str(status)):
        RegistryClient(url).schema_text(1)


def test_an_unknown_id_is_a_registry_error_not_unavailable() -> None:
    with running_registry() as double, pytest.raises(RegistryError, match="unknown") as caught:
        RegistryClient(double.url).schema_text(404)
    assert not isinstance(caught.value, RegistryUnavailable)
    assert not caught.value.retriable


def test_a_read_by_id_waits_at_most_its_read_timeout() -> None:
    with answering(200, delay_s=3.0) as url:
        client = RegistryClient(url, read_timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable):
            client.schema_text(1)
        assert time.monotonic() - started < 2.0


def test_reads_of_uncached_ids_fail_fast_right_after_an_unanswered_one() -> None:
    now = [100.0]
    calls: list[int] = []

    class Down(RegistryClient):
        def schema_text(self, schema_id: int) -> str:
            calls.append(schema_id)
            raise RegistryUnavailable("schema registry at x unreachable")

    ids = RegistryIds(Down("http://x"), monotonic=lambda: now[0])
    with pytest.raises(RegistryUnavailable):
        ids.schema_text(1)
    now[0] += 0.3
    with pytest.raises(RegistryUnavailable, match="not asked"):
        ids.schema_text(2)
    assert calls == [1]
    now[0] += 0.3  # past the quiet window: asked again
    with pytest.raises(RegistryUnavailable):
        ids.schema_text(2)
    assert calls == [1, 2]


# ----------------------------------------------------------------- the backoff
def test_backoff_doubles_per_round_up_to_the_cap() -> None:
    backoff = OutageBackoff(first_s=1.0, cap_s=30.0)
    now = 0.0
    waits = []
    for _ in range(7):
        retry_at = backoff.failed(now)
        waits.append(retry_at - now)
        assert not backoff.due(retry_at - 0.01) and backoff.due(retry_at)
        now = retry_at
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_failures_within_a_round_share_its_due_time() -> None:
    backoff = OutageBackoff()
    assert backoff.failed(10.0) == 11.0
    assert backoff.failed(10.4) == 11.0  # another partition, same outage
    assert backoff.failed(11.0) == 13.0  # the retry failed: next round
    backoff.recovered()
    assert not backoff.due(1e9)
    assert backoff.failed(20.0) == 21.0


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        OutageBackoff(first_s=0)
    with pytest.raises(ValueError):
        OutageBackoff(first_s=5, cap_s=1)


# ----------------------------------------------------------------- the holds
class Holds:
    def __init__(self) -> None:
        self.pauses = PauseSet()
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.holds = DecodeHolds(
            "plan",
            self.pauses,
            lambda tp, o: self.seeks.append((tp, o)),
            PauseLog("plan", "downstream"),
        )

    def admits(self, tp: TopicPartition, offset: int) -> bool:
        return not self.holds.partitions or self.holds.admits(record(tp, offset))


def record(tp: TopicPartition, offset: int) -> Record:
    return Record(tp.topic, tp.partition, offset, b"k", b"\x00\x00\x00\x00\x07", 0)


def test_a_held_partition_is_rewound_paused_and_drops_what_follows() -> None:
    h = Holds()
    assert h.admits(TP, 4)
    h.holds.hold(record(TP, 5), RegistryUnavailable("down"), now_mono=0.0)
    assert h.seeks == [(TP, 5)]
    assert h.pauses.reasons(TP) == {REASON}
    assert not h.admits(TP, 6) and not h.admits(TP, 7)  # same poll batch, after it
    assert h.admits(OTHER, 6)  # other partitions are not held
    h.holds.update([TP, OTHER], 0.9)
    assert h.pauses.reasons(TP) == {REASON}  # not due yet
    h.holds.update([TP, OTHER], 1.0)
    assert h.pauses.reasons(TP) == frozenset()  # due: fetching again, from offset 5
    assert h.holds.partitions == {TP: 5}
    assert h.admits(TP, 5)  # the held record comes back first
    h.holds.update([TP, OTHER], 1.1)
    assert h.holds.partitions == {} and h.holds.backoff.retry_at is None


def test_the_retry_failing_again_backs_off_longer() -> None:
    h = Holds()
    h.holds.hold(record(TP, 5), RegistryUnavailable("down"), now_mono=0.0)
    h.holds.update([TP], 1.0)
    assert h.admits(TP, 5)
    h.holds.hold(record(TP, 5), RegistryUnavailable("down"), now_mono=1.05)
    assert h.pauses.reasons(TP) == {REASON}
    h.holds.update([TP], 2.5)
    assert h.pauses.reasons(TP) == {REASON}  # 2 s this round
    h.holds.update([TP], 3.05)
    assert h.pauses.reasons(TP) == frozenset()


def test_a_record_ahead_of_the_held_one_is_refused_and_the_rewind_repeated() -> None:
    h = Holds()
    h.holds.hold(record(TP, 5), RegistryUnavailable("down"), now_mono=0.0)
    h.holds.update([TP], 1.0)
    assert not h.admits(TP, 6)
    assert h.seeks == [(TP, 5), (TP, 5)]
    assert h.admits(TP, 3)  # rewound further back (aborted transaction): in order
    assert h.admits(TP, 5)


def test_forgotten_partitions_are_not_held() -> None:
    h = Holds()
    h.holds.hold(record(TP, 5), RegistryUnavailable("down"), now_mono=0.0)
    h.holds.forget([TP])
    assert h.holds.partitions == {} and h.admits(TP, 0)
    assert h.holds.backoff.retry_at is None
