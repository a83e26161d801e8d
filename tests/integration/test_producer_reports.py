"""RecordProducer's on_report: the client's own delivery report, handed over with no
wrapper (the per-record path's one call per ack), for a record the broker took and for one
it refused, with the refusal mapped to the DeliveryError on_ack would have been given."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streams.errors import DeliveryError
from streams.kafka.admin import Admin, TopicWanted
from streams.kafka.client_config import ClientConfig
from streams.kafka.producer import ClientError, ClientMessage, RecordProducer

pytestmark = pytest.mark.integration


def test_on_report_gets_the_clients_report_for_a_taken_and_a_refused_record(
    client_config: ClientConfig, admin: Admin, unique: Callable[[str], str]
) -> None:
    topic = unique("reports")
    admin.apply([TopicWanted(topic, 1, compacted=True)])
    reports: list[tuple[ClientError | None, ClientMessage]] = []
    producer = RecordProducer(client_config)
    try:
        producer.send(topic, b"v", key=b"k", on_report=lambda e, m: reports.append((e, m)))
        producer.flush(30.0)
        # A compacted topic refuses a record without a key: the broker's refusal, so the
        # client's report carries the error.
        producer.send(topic, b"v", key=None, on_report=lambda e, m: reports.append((e, m)))
        assert producer.flush(30.0) == 0
    finally:
        admin.delete_topics([topic])
    assert len(reports) == 2
    (taken_error, taken), (refused_error, refused) = reports
    assert taken_error is None and taken.topic() == topic and taken.offset() == 0
    assert refused_error is not None and refused.topic() == topic
    mapped = RecordProducer.delivery_error(refused_error)
    assert isinstance(mapped, DeliveryError)
    assert mapped.code == refused_error.name() and refused_error.name() in str(mapped)
