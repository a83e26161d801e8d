"""Every Prometheus metric streams exports, defined once, on a registry the caller injects.

Owns metric names, units, labels and label-set lifetimes; must not use prometheus_client's
global default registry, decide anything, or import Kafka. Callers use the typed methods of
WorkerMetrics and LagMetrics and never touch prometheus objects.

Naming follows Prometheus conventions: prefix ``streams_``, base units (``_seconds``),
``_total`` on counters, ``workflow`` and ``stage`` labels on every series. Ages are exported
as ages (not timestamps) because "no oldest record" has a natural value, 0; staleness is
covered by ``streams_group_lag_measured_timestamp_seconds``.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from streams.errors import MetricsPortUnavailable
from streams.metric_families import (
    LocalCounterChild,
    LocalCounterFamily,
    LocalHistogramFamily,
)
from streams.policy.dlq_valve import ValveState
from streams.types import DeadLetterReason, Lane, Outcome, PauseReason, TopicPartition

RebalanceKind = Literal["assign", "revoke", "lost"]

#: Handler latency, 1 ms .. 120 s: LLM and tool calls live in the seconds.
HANDLER_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
#: Record age at completion, 10 ms .. 1 h: a backlog can hold records for many minutes.
AGE_BUCKETS = (
    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip

_BASE = ("workflow", "stage")
_PARTITION = ("topic", "partition")


@dataclass(frozen=True, slots=True)
class _WorkerFamilies:
    records: LocalCounterFamily
    handler_latency: LocalHistogramFamily
    age_at_completion: LocalHistogramFamily
    oldest_queued_age: Gauge
    lag: Gauge
    in_flight: Gauge
    concurrency_limit: Gauge
    buffered: Gauge
    buffer_bound: Gauge
    partition_paused: Gauge
    pause_events: Counter
    resume_events: Counter
    dead_letters: LocalCounterFamily
    stalled_partitions: Gauge
    partition_stalled: Gauge
    downstream_lag: Gauge
    downstream_oldest_age: Gauge
    decode_errors: Counter
    commits: Counter
    rebalances: Counter
    dead_letter_valve: Gauge
    dead_letter_ratio: Gauge

    @classmethod
    def define(cls, registry: CollectorRegistry) -> _WorkerFamilies:
        r = registry
        return cls(
            records=LocalCounterFamily(
                "streams_records",
                "Records finished by a stage worker, by outcome.",
                [*_BASE, "outcome"],
                registry=r,
            ),
            handler_latency=LocalHistogramFamily(
                "streams_handler_latency_seconds",
                "Duration of one handler call.",
                _BASE,
                buckets=HANDLER_LATENCY_BUCKETS,
                registry=r,
            ),
            age_at_completion=LocalHistogramFamily(
                "streams_age_at_completion_seconds",
                "Age of a record (since its Kafka timestamp) when its handling finished.",
                _BASE,
                buckets=AGE_BUCKETS,
                registry=r,
            ),
            oldest_queued_age=Gauge(
                "streams_oldest_queued_age_seconds",
                "Age of the oldest record buffered in the worker for a partition (0 if none).",
                [*_BASE, *_PARTITION, "lane"],
                registry=r,
            ),
            lag=Gauge(
                "streams_lag_records",
                "Records of an assigned partition past the worker's committed offset.",
                [*_BASE, *_PARTITION],
                registry=r,
            ),
            in_flight=Gauge(
                "streams_in_flight",
                "Handler calls running now.",
                _BASE,
                registry=r,
            ),
            concurrency_limit=Gauge(
                "streams_concurrency_limit",
                "Current limit on concurrent handler calls.",
                _BASE,
                registry=r,
            ),
            buffered=Gauge(
                "streams_buffered_records",
                "Records fetched and waiting in the worker's buffer for a partition.",
                [*_BASE, *_PARTITION],
                registry=r,
            ),
            buffer_bound=Gauge(
                "streams_buffer_bound_records",
                "Buffer size at which fetching from a partition pauses.",
                [*_BASE, *_PARTITION],
                registry=r,
            ),
            partition_paused=Gauge(
                "streams_partition_paused",
                "1 while fetching from a partition is paused for this reason, else 0.",
                [*_BASE, *_PARTITION, "reason"],
                registry=r,
            ),
            pause_events=Counter(
                "streams_pause_events",
                "Partitions going from fetching to paused, by reason.",
                [*_BASE, "reason"],
                registry=r,
            ),
            resume_events=Counter(
                "streams_resume_events",
                "Partitions going from paused to fetching, by the reason they were paused for.",
                [*_BASE, "reason"],
                registry=r,
            ),
            dead_letters=LocalCounterFamily(
                "streams_dead_letters",
                "Records written to the dead-letter topic, by reason.",
                [*_BASE, "reason"],
                registry=r,
            ),
            stalled_partitions=Gauge(
                "streams_stalled_partitions",
                "Assigned partitions with lag and no progress.",
                _BASE,
                registry=r,
            ),
            partition_stalled=Gauge(
                "streams_partition_stalled",
                "1 while an assigned partition has lag and no progress, else 0.",
                [*_BASE, *_PARTITION],
                registry=r,
            ),
            downstream_lag=Gauge(
                "streams_downstream_lag_records",
                "Lag of a downstream stage as this worker last saw it.",
                [*_BASE, "downstream_stage"],
                registry=r,
            ),
            downstream_oldest_age=Gauge(
                "streams_downstream_oldest_age_seconds",
                "Age of a downstream stage's oldest unconsumed record as this worker saw it.",
                [*_BASE, "downstream_stage"],
                registry=r,
            ),
            decode_errors=Counter(
                "streams_decode_errors",
                "Records whose bytes could not be decoded.",
                _BASE,
                registry=r,
            ),
            commits=Counter(
                "streams_commits",
                "Offset commits confirmed by the broker.",
                _BASE,
                registry=r,
            ),
            rebalances=Counter(
                "streams_rebalances",
                "Rebalance callbacks, by kind.",
                [*_BASE, "kind"],
                registry=r,
            ),
            dead_letter_valve=Gauge(
                "streams_dead_letter_valve",
                "1 for the dead-letter valve's current state (ok, warning, tripped), else 0.",
                [*_BASE, "state"],
                registry=r,
            ),
            dead_letter_ratio=Gauge(
                "streams_dead_letter_ratio",
                "Share of dead letters among the records the dead-letter valve's window holds.",
                _BASE,
                registry=r,
            ),
        )


@dataclass(frozen=True, slots=True)
class _LagFamilies:
    lag: Gauge
    oldest_age: Gauge
    measured: Gauge

    @classmethod
    def define(cls, registry: CollectorRegistry) -> _LagFamilies:
        return cls(
            lag=Gauge(
                "streams_group_lag_records",
                "A stage's consumer-group lag per partition, read by the monitor.",
                [*_BASE, *_PARTITION],
                registry=registry,
            ),
            oldest_age=Gauge(
                "streams_group_oldest_age_seconds",
                "Estimated age of a stage's oldest unconsumed record per partition "
                "(a lower bound until the monitor's history covers the backlog).",
                [*_BASE, *_PARTITION],
                registry=registry,
            ),
            measured=Gauge(
                "streams_group_lag_measured_timestamp_seconds",
                "Wall-clock time of the monitor's last successful lag reading of a stage.",
                _BASE,
                registry=registry,
            ),
        )


# One set of families per registry: several stages (or a worker and the monitor) may share
# a registry in one process, and prometheus_client refuses to register a name twice.
_worker_families: WeakKeyDictionary[CollectorRegistry, _WorkerFamilies] = WeakKeyDictionary()
_lag_families: WeakKeyDictionary[CollectorRegistry, _LagFamilies] = WeakKeyDictionary()
_families_lock = threading.Lock()


def _worker(registry: CollectorRegistry) -> _WorkerFamilies:
    with _families_lock:
        families = _worker_families.get(registry)
        if families is None:
            families = _worker_families[registry] = _WorkerFamilies.define(registry)
        return families


def _lag(registry: CollectorRegistry) -> _LagFamilies:
    with _families_lock:
        families = _lag_families.get(registry)
        if families is None:
            families = _lag_families[registry] = _LagFamilies.define(registry)
        return families


class WorkerMetrics:
    """The metrics of one stage worker, every series labelled with its workflow and stage.

    record_outcome, observe_handler and observe_age_at_completion belong to one thread (the
    poll loop: they are lock-free); the rest is thread-safe. Per-partition series live
    from the first ``set_*`` call for that partition until ``forget_partition`` (call it
    for revoked and lost partitions, so a partition that moved to another worker is not
    reported twice).
    """

    def __init__(self, registry: CollectorRegistry, stage: str, workflow: str) -> None:
        self._f = _worker(registry)
        self._base = (workflow, stage)
        self._records_by_outcome: dict[str, LocalCounterChild] = {
            outcome: self._f.records.labels(*self._base, outcome) for outcome in get_args(Outcome)
        }
        self._dead_letters_by_reason: dict[str, LocalCounterChild] = {
            reason: self._f.dead_letters.labels(*self._base, reason)
            for reason in get_args(DeadLetterReason)
        }
        self._handler_latency = self._f.handler_latency.labels(*self._base)
        self._age_at_completion = self._f.age_at_completion.labels(*self._base)
        self._in_flight = self._f.in_flight.labels(*self._base)
        self._lock = threading.Lock()
        self._paused: dict[TopicPartition, PauseReason | None] = {}
        self._lanes: dict[TopicPartition, Lane] = {}
        self._stalled: set[TopicPartition] = set()
        self._partitions: set[TopicPartition] = set()
        # Closed label sets start at 0 so rate() and absent() work from the first scrape
        # (the outcome and reason children above are created for this reason too).
        for pause_reason in get_args(PauseReason):
            self._f.pause_events.labels(*self._base, pause_reason)
            self._f.resume_events.labels(*self._base, pause_reason)
        for kind in get_args(RebalanceKind):
            self._f.rebalances.labels(*self._base, kind)
        for family in (self._f.decode_errors, self._f.commits):
            family.labels(*self._base)
        for gauge in (self._f.in_flight, self._f.concurrency_limit, self._f.stalled_partitions):
            gauge.labels(*self._base).set(0)

    # Records and handler calls.
    def record_outcome(
        self,
        outcome: Outcome,
        *,
        dead_letter_reason: DeadLetterReason | None = None,
        count: int = 1,
    ) -> None:
        """Count finished records; a dead-lettered one also counts under its reason."""
        if (outcome == "dead_lettered") != (dead_letter_reason is not None):
            raise ValueError("dead_letter_reason is required for, and only for, dead_lettered")
        self._records_by_outcome[outcome].inc(count)
        if dead_letter_reason is not None:
            self._dead_letters_by_reason[dead_letter_reason].inc(count)

    # The per-record calls use children resolved once (labels() costs microseconds per
    # call) of lock-free families (streams.metric_families): the poll loop pays for every
    # record, so these four are for the poll thread alone.
    def observe_handler(self, seconds: float) -> None:
        self._handler_latency.observe(seconds)

    def observe_age_at_completion(self, seconds: float) -> None:
        self._age_at_completion.observe(max(0.0, seconds))

    def set_in_flight(self, count: int) -> None:
        self._in_flight.set(count)

    def set_concurrency_limit(self, limit: int) -> None:
        self._f.concurrency_limit.labels(*self._base).set(limit)

    def count_decode_error(self) -> None:
        self._f.decode_errors.labels(*self._base).inc()

    def count_commit(self) -> None:
        self._f.commits.labels(*self._base).inc()

    def count_rebalance(self, kind: RebalanceKind) -> None:
        self._f.rebalances.labels(*self._base, kind).inc()

    # Partitions.
    def set_partition_state(
        self,
        tp: TopicPartition,
        lane: Lane,
        buffered: int,
        bound: int,
        oldest_age_s: float,
        lag: int,
    ) -> None:
        """One partition's buffer, bound, oldest buffered age (0 if empty) and lag."""
        labels = self._tp_labels(tp)
        with self._lock:
            self._partitions.add(tp)
            previous_lane = self._lanes.get(tp)
            self._lanes[tp] = lane
        if previous_lane is not None and previous_lane != lane:
            self._f.oldest_queued_age.remove(*labels, previous_lane)
        self._f.buffered.labels(*labels).set(buffered)
        self._f.buffer_bound.labels(*labels).set(bound)
        self._f.oldest_queued_age.labels(*labels, lane).set(max(0.0, oldest_age_s))
        self._f.lag.labels(*labels).set(lag)

    def set_paused(self, tp: TopicPartition, reason: PauseReason | None) -> None:
        """Record a partition's pause state; None means fetching.

        Going from fetching to paused counts one pause event under the new reason, and
        back one resume event under the reason it was paused for. A change of reason
        while staying paused moves the gauge only: the consumer did not pause again.
        """
        labels = self._tp_labels(tp)
        with self._lock:
            self._partitions.add(tp)
            before = self._paused.get(tp)
            self._paused[tp] = reason
        for each in get_args(PauseReason):
            self._f.partition_paused.labels(*labels, each).set(1 if each == reason else 0)
        if before is None and reason is not None:
            self._f.pause_events.labels(*self._base, reason).inc()
        elif before is not None and reason is None:
            self._f.resume_events.labels(*self._base, before).inc()

    def set_stalled(self, tp: TopicPartition, stalled: bool) -> None:
        """Flag a partition that has lag and makes no progress; keeps the count in step."""
        with self._lock:
            self._partitions.add(tp)
            if stalled:
                self._stalled.add(tp)
            else:
                self._stalled.discard(tp)
            count = len(self._stalled)
        self._f.partition_stalled.labels(*self._tp_labels(tp)).set(1 if stalled else 0)
        self._f.stalled_partitions.labels(*self._base).set(count)

    def forget_partition(self, tp: TopicPartition) -> None:
        """Remove every series of a partition this worker no longer owns."""
        labels = self._tp_labels(tp)
        with self._lock:
            if tp not in self._partitions:
                return
            self._partitions.discard(tp)
            lane = self._lanes.pop(tp, None)
            self._paused.pop(tp, None)
            self._stalled.discard(tp)
            count = len(self._stalled)
        for gauge in (self._f.buffered, self._f.buffer_bound, self._f.lag):
            gauge.remove(*labels)
        self._f.partition_stalled.remove(*labels)
        if lane is not None:
            self._f.oldest_queued_age.remove(*labels, lane)
        for reason in get_args(PauseReason):
            self._f.partition_paused.remove(*labels, reason)
        self._f.stalled_partitions.labels(*self._base).set(count)

    # Downstream pressure, as this worker sees it.
    def set_downstream(self, downstream_stage: str, lag: int, oldest_age_s: float) -> None:
        self._f.downstream_lag.labels(*self._base, downstream_stage).set(lag)
        self._f.downstream_oldest_age.labels(*self._base, downstream_stage).set(oldest_age_s)

    def _tp_labels(self, tp: TopicPartition) -> tuple[str, str, str, str]:
        return (*self._base, tp.topic, str(tp.partition))

    # The dead-letter valve (streams.policy.dlq_valve): call on each change of state and
    # from the periodic report; ratio None (nothing judged yet) reads as 0.
    def set_dead_letter_valve(self, state: ValveState, ratio: float | None) -> None:
        for each in get_args(ValveState):
            self._f.dead_letter_valve.labels(*self._base, each).set(1 if each == state else 0)
        self._f.dead_letter_ratio.labels(*self._base).set(ratio or 0.0)


