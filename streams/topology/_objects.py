"""Owns the frozen objects a topology file becomes (Topology, Stage and their parts) and
the names derived from them (topics, consumer groups, lane routes).

Must not parse or validate files (streams.topology._load does), nor talk to Kafka.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.errors import ConfigError
from streams.policy.dlq_valve import DeadLetterLimit
from streams.policy.downstream import OnStale
from streams.policy.retry import RetryPolicy
from streams.policy.review import ReviewConfig
from streams.topology._degradation import DegradationSpec
from streams.topology._errors import Problem
from streams.topology._handlers import import_handler
from streams.topology._intake import IntakeConfig
from streams.topology._tools import ToolSpec
from streams.types import DeliveryMode, Lane

KEEP_FOREVER_MS = -1  # Kafka's retention.ms for "never delete by age"
# Every worker and the intake read the whole pressure topic; it holds a few small
# compacted records per worker, so one partition keeps reading it trivial.
PRESSURE_TOPIC_PARTITIONS = 1


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How a topic should be created. retention_ms -1 means keep forever."""

    partitions: int
    retention_ms: int
    compacted: bool = False


@dataclass(frozen=True, slots=True)
class CountThresholds:
    """A hysteresis band on a count (e.g. lag): pause at `pause`, resume below `resume`."""

    pause: int
    resume: int


@dataclass(frozen=True, slots=True)
class SecondsThresholds:
    """A hysteresis band on a duration in seconds; resume < pause always holds."""

    pause: float
    resume: float


