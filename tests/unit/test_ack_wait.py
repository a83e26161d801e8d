"""AckWait: the answer to one record a caller waits on (control writer, review book)."""

from __future__ import annotations

import threading

from streams.errors import DeliveryError
from streams.kafka.producer import AckWait


def test_no_answer_yet_is_no_acknowledgement_in_time() -> None:
    assert AckWait().problem() == "no acknowledgement in time"


def test_an_acknowledged_record_has_no_problem() -> None:
    ack = AckWait()
    ack.on_ack(None)
    assert ack.problem() is None


def test_a_delivery_error_is_the_problem() -> None:
    ack = AckWait()
    error = DeliveryError("topic authorization failed")
    ack.on_ack(error)
    assert ack.problem() is error


def test_an_ack_served_by_another_thread_s_flush_counts() -> None:
    ack = AckWait()
    other = threading.Thread(target=ack.on_ack, args=(None,))
    other.start()
    other.join(5.0)
    assert ack.problem() is None