class PartitionLagView(Protocol):
    """What LagMetrics reads of a partition's lag (streams.kafka.lag_reader.PartitionLag)."""

    @property
    def tp(self) -> TopicPartition: ...
    @property
    def lag(self) -> int: ...
    @property
    def oldest_age_s(self) -> float: ...


class GroupLagView(Protocol):
    """What LagMetrics reads of a group reading (streams.kafka.lag_reader.GroupLag)."""

    @property
    def partitions(self) -> tuple[PartitionLagView, ...]: ...
    @property
    def measured_at(self) -> float: ...


class LagMetrics:
    """The lag monitor's metrics: each watched stage's group lag and age per partition.

    ``observe`` replaces a stage's series with the new reading, removing partitions that
    are no longer in it. Call it from one thread (the monitor's poll loop).
    """

    def __init__(self, registry: CollectorRegistry, workflow: str) -> None:
        self._f = _lag(registry)
        self._workflow = workflow
        self._seen: dict[str, set[TopicPartition]] = {}

    def observe(self, stage: str, reading: GroupLagView) -> None:
        now_seen = set()
        for p in reading.partitions:
            labels = (self._workflow, stage, p.tp.topic, str(p.tp.partition))
            self._f.lag.labels(*labels).set(p.lag)
            self._f.oldest_age.labels(*labels).set(p.oldest_age_s)
            now_seen.add(p.tp)
        self._remove(stage, self._seen.get(stage, set()) - now_seen)
        self._seen[stage] = now_seen
        self._f.measured.labels(self._workflow, stage).set(reading.measured_at)

    def forget_stage(self, stage: str) -> None:
        self._remove(stage, self._seen.pop(stage, set()))
        self._f.measured.remove(self._workflow, stage)

    def _remove(self, stage: str, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            labels = (self._workflow, stage, tp.topic, str(tp.partition))
            self._f.lag.remove(*labels)
            self._f.oldest_age.remove(*labels)


def serve_metrics(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> int:
    """Serve ``registry`` at http://addr:port/metrics from a daemon thread; return the port.

    Port 0 lets the OS pick a free port. Binds loopback by default: exposing metrics on
    every interface is the deployer's explicit choice (addr="0.0.0.0").

    Raises MetricsPortUnavailable (one line, no traceback needed) when the port is taken
    or cannot be bound; the socket is bound before the serving thread starts, so on that
    error nothing is left open or running.
    """
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            problem = f"metrics port {port} on {addr} is already in use"
            fix = "pick another with --metrics-port (0 picks a free one)"
        else:
            reason = exc.strerror or str(exc) or type(exc).__name__
            problem = f"metrics port {port} on {addr} cannot be opened: {reason}"
            fix = (
                "check --metrics-host (an address of this machine, or 0.0.0.0 for all) "
                "and --metrics-port (0 picks a free one)"
            )
        raise MetricsPortUnavailable(port, addr, f"{problem}; {fix}") from exc
    return int(server.server_port)


# --------------------------------------------------------------------------- tools


class ToolReadingView(Protocol):
    """What ToolMetrics reads of one tool (streams.runtime.tools.ToolReading)."""

    @property
    def name(self) -> str: ...
    @property
    def breaker(self) -> str | None: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    @property
    def concurrency_limit(self) -> int | None: ...
    @property
    def rate_per_s(self) -> float | None: ...
    @property
    def tokens(self) -> float | None: ...
    @property
    def share(self) -> float: ...
    @property
    def calls(self) -> Mapping[str, int]: ...
    @property
    def latency_counts(self) -> tuple[int, ...]: ...
    @property
    def latency_sum_s(self) -> float: ...
    @property
    def wait_counts(self) -> tuple[int, ...]: ...
    @property
    def wait_sum_s(self) -> float: ...
    @property
    def transitions(self) -> Mapping[tuple[str, str], int]: ...


TOOL_BREAKER_STATES = ("closed", "open", "half_open")


class ToolMetrics(Collector):
    """Per-tool series, read at scrape time from the process's tools (they are shared by
    every stage worker in the process, so they carry `workflow` and `tool`, not `stage`).
    `buckets` are the bounds of the tools' latency and wait counts."""

    def __init__(
        self,
        registry: CollectorRegistry,
        workflow: str,
        readings: Callable[[], Iterable[ToolReadingView]],
        buckets: Sequence[float],
    ) -> None:
        self._workflow = workflow
        self._readings = readings
        self._bounds = (*(floatToGoString(b) for b in buckets), "+Inf")  # type: ignore[no-untyped-call]
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected on demand only: the tools are known at scrape time

    def collect(self) -> Iterator[Metric]:
        labels = ("workflow", "tool")
        calls = CounterMetricFamily(
            "streams_tool_calls", "Tool calls by outcome", labels=(*labels, "outcome")
        )
        latency = HistogramMetricFamily(
            "streams_tool_call_duration_seconds", "Duration of admitted tool calls", labels=labels
        )
        wait = HistogramMetricFamily(
            "streams_tool_wait_seconds", "Wait for a slot and a token before a call", labels=labels
        )
        gauges = {
            "in_flight": GaugeMetricFamily(
                "streams_tool_in_flight", "Tool calls running", labels=labels
            ),
            "waiting": GaugeMetricFamily(
                "streams_tool_waiting", "Tool calls waiting for a slot or a token", labels=labels
            ),
            "limit": GaugeMetricFamily(
                "streams_tool_concurrency_limit",
                "This process's tool slots now (adaptive or its share); absent: unlimited",
                labels=labels,
            ),
            "rate": GaugeMetricFamily(
                "streams_tool_rate_limit_per_second",
                "This process's share of the tool's rate; absent: unlimited",
                labels=labels,
            ),
            "tokens": GaugeMetricFamily(
                "streams_tool_rate_tokens", "Rate tokens available now", labels=labels
            ),
            "share": GaugeMetricFamily(
                "streams_tool_share_ratio",
                "This process's share of the tool's fleet-wide ceilings",
                labels=labels,
            ),
        }
        state = GaugeMetricFamily(
            "streams_tool_breaker_state",
            "1 for the breaker's current state (closed, open, half_open)",
            labels=(*labels, "state"),
        )
        transitions = CounterMetricFamily(
            "streams_tool_breaker_transitions",
            "Breaker state changes",
            labels=(*labels, "from_state", "to_state"),
        )
        for r in self._readings():
            at = (self._workflow, r.name)
            for outcome, count in r.calls.items():
                calls.add_metric((*at, outcome), float(count))
            latency.add_metric(at, self._buckets(r.latency_counts), r.latency_sum_s)
            wait.add_metric(at, self._buckets(r.wait_counts), r.wait_sum_s)
            gauges["in_flight"].add_metric(at, float(r.in_flight))
            gauges["waiting"].add_metric(at, float(r.waiting))
            gauges["share"].add_metric(at, r.share)
            if r.concurrency_limit is not None:
                gauges["limit"].add_metric(at, float(r.concurrency_limit))
            if r.rate_per_s is not None:
                gauges["rate"].add_metric(at, r.rate_per_s)
            if r.tokens is not None:
                gauges["tokens"].add_metric(at, r.tokens)
            if r.breaker is not None:
                for each in TOOL_BREAKER_STATES:
                    state.add_metric((*at, each), 1.0 if each == r.breaker else 0.0)
            for (old, new), count in r.transitions.items():
                transitions.add_metric((*at, old, new), float(count))
        yield calls
        yield latency
        yield wait
        yield from gauges.values()
        yield state
        yield transitions

    def _buckets(self, counts: tuple[int, ...]) -> list[tuple[str, float]]:
        cumulative = 0
        out = []
        for bound, count in zip(self._bounds, counts, strict=True):
            cumulative += count
            out.append((bound, float(cumulative)))
        return out
