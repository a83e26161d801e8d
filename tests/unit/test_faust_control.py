"""streams.faust's FaustControl against a stand-in for faust's consumer (no broker, fake
clock): which partitions it pauses and resumes on faust's consumer, and that faust is told
to hand on what it already fetched of a paused partition instead of dropping it."""

from __future__ import annotations

from typing import Any, cast

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from streams.clock import FakeClock
from streams.errors import StreamsError
from streams.faust import FaustOptions
from streams.faust._control import FaustControl
from streams.kafka.client_config import ClientConfig
from streams.topology import Topology, parse_topology
from streams.types import TopicPartition


class Consumer:
    """Records what the control asks of faust's consumer."""

    def __init__(self) -> None:
        self.paused: set[TP] = set()
        self.resumed: list[set[TP]] = []
        #: faust's: getmany hands on the fetched records of these although not active.
        self._buffered_partitions: set[TP] = set()

    def pause_partitions(self, tps: set[TP]) -> None:
        self.paused |= tps

    def resume_partitions(self, tps: set[TP]) -> None:
        self.paused -= tps
        self.resumed.append(set(tps))


def topology() -> Topology:
    return parse_topology(
        {
            "workflow": "wf",
            "lanes": ["standard"],
            "stages": {
                "fa": {"handler": "tests.integration.handlers:noop", "downstream": ["sink"]},
                "sink": {"handler": "tests.integration.handlers:noop"},
            },
        },
        "<test>",
        validate_handlers=False,
    )


def control(consumer: Consumer) -> FaustControl:
    wf = topology()
    return FaustControl(
        wf,
        wf.stages["fa"],
        worker_id="w1",
        client=ClientConfig("127.0.0.1:1"),
        options=FaustOptions(),
        clock=FakeClock(),
        registry=CollectorRegistry(),
        consumer=lambda: cast(Any, consumer),
        sent_by_stage={},
        concurrency=lambda: 1,
        buffer_bound=8,
    )


P0, P1 = TopicPartition("wf.fa.standard", 0), TopicPartition("wf.fa.standard", 1)
OTHER = TopicPartition("another-agents-topic", 0)


def test_new_partitions_are_paused_until_the_first_verdict_and_other_topics_never() -> None:
    consumer = Consumer()
    fa = control(consumer)
    fa.assigned({P0, P1, OTHER})
    assert consumer.paused == {TP(*P0), TP(*P1)}
    assert fa.holds(P0) and not fa.holds(OTHER)
    fa.round()  # no downstream reading is missing here (nothing watched yet): resumes
    assert consumer.paused == set() and consumer.resumed == [{TP(*P0), TP(*P1)}]


def test_only_what_it_paused_is_resumed() -> None:
    consumer = Consumer()
    fa = control(consumer)
    fa.assigned({P0, P1})
    fa.round()
    fa.round()
    assert len(consumer.resumed) == 1  # a partition it did not pause is left to faust


def test_faust_hands_on_what_it_fetched_of_a_paused_partition_until_it_resumes() -> None:
    consumer = Consumer()
    handed_on = consumer._buffered_partitions
    full = TP("wf.fa.standard", 7)  # faust's own: its stream buffer is full
    handed_on.add(full)
    fa = control(consumer)
    fa.assigned({P0, P1})
    assert consumer._buffered_partitions is handed_on  # faust's set itself, changed in place
    assert handed_on == {TP(*P0), TP(*P1), full}
    fa.round()  # resumed: active again, and faust's own buffer-full partition stays
    assert handed_on == {full}


def test_a_faust_without_buffered_partitions_is_refused() -> None:
    consumer = Consumer()
    del consumer._buffered_partitions
    fa = control(consumer)
    with pytest.raises(StreamsError, match="_buffered_partitions"):
        fa.assigned({P0})


def test_revoked_partitions_are_forgotten() -> None:
    consumer = Consumer()
    fa = control(consumer)
    fa.assigned({P0, P1})
    fa.revoked({P1})
    assert set(fa.partitions) == {P0} and not fa.holds(P1)
    assert consumer._buffered_partitions == {TP(*P0)}  # no longer marked for faust
    fa.assigned({P1})  # faust passes the full assignment: P0 went elsewhere
    assert set(fa.partitions) == {P1}
