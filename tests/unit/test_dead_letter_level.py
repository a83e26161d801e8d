"""A dead letter says the degradation level it was written at (header
streams.degradation.level; the DeadLetter schema is unchanged)."""

from __future__ import annotations

from streams.runtime.degradation_act import DECISION_HEADER
from streams.runtime.outcomes import DEGRADATION_LEVEL_HEADER
from tests.unit.test_outcomes import _router, _work


def test_a_dead_letter_carries_the_level_in_force() -> None:
    level = ["normal"]
    router, producer, _settled = _router(None, level_of=lambda: level[0])
    level[0] = "essential"
    work = _work()
    work.reason = "handler_error"
    router.send(work)
    [(topic, _value, _key, headers)] = producer.sent
    assert topic == "wf.dlq"
    assert (DEGRADATION_LEVEL_HEADER, b"essential") in headers
    assert ("streams.reason", b"handler_error") in headers


def test_the_review_decision_header_is_the_review_stages() -> None:
    from streams.review.records import DECISION_HEADER as REVIEW_DECISION_HEADER

    assert DECISION_HEADER == REVIEW_DECISION_HEADER