@dataclass(frozen=True, slots=True)
class PressureConfig:
    """Thresholds a stage applies to its downstream stages' pressure reports."""

    lag: CountThresholds
    oldest_age_s: SecondsThresholds
    p95_latency_s: SecondsThresholds | None
    min_dwell_s: float  # least time to stay paused or resumed, against flapping
    stale_after_s: float  # a report older than this is stale
    on_stale: OnStale


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of a workflow: a consumer group running one handler on its input topics.

    `lanes` is most urgent first. A background stage always has lanes ("background",) and
    reads either its own background topic or `input_topic`. `routes` maps each of its lanes
    to the topics it emits to (see `output_topics`).
    """

    source: str
    workflow: str
    name: str
    handler: str  # "package.module:function", imported by resolve_handler()
    lanes: tuple[Lane, ...]
    concurrency: int
    partition_buffer: int
    partition_resume: int
    handler_timeout_s: float
    max_queue_age_s: float
    max_lag: int
    downstream: tuple[str, ...]
    pressure: PressureConfig
    delivery: DeliveryMode
    topic_spec: TopicSpec  # for the topics this stage owns (its lane topics)
    background: bool
    input_topic: str | None
    yields_to: tuple[str, ...]
    #: Whether a handler may emit a run to a lane more urgent than the one it arrived in.
    allow_lane_promotion: bool
    dead_letter_limit: DeadLetterLimit  # the valve's own type (streams.policy.dlq_valve)
    routes: Mapping[Lane, tuple[str, ...]]
    #: Tools the handler calls through ctx.tool(name); their health pauses the stage.
    tools: tuple[str, ...] = ()
    #: How failed calls are retried (streams.policy.retry); None: never, dead-letter at once.
    retry: RetryPolicy | None = None
    #: kind: review (README "Human review"): a person decides; None for handler stages.
    review: ReviewConfig | None = None

    @property
    def consumer_group(self) -> str:
        return f"{self.workflow}.{self.name}"

    @property
    def input_topics_by_lane(self) -> dict[Lane, str]:
        """Input topic of each lane, most urgent first (the order a worker serves them)."""
        if self.input_topic is not None:
            return {"background": self.input_topic}
        return {lane: lane_topic(self.workflow, self.name, lane) for lane in self.lanes}

    @property
    def input_topics(self) -> tuple[str, ...]:
        return tuple(self.input_topics_by_lane.values())

    def output_topics(self, lane: Lane) -> tuple[str, ...]:
        """Topics a record of `lane` goes to once this stage is done with it.

        One topic per downstream stage: its topic for `lane`, or, if it does not take
        `lane`, its most urgent lane that is less urgent than `lane` (never promote). A
        foreground stage with no downstream emits to "{workflow}.completed"; a background
        stage with no downstream emits nothing. Raises ValueError for a lane the stage
        does not take (a background stage treats every record as lane "background").
        """
        try:
            return self.routes[lane]
        except KeyError:
            raise ValueError(
                f"stage {self.name!r} does not take lane {lane!r} "
                f"(it takes {', '.join(self.lanes)})"
            ) from None

    def resolve_handler(self) -> Callable[..., Any]:
        """Import the handler. Raises ConfigError if it is missing or not callable."""
        try:
            return import_handler(self.handler)
        except Problem as problem:
            raise ConfigError(self.source, f"stages.{self.name}.handler", problem.problem) from None


@dataclass(frozen=True, slots=True)
class Topology:
    """One workflow: its stages (in file order), its intake and every topic it needs.

    `intake` is None only when the file has no `intake:` section and the workflow's shape
    leaves a default open (several entry stages, or no "standard" lane): such a file is
    fine for workers, and `load_intake_config` says what to add before an intake can serve
    it. With an `intake:` section, every mistake in it fails the load.
    """

    source: str
    workflow: str
    delivery: DeliveryMode
    lanes: tuple[Lane, ...]  # most urgent first, the order workers serve them
    dead_letter_topic: str
    topic_defaults: TopicSpec
    intake: IntakeConfig | None
    stages: Mapping[str, Stage]
    tools: Mapping[str, ToolSpec] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )
    #: The ladder (README "Degradation"); None: the workflow always runs at normal.
    degradation: DegradationSpec | None = None
    #: `schema_registry.url` (README "Schema registry"); None: the file names none.
    schema_registry_url: str | None = None

    def tools_used_by(self, tool: str) -> tuple[str, ...]:
        """Names of the stages that list `tool`, in file order."""
        return tuple(s.name for s in self.stages.values() if tool in s.tools)

    @property
    def pressure_topic(self) -> str:
        return f"{self.workflow}.pressure"

    @property
    def control_topic(self) -> str:
        """Operator overrides and the published level (README "Operator controls"):
        compacted, one partition, kept forever."""
        return f"{self.workflow}.control"

    @property
    def completed_topic(self) -> str:
        return f"{self.workflow}.completed"

    @property
    def runs_topic(self) -> str:
        """The run ledger the intake replicas share: compacted, one partition, so its order
        is the order of every replica's admissions (see streams.intake.state)."""
        return f"{self.workflow}.runs"

    @property
    def decisions_topic(self) -> str:
        return f"{self.workflow}.decisions"

    @property
    def delayed_topic(self) -> str:
        """Admitted runs waiting for their due time before entering the first stage."""
        return f"{self.workflow}.delayed"

    @property
    def escalations_topic(self) -> str:
        """Runs handed to people (Avro Escalation); exists once a stage retries."""
        return f"{self.workflow}.escalations"

    @property
    def reviews_topic(self) -> str:
        """Pending and decided reviews, keyed by run id: compacted, one partition (the
        review stages' workers and the review server read it whole); exists once a stage
        is a review stage."""
        return f"{self.workflow}.reviews"

    @property
    def retry_topics(self) -> dict[int, str]:
        """The retry-tier topic of each tier (seconds) any stage's policy uses, ascending."""
        tiers = {t for s in self.stages.values() if s.retry is not None for t in s.retry.tiers_s}
        return {tier: retry_topic(self.workflow, tier) for tier in sorted(tiers)}

    @property
    def entry_stages(self) -> tuple[Stage, ...]:
        """Foreground stages no other stage emits to: where the intake puts new runs."""
        fed = {name for stage in self.stages.values() for name in stage.downstream}
        if self.degradation is not None:  # fed by a level's require_review detour
            fed.update(self.degradation.review_detours.values())
        return tuple(s for s in self.stages.values() if not s.background and s.name not in fed)

    def all_topics(self) -> dict[str, TopicSpec]:
        """Every topic the workflow reads or writes, with how to create it.

        An explicit `input_topic` from outside the workflow is included with its stage's
        spec, so "create if missing" works; one the workflow already defines keeps that spec.
        """
        defaults = self.topic_defaults
        topics = {
            self.pressure_topic: TopicSpec(PRESSURE_TOPIC_PARTITIONS, KEEP_FOREVER_MS, True),
            self.completed_topic: defaults,
            self.dead_letter_topic: defaults,
            self.runs_topic: TopicSpec(1, KEEP_FOREVER_MS, True),
            self.control_topic: TopicSpec(1, KEEP_FOREVER_MS, True),
            self.decisions_topic: defaults,
            self.delayed_topic: defaults,
        }
        retry_topics = self.retry_topics
        if retry_topics:  # only workflows that retry have tiers and escalations
            for topic in retry_topics.values():
                topics[topic] = defaults
            topics[self.escalations_topic] = defaults
        if any(s.review is not None for s in self.stages.values()):
            topics[self.reviews_topic] = TopicSpec(1, KEEP_FOREVER_MS, True)
        # Lane topics first, so a stage tapping another's topic never decides its spec.
        for stage in sorted(self.stages.values(), key=lambda s: s.input_topic is not None):
            for topic in stage.input_topics:
                topics.setdefault(topic, stage.topic_spec)
        return topics


def lane_topic(workflow: str, stage: str, lane: Lane) -> str:
    return f"{workflow}.{stage}.{lane}"


def retry_topic(workflow: str, tier_s: int) -> str:
    return f"{workflow}.retry.{tier_s}s"
