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

import functools
import logging
import time
from collections.abc import Callable

from streams.clock import Clock, SystemClock
from streams.control.follow import ControlFollower
from streams.control.state import control_view
from streams.errors import BrokerUnavailable, StreamsError
from streams.kafka.admin import Admin
from streams.kafka.client_config import ClientConfig
from streams.kafka.lag_reader import GroupLag, LagReader
from streams.kafka.peek import RecordPeeker
from streams.kafka.tail import TopicTail
from streams.monitor.history import WorkflowHistory, split_per_min
from streams.monitor.model import MonitorSnapshot
from streams.monitor.stage_view import intake_view, stage_view, tool_views, worker_views
from streams.policy.degradation import NO_LADDER
from streams.policy.group_status import OffsetSample, PartitionWindow
from streams.runtime.pressure_reports import ReportBoard
from streams.topology import Topology
from streams.types import Record, TopicPartition

log = logging.getLogger(__name__)

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
        self._control: ControlFollower | None = None  # once W.control exists
        self._history = WorkflowHistory(topology, keep_s)
        self._followed = self._history.topics(topology)
        self._tails: dict[str, TopicTail] = {}  # by topic, once it exists
        self._next_open = 0.0

    def close(self) -> None:
        for closer in (
            self._board, self._control, *self._tails.values(), self._peeker, self._lag
        ):  # fmt: skip
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
        history = self._history
        dead_per_min = history.dead.per_minute(now)
        retries_per_min = history.retries.per_minute(now)
        escalations_per_min = history.escalations.per_minute(now)
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
            retry_reasons, retry_tiers = split_per_min(retries_per_min, stage.name)
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
                    retries_per_min=retry_reasons,
                    retries_per_min_by_tier=retry_tiers,
                    escalations_per_min={
                        reason: n for (s, reason), n in escalations_per_min.items()
                        if s == stage.name
                    },
                )
            )  # fmt: skip
        fresh = {s.name: s.pressure.stale_after_s for s in topology.stages.values()}
        all_retries, all_tiers = split_per_min(retries_per_min, None)
        return MonitorSnapshot(
            workflow=topology.workflow,
            measured_at=now,
            error="; ".join(errors) or None,
            stages=tuple(views),
            workers=worker_views(reports, now=now, fresh_within_s=fresh),
            intake=intake_view(list(history.decisions), now=now),
            dead_letters_per_min=_by_last(dead_per_min),
            dead_letters_seen=dict(history.dead_seen),
            decisions_seen=dict(history.decisions_seen),
            tools=tool_views(reports, now=now, fresh_within_s=fresh),
            retries_per_min=all_retries,
            retries_per_min_by_tier=all_tiers,
            escalations_per_min=_by_last(escalations_per_min),
            retries_seen=dict(history.retries_seen),
            escalations_seen=dict(history.escalations_seen),
            reviews=history.reviews.views(
                topology.stages.values(), now=now,
                workers_alive={v.stage: v.workers_alive for v in views},
            ),
            control=self._control_json(now),
        )  # fmt: skip

    def _control_json(self, now: float) -> dict[str, object] | None:
        if self._control is None or not self._control.caught_up:
            return None  # not read to its end: an older record may still be in force
        topology = self._topology
        ladder = topology.degradation.ladder if topology.degradation is not None else NO_LADDER
        view = control_view(topology, self._control.state(), now)
        return {**view.to_json(), "levels": [level.name for level in ladder.levels]}

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
        if (
            self._board is not None
            and self._control is not None
            and len(self._tails) == len(self._followed)
        ):
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
        pressure = self._topology.pressure_topic
        since_ms = int((self._clock.now() - self._keep_s) * 1000)
        try:
            if self._board is None and counts.get(pressure):
                # Compacted and small: read whole, so every worker's latest report is known.
                tail = TopicTail(self._config, pressure, counts[pressure])
                board = self._board = ReportBoard(tail)
                _catch_up(tail, board.refresh)
            control = self._topology.control_topic
            if self._control is None and counts.get(control):
                follower = self._control = ControlFollower(self._topology, self._config)
                _catch_up_control(follower)
            for followed in self._followed:
                if followed.topic in self._tails or not counts.get(followed.topic):
                    continue
                opened = self._tails[followed.topic] = TopicTail(
                    self._config, followed.topic, counts[followed.topic],
                    since_ms=since_ms if followed.recent else None,
                )  # fmt: skip
                _catch_up(opened, functools.partial(_drain, opened, followed.count))
        except StreamsError as exc:
            errors.append(f"opening readers: {exc}")

    def _read_history(self, errors: list[str]) -> None:
        try:
            if self._board is not None:
                self._board.refresh()
            if self._control is not None:
                self._control.refresh()
            for followed in self._followed:
                tail = self._tails.get(followed.topic)
                if tail is not None:
                    _drain(tail, followed.count)
        except StreamsError as exc:
            errors.append(f"history: {exc}")


def _by_last(per_min: dict[tuple[str, str], float]) -> dict[str, float]:
    """(stage, reason) -> n summed over stages: reason -> n."""
    summed: dict[str, float] = {}
    for (_, reason), n in per_min.items():
        summed[reason] = summed.get(reason, 0.0) + n
    return summed


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


def _catch_up_control(follower: ControlFollower, timeout_s: float = 3.0) -> None:
    """Like _catch_up, for the control topic: a level or pause shown only once the topic
    has been read to the end offsets it had (so a later record cannot still override it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not follower.caught_up:
        follower.refresh(0.1)


def _drain(tail: TopicTail, count: Callable[[Record], None]) -> None:
    read = 0
    while read < MAX_RECORDS_PER_ROUND:
        records = tail.poll(1000, 0.0)
        if not records:
            return
        read += len(records)
        for record in records:
            count(record)
