"""One workflow's state, read from Kafka alone, one round at a time: every stage's group
offsets and end offsets, the first uncommitted record of each lagging partition, the
workers' pressure reports, the dead letters and the intake's decisions of the last
minutes.

Owns the readers (through streams.kafka only), the per-partition status windows and the
recent dead-letter and decision counts; must not decide anything (streams.policy and
stage_view do) nor render. Works with no worker running: lag and age come from the
broker, and a restarted monitor re-reads the last ``keep_s`` seconds of dead letters and
decisions by their timestamps.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime

from streams.clock import Clock, SystemClock
from streams.errors import BrokerUnavailable, StreamsError
from streams.events import DeadLetterCodec
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.lag_reader import GroupLag, LagReader
from streams.kafka.peek import RecordPeeker
from streams.kafka.tail import TopicTail
from streams.monitor.counts import RecentCounts
from streams.monitor.model import DecisionSeen, MonitorSnapshot
from streams.monitor.stage_view import intake_view, stage_view, tool_views, worker_views
from streams.policy.group_status import OffsetSample, PartitionWindow
from streams.runtime.pressure_reports import ReportBoard
from streams.serde import SchemaStore, Serde
from streams.topology import Topology
from streams.types import TopicPartition

log = logging.getLogger(__name__)

#: The intake's decision records (streams.intake.service.DECISION_SCHEMA; named here so the
#: monitor does not load the intake service to read its audit trail).
DECISION_SCHEMA = "dev.streams.AdmissionDecisionRecord"
#: Records read from one history topic per round at most (the rest waits for the next).
MAX_RECORDS_PER_ROUND = 20_000
#: How often a missing pressure, dead-letter or decisions topic is looked for again.
REOPEN_EVERY_S = 10.0


class WorkflowReader:
    """``read()`` takes one round of readings and returns the snapshot; call it every
    interval from one thread. ``window_s`` is the status window (Burrow's), ``keep_s`` how
    far back dead letters and decisions are re-read at start, ``storm_per_min`` the dead
    letters per minute that make a stage ERR. Broker trouble never raises from ``read``:
    the snapshot carries the error and the stages it could not read are UNKNOWN.
    """

    def __init__(
        self,
        topology: Topology,
        config: ClientConfig,
        *,
        clock: Clock | None = None,
        window_s: float = 300.0,
        keep_s: float = 300.0,
        storm_per_min: float = 60.0,
    ) -> None:
        self._topology = topology
        self._config = config
        self._clock = clock or SystemClock()
        self._window_s = window_s
        self._keep_s = keep_s
        self._storm_per_min = storm_per_min
        self._admin = Admin(config, timeout_s=10.0)
        self._lag = LagReader(self._admin, self._clock)
        self._peeker = RecordPeeker(config)
        self._windows: dict[tuple[str, TopicPartition], PartitionWindow] = {}
        self._peeked: dict[tuple[TopicPartition, int | None], int] = {}
        self._board: ReportBoard | None = None
        self._dlq: TopicTail | None = None
        self._decision_tail: TopicTail | None = None
        self._dead_letter_codec = DeadLetterCodec()
        self._decision_serde = Serde(SchemaStore(), DECISION_SCHEMA)
        self._dead: RecentCounts[tuple[str, str]] = RecentCounts(keep_s)
        self._dead_seen: dict[tuple[str, str], int] = {}
        self._decisions: deque[DecisionSeen] = deque(maxlen=100_000)
        self._decisions_seen: dict[tuple[str, str], int] = {}
        self._next_open = 0.0

    def close(self) -> None:
        for closer in (self._board, self._dlq, self._decision_tail, self._peeker, self._lag):
            if closer is not None:
                closer.close()

    def read(self) -> MonitorSnapshot:
        topology = self._topology
        errors: list[str] = []
        self._open_tails(errors)
        self._read_history(errors)
        lags: dict[str, GroupLag | None] = {}
        broker_away = False
        for stage in topology.stages.values():
            if broker_away:
                lags[stage.name] = None  # each read would wait out the same timeout
                continue
            try:
                lag = self._lag.read(stage.consumer_group, stage.input_topics)
            except StreamsError as exc:
                errors.append(f"{stage.name}: {exc}")
                lags[stage.name] = None
                broker_away = isinstance(exc, BrokerUnavailable)
                continue
            lags[stage.name] = lag
            for p in lag.partitions:
                window = self._windows.get((stage.name, p.tp))
                if window is None:
                    window = self._windows[(stage.name, p.tp)] = PartitionWindow(self._window_s)
                window.record(OffsetSample(lag.measured_at, p.committed, p.end_offset))
        first_records = self._first_records(lags, errors)
        now = self._clock.now()
        reports = list(self._board.latest().values()) if self._board is not None else []
        dead_per_min = self._dead.per_minute(now)
        views = []
        for stage in topology.stages.values():
            read = lags[stage.name]
            windows = {
                p.tp: self._windows[(stage.name, p.tp)].samples
                for p in (read.partitions if read is not None else ())
            }
            firsts = {
                p.tp: first_records[(p.tp, p.committed)]
                for p in (read.partitions if read is not None else ())
                if (p.tp, p.committed) in first_records
            }
            views.append(
                stage_view(
                    stage, read, windows,
                    first_record_ms=firsts,
                    reports=[r for r in reports if r.stage == stage.name],
                    dead_letters_per_min={
                        reason: n for (s, reason), n in dead_per_min.items() if s == stage.name
                    },
                    now=now,
                    storm_per_min=self._storm_per_min,
                )
            )  # fmt: skip
        by_reason: dict[str, float] = {}
        for (_, reason), n in dead_per_min.items():
            by_reason[reason] = by_reason.get(reason, 0.0) + n
        fresh = {s.name: s.pressure.stale_after_s for s in topology.stages.values()}
        return MonitorSnapshot(
            workflow=topology.workflow,
            measured_at=now,
            error="; ".join(errors) or None,
            stages=tuple(views),
            workers=worker_views(reports, now=now, fresh_within_s=fresh),
            intake=intake_view(list(self._decisions), now=now),
            dead_letters_per_min=by_reason,
            dead_letters_seen=dict(self._dead_seen),
            decisions_seen=dict(self._decisions_seen),
            tools=tool_views(reports, now=now, fresh_within_s=fresh),
        )

    # ------------------------------------------------------------------ readings
    def _first_records(
        self, lags: dict[str, GroupLag | None], errors: list[str]
    ) -> dict[tuple[TopicPartition, int | None], int]:
        """Broker timestamp of the first uncommitted record of every lagging partition, by
        (partition, committed offset): two stages may read one topic from different offsets.
        A record at an offset never changes, so each (partition, offset) is fetched once."""
        wanted = {
            (p.tp, p.committed)
            for lag in lags.values()
            for p in (lag.partitions if lag is not None else ())
            if p.lag > 0
        }
        missing = sorted(wanted - self._peeked.keys(), key=lambda k: (k[0], k[1] or -1))
        while missing:
            # One offset per partition and peek; the rare second offset waits a turn.
            batch: dict[TopicPartition, int | None] = {}
            rest = []
            for tp, offset in missing:
                if tp in batch:
                    rest.append((tp, offset))
                else:
                    batch[tp] = offset
            try:
                found = self._peeker.timestamps_at(batch)
            except StreamsError as exc:
                errors.append(f"first records: {exc}")
                break
            for tp, ts in found.items():
                self._peeked[(tp, batch[tp])] = ts
            missing = rest
        self._peeked = {k: v for k, v in self._peeked.items() if k in wanted}
        return dict(self._peeked)

    def _open_tails(self, errors: list[str]) -> None:
        """Open the readers of topics that exist (a workflow not applied yet has none)."""
        if self._board is not None and self._dlq is not None and self._decision_tail is not None:
            return
        mono = self._clock.monotonic()
        if mono < self._next_open:
            return  # cluster metadata is costly on a big cluster: look again in a while
        self._next_open = mono + REOPEN_EVERY_S
        try:
            counts = self._admin.partition_counts()
        except StreamsError as exc:
            errors.append(f"metadata: {exc}")
            return
        t = self._topology
        since_ms = int((self._clock.now() - self._keep_s) * 1000)
        topics = {
            "pressure": t.pressure_topic,
            "dead letters": t.dead_letter_topic,
            "decisions": t.decisions_topic,
        }
        try:
            if self._board is None and counts.get(topics["pressure"]):
                # Compacted and small: read whole, so every worker's latest report is known.
                tail = TopicTail(self._config, topics["pressure"], counts[topics["pressure"]])
                board = self._board = ReportBoard(tail)
                _catch_up(tail, board.refresh)
            if self._dlq is None and counts.get(topics["dead letters"]):
                dlq = self._dlq = TopicTail(
                    self._config, topics["dead letters"], counts[topics["dead letters"]],
                    since_ms=since_ms,
                )  # fmt: skip
                _catch_up(dlq, lambda: _drain(dlq, self._count_dead_letter))
            if self._decision_tail is None and counts.get(topics["decisions"]):
                decided = self._decision_tail = TopicTail(
                    self._config, topics["decisions"], counts[topics["decisions"]],
                    since_ms=since_ms,
                )  # fmt: skip
                _catch_up(decided, lambda: _drain(decided, self._count_decision))
        except StreamsError as exc:
            errors.append(f"opening readers: {exc}")

    def _read_history(self, errors: list[str]) -> None:
        try:
            if self._board is not None:
                self._board.refresh()
            if self._dlq is not None:
                _drain(self._dlq, self._count_dead_letter)
            if self._decision_tail is not None:
                _drain(self._decision_tail, self._count_decision)
        except StreamsError as exc:
            errors.append(f"history: {exc}")

    def _count_dead_letter(self, value: bytes, timestamp_ms: int) -> None:
        try:
            letter = self._dead_letter_codec.decode(value)
        except StreamsError:
            key, at = ("?", "undecodable"), timestamp_ms / 1000.0
        else:
            if letter.workflow != self._topology.workflow:
                return  # a dead-letter topic shared by several workflows
            key, at = (letter.stage, letter.reason), letter.dead_at_ms / 1000.0
        self._dead.add(key, at)
        self._dead_seen[key] = self._dead_seen.get(key, 0) + 1

    def _count_decision(self, value: bytes, timestamp_ms: int) -> None:
        try:
            record = self._decision_serde.decode(value)
        except StreamsError:
            return  # a foreign record on the audit topic says nothing about admission
        if record.get("workflow") != self._topology.workflow:
            return
        decided = record.get("decided_at")
        at = (
            decided.timestamp()
            if isinstance(decided, datetime)
            else (decided if isinstance(decided, int) else timestamp_ms) / 1000.0
        )
        seen = DecisionSeen(str(record.get("outcome")), str(record.get("reason")), at)
        self._decisions.append(seen)
        key = (seen.outcome, seen.reason)
        self._decisions_seen[key] = self._decisions_seen.get(key, 0) + 1
        while self._decisions and self._decisions[0].at < at - self._keep_s:
            self._decisions.popleft()


def _catch_up(tail: TopicTail, read: Callable[[], None], timeout_s: float = 3.0) -> None:
    """Read a newly opened tail up to the end offsets it has now (bounded by timeout_s), so
    the first round already knows the workers and the recent history: a tail polled with
    no wait returns nothing until its first fetch has come back."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        read()
        if tail.caught_up(timeout_s):
            return
        time.sleep(0.02)


def _drain(tail: TopicTail, count: Callable[[bytes, int], None]) -> None:
    read = 0
    while read < MAX_RECORDS_PER_ROUND:
        records = tail.poll(1000, 0.0)
        if not records:
            return
        read += len(records)
        for record in records:
            if record.value is not None:
                count(record.value, record.timestamp_ms)
