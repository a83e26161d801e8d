"""Owns the shape of a topology file: one strict pydantic model for every key, the intake
section included, with its types, single-key bounds and defaults.

Must not check anything that spans keys or stages (streams.topology._build and ._intake
do), nor read other files. strict=True because YAML is typed: "64" or `yes` is a mistake.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from streams.policy.admission import DeadlineAction, SaturationAction
from streams.policy.downstream import OnStale
from streams.topology._degradation import DegradationIn
from streams.topology._errors import must_be, not_null, null_is_empty, text
from streams.types import LANES, DeliveryMode

DEFAULT_PARTITIONS = 6
DEFAULT_RETENTION_MS = 7 * 24 * 60 * 60 * 1000  # Kafka's own default retention.ms

DEFAULT_MAX_QUEUED_RUNS = 10_000
DEFAULT_MAX_QUEUED_PER_TENANT = 1_000  # or max_queued_runs, if that is lower
DEFAULT_SATURATION_RATIO = 0.8
DEFAULT_PRESSURE_SATURATION_RATIO = 0.5  # or saturation_ratio, if that is lower
DEFAULT_RETRY_AFTER_MIN_S = 1.0
DEFAULT_RETRY_AFTER_MAX_S = 60.0
DEFAULT_DELAY_S = 30.0
DEFAULT_DEDUPE_WINDOW_S = 86_400.0  # 24 h, measured from submission
DEFAULT_MAX_BODY_BYTES = 65_536


class In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- stages


class CountThresholdsIn(In):
    pause: int = Field(gt=0)
    resume: int = Field(ge=0)


class SecondsThresholdsIn(In):
    pause: float = Field(gt=0)
    resume: float = Field(ge=0)


class PressureIn(In):
    lag: CountThresholdsIn = CountThresholdsIn(pause=500, resume=250)
    oldest_age_s: SecondsThresholdsIn = SecondsThresholdsIn(pause=30.0, resume=10.0)
    p95_latency_s: SecondsThresholdsIn | None = None
    min_dwell_s: float = Field(default=1.0, ge=0)
    stale_after_s: float = Field(default=5.0, gt=0)
    on_stale: OnStale = "pause"


class DeadLetterLimitIn(In):
    # Defaults are streams.policy.dlq_valve.DeadLetterLimit's; a test holds them equal.
    max_ratio: float = Field(default=0.5, ge=0, le=1)
    window: int = Field(default=100, gt=0)
    min_records: int = Field(default=20, gt=0)
    max_consecutive: int | None = Field(default=50, gt=0)  # null: no consecutive limit


class TopicDefaultsIn(In):
    partitions: int = Field(default=DEFAULT_PARTITIONS, gt=0)
    retention_ms: int = DEFAULT_RETENTION_MS


# --------------------------------------------------------------------------- retries
# Defaults are streams.policy.retry.RetryPolicy's (README "Every topology key"). A stage's
# `retry:` overrides the workflow's key by key (budget too); its `retry: null` turns
# retries off for that stage. Without any `retry:` section nothing is retried.


class RetryBudgetIn(In):
    ratio: float = Field(default=0.1, ge=0)
    min_retries: int = Field(default=10, ge=0)
    window_s: float = Field(default=60.0, gt=0)
    max_run_retries: Annotated[int | None, not_null("a whole number")] = Field(default=None, ge=0)


class RetryIn(In):
    max_attempts: int = Field(default=3, gt=0)
    base_s: float = Field(default=1.0, gt=0)
    cap_s: float = Field(default=300.0, gt=0)
    tiers: list[int] = Field(default_factory=lambda: [5, 30, 300])
    retry_on: list[str] = Field(default_factory=lambda: ["ToolUnavailable", "TimeoutError"])
    never_retry: list[str] = Field(default_factory=lambda: ["DeadLetter"])
    on_exhausted: Literal["escalate", "dead_letter"] = "dead_letter"
    budget: Annotated[RetryBudgetIn, null_is_empty()] = RetryBudgetIn()


class ReviewIn(In):
    # Defaults are streams.policy.review.ReviewConfig's (README "Human review").
    max_pending: int = Field(default=50, gt=0)
    max_wait_s: float = Field(default=3600.0, gt=0)
    on_timeout: Literal["decline", "escalate", "approve"] = "escalate"
    rate_window_s: float = Field(default=600.0, gt=0)


class StageIn(In):
    # kind: review has no handler (a person decides; README "Human review"); every other
    # stage needs one (streams.topology._build says so with the key).
    kind: Literal["handler", "review"] = "handler"
    handler: str | None = None
    review: ReviewIn | None = None
    lanes: list[str] | None = None
    concurrency: int = Field(default=16, gt=0)
    partition_buffer: int = Field(default=100, gt=0)
    partition_resume: int | None = Field(default=None, ge=0)
    handler_timeout_s: float = Field(default=30.0, gt=0)
    max_queue_age_s: float = Field(default=300.0, gt=0)
    max_lag: int = Field(default=1000, gt=0)
    downstream: list[str] = Field(default_factory=list)
    pressure: PressureIn = PressureIn()
    delivery: DeliveryMode | None = None
    partitions: int | None = Field(default=None, gt=0)
    retention_ms: int | None = None
    background: bool = False
    input_topic: str | None = None
    yields_to: list[str] = Field(default_factory=list)
    allow_lane_promotion: bool = False
    dead_letter_limit: DeadLetterLimitIn = DeadLetterLimitIn()
    tools: list[str] = Field(default_factory=list)
    retry: RetryIn | None = None


# --------------------------------------------------------------------------- tools
# Defaults are documented in README "Every topology key"; the breaker's follow
# streams.policy.breaker.BreakerConfig (a test holds them equal).


class ToolBreakerIn(In):
    failure_ratio: float = Field(default=0.5, gt=0, le=1)
    slow_call_ratio: float = Field(default=1.0, gt=0, le=1)
    slow_call_s: Annotated[float | None, not_null("a number of seconds")] = Field(
        default=None, gt=0
    )  # left out: the tool's timeout_s
    window: int = Field(default=100, gt=0)
    minimum_calls: int = Field(default=20, gt=0)
    open_s: float = Field(default=30.0, gt=0)
    half_open_probes: int = Field(default=10, gt=0)


class ToolAdaptiveIn(In):
    min: int = Field(default=1, gt=0)
    max: int = Field(default=200, gt=0)
    initial: Annotated[int | None, not_null("a whole number")] = Field(default=None, gt=0)
    latency_tolerance: float = Field(default=2.0, gt=1)


class ToolIn(In):
    concurrency: int | None = Field(default=None, gt=0)
    rate: float | None = Field(default=None, gt=0)
    burst: Annotated[float | None, not_null("a number")] = Field(default=None, ge=1)
    timeout_s: float = Field(default=30.0, gt=0)
    max_wait_s: float = Field(default=5.0, ge=0)
    pause_at_waiting: int = Field(default=8, gt=0)
    failure_errors: list[str] = Field(default_factory=lambda: ["Exception"])
    ignored_errors: list[str] = Field(default_factory=list)
    breaker: ToolBreakerIn | None = ToolBreakerIn()  # null: no breaker
    adaptive: ToolAdaptiveIn | None = None


# --------------------------------------------------------------------------- intake
# Keys whose default follows other keys (max_queued_per_tenant, on_saturation, ...) are
# None when left out; an explicit null there is a mistake, as it always was.


def _ratio(value: float | None) -> float | None:
    if value is not None and not 0 < value <= 1:
        raise must_be("in (0, 1], a fraction of max_queued_runs")
    return value


_Ratio = AfterValidator(_ratio)


class TenantIn(In):
    max_queued: Annotated[int | None, not_null("a whole number")] = Field(default=None, gt=0)
    weight: float = Field(default=1.0, gt=0)


class LaneIn(In):
    on_saturation: Annotated[
        SaturationAction | None, not_null("one of accept, delay, downgrade, reject")
    ] = None
    delay_s: float = Field(default=DEFAULT_DELAY_S, gt=0)
    downgrade_to: Annotated[str | None, text("a lane name", null=False)] = None


class RetryAfterIn(In):
    min: float = Field(default=DEFAULT_RETRY_AFTER_MIN_S, gt=0)
    max: float = Field(default=DEFAULT_RETRY_AFTER_MAX_S, gt=0)


class IntakeIn(In):
    max_queued_runs: int = Field(default=DEFAULT_MAX_QUEUED_RUNS, gt=0)
    max_queued_per_tenant: Annotated[int | None, not_null("a whole number")] = Field(
        default=None, gt=0
    )
    tenants: Annotated[dict[str, Annotated[TenantIn, null_is_empty()]], null_is_empty()] = Field(
        default_factory=dict
    )
    saturation_ratio: Annotated[float, _Ratio] = DEFAULT_SATURATION_RATIO
    pressure_saturation_ratio: Annotated[float | None, not_null("a number"), _Ratio] = None
    lanes: Annotated[dict[str, Annotated[LaneIn, null_is_empty()]], null_is_empty()] = Field(
        default_factory=dict
    )
    retry_after_s: Annotated[RetryAfterIn, null_is_empty()] = RetryAfterIn()
    deadline_action: DeadlineAction = "reject"
    dedupe_window_s: float = Field(default=DEFAULT_DEDUPE_WINDOW_S, gt=0)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    payload_schema: Annotated[
        str | None, text("the path of an .avsc file", null=True, empty=False)
    ] = None
    entry_stage: Annotated[str | None, text("a stage name", null=True)] = None
    default_lane: Annotated[str | None, text("a lane name", null=True)] = None


# --------------------------------------------------------------------------- the registry


def _registry_url(value: str) -> str:
    url = value.strip().rstrip("/")
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest:
        raise must_be("an http:// or https:// URL, e.g. http://127.0.0.1:8081")
    return url


class SchemaRegistryIn(In):
    """README "Schema registry": the file's registry, used when neither --schema-registry
    nor STREAMS_SCHEMA_REGISTRY_URL names one."""

    url: Annotated[str, AfterValidator(_registry_url)]


# --------------------------------------------------------------------------- the file


class TopologyIn(In):
    workflow: str
    delivery: DeliveryMode = "at_least_once"
    lanes: list[str] = Field(default_factory=lambda: [str(lane) for lane in LANES])
    dead_letter_topic: str | None = None
    topic_defaults: TopicDefaultsIn = TopicDefaultsIn()
    tools: Annotated[dict[str, Annotated[ToolIn, null_is_empty()]], null_is_empty()] = Field(
        default_factory=dict
    )
    retry: Annotated[RetryIn | None, null_is_empty()] = None
    stages: dict[str, StageIn]
    intake: Annotated[IntakeIn, null_is_empty()] = IntakeIn()
    degradation: DegradationIn | None = None  # README "Degradation"; the keys: _degradation
    schema_registry: SchemaRegistryIn | None = None
