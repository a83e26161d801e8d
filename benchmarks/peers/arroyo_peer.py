"""sentry-arroyo child: consume -> restage -> produce -> commit, as arroyo recommends.

Configuration, from arroyo's own documentation (getsentry/arroyo docs/source/
getstarted.rst, "Create a streaming consumer" and "Add some useful logic";
docs/source/offsets.rst; docs/source/strategies/run_task_in_threads.rst):

- `KafkaConsumer(build_kafka_consumer_configuration(default_config={}, ...,
  auto_offset_reset="earliest", group_id=...))` and
  `KafkaProducer(build_kafka_configuration(default_config={}, ...))`, library defaults
  otherwise (2.48: offsets stored after CommitOffsets, committed by librdkafka's
  auto-commit, arroyo/backends/kafka/configuration.py);
- `StreamProcessor(consumer, topic, factory, commit_policy=ONCE_PER_SECOND)` (offsets.rst:
  "If you are not sure how often to commit, ONCE_PER_SECOND is a reasonable option");
- strategies `RunTask(fn) -> Produce(producer, output) -> CommitOffsets(commit)`: offsets
  are committed only after Produce saw the broker's ack (at-least-once);
- I/O-bound: `RunTaskInThreads(fn, concurrency, max_pending_futures, ...)`, arroyo's
  strategy "to run IO-bound tasks in parallel" (its docstring), with as many threads as
  streams has calls in flight and twice that pending (streams' partition_buffer is 2x).

Run by the driver as `<arroyo venv>/bin/python -m benchmarks.peers.arroyo_peer ...`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

from arroyo.backends.kafka import KafkaPayload, KafkaProducer
from arroyo.backends.kafka.configuration import (
    build_kafka_configuration,
    build_kafka_consumer_configuration,
)
from arroyo.backends.kafka.consumer import KafkaConsumer
from arroyo.commit import ONCE_PER_SECOND
from arroyo.processing import StreamProcessor
from arroyo.processing.strategies import (
    CommitOffsets,
    ProcessingStrategy,
    ProcessingStrategyFactory,
    Produce,
    RunTask,
    RunTaskInThreads,
)
from arroyo.types import Commit, Message, Partition, Topic

from benchmarks.peers import child
from benchmarks.peers.envelope import Envelope


def main(argv: list[str]) -> None:
    args = child.parse_args(argv)
    envelope = Envelope()
    first = child.FirstSeen()
    servers = args.servers.split(",")

    def restage(message: Message[KafkaPayload]) -> KafkaPayload:
        first.stamp()
        payload = message.payload
        value = envelope.restage(payload.value, child.OUTPUT_STAGE, child.now_ms())
        return KafkaPayload(payload.key, value, payload.headers)

    def slow_call(message: Message[KafkaPayload]) -> KafkaPayload:
        first.stamp()
        time.sleep(args.latency)  # the model or tool call, on one of the strategy's threads
        return restage(message)

    producer = KafkaProducer(
        build_kafka_configuration(default_config={}, bootstrap_servers=servers)
    )

    class Factory(ProcessingStrategyFactory[KafkaPayload]):  # type: ignore[misc]
        def create_with_partitions(
            self, commit: Commit, partitions: Mapping[Partition, int]
        ) -> ProcessingStrategy[KafkaPayload]:
            produce: Any = Produce(producer, Topic(args.output), CommitOffsets(commit))
            if args.workload == "io":
                return RunTaskInThreads(slow_call, args.concurrency, 2 * args.concurrency, produce)
            return RunTask(restage, produce)

    consumer = KafkaConsumer(
        build_kafka_consumer_configuration(
            default_config={},
            bootstrap_servers=servers,
            auto_offset_reset="earliest",  # the input is produced before the consumer starts
            group_id=args.group,
        )
    )
    processor = StreamProcessor(
        consumer=consumer,
        topic=Topic(args.input),
        processor_factory=Factory(),
        commit_policy=ONCE_PER_SECOND,
    )
    child.stop_on_stdin_eof(processor.signal_shutdown)
    cpu0 = child.cpu_seconds()
    processor.run()
    producer.close().result()
    child.report(first, cpu0, version("sentry-arroyo"))


if __name__ == "__main__":
    main(sys.argv[1:])
