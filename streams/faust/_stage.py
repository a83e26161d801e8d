"""A faust app as one stage of a streams workflow: ``govern(app, topology, stage)``.

Owns the wrapping of a faust agent (its input topics, the record gate in front of it,
handler timing and outcomes), ``emit`` to the next stages and the faust hooks (startup
task, rebalance signals); the pause decisions and reports live in FaustControl.

Invariants kept, as a stage worker keeps them: a refused record is dead-lettered, and the
dead letter acknowledged, before faust may ack (and so commit) it, and the agent never
sees it (invariant 3); an emit or completion is acknowledged before the agent is handed
the next record, which is when faust acks the current one (invariant 1).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP, AgentT, EventT, StreamT
from prometheus_client import CollectorRegistry

from streams.clock import Clock, SystemClock
from streams.errors import ConfigError, StreamsError
from streams.events import DeadLetterCodec, DeadLetterRecord, TaskEvent, TaskEventCodec
from streams.faust._control import FaustControl
from streams.faust._gate import Refused, admit, to_record
from streams.faust._options import FaustOptions
from streams.kafka.client_config import ClientConfig
from streams.runtime.emitter import Emitter, completion_topic
from streams.runtime.outcomes import FINISHED_AT_HEADER
from streams.topology import Stage, Topology
from streams.types import DeadLetterReason, Lane, Record, TopicPartition

log = logging.getLogger(__name__)

#: What a governed agent is: it takes the stage's TaskEvents, as faust agents take streams.
Agent = Callable[[AsyncIterator[TaskEvent]], Awaitable[None]]


@dataclass(slots=True)
class _InAgent:
    """The record an actor of the agent holds now (one per actor: faust runs each actor
    as a task of its own, and this lives in the task's context)."""

    record: Record | None = None
    lane: Lane | None = None
    emitted: bool = False


_current: contextvars.ContextVar[_InAgent | None] = contextvars.ContextVar(
    "streams_faust_in_agent", default=None
)


@dataclass(frozen=True, slots=True)
class FaustStageStatus:
    stage: str
    assigned: int
    in_flight: int
    paused: dict[TopicPartition, frozenset[str]]
    stage_paused: bool
    last_pause_reason: str


class GovernedStage:
    """One stage of `topology` run by the faust app `app`, whose id must be the stage's
    consumer group (so lag readers, the monitor and upstream stages find its offsets).

    ``agent()`` decorates the stage's agent; ``emit(event)`` hands work to the next stages
    (await it inside the agent); ``status()`` is safe from any thread. Only one agent per
    governed stage.
    """

    def __init__(
        self,
        app: faust.App,
        topology: Topology,
        stage: str,
        *,
        options: FaustOptions | None = None,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
    ) -> None:
        spec = topology.stages.get(stage)
        if spec is None:
            raise ConfigError(
                topology.source,
                "stages",
                f"no stage {stage!r} (stages: {', '.join(topology.stages)})",
            )
        if app.conf.id != spec.consumer_group:
            raise ConfigError(
                topology.source,
                f"stages.{stage}",
                f"the faust app's id is {app.conf.id!r}; name it {spec.consumer_group!r} (the "
                "stage's consumer group) so streams reads its lag and offsets",
            )
        self.app = app
        self.topology = topology
        self.stage: Stage = spec
        self.options = options or FaustOptions()
        self.worker_id = self.options.worker_id or uuid.uuid4().hex[:8]
        self.registry = registry or CollectorRegistry()
        self._clock = clock or SystemClock()
        self._codec = TaskEventCodec()
        self._letters = DeadLetterCodec()
        self._emitter = Emitter(
            topology,
            spec,
            self._codec,
            self._now_ms,
            allow_lane_promotion=spec.allow_lane_promotion,
        )
        self._completed = completion_topic(topology, spec)
        self._lane_of_topic = {topic: lane for lane, topic in spec.input_topics_by_lane.items()}
        self._stage_of_topic = {
            topic: other.name for other in topology.stages.values() for topic in other.input_topics
        }
        #: Records sent to each stage; the pressure feed pairs it with lag readings.
        self.sent_by_stage: dict[str, int] = {}
        self._agent: AgentT[Any] | None = None
        self.control = FaustControl(
            topology,
            spec,
            worker_id=self.worker_id,
            client=self.options.client or _client_of(app, stage),
            options=self.options,
            clock=self._clock,
            registry=self.registry,
            consumer=lambda: app.consumer,
            sent_by_stage=self.sent_by_stage,
            concurrency=self._concurrency,
            buffer_bound=int(app.conf.stream_buffer_maxsize),
        )
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.task(self._run)

    # ----------------------------------------------------------------- the agent
    def agent(
        self, *, name: str | None = None, concurrency: int = 1, **agent_options: Any
    ) -> Callable[[Agent], AgentT[Any]]:
        """Decorate ``async def agent(events)`` (events: the stage's TaskEvents, expired and
        undecodable records left out); the rest goes to faust's ``app.agent``."""
        if self._agent is not None:
            raise StreamsError(f"stage {self.stage.name} already has an agent")
        channel = self.app.topic(
            *self.stage.input_topics,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

        def decorate(fun: Agent) -> AgentT[Any]:
            @functools.wraps(fun)
            async def governed(stream: StreamT[bytes]) -> None:
                slot = _InAgent()
                _current.set(slot)
                events = self._events(stream, slot)
                try:
                    await fun(events)
                except Exception as exc:
                    # The record it raised on is dead-lettered before faust acks it on
                    # the agent's crash; faust's supervisor then restarts the agent.
                    if slot.record is not None:
                        await self._dead_letter(slot.record, "handler_error", exc, attempts=1)
                        slot.record = None
                    raise
                finally:
                    await events.aclose()

            self._agent = self.app.agent(
                channel,
                name=name or f"{fun.__module__}.{fun.__qualname__}",
                concurrency=concurrency,
                **agent_options,
            )(governed)
            return self._agent

        return decorate

    async def emit(self, event: TaskEvent, *, lane: Lane | None = None) -> None:
        """Send `event` to every downstream stage (or the completed topic after the last
        one) and wait for the broker's acknowledgement. The lane rule of ctx.emit holds
        (README "Handlers"); an event that cannot be encoded or routed raises EmitRejected."""
        slot = _current.get()
        arrived_in = slot.lane if slot is not None and slot.lane is not None else event.lane
        for emit in self._emitter.build(event, lane, arrived_in):
            stage = self._stage_of_topic.get(emit.topic, "completed")
            self.sent_by_stage[stage] = self.sent_by_stage.get(stage, 0) + 1
            await self._send(emit.topic, emit.value, emit.key, emit.headers)
        if slot is not None:
            slot.emitted = True

    def status(self) -> FaustStageStatus:
        control = self.control
        return FaustStageStatus(
            stage=self.stage.name,
            assigned=len(control.partitions),
            in_flight=control.in_flight,
            paused={tp: frozenset(control.pauses.reasons(tp)) for tp in list(control.partitions)},
            stage_paused=control.stage_paused,
            last_pause_reason=control.last_reason,
        )

    async def _events(
        self, stream: StreamT[bytes], slot: _InAgent
    ) -> AsyncGenerator[TaskEvent, None]:
        control, clock, metrics = self.control, self._clock, self.control.metrics
        max_age_s = self.stage.max_queue_age_s
        async for faust_event in stream.events():
            record = to_record(_message(faust_event))
            partition = control.partition(record.tp)
            if partition is not None:
                await self._hold(record.tp)
            admitted = admit(record, self._codec, max_queue_age_s=max_age_s, now=clock.now())
            if isinstance(admitted, Refused):
                # Never handed to the agent; faust acks it when we ask for the next one.
                await self._dead_letter(record, admitted.reason, admitted.error)
                continue
            if partition is not None:
                partition.held[record.offset] = admitted.enqueued_at_ms
            slot.record, slot.lane, slot.emitted = (
                record,
                self._lane_of_topic.get(record.topic),
                False,
            )
            control.in_flight += 1
            started = time.monotonic()
            try:
                yield admitted
            finally:
                control.in_flight -= 1
                if partition is not None:
                    partition.held.pop(record.offset, None)
            if slot.record is None:
                continue  # dead-lettered by the agent's crash
            slot.record = None
            took = time.monotonic() - started
            control.latency.add(took)
            metrics.observe_handler(took)
            if not slot.emitted and self._completed is not None:
                await self._complete(record, admitted)
            metrics.record_outcome("emitted" if slot.emitted else "done")
            metrics.observe_age_at_completion(clock.now() - record.timestamp_ms / 1000)
            control.apply()  # faust may have resumed a partition on its buffer's drain

    async def _hold(self, tp: TopicPartition) -> None:
        """Keep a record of a paused partition from the agent until the partition resumes.

        Faust's pause stops fetching, but what it fetched still flows: FaustControl has
        faust hand on the rest of a batch it was handing over (or it would drop it), and
        the stream buffer holds more (measured, 16 to 28 records past a pause with a batch
        and buffer of 8). Holding here makes the pause exact. A rebalance ends the hold
        (faust stops the flow first and then waits for its streams to ack what they hold);
        the record goes on to the agent. Expiry is judged after the hold, so a record that
        aged out while held is dead-lettered, never handed over.
        """
        control, consumer = self.control, self.app.consumer
        # flow_active is faust's Consumer's (ConsumerT does not declare it).
        while control.holds(tp) and getattr(consumer, "flow_active", False):
            await asyncio.sleep(self.options.control_interval_s)

    # ----------------------------------------------------------------- writes
    async def _dead_letter(
        self, record: Record, reason: DeadLetterReason, error: BaseException, *, attempts: int = 0
    ) -> None:
        letter = DeadLetterRecord.for_record(
            record,
            reason=reason,
            stage=self.stage.name,
            workflow=self.topology.workflow,
            attempts=attempts,
            dead_at_ms=self._now_ms(),
            error=error,
        )
        await self._send(
            self.topology.dead_letter_topic,
            self._letters.encode(letter),
            record.key or b"",
            (("streams.reason", reason.encode()),),
        )
        metrics = self.control.metrics
        if reason == "decode_error":
            metrics.count_decode_error()
        metrics.record_outcome("dead_lettered", dead_letter_reason=reason)

    async def _complete(self, record: Record, event: TaskEvent) -> None:
        """The run ended here without emits: tell the intake (see streams.runtime.outcomes)."""
        headers = (*record.headers, (FINISHED_AT_HEADER, self.stage.name.encode()))
        key = record.key or event.run_id.encode()
        assert self._completed is not None
        await self._send(self._completed, record.value or b"", key, headers)

    async def _send(
        self, topic: str, value: bytes, key: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        await self.app.producer.send_and_wait(topic, key or None, value, None, None, list(headers))

    # ----------------------------------------------------------------- faust hooks
    async def _run(self) -> None:
        control = self.control
        await asyncio.to_thread(control.open)
        try:
            while True:
                control.round()
                await asyncio.sleep(self.options.control_interval_s)
        finally:
            await asyncio.to_thread(control.close)

    # Faust's signals pass (sender, partitions, signal=...).
    def _on_assigned(self, sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        self.control.assigned(_partitions(args[0]))

    def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        self.control.revoked(_partitions(args[0]))

    def _concurrency(self) -> int:
        return int(self._agent.concurrency) if self._agent is not None else 1

    def _now_ms(self) -> int:
        return int(self._clock.now() * 1000)


def _partitions(tps: Iterable[TP]) -> set[TopicPartition]:
    return {TopicPartition(tp.topic, tp.partition) for tp in tps}


def _message(event: EventT[Any]) -> faust.types.Message:
    return event.message


def _client_of(app: faust.App, stage: str) -> ClientConfig:
    """streams' client settings for the faust app's brokers (kafka://host:port, ...)."""
    servers = ",".join(f"{url.host}:{url.port or 9092}" for url in app.conf.broker)
    return ClientConfig(bootstrap_servers=servers, client_id=f"streams-faust-{stage}")


#: ``govern(app, topology, stage)`` makes `app` run `stage` of `topology`; decorate its agent
#: with ``@stage.agent()``. The class itself, so its arguments are written once.
govern = GovernedStage
