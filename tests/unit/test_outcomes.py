"""The outcome router's writes: emits, and the completion of a run that ended at a stage
without emits, each settling the record only once the broker acknowledged it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from streams.errors import DeliveryError
from streams.events import TaskEventCodec, new_task_event
from streams.kafka.producer import RecordProducer
from streams.runtime.buffers import RecordWork
from streams.runtime.context import Emit
from streams.runtime.outcomes import FINISHED_AT_HEADER, OutcomeRouter
from streams.types import Record

Ack = Callable[[DeliveryError | None], None]


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, Sequence[tuple[str, bytes]]]] = []
        self.acks: list[Ack] = []

    def send(self, topic: str, value: bytes | None, **kw: Any) -> None:
        self.sent.append((topic, value, kw["key"], tuple(kw["headers"])))
        report = kw["on_report"]  # as the client calls it: (error or None, message)
        self.acks.append(lambda error: report(error, _Message(topic)))

    @staticmethod
    def delivery_error(error: DeliveryError) -> DeliveryError:
        return error  # the tests' errors are ours already


class _Message:
    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


def _router(
    completed: str | None, level_of: Callable[[], str] | None = None
) -> tuple[OutcomeRouter, _Producer, list[RecordWork]]:
    producer, settled = _Producer(), list[RecordWork]()
    router = OutcomeRouter(
        cast(RecordProducer, producer),
        workflow="wf",
        stage="act",
        dead_letter_topic="wf.dlq",
        completed_topic=completed,
        stage_of_topic=lambda topic: topic.split(".")[1],
        on_settled=settled.append,
        clock_ms=lambda: 5_000,
        level_of=level_of,
    )
    return router, producer, settled


def _work(emits: Sequence[Emit] = ()) -> RecordWork:
    event = new_task_event(
        workflow="wf", stage="act", tenant="t", lane="standard", payload=b"{}", now_ms=0
    )
    value = TaskEventCodec().encode(event)
    record = Record("wf.act.standard", 0, 7, event.run_id.encode(), value, 1, (("trace.id", b"x"),))
    work = RecordWork(record, event)
    work.emits = emits
    return work


def test_a_run_done_without_emits_is_completed_and_settles_on_the_ack() -> None:
    router, producer, settled = _router("wf.completed")
    work = _work()
    router.send(work)
    [(topic, value, key, headers)] = producer.sent
    assert (topic, value, key) == ("wf.completed", work.record.value, work.record.key)
    assert headers == (("trace.id", b"x"), (FINISHED_AT_HEADER, b"act"))
    assert settled == [] and router.unacknowledged == 1  # not before the broker has it
    producer.acks[0](None)
    assert settled == [work] and router.unacknowledged == 0


def test_a_refused_completion_is_fatal_like_any_refused_write() -> None:
    router, producer, settled = _router("wf.completed")
    router.send(_work())
    producer.acks[0](DeliveryError("too large"))
    assert settled == []
    assert router.failure is not None


def test_a_write_to_a_missing_topic_says_which_topic_and_what_to_do() -> None:
    # E.g. a retry tier the topology gained but `streams topology apply` never created.
    router, producer, settled = _router("wf.completed")
    router.send(_work([Emit("wf.retry.5s", b"v", b"k", ())]))
    error = "Broker: Unknown topic or partition (UNKNOWN_TOPIC_OR_PART)"
    producer.acks[0](DeliveryError(error))
    assert settled == [] and router.failure is not None
    message = str(router.failure)
    assert "to wf.retry.5s" in message and "wf.act.standard[0]@7" in message
    assert "streams topology apply" in message


def test_off_the_main_path_a_record_done_without_emits_writes_nothing() -> None:
    router, producer, settled = _router(None)
    work = _work()
    router.send(work)
    assert producer.sent == [] and settled == [work]


def test_a_record_with_emits_writes_only_its_emits() -> None:
    router, producer, _ = _router("wf.completed")
    emit = Emit("wf.reply.standard", b"v", b"k")
    router.send(_work([emit]))
    assert [s[0] for s in producer.sent] == ["wf.reply.standard"]
    assert router.sent_by_stage == {"reply": 1}


def test_a_record_with_two_writes_settles_on_the_second_ack_only() -> None:
    router, producer, settled = _router("wf.completed")
    work = _work([Emit("wf.a.standard", b"1", b"k"), Emit("wf.b.standard", b"2", b"k")])
    router.send(work)
    assert [topic for topic, *_ in producer.sent] == ["wf.a.standard", "wf.b.standard"]
    producer.acks[1](None)
    assert settled == [] and router.unacknowledged == 1
    producer.acks[0](None)
    assert settled == [work] and router.unacknowledged == 0 and router.failure is None
